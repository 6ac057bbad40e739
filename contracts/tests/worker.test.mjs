// Worker contract: signed payout and last payout through the proxy contract,
// registration, and every refusal.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
    Env, OP, ERR, COMMISSION, STORAGE, deployWorld, workerState, proxyState, voucher, body, keyPair,
    expectTx, msgsTo, toNano, beginCell,
} from './helpers.mjs';

const PRICE = 1000n;
const FEE = 600n;

/** Parses worker_proxy_request as ProxyContract.cpp does (spec §6.2). */
function parseWorkerProxyRequest(cell) {
    const s = cell.beginParse();
    assert.equal(s.loadUint(32), OP.workerProxyRequest);
    const out = { qid: s.loadUintBig(64), owner: s.loadAddress(), state: s.loadUint(2), tokens: s.loadUintBig(64), payload: s.loadMaybeRef() };
    assert.equal(s.remainingBits + s.remainingRefs, 0);
    return out;
}

describe('worker contract', () => {
    let env;
    let w;

    const payout = (tokens, o = {}) => voucher({ op: OP.extWorkerPayoutRequestSigned, qid: 21n, tokens, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const lastPayout = (tokens, o = {}) => voucher({ op: OP.extWorkerLastPayoutRequestSigned, qid: 22n, tokens, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const sendW = (from, value, b) => env.send(from, w.worker.address, value, b);

    beforeEach(async () => {
        env = await Env.create();
        w = await deployWorld(env);
        // clients' deposits are what the proxy contract pays workers from
        await env.send(env.stranger, w.client.address, toNano('20.2'), body(OP.extClientTopUp, 1n).storeCoins(toNano('20')).storeAddress(env.stranger.address).endCell());
        await env.checkpoint();
    });

    it('registers on deployment with a payload-less ping to the proxy', async () => {
        expectTx(w.workerRegister, { to: w.worker.address, success: true });
        const ping = msgsTo(w.workerRegister, w.proxy.address, OP.workerProxyRequest);
        assert.equal(ping.length, 1);
        assert.equal(ping[0].value, 1n);
        const m = parseWorkerProxyRequest(ping[0].body);
        assert.deepEqual([m.qid, m.state, m.tokens, m.payload], [2n, 0, 0n, null]);
        assert.ok(m.owner.equals(env.workerOwner.address));
        assert.equal(await env.balanceOf(w.worker.address), COMMISSION + STORAGE);
        const res = await sendW(env.stranger, toNano('0.2'), body(OP.ownerWorkerRegister, 1n).storeAddress(env.stranger.address).endCell());
        expectTx(res, { to: w.worker.address, exitCode: ERR.expectedMessageFromOwner });
        await env.assertConserved();
    });

    it('payout pays Δtokens × fee to the owner and credits Δtokens × (price − fee) to the proxy', async () => {
        const proxy0 = await env.balanceOf(w.proxy.address);
        let res = await sendW(env.stranger, toNano('0.5'), payout(1_000_000n, { excessesTo: env.stranger.address }));
        expectTx(res, { to: w.worker.address, success: true });
        expectTx(res, { to: w.proxy.address, success: true });
        const req = parseWorkerProxyRequest(msgsTo(res, w.proxy.address, OP.workerProxyRequest)[0].body);
        assert.deepEqual([req.qid, req.state, req.tokens], [21n, 0, 1_000_000n]);
        const p = req.payload.beginParse();
        assert.equal(p.loadUint(32), OP.workerProxyPayoutRequest);
        assert.equal(p.loadCoins(), 1_000_000n * FEE);
        assert.equal(p.loadCoins(), 1_000_000n * (PRICE - FEE));
        assert.ok(p.loadAddress().equals(env.stranger.address));
        const paid = msgsTo(res, env.workerOwner.address, OP.payout);
        assert.equal(paid.length, 1);
        assert.equal(paid[0].value, 1_000_000n * FEE);
        assert.equal(msgsTo(res, env.stranger.address, OP.excesses).length, 1, 'change to the repacked excess address');
        assert.equal((await workerState(env, w)).tokens, 1_000_000n);
        assert.equal((await proxyState(env, w)).balance, 1_000_000n * (PRICE - FEE));
        assert.equal(await env.balanceOf(w.proxy.address), proxy0 - 1_000_000n * FEE, 'worker part leaves the deposit');
        assert.equal(await env.balanceOf(w.worker.address), COMMISSION + STORAGE, 'worker keeps its reserve');
        // next voucher pays only the difference
        res = await sendW(env.stranger, toNano('0.5'), payout(1_250_000n));
        assert.equal(msgsTo(res, env.workerOwner.address, OP.payout)[0].value, 250_000n * FEE);
        assert.equal((await proxyState(env, w)).balance, 1_250_000n * (PRICE - FEE));
        await env.assertConserved();
    });

    it('refuses replayed/lower (1000), forged (1007), malformed (1005), misaddressed (1015) and cheap (1003) payouts', async () => {
        await sendW(env.stranger, toNano('0.5'), payout(1000n));
        const cases = [
            [payout(1000n), ERR.oldMessage],
            [payout(10n), ERR.oldMessage],
            [payout(2000n, { secretKey: keyPair(9).secretKey }), ERR.badSignature],
            [payout(2000n, { payloadQid: 5n }), ERR.signedFormat],
            [payout(2000n, { payloadOp: OP.extWorkerLastPayoutRequestSigned }), ERR.signedFormat],
            [payout(2000n, { expected: w.client.address }), ERR.expectedMyAddress],
            [lastPayout(999n), ERR.oldMessage],
        ];
        for (const [b, code] of cases) {
            expectTx(await sendW(env.stranger, toNano('0.5'), b), { to: w.worker.address, exitCode: code });
        }
        expectTx(await sendW(env.stranger, COMMISSION, payout(2000n)), { to: w.worker.address, exitCode: ERR.lowMsgValue });
        expectTx(await sendW(env.stranger, toNano('0.5'), body(0x1234, 0n).endCell()), { to: w.worker.address, exitCode: ERR.unknownOp });
        assert.equal((await workerState(env, w)).tokens, 1000n);
        await env.assertConserved();
    });

    it('last payout accepts the same count, closes the contract and sweeps it', async () => {
        await sendW(env.stranger, toNano('0.5'), payout(1_000_000n));
        const res = await sendW(env.stranger, toNano('0.5'), lastPayout(1_000_000n));
        expectTx(res, { to: w.worker.address, success: true });
        expectTx(res, { to: w.proxy.address, success: true });
        const req = parseWorkerProxyRequest(msgsTo(res, w.proxy.address, OP.workerProxyRequest)[0].body);
        assert.equal(req.state, 2, 'reports the closed state');
        const paid = msgsTo(res, env.workerOwner.address, OP.payout);
        assert.equal(paid[0].value, 0n, 'nothing new to pay');
        const st = await workerState(env, w);
        assert.deepEqual([st.state, st.tokens], [2, 1_000_000n]);
        assert.equal(await env.balanceOf(w.worker.address), STORAGE, 'closed worker keeps only the storage reserve');
        for (const b of [payout(2_000_000n), lastPayout(2_000_000n), body(OP.ownerWorkerRegister, 1n).storeAddress(env.workerOwner.address).endCell()]) {
            expectTx(await sendW(env.workerOwner, toNano('0.5'), b), { to: w.worker.address, exitCode: ERR.closed });
        }
        await env.assertConserved();
    });

    it('last payout with new tokens pays them', async () => {
        const res = await sendW(env.stranger, toNano('0.5'), lastPayout(2_000_000n));
        assert.equal(msgsTo(res, env.workerOwner.address, OP.payout)[0].value, 2_000_000n * FEE);
        assert.equal((await proxyState(env, w)).balance, 2_000_000n * (PRICE - FEE));
        await env.assertConserved();
    });

    it('value returned by a bounce (or sent plainly) does not get stuck: the next op sweeps it', async () => {
        // the proxy closes completely, so the next payout request bounces back to the worker
        const sk = w.proxyKey.secretKey;
        await env.send(env.proxyWallet, w.proxy.address, toNano('0.2'), voucher({ op: OP.extProxyCloseRequestSigned, qid: 1n, expected: w.proxy.address, excessesTo: env.proxyWallet.address, secretKey: sk }));
        env.chain.now += 700;
        await env.send(env.proxyWallet, w.proxy.address, toNano('0.2'), voucher({ op: OP.extProxyCloseCompleteRequestSigned, qid: 2n, expected: w.proxy.address, excessesTo: env.proxyWallet.address, secretKey: sk }));
        const res = await sendW(env.stranger, toNano('0.5'), payout(1000n));
        expectTx(res, { to: w.proxy.address, exitCode: ERR.closed });
        assert.ok((await env.balanceOf(w.worker.address)) > COMMISSION + STORAGE, 'bounced value is back on the worker');
        await sendW(env.stranger, toNano('1'), undefined); // a plain transfer, kept for now
        const reg = await sendW(env.workerOwner, toNano('0.2'), body(OP.ownerWorkerRegister, 1n).storeAddress(env.workerOwner.address).endCell());
        const change = msgsTo(reg, env.workerOwner.address, OP.excesses);
        assert.ok(change[0].value > toNano('1.5'), 'surplus leaves with the change');
        assert.equal(await env.balanceOf(w.worker.address), COMMISSION + STORAGE);
        await env.assertConserved();
    });

    it('the proxy refuses a payout it cannot cover (1001) and forged worker requests (1014)', async () => {
        // 20 TON deposit cannot cover 100M tokens × 600
        const res = await sendW(env.stranger, toNano('0.5'), payout(100_000_000n));
        expectTx(res, { to: w.proxy.address, exitCode: ERR.lowSmcBalance });
        const fake = beginCell().storeUint(OP.workerProxyRequest, 32).storeUint(1n, 64).storeAddress(env.workerOwner.address)
            .storeUint(0, 2).storeUint(5, 64)
            .storeMaybeRef(beginCell().storeUint(OP.workerProxyPayoutRequest, 32).storeCoins(toNano('1')).storeCoins(0).storeAddress(env.stranger.address).endCell())
            .endCell();
        expectTx(await env.send(env.stranger, w.proxy.address, toNano('0.5'), fake), { to: w.proxy.address, exitCode: ERR.contractAddressMismatch });
        await env.assertConserved();
    });
});

// Client contract: register, top-ups, signed charge / grant-refund, two-phase
// request-refund, withdraw, owner ops, and every refusal.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
    Env, OP, ERR, COMMISSION, STORAGE, T0, deployWorld, clientState, proxyState, voucher, body, keyPair,
    expectTx, msgsTo, toNano, beginCell, Cell,
} from './helpers.mjs';

const PRICE = 1000n;

/** Parses client_proxy_request the way ProxyContract.cpp does (spec §6.2). */
function parseClientProxyRequest(cell) {
    const s = cell.beginParse();
    assert.equal(s.loadUint(32), OP.clientProxyRequest);
    const qid = s.loadUintBig(64);
    const owner = s.loadAddress();
    const st = s.loadRef().beginParse();
    const state = { state: st.loadUint(2), balance: st.loadCoins(), stake: st.loadCoins(), tokensUsed: st.loadUintBig(64), secretHash: st.loadUintBig(256) };
    assert.equal(st.remainingBits + st.remainingRefs, 0, 'state cell has exactly the C++ fields');
    const payload = s.loadMaybeRef();
    assert.equal(s.remainingBits + s.remainingRefs, 0);
    return { qid, owner, state, payload };
}

describe('client contract', () => {
    let env;
    let w;

    const charge = (tokens, o = {}) => voucher({ op: OP.extClientChargeSigned, qid: 11n, tokens, expected: w.client.address, excessesTo: env.clientOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const grant = (tokens, o = {}) => voucher({ op: OP.extClientGrantRefundSigned, qid: 12n, tokens, expected: w.client.address, excessesTo: env.clientOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const topUpBody = (amount, to = env.clientOwner.address) => body(OP.extClientTopUp, 3n).storeCoins(amount).storeAddress(to).endCell();
    const ownerOp = (op, qid = 4n) => body(op, qid);
    const sendC = (from, value, b) => env.send(from, w.client.address, value, b);

    async function topUp(amount) {
        const res = await sendC(env.stranger, amount + toNano('0.2'), topUpBody(amount));
        expectTx(res, { to: w.client.address, success: true });
        return res;
    }

    beforeEach(async () => {
        env = await Env.create();
        w = await deployWorld(env);
        await env.checkpoint();
    });

    it('registers on deployment: the proxy sees the state snapshot and the nonce', async () => {
        const res = w.clientRegister;
        expectTx(res, { to: w.client.address, success: true, exitCode: 0 });
        const note = msgsTo(res, w.proxy.address, OP.clientProxyRequest);
        assert.equal(note.length, 1);
        assert.equal(note[0].value, 1n, 'notification carries 1 nanoTON');
        const m = parseClientProxyRequest(note[0].body);
        assert.equal(m.qid, 1n);
        assert.ok(m.owner.equals(env.clientOwner.address));
        assert.deepEqual(m.state, { state: 0, balance: 0n, stake: toNano('1'), tokensUsed: 0n, secretHash: 0n });
        const p = m.payload.beginParse();
        assert.equal(p.loadUint(32), OP.clientProxyRegister);
        assert.equal(p.loadUintBig(64), 42n, 'C++ reads nonce:uint64 after the op');
        assert.equal(msgsTo(res, env.clientOwner.address, OP.excesses).length, 1);
        assert.equal(await env.balanceOf(w.client.address), COMMISSION + STORAGE, 'client keeps 0.11 TON');
    });

    it('top-up books the amount and moves the TON to the proxy contract', async () => {
        const proxy0 = await env.balanceOf(w.proxy.address);
        const client0 = await env.balanceOf(w.client.address);
        const res = await topUp(toNano('5'));
        const fwd = msgsTo(res, w.proxy.address, OP.clientProxyRequest);
        const m = parseClientProxyRequest(fwd[0].body);
        assert.equal(m.state.balance, toNano('5'));
        const p = m.payload.beginParse();
        assert.equal(p.loadUint(32), OP.clientProxyTopUp);
        assert.equal(p.loadCoins(), toNano('5'));
        expectTx(res, { to: w.proxy.address, success: true });
        assert.equal(msgsTo(res, env.clientOwner.address, OP.excesses).length, 1, 'change to send_excesses_to');
        assert.equal((await clientState(env, w)).balance, toNano('5'));
        assert.equal(await env.balanceOf(w.proxy.address), proxy0 + toNano('5'), 'proxy holds exactly the deposit');
        assert.equal(await env.balanceOf(w.client.address), client0, 'client keeps its balance');
        // secret hash + top-up (owner)
        const r2 = await sendC(env.clientOwner, toNano('1.2'), ownerOp(OP.ownerClientChangeSecretHashAndTopUp).storeCoins(toNano('1')).storeUint(0xabcn, 256).storeAddress(env.clientOwner.address).endCell());
        expectTx(r2, { to: w.client.address, success: true });
        const st = await clientState(env, w);
        assert.equal(st.balance, toNano('6'));
        assert.equal(st.secretHash, 0xabcn);
        assert.equal(await env.balanceOf(w.proxy.address), proxy0 + toNano('6'));
        await env.assertConserved();
    });

    it('refuses top-ups with too little value (1003) and secret+top-up from non-owners (1010)', async () => {
        let res = await sendC(env.stranger, toNano('5.05'), topUpBody(toNano('5')));
        expectTx(res, { to: w.client.address, exitCode: ERR.lowMsgValue });
        res = await sendC(env.stranger, toNano('1.2'), ownerOp(OP.ownerClientChangeSecretHashAndTopUp).storeCoins(toNano('1')).storeUint(1n, 256).storeAddress(env.stranger.address).endCell());
        expectTx(res, { to: w.client.address, exitCode: ERR.expectedMessageFromOwner });
        res = await sendC(env.clientOwner, toNano('1.05'), ownerOp(OP.ownerClientChangeSecretHashAndTopUp).storeCoins(toNano('1')).storeUint(1n, 256).storeAddress(env.clientOwner.address).endCell());
        expectTx(res, { to: w.client.address, exitCode: ERR.lowMsgValue });
        assert.equal((await clientState(env, w)).balance, 0n);
        await env.assertConserved();
    });

    it('signed charge deducts Δtokens × price; the holder may repack the excess address', async () => {
        await topUp(toNano('5'));
        let res = await sendC(env.stranger, toNano('0.2'), charge(1_000_000n, { excessesTo: env.stranger.address }));
        expectTx(res, { to: w.client.address, success: true });
        assert.equal(msgsTo(res, env.stranger.address, OP.excesses).length, 1, 'excesses to the repacked address');
        const note = parseClientProxyRequest(msgsTo(res, w.proxy.address, OP.clientProxyRequest)[0].body);
        assert.equal(note.payload, null, 'charge notifies without payload');
        assert.equal(note.state.tokensUsed, 1_000_000n);
        let st = await clientState(env, w);
        assert.equal(st.tokensUsed, 1_000_000n);
        assert.equal(st.balance, toNano('5') - 1_000_000n * PRICE);
        // a higher voucher charges only the difference
        res = await sendC(env.stranger, toNano('0.2'), charge(1_500_000n));
        expectTx(res, { to: w.client.address, success: true });
        st = await clientState(env, w);
        assert.equal(st.balance, toNano('5') - 1_500_000n * PRICE);
        // charging beyond the balance floors it at 0
        res = await sendC(env.stranger, toNano('0.2'), charge(100_000_000n));
        expectTx(res, { to: w.client.address, success: true });
        st = await clientState(env, w);
        assert.equal(st.balance, 0n);
        assert.equal(st.tokensUsed, 100_000_000n);
        await env.assertConserved();
    });

    it('refuses replayed/lower (1000), forged (1007), malformed (1005), misaddressed (1015) and cheap (1003) charges', async () => {
        await topUp(toNano('5'));
        await sendC(env.stranger, toNano('0.2'), charge(1000n));
        const cases = [
            [charge(1000n), ERR.oldMessage],
            [charge(999n), ERR.oldMessage],
            [charge(2000n, { secretKey: keyPair(9).secretKey }), ERR.badSignature],
            [charge(2000n, { payloadOp: OP.extClientGrantRefundSigned }), ERR.signedFormat],
            [charge(2000n, { payloadQid: 99n }), ERR.signedFormat],
            [charge(2000n, { extraWrapperBits: true }), ERR.signedFormat],
            [charge(2000n, { expected: w.worker.address }), ERR.expectedMyAddress],
        ];
        for (const [b, code] of cases) {
            const res = await sendC(env.stranger, toNano('0.2'), b);
            expectTx(res, { to: w.client.address, exitCode: code });
        }
        const res = await sendC(env.stranger, toNano('0.09'), charge(2000n));
        expectTx(res, { to: w.client.address, exitCode: ERR.lowMsgValue });
        // a voucher signed for one wrapper op cannot be replayed under the other
        const sig = charge(2000n).beginParse();
        sig.loadUint(32);
        const swapped = beginCell().storeUint(OP.extClientGrantRefundSigned, 32).storeSlice(sig).endCell();
        expectTx(await sendC(env.stranger, toNano('0.2'), swapped), { to: w.client.address, exitCode: ERR.signedFormat });
        const st = await clientState(env, w);
        assert.equal(st.tokensUsed, 1000n);
        assert.equal(st.balance, toNano('5') - 1000n * PRICE);
        await env.assertConserved();
    });

    it('grant-refund closes the contract and the proxy pays the remaining balance to the owner', async () => {
        await topUp(toNano('5'));
        await sendC(env.stranger, toNano('0.2'), charge(1_000_000n));
        const proxy0 = await env.balanceOf(w.proxy.address);
        // the same token count as the last charge is accepted for the final settlement
        expectTx(await sendC(env.stranger, toNano('0.2'), grant(999_999n)), { to: w.client.address, exitCode: ERR.oldMessage });
        const res = await sendC(env.stranger, toNano('0.2'), grant(1_200_000n));
        expectTx(res, { to: w.client.address, success: true });
        expectTx(res, { to: w.proxy.address, success: true });
        const paid = msgsTo(res, env.clientOwner.address, OP.payout);
        assert.equal(paid.length, 1);
        assert.equal(paid[0].value, toNano('5') - 1_200_000n * PRICE, 'refund = balance after the final charge');
        assert.equal(msgsTo(res, env.clientOwner.address, OP.excesses).length, 1);
        const st = await clientState(env, w);
        assert.deepEqual([st.state, st.balance, st.tokensUsed, st.unlockTs], [2, 0n, 1_200_000n, 0]);
        assert.equal(await env.balanceOf(w.client.address), STORAGE, 'closed client keeps only the storage reserve');
        assert.equal(await env.balanceOf(w.proxy.address), proxy0 - paid[0].value, 'refund comes out of the deposit');
        // closed with zero balance: everything is refused
        for (const b of [grant(1_200_000n), charge(1_300_000n), topUpBody(toNano('1'))]) {
            expectTx(await sendC(env.stranger, toNano('1.5'), b), { to: w.client.address, exitCode: ERR.closed });
        }
        await env.assertConserved();
    });

    it('request-refund: phase 1 refunds above the stake, phase 2 only after the delay (1011) via the proxy stake', async () => {
        await env.send(env.proxyOwner, w.proxy.address, toNano('3.2'), body(OP.extProxyIncreaseStake, 1n).storeCoins(toNano('3')).storeAddress(env.proxyOwner.address).endCell());
        await topUp(toNano('5'));
        await sendC(env.stranger, toNano('0.2'), charge(500_000n)); // balance 4.5
        const rr = () => ownerOp(OP.ownerClientRequestRefund).storeAddress(env.clientOwner.address).endCell();
        expectTx(await sendC(env.stranger, toNano('0.2'), rr()), { to: w.client.address, exitCode: ERR.expectedOwner });
        expectTx(await sendC(env.clientOwner, toNano('0.05'), rr()), { to: w.client.address, exitCode: ERR.lowMsgValue });

        let res = await sendC(env.clientOwner, toNano('0.2'), rr());
        expectTx(res, { to: w.client.address, success: true });
        let paid = msgsTo(res, env.clientOwner.address, OP.payout);
        assert.equal(paid[0].value, toNano('3.5'), 'balance above the 1 TON stake');
        let st = await clientState(env, w);
        assert.deepEqual([st.state, st.balance, st.unlockTs], [1, toNano('1'), T0 + 300]);

        // closing: charges still work, withdraw does not
        expectTx(await sendC(env.stranger, toNano('0.2'), charge(600_000n)), { to: w.client.address, success: true });
        expectTx(await sendC(env.clientOwner, toNano('0.2'), ownerOp(OP.ownerClientWithdraw).storeAddress(env.clientOwner.address).endCell()), { to: w.client.address, exitCode: ERR.closed });

        env.chain.now = T0 + 300; // unlock_ts is exclusive
        expectTx(await sendC(env.clientOwner, toNano('0.2'), rr()), { to: w.client.address, exitCode: ERR.notUnlocked });
        env.chain.now = T0 + 301;
        const stake0 = (await proxyState(env, w)).stake;
        res = await sendC(env.clientOwner, toNano('0.2'), rr());
        expectTx(res, { to: w.client.address, success: true });
        expectTx(res, { to: w.proxy.address, success: true });
        paid = msgsTo(res, env.clientOwner.address, OP.payout);
        assert.equal(paid[0].value, toNano('0.9'), 'force refund of the remaining balance');
        assert.equal((await proxyState(env, w)).stake, stake0 - toNano('0.9'), 'paid from the proxy stake');
        st = await clientState(env, w);
        assert.deepEqual([st.state, st.balance], [2, 0n]);
        assert.equal(await env.balanceOf(w.client.address), STORAGE);
        expectTx(await sendC(env.clientOwner, toNano('0.2'), rr()), { to: w.client.address, exitCode: ERR.closed });
        await env.assertConserved();
    });

    it('forced refund is capped by the proxy stake', async () => {
        await env.send(env.proxyOwner, w.proxy.address, toNano('0.5'), body(OP.extProxyIncreaseStake, 1n).storeCoins(toNano('0.3')).storeAddress(env.proxyOwner.address).endCell());
        await topUp(toNano('1'));
        const rr = () => ownerOp(OP.ownerClientRequestRefund).storeAddress(env.clientOwner.address).endCell();
        let res = await sendC(env.clientOwner, toNano('0.2'), rr());
        assert.equal(msgsTo(res, env.clientOwner.address, OP.payout).length, 0, 'nothing above the stake');
        env.chain.now = T0 + 1000;
        res = await sendC(env.clientOwner, toNano('0.2'), rr());
        assert.equal(msgsTo(res, env.clientOwner.address, OP.payout)[0].value, toNano('0.3'));
        assert.equal((await proxyState(env, w)).stake, 0n);
        await env.assertConserved();
    });

    it('withdraw returns the balance above the stake (owner only, 1009; 1001 when nothing above)', async () => {
        const wd = () => ownerOp(OP.ownerClientWithdraw).storeAddress(env.clientOwner.address).endCell();
        expectTx(await sendC(env.clientOwner, toNano('0.2'), wd()), { to: w.client.address, exitCode: ERR.lowSmcBalance });
        await topUp(toNano('3'));
        expectTx(await sendC(env.stranger, toNano('0.2'), wd()), { to: w.client.address, exitCode: ERR.expectedOwner });
        expectTx(await sendC(env.clientOwner, toNano('0.05'), wd()), { to: w.client.address, exitCode: ERR.lowMsgValue });
        const res = await sendC(env.clientOwner, toNano('0.2'), wd());
        expectTx(res, { to: w.client.address, success: true });
        assert.equal(msgsTo(res, env.clientOwner.address, OP.payout)[0].value, toNano('2'));
        const st = await clientState(env, w);
        assert.deepEqual([st.state, st.balance], [0, toNano('1')]);
        await env.assertConserved();
    });

    it('owner ops: change secret hash, increase stake, register; refusals 1010 / 1003', async () => {
        let res = await sendC(env.clientOwner, toNano('0.2'), ownerOp(OP.ownerClientChangeSecretHash).storeUint(0x5ecn, 256).storeAddress(env.clientOwner.address).endCell());
        expectTx(res, { to: w.client.address, success: true });
        assert.equal(parseClientProxyRequest(msgsTo(res, w.proxy.address, OP.clientProxyRequest)[0].body).state.secretHash, 0x5ecn);
        res = await sendC(env.clientOwner, toNano('0.2'), ownerOp(OP.ownerClientIncreaseStake).storeCoins(toNano('2')).storeAddress(env.clientOwner.address).endCell());
        expectTx(res, { to: w.client.address, success: true });
        res = await sendC(env.clientOwner, toNano('0.2'), ownerOp(OP.ownerClientIncreaseStake).storeCoins(toNano('2')).storeAddress(env.clientOwner.address).endCell());
        expectTx(res, { to: w.client.address, exitCode: ERR.lowMsgValue });
        const st = await clientState(env, w);
        assert.deepEqual([st.secretHash, st.stake], [0x5ecn, toNano('2')]);

        const nonOwner = [
            ownerOp(OP.ownerClientChangeSecretHash).storeUint(1n, 256).storeAddress(env.stranger.address),
            ownerOp(OP.ownerClientIncreaseStake).storeCoins(toNano('3')).storeAddress(env.stranger.address),
            ownerOp(OP.ownerClientRegister).storeUint(1n, 64).storeAddress(env.stranger.address),
            ownerOp(OP.ownerClientTopUpReopen).storeCoins(1n).storeAddress(env.stranger.address),
        ];
        for (const b of nonOwner) {
            expectTx(await sendC(env.stranger, toNano('0.5'), b.endCell()), { to: w.client.address, exitCode: ERR.expectedMessageFromOwner });
        }
        expectTx(await sendC(env.clientOwner, toNano('0.05'), ownerOp(OP.ownerClientRegister).storeUint(1n, 64).storeAddress(env.clientOwner.address).endCell()), { to: w.client.address, exitCode: ERR.lowMsgValue });
        expectTx(await sendC(env.clientOwner, toNano('0.2'), body(0x77777777, 1n).endCell()), { to: w.client.address, exitCode: ERR.unknownOp });
        expectTx(await sendC(env.stranger, toNano('0.2'), body(OP.doNotProcess, 1n).endCell()), { to: w.client.address, success: true });
        await env.assertConserved();
    });

    it('top_up_reopen returns a closing client to normal', async () => {
        await topUp(toNano('1'));
        await sendC(env.clientOwner, toNano('0.2'), ownerOp(OP.ownerClientRequestRefund).storeAddress(env.clientOwner.address).endCell());
        assert.equal((await clientState(env, w)).state, 1);
        const res = await sendC(env.clientOwner, toNano('2.2'), ownerOp(OP.ownerClientTopUpReopen).storeCoins(toNano('2')).storeAddress(env.clientOwner.address).endCell());
        expectTx(res, { to: w.client.address, success: true });
        const st = await clientState(env, w);
        assert.deepEqual([st.state, st.unlockTs, st.balance], [0, 0, toNano('3')]);
        await env.assertConserved();
    });

    it('refuses operations that would eat into the contract reserve (1001)', async () => {
        // a client contract deployed with too little value cannot pay for its notification
        const { CODE, clientDataCell, paramsCell, stateInit, DEFAULT_PARAMS } = await import('./helpers.mjs');
        const c = stateInit(CODE.client, clientDataCell({ owner: env.stranger.address, proxy: w.proxy.address, publicKey: w.proxyKey.publicKey, params: paramsCell(DEFAULT_PARAMS), stake: toNano('1') }));
        const res = await env.send(env.stranger, c.address, toNano('0.15'), body(OP.ownerClientRegister, 1n).storeUint(1n, 64).storeAddress(env.stranger.address).endCell(), { code: c.code, data: c.data });
        expectTx(res, { to: c.address, exitCode: ERR.lowSmcBalance });
        await env.assertConserved();
    });

    it('client and worker contracts refuse params of another struct_version (1008)', async () => {
        const { CODE, clientDataCell, workerDataCell, paramsCell, stateInit, DEFAULT_PARAMS } = await import('./helpers.mjs');
        const v2 = paramsCell({ ...DEFAULT_PARAMS, structVersion: 2 });
        const c = stateInit(CODE.client, clientDataCell({ owner: env.stranger.address, proxy: w.proxy.address, publicKey: w.proxyKey.publicKey, params: v2, stake: toNano('1') }));
        await env.send(env.stranger, c.address, toNano('1'), undefined, { code: c.code, data: c.data });
        const v = voucher({ op: OP.extClientChargeSigned, qid: 1n, tokens: 5n, expected: c.address, excessesTo: env.stranger.address, secretKey: w.proxyKey.secretKey });
        expectTx(await env.send(env.stranger, c.address, toNano('0.2'), v), { to: c.address, exitCode: ERR.storedDataDamaged });
        const wk = stateInit(CODE.worker, workerDataCell({ owner: env.stranger.address, proxy: w.proxy.address, publicKey: w.proxyKey.publicKey, params: v2 }));
        await env.send(env.stranger, wk.address, toNano('1'), undefined, { code: wk.code, data: wk.data });
        const pv = voucher({ op: OP.extWorkerPayoutRequestSigned, qid: 1n, tokens: 5n, expected: wk.address, excessesTo: env.stranger.address, secretKey: w.proxyKey.secretKey });
        expectTx(await env.send(env.stranger, wk.address, toNano('0.2'), pv), { to: wk.address, exitCode: ERR.storedDataDamaged });
        await env.assertConserved();
    });

    it('a message claiming to be from the client contract is refused by the proxy (1014)', async () => {
        const fake = beginCell().storeUint(OP.clientProxyRequest, 32).storeUint(1n, 64).storeAddress(env.clientOwner.address)
            .storeRef(beginCell().storeUint(0, 2).storeCoins(0).storeCoins(0).storeUint(0, 64).storeUint(0n, 256).endCell())
            .storeMaybeRef(beginCell().storeUint(OP.clientProxyRefundGranted, 32).storeCoins(toNano('0.2')).storeAddress(env.stranger.address).endCell())
            .endCell();
        await topUp(toNano('1'));
        const res = await env.send(env.stranger, w.proxy.address, toNano('0.5'), fake);
        expectTx(res, { to: w.proxy.address, exitCode: ERR.contractAddressMismatch });
        await env.assertConserved();
    });
});

// Proxy contract: stake, payout of earned balance, two-phase close (owner op,
// text command, signed vouchers), withdraw, refusals.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
    Env, OP, ERR, STORAGE, T0, deployWorld, proxyState, clientState, voucher, body, textBody, keyPair,
    expectTx, msgsTo, toNano, beginCell,
} from './helpers.mjs';

describe('proxy contract', () => {
    let env;
    let w;

    const sendP = (from, value, b) => env.send(from, w.proxy.address, value, b);
    const closeReq = (o = {}) => voucher({ op: OP.extProxyCloseRequestSigned, qid: 31n, expected: w.proxy.address, excessesTo: env.proxyOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const closeDone = (o = {}) => voucher({ op: OP.extProxyCloseCompleteRequestSigned, qid: 32n, expected: w.proxy.address, excessesTo: env.proxyOwner.address, secretKey: w.proxyKey.secretKey, ...o });
    const stakeBody = (grams, to = env.proxyOwner.address) => body(OP.extProxyIncreaseStake, 5n).storeCoins(grams).storeAddress(to).endCell();

    /** Earn commission: client deposit + worker payout of `tokens`. */
    async function earn(tokens) {
        await env.send(env.stranger, w.client.address, toNano('10.2'), body(OP.extClientTopUp, 1n).storeCoins(toNano('10')).storeAddress(env.stranger.address).endCell());
        const v = voucher({ op: OP.extWorkerPayoutRequestSigned, qid: 1n, tokens, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: w.proxyKey.secretKey });
        expectTx(await env.send(env.workerOwner, w.worker.address, toNano('0.5'), v), { to: w.proxy.address, success: true });
    }

    beforeEach(async () => {
        env = await Env.create();
        w = await deployWorld(env);
        await env.checkpoint();
    });

    it('stores the deployment data (C++ ProxyContract::init_data_cell layout)', async () => {
        const st = await proxyState(env, w);
        assert.ok(st.owner.equals(env.proxyOwner.address));
        assert.ok(st.root.equals(w.root.address));
        assert.equal(st.publicKey, BigInt('0x' + w.proxyKey.publicKey.toString('hex')));
        assert.deepEqual([st.state, st.balance, st.stake, st.unlockTs, st.paramsVersion], [0, 0n, 0n, 0, 1]);
    });

    it('anyone can increase the stake; too little value is refused (1003)', async () => {
        const bal0 = await env.balanceOf(w.proxy.address);
        let res = await sendP(env.stranger, toNano('2.2'), stakeBody(toNano('2'), env.stranger.address));
        expectTx(res, { to: w.proxy.address, success: true });
        assert.equal(msgsTo(res, env.stranger.address, OP.excesses).length, 1);
        assert.equal((await proxyState(env, w)).stake, toNano('2'));
        assert.equal(await env.balanceOf(w.proxy.address), bal0 + toNano('2'));
        res = await sendP(env.stranger, toNano('2.05'), stakeBody(toNano('2')));
        expectTx(res, { to: w.proxy.address, exitCode: ERR.lowMsgValue });
        assert.equal((await proxyState(env, w)).stake, toNano('2'));
        await env.assertConserved();
    });

    it('ext_proxy_payout_request pays the earned balance to the owner (anyone may trigger)', async () => {
        await earn(1_000_000n);
        const earned = 1_000_000n * 400n;
        assert.equal((await proxyState(env, w)).balance, earned);
        const bal0 = await env.balanceOf(w.proxy.address);
        expectTx(await sendP(env.stranger, toNano('0.05'), body(OP.extProxyPayoutRequest, 3n).storeAddress(env.stranger.address).endCell()), { to: w.proxy.address, exitCode: ERR.lowMsgValue });
        const res = await sendP(env.stranger, toNano('0.2'), body(OP.extProxyPayoutRequest, 3n).storeAddress(env.stranger.address).endCell());
        expectTx(res, { to: w.proxy.address, success: true });
        const paid = msgsTo(res, env.proxyOwner.address, OP.payout);
        assert.equal(paid.length, 1);
        assert.equal(paid[0].value, earned);
        assert.equal(msgsTo(res, env.stranger.address, OP.excesses).length, 1);
        assert.equal((await proxyState(env, w)).balance, 0n);
        assert.equal(await env.balanceOf(w.proxy.address), bal0 - earned);
        await env.assertConserved();
    });

    it('text "w" withdraws the balance to the owner; refusals 1010 / 1003 / 1013', async () => {
        await earn(500_000n);
        expectTx(await sendP(env.stranger, toNano('0.2'), textBody('w')), { to: w.proxy.address, exitCode: ERR.expectedMessageFromOwner });
        expectTx(await sendP(env.proxyOwner, toNano('0.05'), textBody('w')), { to: w.proxy.address, exitCode: ERR.lowMsgValue });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), textBody('x')), { to: w.proxy.address, exitCode: ERR.unknownTextOp });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), textBody('wx')), { to: w.proxy.address, exitCode: ERR.unknownTextOp });
        const bal0 = await env.balanceOf(w.proxy.address);
        const res = await sendP(env.proxyOwner, toNano('0.2'), textBody('w'));
        expectTx(res, { to: w.proxy.address, success: true });
        const paid = msgsTo(res, env.proxyOwner.address, OP.payout);
        assert.equal(paid.length, 1);
        assert.ok(paid[0].value > 500_000n * 400n && paid[0].value < 500_000n * 400n + toNano('0.2'), 'balance + change');
        assert.equal(await env.balanceOf(w.proxy.address), bal0 - 500_000n * 400n);
        assert.equal((await proxyState(env, w)).balance, 0n);
        await env.assertConserved();
    });

    it('owner_proxy_close starts closing (with and without query_id); signed completion after the delay', async () => {
        expectTx(await sendP(env.stranger, toNano('0.2'), body(OP.ownerProxyClose, 1n).storeAddress(env.stranger.address).endCell()), { to: w.proxy.address, exitCode: ERR.expectedMessageFromOwner });
        expectTx(await sendP(env.proxyOwner, toNano('0.05'), body(OP.ownerProxyClose, 1n).storeAddress(env.proxyOwner.address).endCell()), { to: w.proxy.address, exitCode: ERR.lowMsgValue });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), body(OP.ownerProxyClose, 1n).storeAddress(env.proxyOwner.address).storeUint(0, 1).endCell()), { to: w.proxy.address, exitCode: ERR.msgFormat });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), beginCell().storeUint(OP.ownerProxyClose, 32).storeUint(0, 100).endCell()), { to: w.proxy.address, exitCode: ERR.msgFormat });
        // C++ builder: op + send_excesses_to, no query_id
        const res = await sendP(env.proxyOwner, toNano('0.2'), beginCell().storeUint(OP.ownerProxyClose, 32).storeAddress(env.proxyOwner.address).endCell());
        expectTx(res, { to: w.proxy.address, success: true });
        assert.equal(msgsTo(res, env.proxyOwner.address, OP.excesses).length, 1);
        let st = await proxyState(env, w);
        assert.deepEqual([st.state, st.unlockTs], [1, T0 + 600]);
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), body(OP.ownerProxyClose, 1n).storeAddress(env.proxyOwner.address).endCell()), { to: w.proxy.address, exitCode: ERR.closed });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), textBody('c')), { to: w.proxy.address, exitCode: ERR.closed });
        expectTx(await sendP(env.stranger, toNano('0.2'), closeReq()), { to: w.proxy.address, exitCode: ERR.closed });

        env.chain.now = T0 + 599;
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone()), { to: w.proxy.address, exitCode: ERR.notUnlocked });
        env.chain.now = T0 + 600;
        const bal = await env.balanceOf(w.proxy.address);
        const done = await sendP(env.stranger, toNano('0.2'), closeDone());
        expectTx(done, { to: w.proxy.address, success: true });
        const paid = msgsTo(done, env.proxyOwner.address, OP.payout);
        assert.equal(paid.length, 1);
        assert.ok(paid[0].value > bal - STORAGE, 'everything but the storage reserve goes to the owner');
        assert.equal(await env.balanceOf(w.proxy.address), STORAGE);
        st = await proxyState(env, w);
        assert.deepEqual([st.state, st.balance, st.stake, st.unlockTs], [2, 0n, 0n, 0]);
        // closed: stake, payout and close ops are refused
        expectTx(await sendP(env.stranger, toNano('1.2'), stakeBody(toNano('1'))), { to: w.proxy.address, exitCode: ERR.closed });
        expectTx(await sendP(env.stranger, toNano('0.2'), body(OP.extProxyPayoutRequest, 3n).storeAddress(env.stranger.address).endCell()), { to: w.proxy.address, exitCode: ERR.closed });
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone()), { to: w.proxy.address, exitCode: ERR.closed });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), textBody('w')), { to: w.proxy.address, exitCode: ERR.closed });
        await env.assertConserved();
    });

    it('signed close request / completion: refusals 1007 / 1005 / 1015 / 1006 / 1003', async () => {
        const cases = [
            [closeReq({ secretKey: keyPair(9).secretKey }), ERR.badSignature],
            [closeReq({ payloadQid: 1n }), ERR.signedFormat],
            [closeReq({ payloadOp: OP.extProxyCloseCompleteRequestSigned }), ERR.signedFormat],
            [closeReq({ tokens: 5n }), ERR.signedFormat],
            [closeReq({ expected: w.client.address }), ERR.expectedMyAddress],
            [closeDone(), ERR.closed],
        ];
        for (const [b, code] of cases) {
            expectTx(await sendP(env.stranger, toNano('0.2'), b), { to: w.proxy.address, exitCode: code });
        }
        expectTx(await sendP(env.stranger, toNano('0.05'), closeReq()), { to: w.proxy.address, exitCode: ERR.lowMsgValue });
        const res = await sendP(env.stranger, toNano('0.2'), closeReq({ excessesTo: env.stranger.address }));
        expectTx(res, { to: w.proxy.address, success: true });
        assert.equal(msgsTo(res, env.stranger.address, OP.excesses).length, 1);
        assert.equal((await proxyState(env, w)).state, 1);
        env.chain.now = T0 + 700;
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone({ expected: w.worker.address })), { to: w.proxy.address, exitCode: ERR.expectedMyAddress });
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone({ secretKey: keyPair(9).secretKey })), { to: w.proxy.address, exitCode: ERR.badSignature });
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone()), { to: w.proxy.address, success: true });
        assert.equal((await proxyState(env, w)).state, 2);
        await env.assertConserved();
    });

    it('text "c" starts closing; a closing proxy returns new client deposits but still pays refunds and workers', async () => {
        await env.send(env.stranger, w.client.address, toNano('3.2'), body(OP.extClientTopUp, 1n).storeCoins(toNano('3')).storeAddress(env.stranger.address).endCell());
        expectTx(await sendP(env.stranger, toNano('0.2'), textBody('c')), { to: w.proxy.address, exitCode: ERR.expectedMessageFromOwner });
        expectTx(await sendP(env.proxyOwner, toNano('0.2'), textBody('c')), { to: w.proxy.address, success: true });
        assert.equal((await proxyState(env, w)).state, 1);
        // worker payout still works while closing
        const v = voucher({ op: OP.extWorkerPayoutRequestSigned, qid: 1n, tokens: 1000n, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: w.proxyKey.secretKey });
        expectTx(await env.send(env.workerOwner, w.worker.address, toNano('0.5'), v), { to: w.proxy.address, success: true });
        // client refunds still work while closing
        const wd = body(OP.ownerClientWithdraw, 1n).storeAddress(env.clientOwner.address).endCell();
        let r = await env.send(env.clientOwner, w.client.address, toNano('0.2'), wd);
        expectTx(r, { to: w.proxy.address, success: true });
        assert.equal(msgsTo(r, env.clientOwner.address, OP.payout)[0].value, toNano('2'));
        // a top-up while the proxy is closing is booked by the client contract but the
        // proxy hands the TON straight back to the client owner (reference behaviour)
        r = await env.send(env.stranger, w.client.address, toNano('1.2'), body(OP.extClientTopUp, 2n).storeCoins(toNano('1')).storeAddress(env.stranger.address).endCell());
        expectTx(r, { to: w.proxy.address, success: true });
        const back = msgsTo(r, env.clientOwner.address, OP.payout);
        assert.equal(back.length, 1);
        assert.ok(back[0].value < toNano('1') && back[0].value > toNano('0.99'), 'mode 0 payout: forward fee taken from it');
        assert.equal((await clientState(env, w)).balance, toNano('2'));
        await env.assertConserved();
    });

    it('a closed proxy refuses client refunds (granted 1006, forced 1006)', async () => {
        const sk = w.proxyKey.secretKey;
        await env.send(env.stranger, w.client.address, toNano('3.2'), body(OP.extClientTopUp, 1n).storeCoins(toNano('3')).storeAddress(env.stranger.address).endCell());
        await sendP(env.stranger, toNano('0.2'), closeReq());
        env.chain.now = T0 + 600;
        expectTx(await sendP(env.stranger, toNano('0.2'), closeDone()), { to: w.proxy.address, success: true });
        const rr = body(OP.ownerClientRequestRefund, 1n).storeAddress(env.clientOwner.address).endCell();
        let res = await env.send(env.clientOwner, w.client.address, toNano('0.2'), rr);
        expectTx(res, { to: w.proxy.address, exitCode: ERR.closed, op: OP.clientProxyRequest });
        env.chain.now = T0 + 1000;
        res = await env.send(env.clientOwner, w.client.address, toNano('0.2'), rr);
        expectTx(res, { to: w.proxy.address, exitCode: ERR.closed, op: OP.clientProxyRequest });
        const g = voucher({ op: OP.extClientGrantRefundSigned, qid: 1n, tokens: 0n, expected: w.client.address, excessesTo: env.stranger.address, secretKey: sk });
        expectTx(await env.send(env.stranger, w.client.address, toNano('0.2'), g), { to: w.client.address, exitCode: ERR.closed });
        await env.assertConserved();
    });

    it('ignores do_not_process (proxy_save_state anchors), empty bodies; unknown ops 1012', async () => {
        const anchor = beginCell().storeUint(OP.doNotProcess, 32).storeUint(9n, 64).storeUint(OP.proxySaveState, 32).storeInt(7, 32).storeUint(0xabcn, 256).endCell();
        const before = (await env.chain.getContract(w.proxy.address)).accountState.state.data;
        expectTx(await sendP(env.proxyWallet, 1n, anchor), { to: w.proxy.address });
        expectTx(await sendP(env.proxyWallet, toNano('0.1'), anchor), { to: w.proxy.address, success: true });
        expectTx(await sendP(env.stranger, toNano('0.1'), undefined), { to: w.proxy.address, success: true });
        expectTx(await sendP(env.stranger, toNano('0.2'), body(0x31337, 1n).endCell()), { to: w.proxy.address, exitCode: ERR.unknownOp });
        assert.ok((await env.chain.getContract(w.proxy.address)).accountState.state.data.equals(before));
        await env.assertConserved();
    });
});

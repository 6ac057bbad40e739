// End-to-end settlement: deposit, charge, worker payouts, commission payout,
// grant-refund, proxy close. Checks who receives what to the nanoTON, that
// value is conserved across the whole run, and that nothing is left behind.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Env, OP, STORAGE, T0, deployWorld, proxyState, clientState, workerState, voucher, body, expectTx, msgsTo, toNano } from './helpers.mjs';

describe('full settlement cycle', () => {
    it('pays every party exactly and leaves only storage reserves', async () => {
        const env = await Env.create();
        await env.checkpoint(); // includes the deployments
        const w = await deployWorld(env);
        const sk = w.proxyKey.secretKey;
        const payouts = { client: 0n, worker: 0n, proxyOwner: 0n };
        const collect = (res) => {
            for (const m of msgsTo(res, env.clientOwner.address, OP.payout)) payouts.client += m.value;
            for (const m of msgsTo(res, env.workerOwner.address, OP.payout)) payouts.worker += m.value;
            for (const m of msgsTo(res, env.proxyOwner.address, OP.payout)) payouts.proxyOwner += m.value;
            return res;
        };
        const ok = (res, to) => expectTx(res, { to, success: true });

        // proxy stakes 2 TON, client deposits 10 TON
        ok(await env.send(env.proxyWallet, w.proxy.address, toNano('2.2'), body(OP.extProxyIncreaseStake, 1n).storeCoins(toNano('2')).storeAddress(env.proxyWallet.address).endCell()), w.proxy.address);
        ok(await env.send(env.clientOwner, w.client.address, toNano('10.7'), body(OP.extClientTopUp, 2n).storeCoins(toNano('10')).storeAddress(env.clientOwner.address).endCell()), w.proxy.address);

        // proxy charges 3M tokens (price 1000) from its wallet
        ok(await env.send(env.proxyWallet, w.client.address, toNano('0.7'), voucher({ op: OP.extClientChargeSigned, qid: 3n, tokens: 3_000_000n, expected: w.client.address, excessesTo: env.proxyWallet.address, secretKey: sk })), w.client.address);
        assert.equal((await clientState(env, w)).balance, toNano('7'));

        // worker cashes 2M, then the last 3M (fee 600)
        collect(await env.send(env.workerOwner, w.worker.address, toNano('0.5'), voucher({ op: OP.extWorkerPayoutRequestSigned, qid: 4n, tokens: 2_000_000n, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: sk })));
        collect(await env.send(env.workerOwner, w.worker.address, toNano('0.5'), voucher({ op: OP.extWorkerLastPayoutRequestSigned, qid: 5n, tokens: 3_000_000n, expected: w.worker.address, excessesTo: env.workerOwner.address, secretKey: sk })));
        assert.equal(payouts.worker, 3_000_000n * 600n);
        assert.equal((await workerState(env, w)).state, 2);
        assert.equal((await proxyState(env, w)).balance, 3_000_000n * 400n);

        // commission to the proxy owner
        collect(await env.send(env.proxyWallet, w.proxy.address, toNano('0.2'), body(OP.extProxyPayoutRequest, 6n).storeAddress(env.proxyWallet.address).endCell()));
        assert.equal(payouts.proxyOwner, 3_000_000n * 400n);

        // client leaves: proxy grants the refund for the final count
        collect(await env.send(env.proxyWallet, w.client.address, toNano('0.7'), voucher({ op: OP.extClientGrantRefundSigned, qid: 7n, tokens: 3_000_000n, expected: w.client.address, excessesTo: env.proxyWallet.address, secretKey: sk })));
        assert.equal(payouts.client, toNano('7'));
        assert.equal((await clientState(env, w)).state, 2);

        // proxy closes: signed request, then completion after proxy_delay_before_close
        ok(await env.send(env.proxyWallet, w.proxy.address, toNano('1'), voucher({ op: OP.extProxyCloseRequestSigned, qid: 8n, expected: w.proxy.address, excessesTo: env.proxyWallet.address, secretKey: sk })), w.proxy.address);
        env.chain.now = T0 + 601;
        const before = await env.balanceOf(w.proxy.address);
        const sweep = collect(await env.send(env.proxyWallet, w.proxy.address, toNano('1'), voucher({ op: OP.extProxyCloseCompleteRequestSigned, qid: 9n, expected: w.proxy.address, excessesTo: env.proxyWallet.address, secretKey: sk })));
        const swept = msgsTo(sweep, env.proxyOwner.address, OP.payout)[0].value;
        // the deposit is fully accounted for: 10 = 7 refunded + 1.8 worker + 1.2 commission,
        // so the sweep is the stake plus the proxy's own reserve (deployment value minus fees)
        assert.ok(before >= toNano('2') && before < toNano('2.3'), `proxy holds stake + reserve, got ${before}`);
        assert.ok(swept > before - STORAGE, 'sweep takes everything but the storage reserve');

        for (const c of [w.client, w.worker, w.proxy]) {
            assert.equal(await env.balanceOf(c.address), STORAGE, 'only the storage reserve is left');
        }
        await env.assertConserved();
    });
});

// Cocoon wallet: signed external batches, every refusal code, owner commands.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import core from '@ton/core';
import {
    Env, CODE, OP, ERR, walletDataCell, stateInit, keyPair, body, textBody, expectTx, msgsTo,
    toNano, beginCell, sign, storeMessageRelaxed, relaxedInternal, T0,
} from './helpers.mjs';

const { external } = core;

function innerMsg(to, value, bounce = false) {
    return beginCell().store(storeMessageRelaxed(relaxedInternal({ to, value, bounce, body: beginCell().storeUint(0, 32).storeStringTail('hi').endCell() }))).endCell();
}

/** External body (spec §6.3): signature || subwallet valid_until seqno (mode ^msg)*. */
function externalBody({ key, seqno, subwallet = 0, validUntil = T0 + 3600, msgs = [], signWith }) {
    const b = beginCell().storeUint(subwallet, 32).storeUint(validUntil, 32).storeUint(seqno, 32);
    for (const [mode, m] of msgs) b.storeUint(mode, 8).storeRef(m);
    const unsigned = b.endCell();
    const sig = sign(unsigned.hash(), (signWith ?? key).secretKey);
    return beginCell().storeBuffer(sig).storeSlice(unsigned.beginParse()).endCell();
}

describe('cocoon wallet', () => {
    let env;
    let wallet;
    const key = keyPair(3);

    async function sendExternal(b) {
        const res = await env.chain.sendMessage(external({ to: wallet.address, body: b }));
        env.record(res);
        return res;
    }

    async function expectRejected(b, code) {
        await assert.rejects(sendExternal(b), (e) => {
            assert.equal(e.exitCode, code);
            return true;
        });
    }

    const seqno = async () => (await env.get(wallet.address, 'seqno')).readNumber();

    beforeEach(async () => {
        env = await Env.create();
        wallet = stateInit(CODE.wallet, walletDataCell({ publicKey: key.publicKey, owner: env.proxyOwner.address }));
        await env.send(env.proxyOwner, wallet.address, toNano('5'), undefined, { code: wallet.code, data: wallet.data });
        await env.checkpoint();
    });

    it('get methods expose the stored layout', async () => {
        assert.equal(await seqno(), 0);
        assert.equal((await env.get(wallet.address, 'get_public_key')).readBigNumber(), BigInt('0x' + key.publicKey.toString('hex')));
        assert.ok((await env.get(wallet.address, 'get_owner_address')).readAddress().equals(env.proxyOwner.address));
        assert.equal((await env.get(wallet.address, 'get_subwallet_id')).readNumber(), 0);
        assert.equal((await env.get(wallet.address, 'get_status')).readNumber(), 0);
    });

    it('sends a signed batch of up to four messages and bumps seqno', async () => {
        const dests = [env.stranger, env.clientOwner, env.workerOwner, env.rootOwner];
        const before = await Promise.all(dests.map((d) => env.balanceOf(d.address)));
        const res = await sendExternal(externalBody({
            key, seqno: 0,
            msgs: [[0, innerMsg(dests[0].address, toNano('0.5'))], [1, innerMsg(dests[1].address, toNano('0.25'))],
                [0, innerMsg(dests[2].address, toNano('0.125'))], [1, innerMsg(dests[3].address, 1n)]],
        }));
        expectTx(res, { to: wallet.address, success: true });
        const modes = [0, 1, 0, 1];
        for (const [i, v] of [toNano('0.5'), toNano('0.25'), toNano('0.125'), 1n].entries()) {
            const got = msgsTo(res, dests[i].address);
            assert.equal(got.length, 1);
            if (modes[i] === 1) {
                assert.equal(got[0].value, v, `message ${i} value (fees paid separately)`);
            } else {
                assert.ok(got[0].value < v && got[0].value > v - toNano('0.01'), `message ${i} value (fees from value)`);
            }
        }
        assert.equal(await seqno(), 1);
        // a second batch with the next seqno works, the old one is a replay
        await sendExternal(externalBody({ key, seqno: 1, msgs: [[1, innerMsg(env.stranger.address, 1n)]] }));
        assert.equal(await seqno(), 2);
        await expectRejected(externalBody({ key, seqno: 0, msgs: [] }), ERR.walletSeqno);
        await env.assertConserved();
        assert.ok(before.length === 4);
    });

    it('refuses expired (1030), wrong seqno (1032), wrong subwallet (1033), forged (1034)', async () => {
        await expectRejected(externalBody({ key, seqno: 0, validUntil: T0 }), ERR.walletExpired);
        await expectRejected(externalBody({ key, seqno: 1 }), ERR.walletSeqno);
        await expectRejected(externalBody({ key, seqno: 0, subwallet: 1 }), ERR.walletSubwallet);
        await expectRejected(externalBody({ key, seqno: 0, signWith: keyPair(4) }), ERR.walletSignature);
        // tampering with a signed body breaks the signature
        const good = externalBody({ key, seqno: 0, msgs: [[0, innerMsg(env.stranger.address, toNano('1'))]] });
        const s = good.beginParse();
        const sig = s.loadBuffer(64);
        const tampered = beginCell().storeBuffer(sig).storeUint(0, 32).storeUint(T0 + 3600, 32).storeUint(0, 32)
            .storeUint(0, 8).storeRef(innerMsg(env.stranger.address, toNano('2'))).endCell();
        await expectRejected(tampered, ERR.walletSignature);
        assert.equal(await seqno(), 0);
    });

    it('skips a message it cannot pay for but still consumes the seqno (no replay)', async () => {
        // mode 0 with 1 nanoTON cannot cover the forward fee
        const b = externalBody({ key, seqno: 0, msgs: [[0, innerMsg(env.stranger.address, 1n)], [1, innerMsg(env.clientOwner.address, toNano('0.3'))]] });
        const res = await sendExternal(b);
        expectTx(res, { to: wallet.address, success: true });
        assert.equal(msgsTo(res, env.stranger.address).length, 0, 'unpayable message skipped');
        assert.equal(msgsTo(res, env.clientOwner.address).length, 1, 'the rest of the batch is sent');
        assert.equal(await seqno(), 1);
        await expectRejected(b, ERR.walletSeqno);
        await env.assertConserved();
    });

    it('refuses to work below 2 TON (1035)', async () => {
        const res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'), textBody('w'));
        expectTx(res, { to: wallet.address, success: true });
        await expectRejected(externalBody({ key, seqno: 0 }), ERR.walletLowBalance);
    });

    it('owner can block ("b") and unblock ("u"); blocked wallet refuses externals (1031)', async () => {
        let res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'), textBody('b'));
        expectTx(res, { to: wallet.address, success: true });
        assert.equal((await env.get(wallet.address, 'get_status')).readNumber(), 1);
        await expectRejected(externalBody({ key, seqno: 0 }), ERR.walletBlocked);
        res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'), textBody('u'));
        expectTx(res, { to: wallet.address, success: true });
        await sendExternal(externalBody({ key, seqno: 0 }));
        assert.equal(await seqno(), 1);
        await env.assertConserved();
    });

    it('owner withdraw ("w") returns everything but at most 0.01 TON', async () => {
        const res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'), textBody('w'));
        expectTx(res, { to: wallet.address, success: true });
        const back = msgsTo(res, env.proxyOwner.address);
        assert.equal(back.length, 1);
        assert.ok(back[0].value > toNano('5'));
        assert.ok((await env.balanceOf(wallet.address)) <= toNano('0.01'));
        await env.assertConserved();
    });

    it('owner_wallet_send_message makes the wallet send the given message', async () => {
        const res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'),
            body(OP.ownerWalletSendMessage, 5n).storeUint(1, 8).storeRef(innerMsg(env.stranger.address, toNano('1.5'))).endCell());
        expectTx(res, { to: wallet.address, success: true });
        const got = msgsTo(res, env.stranger.address);
        assert.equal(got.length, 1);
        assert.equal(got[0].value, toNano('1.5'));
        await env.assertConserved();
    });

    it('refuses non-owners (1040) and unknown commands (1041); ignores excesses/payout/do_not_process', async () => {
        for (const b of [textBody('w'), textBody('b'), body(OP.ownerWalletSendMessage).storeUint(0, 8).storeRef(innerMsg(env.stranger.address, 1n)).endCell()]) {
            const res = await env.send(env.stranger, wallet.address, toNano('0.1'), b);
            expectTx(res, { to: wallet.address, exitCode: ERR.walletNotOwner });
        }
        for (const b of [textBody('x'), textBody('ww'), body(0x12345678).endCell()]) {
            const res = await env.send(env.proxyOwner, wallet.address, toNano('0.1'), b);
            expectTx(res, { to: wallet.address, exitCode: ERR.walletUnknownText });
        }
        for (const op of [OP.excesses, OP.payout, OP.doNotProcess]) {
            const res = await env.send(env.stranger, wallet.address, toNano('0.1'), body(op, 1n).endCell());
            expectTx(res, { to: wallet.address, success: true });
        }
        assert.equal((await env.get(wallet.address, 'get_status')).readNumber(), 0);
        await env.assertConserved();
    });
});

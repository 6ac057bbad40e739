// Root contract: every admin op, owner checks, version/params_version bumps,
// the C++ reader's data-cell order, value conservation.
import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
    Env, CODE, OP, ERR, DEFAULT_PARAMS, paramsCell, rootDataCell, stateInit, proxyInfo, body, expectTx, msgsTo,
    toNano, beginCell, Dictionary, TupleBuilder, STORAGE, T0, keyPair, keyManagerCell, sign,
} from './helpers.mjs';

const H1 = 0x1111n;
const H2 = 0x2222n;
const K1 = 0xaaaan;
const K2 = 0xbbbbn;
const KM = keyPair(9);
const KM_PUBLIC = BigInt('0x' + KM.publicKey.toString('hex'));

/** `root_add_public_key_signed`: §5.4 wrapper around `op qid public_key key_type expire_at`. */
function signedKey({ key, keyType = 1, expireAt, excessesTo, secretKey = KM.secretKey, qid = 5n, payloadQid = qid, extra = false }) {
    const pb = beginCell().storeUint(OP.rootAddPublicKeySigned, 32).storeUint(payloadQid, 64)
        .storeUint(key, 256).storeUint(keyType, 8).storeUint(expireAt, 32);
    if (extra) pb.storeUint(0, 1);
    const payload = pb.endCell();
    return beginCell().storeUint(OP.rootAddPublicKeySigned, 32).storeUint(qid, 64).storeAddress(excessesTo)
        .storeBuffer(sign(payload.hash(), secretKey)).storeRef(payload).endCell();
}

async function keyValid(env, root, key) {
    const args = new TupleBuilder();
    args.writeNumber(key);
    return (await env.get(root.address, 'public_key_is_valid', args.build())).readBoolean();
}

async function rootData(env, root) {
    const r = await env.get(root.address, 'get_cocoon_data');
    return {
        version: r.readNumber(), lastProxySeqno: r.readNumber(), paramsVersion: r.readNumber(), uniqueId: r.readNumber(),
        isTest: r.readBoolean(), price: r.readBigNumber(), fee: r.readBigNumber(), minProxyStake: r.readBigNumber(),
        minClientStake: r.readBigNumber(), owner: r.readAddress(),
    };
}

async function curParams(env, root) {
    const r = await env.get(root.address, 'get_cur_params');
    const out = [];
    for (let i = 0; i < 16; i++) out.push(r.readBigNumber());
    return out;
}

async function hashValid(env, root, method, h) {
    const args = new TupleBuilder();
    args.writeNumber(h);
    return (await env.get(root.address, method, args.build())).readBoolean();
}

async function rawRootData(env, root) {
    const st = (await env.chain.getContract(root.address)).accountState;
    return st.state.data;
}

/** Dictionary value stored inline (the rest of the leaf slice), returned as a cell. */
const Inline = {
    serialize: (src, b) => b.storeSlice(src.beginParse()),
    parse: (s) => s.asCell(),
};

/** Parses the root data exactly as RootContractConfig::load_from_state does (spec §6.1). */
function parseLikeCpp(dataCell) {
    const s = dataCell.beginParse();
    const owner = s.loadAddress();
    const version = s.loadUint(32);
    const d = s.loadRef().beginParse();
    const params = s.loadRef();
    const u256 = Dictionary.Keys.BigUint(256);
    const proxyHashes = d.loadDict(u256, Inline);
    const registered = d.loadDict(Dictionary.Keys.Uint(32), Inline);
    const lastProxySeqno = d.loadUint(32);
    const workerHashes = d.loadDict(u256, Inline);
    const modelHashes = d.loadDict(u256, Inline);
    assert.equal(d.remainingBits, 0);
    assert.equal(d.remainingRefs, 0);
    // struct_version >= 4: key-manager cell; >= 5: verified keys (spec 9060ce5 §6.1)
    const k = s.loadRef().beginParse();
    const publicKeys = k.loadDict(u256, Inline);
    const kmPublicKey = k.loadUintBig(256);
    const kmImageHash = k.loadUintBig(256);
    assert.equal(k.loadUint(1), 0);
    const kmAddr = k.loadBuffer(k.loadUint(7)).toString('utf8');
    assert.equal(k.remainingBits, 0);
    assert.equal(k.remainingRefs, 0);
    const v = s.loadRef().beginParse();
    for (let i = 0; i < 3; i++) v.loadDict(u256, Inline);
    assert.equal(v.remainingBits, 0);
    assert.equal(v.remainingRefs, 0);
    assert.equal(s.remainingBits, 0);
    assert.equal(s.remainingRefs, 0);
    const keys = new Map();
    for (const [key, cell] of publicKeys) {
        const ks = cell.beginParse();
        assert.equal(ks.remainingBits, 40, 'PublicKeyInfo is exactly 40 bits');
        assert.equal(ks.remainingRefs, 0);
        keys.set(key, { keyType: ks.loadUint(8), expireAt: ks.loadUint(32) });
    }
    return { owner, version, params, proxyHashes, registered, lastProxySeqno, workerHashes, modelHashes, keys, kmPublicKey, kmImageHash, kmAddr };
}

function readProxyInfo(cell) {
    const s = cell.beginParse();
    assert.equal(s.loadUint(1), 0);
    const len = s.loadUint(7);
    return s.loadBuffer(len).toString('utf8');
}

describe('root', () => {
    let env;
    let root;
    const send = (b, from = env.rootOwner, value = toNano('0.5')) => env.send(from, root.address, value, b);

    beforeEach(async () => {
        env = await Env.create();
        root = stateInit(CODE.root, rootDataCell({
            owner: env.rootOwner.address,
            params: paramsCell(DEFAULT_PARAMS, { proxy: CODE.proxy, worker: CODE.worker, client: CODE.client }),
        }));
        await env.send(env.rootOwner, root.address, toNano('1'), undefined, { code: root.code, data: root.data });
        await env.checkpoint();
    });

    it('exposes the deployed state through get methods', async () => {
        const d = await rootData(env, root);
        assert.equal(d.version, 0);
        assert.equal(d.paramsVersion, 1);
        assert.equal(d.uniqueId, 13);
        assert.equal(d.isTest, true);
        assert.equal(d.price, 1000n);
        assert.equal(d.fee, 600n);
        assert.ok(d.owner.equals(env.rootOwner.address));
        const p = await curParams(env, root);
        assert.deepEqual(p.slice(0, 13), [1n, 13n, -1n, 1000n, 600n, 10000n, 10000n, 10000n, 10000n, 600n, 300n, toNano('1'), toNano('1')]);
        assert.equal(p[13], BigInt('0x' + CODE.proxy.hash().toString('hex')));
        assert.equal(p[14], BigInt('0x' + CODE.worker.hash().toString('hex')));
        assert.equal(p[15], BigInt('0x' + CODE.client.hash().toString('hex')));
    });

    it('adds and deletes worker, proxy and model hashes; each op bumps version and returns excesses', async () => {
        const balance0 = await env.balanceOf(root.address);
        const cases = [
            [OP.rootAddWorkerType, OP.rootDelWorkerType, 'worker_hash_is_valid'],
            [OP.rootAddProxyType, OP.rootDelProxyType, 'proxy_hash_is_valid'],
            [OP.rootAddModelType, OP.rootDelModelType, 'model_hash_is_valid'],
        ];
        let version = 0;
        for (const [add, del, getter] of cases) {
            let res = await send(body(add, 7n).storeUint(H1, 256).endCell());
            expectTx(res, { to: root.address, success: true });
            const ex = msgsTo(res, env.rootOwner.address, OP.excesses);
            assert.equal(ex.length, 1, 'excesses to the owner');
            assert.ok(ex[0].value > toNano('0.49'));
            await send(body(add, 8n).storeUint(H2, 256).endCell());
            assert.equal(await hashValid(env, root, getter, H1), true);
            assert.equal(await hashValid(env, root, getter, H2), true);
            res = await send(body(del, 9n).storeUint(H1, 256).endCell());
            expectTx(res, { to: root.address, success: true });
            assert.equal(await hashValid(env, root, getter, H1), false);
            assert.equal(await hashValid(env, root, getter, H2), true);
            version += 3;
            assert.equal((await rootData(env, root)).version, version);
        }
        assert.equal((await rootData(env, root)).paramsVersion, 1, 'hash changes do not touch params_version');
        assert.equal(await env.balanceOf(root.address), balance0, 'root keeps exactly its balance');
        await env.assertConserved();
    });

    it('registers, updates and unregisters proxies (seqno grows, C++ ProxyInfo format)', async () => {
        let res = await send(body(OP.rootRegisterProxy, 1n).storeBuilder(proxyInfo('1.2.3.4:8888 1.2.3.4:9999')).endCell());
        expectTx(res, { to: root.address, success: true });
        await send(body(OP.rootRegisterProxy, 2n).storeBuilder(proxyInfo('5.6.7.8:1')).endCell());
        assert.equal((await env.get(root.address, 'last_proxy_seqno')).readNumber(), 2);

        res = await send(body(OP.rootUpdateProxy, 3n).storeUint(1, 32).storeBuilder(proxyInfo('9.9.9.9:1 9.9.9.9:2')).endCell());
        expectTx(res, { to: root.address, success: true });
        let cpp = parseLikeCpp(await rawRootData(env, root));
        assert.equal(readProxyInfo(cpp.registered.get(1)), '9.9.9.9:1 9.9.9.9:2');
        assert.equal(readProxyInfo(cpp.registered.get(2)), '5.6.7.8:1');

        res = await send(body(OP.rootUnregisterProxy, 4n).storeUint(1, 32).endCell());
        expectTx(res, { to: root.address, success: true });
        const args = new TupleBuilder();
        args.writeNumber(1);
        assert.equal((await env.get(root.address, 'get_proxy_info', args.build())).readCellOpt(), null);
        cpp = parseLikeCpp(await rawRootData(env, root));
        assert.equal(cpp.registered.size, 1);
        assert.equal(cpp.lastProxySeqno, 2, 'unregister does not reuse seqnos');

        // a new registration takes seqno 3
        await send(body(OP.rootRegisterProxy, 5n).storeBuilder(proxyInfo('a:1')).endCell());
        cpp = parseLikeCpp(await rawRootData(env, root));
        assert.equal(cpp.lastProxySeqno, 3);
        assert.equal(readProxyInfo(cpp.registered.get(3)), 'a:1');
        assert.equal(cpp.version, 5);
        await env.assertConserved();
    });

    it('refuses malformed proxy info (1004) and updates of unknown seqnos (2000)', async () => {
        const bad = [
            beginCell().storeUint(1, 1).storeUint(3, 7).storeBuffer(Buffer.from('a:1')), // type 1
            beginCell().storeUint(0, 1).storeUint(4, 7).storeBuffer(Buffer.from('a:1')), // short
            beginCell().storeUint(0, 1).storeUint(2, 7).storeBuffer(Buffer.from('a:1')), // long
            beginCell().storeUint(0, 1).storeUint(0, 7).storeRef(beginCell().endCell()), // ref
        ];
        for (const b of bad) {
            const res = await send(body(OP.rootRegisterProxy, 1n).storeBuilder(b).endCell());
            expectTx(res, { to: root.address, exitCode: ERR.msgFormat });
            const res2 = await send(body(OP.rootUpdateProxy, 1n).storeUint(1, 32).storeBuilder(b).endCell());
            expectTx(res2, { to: root.address, exitCode: ERR.msgFormat });
        }
        const res = await send(body(OP.rootUpdateProxy, 1n).storeUint(77, 32).storeBuilder(proxyInfo('a:1')).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.unknownProxy });
        assert.equal((await rootData(env, root)).version, 0, 'refused ops change nothing');
        await env.assertConserved();
    });

    it('changes price and params, bumping params_version', async () => {
        let res = await send(body(OP.rootChangePrice, 1n).storeCoins(3000n).storeCoins(2000n).endCell());
        expectTx(res, { to: root.address, success: true });
        let d = await rootData(env, root);
        assert.deepEqual([d.version, d.paramsVersion, d.price, d.fee], [1, 2, 3000n, 2000n]);

        res = await send(body(OP.rootChangePrice, 1n).storeCoins(3000n).storeCoins(3001n).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.msgFormat });

        res = await send(body(OP.rootChangeParams, 2n).storeCoins(50n).storeCoins(20n).storeUint(3600, 32).storeUint(1800, 32)
            .storeCoins(toNano('5')).storeCoins(toNano('2')).endCell());
        expectTx(res, { to: root.address, success: true });
        const p = await curParams(env, root);
        assert.deepEqual(p.slice(0, 13), [3n, 13n, -1n, 50n, 20n, 10000n, 10000n, 10000n, 10000n, 3600n, 1800n, toNano('5'), toNano('2')]);
        res = await send(body(OP.rootChangeParams, 2n).storeCoins(50n).storeCoins(51n).storeUint(1, 32).storeUint(1, 32)
            .storeCoins(1n).storeCoins(1n).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.msgFormat });
        d = await rootData(env, root);
        assert.deepEqual([d.version, d.paramsVersion], [2, 3]);

        // the stored params cell is a struct_version 5 CocoonParams with all three codes
        const cpp = parseLikeCpp(await rawRootData(env, root));
        const ps = cpp.params.beginParse();
        assert.equal(ps.loadUint(8), 5);
        assert.equal(ps.loadUint(32), 3);
        await env.assertConserved();
    });

    it('upgrades contract codes (params_version bump) and its own code', async () => {
        const newProxy = beginCell().storeUint(1, 8).endCell();
        const newWorker = beginCell().storeUint(2, 8).endCell();
        const newClient = beginCell().storeUint(3, 8).endCell();
        let res = await send(body(OP.rootUpgradeContracts, 1n).storeRef(newProxy).storeRef(newWorker).storeRef(newClient).endCell());
        expectTx(res, { to: root.address, success: true });
        const p = await curParams(env, root);
        assert.equal(p[0], 2n);
        assert.equal(p[13], BigInt('0x' + newProxy.hash().toString('hex')));
        assert.equal(p[14], BigInt('0x' + newWorker.hash().toString('hex')));
        assert.equal(p[15], BigInt('0x' + newClient.hash().toString('hex')));

        res = await send(body(OP.rootUpgrade, 2n).storeRef(CODE.wallet).endCell());
        expectTx(res, { to: root.address, success: true });
        const st = (await env.chain.getContract(root.address)).accountState;
        assert.ok(st.state.code.equals(CODE.wallet), 'code replaced');
        const cpp = parseLikeCpp(st.state.data);
        assert.equal(cpp.version, 2, 'upgrade bumps version, keeps data');
        await env.assertConserved();
    });

    it('upgrade_full replaces data and code verbatim', async () => {
        const newData = rootDataCell({ owner: env.stranger.address, version: 77, lastProxySeqno: 5, params: paramsCell() });
        const res = await send(body(OP.rootUpgradeFull, 1n).storeRef(newData).storeRef(CODE.root).endCell());
        expectTx(res, { to: root.address, success: true });
        assert.equal(msgsTo(res, env.rootOwner.address, OP.excesses).length, 1);
        const d = await rootData(env, root);
        assert.equal(d.version, 77);
        assert.equal(d.lastProxySeqno, 5);
        assert.ok(d.owner.equals(env.stranger.address));
        await env.assertConserved();
    });

    it('reset clears every dictionary but keeps the proxy seqno counter', async () => {
        await send(body(OP.rootAddWorkerType, 1n).storeUint(H1, 256).endCell());
        await send(body(OP.rootAddProxyType, 1n).storeUint(H1, 256).endCell());
        await send(body(OP.rootAddModelType, 1n).storeUint(H1, 256).endCell());
        await send(body(OP.rootRegisterProxy, 1n).storeBuilder(proxyInfo('a:1')).endCell());
        const res = await send(body(OP.rootReset, 1n).endCell());
        expectTx(res, { to: root.address, success: true });
        const cpp = parseLikeCpp(await rawRootData(env, root));
        assert.equal(cpp.proxyHashes.size + cpp.workerHashes.size + cpp.modelHashes.size + cpp.registered.size, 0);
        assert.equal(cpp.lastProxySeqno, 1);
        assert.equal(cpp.version, 5);
        await env.assertConserved();
    });

    it('changes owner: the old owner is refused afterwards', async () => {
        let res = await send(body(OP.rootChangeOwner, 1n).storeAddress(env.stranger.address).endCell());
        expectTx(res, { to: root.address, success: true });
        res = await send(body(OP.rootAddWorkerType, 1n).storeUint(H1, 256).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.expectedMessageFromOwner });
        res = await send(body(OP.rootAddWorkerType, 1n).storeUint(H1, 256).endCell(), env.stranger);
        expectTx(res, { to: root.address, success: true });
        assert.ok((await rootData(env, root)).owner.equals(env.stranger.address));
        await env.assertConserved();
    });

    it('refuses every admin op from a non-owner (1010) and bounces the value back', async () => {
        const bodies = [
            body(OP.rootAddWorkerType).storeUint(H1, 256), body(OP.rootDelWorkerType).storeUint(H1, 256),
            body(OP.rootAddProxyType).storeUint(H1, 256), body(OP.rootDelProxyType).storeUint(H1, 256),
            body(OP.rootAddModelType).storeUint(H1, 256), body(OP.rootDelModelType).storeUint(H1, 256),
            body(OP.rootRegisterProxy).storeBuilder(proxyInfo('a:1')), body(OP.rootUnregisterProxy).storeUint(1, 32),
            body(OP.rootUpdateProxy).storeUint(1, 32).storeBuilder(proxyInfo('a:1')),
            body(OP.rootChangePrice).storeCoins(1).storeCoins(1),
            body(OP.rootChangeParams).storeCoins(1).storeCoins(1).storeUint(1, 32).storeUint(1, 32).storeCoins(1).storeCoins(1),
            body(OP.rootUpgradeContracts).storeRef(CODE.proxy).storeRef(CODE.worker).storeRef(CODE.client),
            body(OP.rootUpgrade).storeRef(CODE.wallet), body(OP.rootReset),
            body(OP.rootUpgradeFull).storeRef(beginCell().endCell()).storeRef(CODE.wallet),
            body(OP.rootChangeOwner).storeAddress(env.stranger.address),
            body(OP.rootAddPublicKey).storeUint(K1, 256).storeUint(1, 8).storeUint(T0 + 100, 32),
            body(OP.rootChangeKeyManager).storeUint(K1, 256).storeUint(H1, 256).storeBuilder(proxyInfo('a:1')),
        ];
        const before = await rawRootData(env, root);
        for (const b of bodies) {
            const res = await send(b.endCell(), env.stranger);
            expectTx(res, { to: root.address, exitCode: ERR.expectedMessageFromOwner });
            assert.equal(msgsTo(res, env.stranger.address).length, 1, 'bounced back to the sender');
        }
        assert.ok((await rawRootData(env, root)).equals(before));
        await env.assertConserved();
    });

    it('refuses to work with params of another struct_version (1008)', async () => {
        const old = paramsCell({ ...DEFAULT_PARAMS, structVersion: 2 });
        const r2 = stateInit(CODE.root, rootDataCell({ owner: env.rootOwner.address, params: old }));
        const res = await env.send(env.rootOwner, r2.address, toNano('1'), body(OP.rootAddWorkerType, 1n).storeUint(H1, 256).endCell(), { code: r2.code, data: r2.data });
        expectTx(res, { to: r2.address, exitCode: ERR.storedDataDamaged });
        await env.assertConserved();
    });

    it('registers public keys from the owner and from the key manager, dropping expired ones (struct_version 5)', async () => {
        // the owner names the key manager: key, image hash, address
        let res = await send(body(OP.rootChangeKeyManager, 1n).storeUint(KM_PUBLIC, 256).storeUint(H1, 256).storeBuilder(proxyInfo('10.0.0.1:13001')).endCell());
        expectTx(res, { to: root.address, success: true });
        let cpp = parseLikeCpp(await rawRootData(env, root));
        assert.deepEqual([cpp.kmPublicKey, cpp.kmImageHash, cpp.kmAddr, cpp.version], [KM_PUBLIC, H1, '10.0.0.1:13001', 1]);
        const km = (await env.get(root.address, 'get_key_manager'));
        assert.deepEqual([km.readBigNumber(), km.readBigNumber(), km.readNumber()], [KM_PUBLIC, H1, 0]);

        // the owner adds a key directly
        res = await send(body(OP.rootAddPublicKey, 2n).storeUint(K1, 256).storeUint(1, 8).storeUint(T0 + 100, 32).endCell());
        expectTx(res, { to: root.address, success: true });
        assert.equal(await keyValid(env, root, K1), true);

        // anyone may deliver a key-manager-signed key; excesses go where the wrapper says
        const balance0 = await env.balanceOf(root.address);
        res = await env.send(env.stranger, root.address, toNano('0.4'), signedKey({ key: K2, expireAt: T0 + 86400, excessesTo: env.workerOwner.address }));
        expectTx(res, { to: root.address, success: true });
        assert.equal(msgsTo(res, env.workerOwner.address, OP.excesses).length, 1, 'excesses to send_excesses_to');
        assert.equal(await env.balanceOf(root.address), balance0, 'root keeps exactly its balance');
        cpp = parseLikeCpp(await rawRootData(env, root));
        assert.deepEqual(cpp.keys.get(K2), { keyType: 1, expireAt: T0 + 86400 });
        assert.equal(cpp.version, 3);
        assert.equal((await rootData(env, root)).paramsVersion, 1, 'key changes do not touch params_version');

        // K1 expires; it is no longer valid, and the next registration removes it
        env.chain.now = T0 + 101;
        assert.equal(await keyValid(env, root, K1), false);
        res = await env.send(env.stranger, root.address, toNano('0.4'), signedKey({ key: H2, expireAt: T0 + 200, excessesTo: env.stranger.address, qid: 6n }));
        expectTx(res, { to: root.address, success: true });
        cpp = parseLikeCpp(await rawRootData(env, root));
        assert.deepEqual([...cpp.keys.keys()].sort(), [H2, K2].sort(), 'the expired key is gone');
        // re-registering a key updates it in place
        res = await send(body(OP.rootAddPublicKey, 3n).storeUint(H2, 256).storeUint(2, 8).storeUint(T0 + 300, 32).endCell());
        expectTx(res, { to: root.address, success: true });
        cpp = parseLikeCpp(await rawRootData(env, root));
        assert.deepEqual(cpp.keys.get(H2), { keyType: 2, expireAt: T0 + 300 });
        await env.assertConserved();
    });

    it('refuses bad key registrations: wrong signer (1007), mismatched or malformed payload (1005), expired key (1000), bad address (1004)', async () => {
        await send(body(OP.rootChangeKeyManager, 1n).storeUint(KM_PUBLIC, 256).storeUint(H1, 256).storeBuilder(proxyInfo('10.0.0.1:13001')).endCell());
        const before = await rawRootData(env, root);
        const to = env.stranger.address;
        const cases = [
            [signedKey({ key: K1, expireAt: T0 + 10, excessesTo: to, secretKey: keyPair(10).secretKey }), ERR.badSignature],
            [signedKey({ key: K1, expireAt: T0 + 10, excessesTo: to, payloadQid: 99n }), ERR.signedFormat],
            [signedKey({ key: K1, expireAt: T0 + 10, excessesTo: to, extra: true }), ERR.signedFormat],
            [signedKey({ key: K1, expireAt: T0 - 1, excessesTo: to }), ERR.oldMessage],
        ];
        for (const [b, code] of cases) {
            const res = await env.send(env.stranger, root.address, toNano('0.4'), b);
            expectTx(res, { to: root.address, exitCode: code });
        }
        let res = await send(body(OP.rootAddPublicKey, 2n).storeUint(K1, 256).storeUint(1, 8).storeUint(T0 - 1, 32).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.oldMessage });
        res = await send(body(OP.rootChangeKeyManager, 2n).storeUint(K1, 256).storeUint(H1, 256).storeUint(1, 1).storeUint(3, 7).storeBuffer(Buffer.from('a:1')).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.msgFormat });
        assert.ok((await rawRootData(env, root)).equals(before), 'refused registrations change nothing');
        // with no key manager key set (zero), no signature is accepted
        const fresh = stateInit(CODE.root, rootDataCell({ owner: env.rootOwner.address, version: 1, params: paramsCell(), keyManager: keyManagerCell() }));
        res = await env.send(env.rootOwner, fresh.address, toNano('1'), signedKey({ key: K1, expireAt: T0 + 10, excessesTo: to }), { code: fresh.code, data: fresh.data });
        expectTx(res, { to: fresh.address, exitCode: ERR.badSignature });
        await env.assertConserved();
    });

    it('refuses unknown ops from the owner (1012) and ignores do_not_process and empty bodies', async () => {
        let res = await send(body(0x12345678, 1n).endCell());
        expectTx(res, { to: root.address, exitCode: ERR.unknownOp });
        res = await send(body(OP.doNotProcess, 1n).endCell(), env.stranger);
        expectTx(res, { to: root.address, success: true });
        res = await send(undefined, env.stranger);
        expectTx(res, { to: root.address, success: true });
        assert.equal((await rootData(env, root)).version, 0);
        await env.assertConserved();
    });
});

// Test fixtures for the COCOON contracts: cell builders written from the spec
// (independently of the Tolk sources), a sandbox environment with named actors,
// and a ledger that checks value conservation to the nanoTON.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sandbox from '@ton/sandbox';
import core from '@ton/core';
import crypto from '@ton/crypto';
import testUtils from '@ton/test-utils';

const { Blockchain } = sandbox;
const { beginCell, Cell, Address, contractAddress, Dictionary, toNano, TupleBuilder, SendMode, storeMessageRelaxed, internal: relaxedInternal } = core;
const { keyPairFromSeed, sign } = crypto;
const { flattenTransaction } = testUtils;

export { beginCell, Cell, Address, toNano, Dictionary, TupleBuilder, SendMode, storeMessageRelaxed, relaxedInternal, sign, keyPairFromSeed };

const here = path.dirname(fileURLToPath(import.meta.url));
const built = JSON.parse(fs.readFileSync(path.join(here, '..', 'build', 'contracts.json'), 'utf8'));
/** Compiled code cells, as committed in build/. */
export const CODE = Object.fromEntries(
    Object.entries(built.contracts).map(([k, v]) => [k, Cell.fromBoc(Buffer.from(v.bocBase64, 'base64'))[0]]),
);

// Opcodes, spec §6.2
export const OP = {
    excesses: 0x2565934c,
    payout: 0xc59a7cd3,
    doNotProcess: 0x9a1247c0,
    proxySaveState: 0x53109c0f,
    rootAddWorkerType: 0xe34b1c60,
    rootDelWorkerType: 0x8d94a79a,
    rootAddProxyType: 0x71860e80,
    rootDelProxyType: 0x3c41d0b2,
    rootAddModelType: 0xc146134d,
    rootDelModelType: 0x92b11c18,
    rootRegisterProxy: 0x927c7cb5,
    rootUnregisterProxy: 0x6d49eaf2,
    rootUpdateProxy: 0x9c7924ba,
    rootChangePrice: 0xc52ed8d4,
    rootChangeParams: 0x022fa189,
    rootUpgradeContracts: 0xa2370f61,
    rootUpgrade: 0x11aefd51,
    rootReset: 0x563c1d96,
    rootUpgradeFull: 0x4f7c5789,
    rootChangeOwner: 0xc4a1ae54,
    rootAddPublicKeySigned: 0x9e0e1821,
    rootAddPublicKey: 0x6e5a646a,
    rootChangeKeyManager: 0xb01c0fe9,
    workerProxyRequest: 0x4d725d2c,
    workerProxyPayoutRequest: 0x08e7d036,
    clientProxyRequest: 0x65448ff4,
    clientProxyTopUp: 0x5cfc6b87,
    clientProxyRegister: 0xa35cb580,
    clientProxyRefundGranted: 0xc68ebc7b,
    clientProxyRefundForce: 0xf4c354c9,
    extProxyIncreaseStake: 0x9713f187,
    extProxyPayoutRequest: 0x7610e6eb,
    ownerProxyClose: 0xb51d5a01,
    extProxyCloseRequestSigned: 0x636a4391,
    extProxyCloseCompleteRequestSigned: 0xe511abc7,
    extWorkerPayoutRequestSigned: 0xa040ad28,
    extWorkerLastPayoutRequestSigned: 0xf5f26a36,
    ownerWorkerRegister: 0x26ed7f65,
    extClientTopUp: 0xf172e6c2,
    extClientChargeSigned: 0xbb63ff93,
    extClientGrantRefundSigned: 0xefd711e1,
    ownerClientTopUpReopen: 0x29111ceb,
    ownerClientRegister: 0xc45f9f3b,
    ownerClientChangeSecretHash: 0xa9357034,
    ownerClientChangeSecretHashAndTopUp: 0x8473b408,
    ownerClientRequestRefund: 0xfafa6cc1,
    ownerClientIncreaseStake: 0x6a1f6a60,
    ownerClientWithdraw: 0xda068e78,
    ownerWalletSendMessage: 0x9c69f376,
};

// Exit codes, spec §6.4
export const ERR = {
    oldMessage: 1000,
    lowSmcBalance: 1001,
    lowMsgValue: 1003,
    msgFormat: 1004,
    signedFormat: 1005,
    closed: 1006,
    badSignature: 1007,
    storedDataDamaged: 1008,
    expectedOwner: 1009,
    expectedMessageFromOwner: 1010,
    notUnlocked: 1011,
    unknownOp: 1012,
    unknownTextOp: 1013,
    contractAddressMismatch: 1014,
    expectedMyAddress: 1015,
    unknownProxy: 2000,
    walletExpired: 1030,
    walletBlocked: 1031,
    walletSeqno: 1032,
    walletSubwallet: 1033,
    walletSignature: 1034,
    walletLowBalance: 1035,
    walletNotOwner: 1040,
    walletUnknownText: 1041,
};

export const COMMISSION = toNano('0.1');
export const STORAGE = toNano('0.01');
export const T0 = 1_800_000_000;

export const DEFAULT_PARAMS = {
    structVersion: 5,
    paramsVersion: 1,
    uniqueId: 13,
    isTest: true,
    price: 1000n, // nanoTON per token (client pays)
    fee: 600n, // nanoTON per token (worker gets)
    multipliers: [10000, 10000, 10000, 10000], // prompt, cached, completion, reasoning
    proxyDelay: 600,
    clientDelay: 300,
    minProxyStake: toNano('1'),
    minClientStake: toNano('1'),
};

/** CocoonParams, spec §6.1 (struct_version 3: every optional field present). */
export function paramsCell(p = DEFAULT_PARAMS, codes = {}) {
    const b = beginCell()
        .storeUint(p.structVersion, 8)
        .storeUint(p.paramsVersion, 32)
        .storeUint(p.uniqueId, 32)
        .storeBit(p.isTest)
        .storeCoins(p.price)
        .storeCoins(p.fee);
    for (const m of p.multipliers) b.storeUint(m, 32);
    return b
        .storeUint(p.proxyDelay, 32)
        .storeUint(p.clientDelay, 32)
        .storeCoins(p.minProxyStake)
        .storeCoins(p.minClientStake)
        .storeMaybeRef(codes.proxy ?? null)
        .storeMaybeRef(codes.worker ?? null)
        .storeMaybeRef(codes.client ?? null)
        .endCell();
}

/** Root data as read by the C++ (spec §6.1). dicts are Dictionary objects or null. */
/** NetAddr / ProxyInfo bits: `type:bit(0) len:uint7 bytes[len]`. */
export function storeNetAddr(b, text) {
    const bytes = Buffer.from(text, 'utf8');
    return b.storeUint(0, 1).storeUint(bytes.length, 7).storeBuffer(bytes);
}

/** struct_version >= 4 key-manager cell (spec 9060ce5 §6.1). */
export function keyManagerCell({ publicKeys = null, kmPublicKey = 0n, kmImageHash = 0n, kmAddr = '' } = {}) {
    return storeNetAddr(beginCell().storeMaybeRef(publicKeys).storeUint(kmPublicKey, 256).storeUint(kmImageHash, 256), kmAddr).endCell();
}

/** struct_version >= 5 verified-keys cell: three empty dictionaries. */
export function verifiedKeysCell() {
    return beginCell().storeMaybeRef(null).storeMaybeRef(null).storeMaybeRef(null).endCell();
}

export function rootDataCell({ owner, version = 0, proxyHashes = null, registered = null, lastProxySeqno = 0, workerHashes = null, modelHashes = null, params, keyManager = keyManagerCell() }) {
    const data = beginCell()
        .storeMaybeRef(proxyHashes)
        .storeMaybeRef(registered)
        .storeUint(lastProxySeqno, 32)
        .storeMaybeRef(workerHashes)
        .storeMaybeRef(modelHashes)
        .endCell();
    return beginCell().storeAddress(owner).storeUint(version, 32).storeRef(data).storeRef(params)
        .storeRef(keyManager).storeRef(verifiedKeysCell()).endCell();
}

export function proxyDataCell({ owner, publicKey, root, params }) {
    return beginCell()
        .storeAddress(owner)
        .storeBuffer(publicKey)
        .storeAddress(root)
        .storeUint(0, 2)
        .storeCoins(0)
        .storeCoins(0)
        .storeUint(0, 32)
        .storeRef(params)
        .endCell();
}

export function clientDataCell({ owner, proxy, publicKey, params, stake }) {
    const constData = beginCell().storeAddress(owner).storeAddress(proxy).storeBuffer(publicKey).endCell();
    return beginCell()
        .storeUint(0, 2)
        .storeCoins(0)
        .storeCoins(stake)
        .storeUint(0, 64)
        .storeUint(0, 32)
        .storeUint(0n, 256)
        .storeRef(constData)
        .storeRef(params)
        .endCell();
}

export function workerDataCell({ owner, proxy, publicKey, params }) {
    return beginCell()
        .storeAddress(owner)
        .storeAddress(proxy)
        .storeBuffer(publicKey)
        .storeUint(0, 2)
        .storeUint(0, 64)
        .storeRef(params)
        .endCell();
}

export function walletDataCell({ publicKey, owner, subwallet = 0 }) {
    return beginCell().storeUint(0, 32).storeUint(subwallet, 32).storeBuffer(publicKey).storeUint(0, 32).storeAddress(owner).endCell();
}

export function stateInit(code, data) {
    return { code, data, address: contractAddress(0, { code, data }) };
}

/** ProxyInfo value: type:bit(0) len:uint7 bytes (spec §6.1). */
export function proxyInfo(text) {
    const bytes = Buffer.from(text, 'utf8');
    return beginCell().storeUint(0, 1).storeUint(bytes.length, 7).storeBuffer(bytes);
}

/** Signed voucher wrapper (spec §5.4). tokens = null for proxy close payloads. */
export function voucher({ op, qid = 1n, tokens = null, expected, excessesTo, secretKey, payloadOp, payloadQid, extraWrapperBits = false }) {
    const pb = beginCell().storeUint(payloadOp ?? op, 32).storeUint(payloadQid ?? qid, 64);
    if (tokens !== null) pb.storeUint(tokens, 64);
    pb.storeAddress(expected);
    const payload = pb.endCell();
    const signature = sign(payload.hash(), secretKey);
    const w = beginCell().storeUint(op, 32).storeUint(qid, 64).storeAddress(excessesTo).storeBuffer(signature).storeRef(payload);
    if (extraWrapperBits) w.storeUint(1, 1);
    return w.endCell();
}

export function body(op, qid = 0n) {
    return beginCell().storeUint(op, 32).storeUint(qid, 64);
}

export function textBody(text) {
    return beginCell().storeUint(0, 32).storeStringTail(text).endCell();
}

export function keyPair(n) {
    return keyPairFromSeed(Buffer.alloc(32, n));
}

/** Sandbox world with the standard actors and a value-conservation ledger. */
export class Env {
    static async create() {
        const env = new Env();
        env.chain = await Blockchain.create();
        env.chain.now = T0;
        env.txs = [];
        env.tracked = new Map();
        for (const name of ['rootOwner', 'proxyOwner', 'proxyWallet', 'clientOwner', 'workerOwner', 'stranger']) {
            env[name] = await env.chain.treasury(name);
            env.track(env[name].address);
        }
        return env;
    }

    track(addr) {
        this.tracked.set(addr.toRawString(), addr);
    }

    async balanceOf(addr) {
        return (await this.chain.getContract(addr)).balance;
    }

    /** Sends an internal message from a treasury; records the transactions. */
    async send(from, to, value, body, init) {
        this.track(to);
        const res = await from.send({ to, value, body, init, bounce: true });
        this.record(res);
        return res;
    }

    record(res) {
        for (const tx of res.transactions) {
            this.txs.push(tx);
            const f = flattenTransaction(tx);
            if (f.on) this.track(f.on);
        }
    }

    async total() {
        let sum = 0n;
        for (const a of this.tracked.values()) sum += await this.balanceOf(a);
        return sum;
    }

    /** Remembers the current total; `assertConserved` compares against it. */
    async checkpoint() {
        this.mark = { total: await this.total(), txCount: this.txs.length };
    }

    /**
     * Value conservation: the total of all tracked balances changes exactly by the
     * fees the sandbox reports (total_fees of every transaction plus the forward
     * fee still travelling in each delivered internal message).
     */
    async assertConserved() {
        const txs = this.txs.slice(this.mark.txCount);
        let fees = 0n;
        for (const tx of txs) {
            fees += tx.totalFees.coins;
            for (const m of tx.outMessages.values()) {
                if (m.info.type === 'internal') fees += m.info.forwardFee;
            }
        }
        const now = await this.total();
        assert.equal(this.mark.total - now, fees, `value not conserved: lost ${this.mark.total - now} vs fees ${fees}`);
        return fees;
    }

    async get(addr, method, args = []) {
        const r = await this.chain.runGetMethod(addr, method, args);
        return r.stackReader;
    }
}

/** Finds the transaction on `to` (optionally from `from`) and asserts its outcome. */
export function expectTx(res, { from, to, success, exitCode, op }) {
    const all = res.transactions.map(flattenTransaction);
    const t = all.find(
        (f) => (!to || (f.on && f.on.equals(to))) && (!from || (f.from && f.from.equals(from))) && (op === undefined || f.op === op),
    );
    assert.ok(t, `no transaction to ${to} from ${from} op ${op}; got:\n${describe(all)}`);
    if (exitCode !== undefined) assert.equal(t.exitCode, exitCode, `exit code on ${to}:\n${describe(all)}`);
    if (success !== undefined) assert.equal(t.success, success, `success on ${to}:\n${describe(all)}`);
    return t;
}

export function describe(all) {
    return all
        .map((f) => `  ${f.from ?? 'ext'} -> ${f.on} op=${f.op?.toString(16)} value=${f.value} exit=${f.exitCode} action=${f.actionResultCode} aborted=${f.aborted}`)
        .join('\n');
}

/** Messages of a given op sent to `to` in a result (flattened). */
export function msgsTo(res, to, op) {
    return res.transactions.map(flattenTransaction).filter((f) => f.from && f.on && f.on.equals(to) && (op === undefined || f.op === op));
}

/**
 * Deploys root, proxy, client and worker contracts the way the runners do
 * (spec §6.3): proxy with 0.3 TON, client with 0.8 TON + owner_client_register,
 * worker with 0.3 TON + owner_worker_register.
 */
export async function deployWorld(env, params = DEFAULT_PARAMS) {
    const w = { params, proxyKey: keyPair(7) };
    const rootParams = paramsCell(params, { proxy: CODE.proxy, worker: CODE.worker, client: CODE.client });
    w.root = stateInit(CODE.root, rootDataCell({ owner: env.rootOwner.address, params: rootParams }));
    await env.send(env.rootOwner, w.root.address, toNano('1'), undefined, { code: w.root.code, data: w.root.data });

    const proxyParams = paramsCell(params, { worker: CODE.worker, client: CODE.client });
    w.proxy = stateInit(CODE.proxy, proxyDataCell({ owner: env.proxyOwner.address, publicKey: w.proxyKey.publicKey, root: w.root.address, params: proxyParams }));
    w.res = await env.send(env.proxyOwner, w.proxy.address, toNano('0.3'), undefined, { code: w.proxy.code, data: w.proxy.data });

    const partyParams = paramsCell(params);
    w.client = stateInit(CODE.client, clientDataCell({ owner: env.clientOwner.address, proxy: w.proxy.address, publicKey: w.proxyKey.publicKey, params: partyParams, stake: params.minClientStake }));
    w.clientRegister = await env.send(env.clientOwner, w.client.address, toNano('0.8'),
        body(OP.ownerClientRegister, 1n).storeUint(42n, 64).storeAddress(env.clientOwner.address).endCell(),
        { code: w.client.code, data: w.client.data });

    w.worker = stateInit(CODE.worker, workerDataCell({ owner: env.workerOwner.address, proxy: w.proxy.address, publicKey: w.proxyKey.publicKey, params: partyParams }));
    w.workerRegister = await env.send(env.workerOwner, w.worker.address, toNano('0.3'),
        body(OP.ownerWorkerRegister, 2n).storeAddress(env.workerOwner.address).endCell(),
        { code: w.worker.code, data: w.worker.data });
    return w;
}

export async function proxyState(env, w) {
    const r = await env.get(w.proxy.address, 'get_cocoon_proxy_data');
    return {
        owner: r.readAddress(), publicKey: r.readBigNumber(), root: r.readAddress(), state: r.readNumber(),
        balance: r.readBigNumber(), stake: r.readBigNumber(), unlockTs: r.readNumber(), price: r.readBigNumber(),
        fee: r.readBigNumber(), minProxyStake: r.readBigNumber(), minClientStake: r.readBigNumber(), paramsVersion: r.readNumber(),
    };
}

export async function clientState(env, w) {
    const r = await env.get(w.client.address, 'get_cocoon_client_data');
    return {
        owner: r.readAddress(), proxy: r.readAddress(), publicKey: r.readBigNumber(), state: r.readNumber(),
        balance: r.readBigNumber(), stake: r.readBigNumber(), tokensUsed: r.readBigNumber(), unlockTs: r.readNumber(),
        secretHash: r.readBigNumber(),
    };
}

export async function workerState(env, w) {
    const r = await env.get(w.worker.address, 'get_cocoon_worker_data');
    return { owner: r.readAddress(), proxy: r.readAddress(), publicKey: r.readBigNumber(), state: r.readNumber(), tokens: r.readBigNumber() };
}

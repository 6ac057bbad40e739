// Golden vectors for cocoon-ton, computed with an independent implementation
// (@ton/core + @ton/crypto from contracts/node_modules). Run from the repo root:
//   node crates/cocoon-ton/tests/golden/gen.mjs > crates/cocoon-ton/tests/data/golden.json
// The layouts below are written from the spec (§5.4, §6.1, §6.3), not from Rust.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..', '..');
const require = createRequire(path.join(repo, 'contracts', 'package.json'));
const { beginCell, Cell, Address, contractAddress, Dictionary, storeMessageRelaxed, internal } = require('@ton/core');
const { keyPairFromSeed, sign } = require('@ton/crypto');

const data = (f) => fs.readFileSync(path.join(here, '..', 'data', f));
const cell = (f) => Cell.fromBoc(data(f))[0];
const addr = (b) => new Address(0, Buffer.alloc(32, b));
const key = (b) => keyPairFromSeed(Buffer.alloc(32, b));

function paramsCell(p, codes) {
    const b = beginCell().storeUint(p.v, 8).storeUint(p.paramsVersion, 32).storeUint(p.uniqueId, 32)
        .storeBit(p.isTest).storeCoins(p.price).storeCoins(p.fee);
    if (p.v >= 3) b.storeUint(p.mult[0], 32);
    if (p.v >= 2) b.storeUint(p.mult[1], 32);
    if (p.v >= 3) b.storeUint(p.mult[2], 32);
    if (p.v >= 2) b.storeUint(p.mult[3], 32);
    b.storeUint(p.proxyDelay, 32).storeUint(p.clientDelay, 32);
    if (p.v >= 1) b.storeCoins(p.minProxyStake).storeCoins(p.minClientStake);
    return b.storeMaybeRef(codes.proxy ?? null).storeMaybeRef(codes.worker ?? null).storeMaybeRef(codes.client ?? null).endCell();
}

const PARAMS = {
    v3: { v: 3, paramsVersion: 7, uniqueId: 13, isTest: true, price: 1000n, fee: 600n, mult: [10000, 11000, 12000, 13000], proxyDelay: 600, clientDelay: 300, minProxyStake: 1000000000n, minClientStake: 2000000000n },
    v1: { v: 1, paramsVersion: 1, uniqueId: 13, isTest: true, price: 2n, fee: 1n, mult: [10000, 10000, 10000, 10000], proxyDelay: 600, clientDelay: 300, minProxyStake: 1000000000n, minClientStake: 1000000000n },
};
const CODESETS = {
    fake_ton: { proxy: cell('fake-ton-proxy.boc'), worker: cell('fake-ton-worker.boc'), client: cell('fake-ton-client.boc') },
    ours: { proxy: cell('ours-proxy.boc'), worker: cell('ours-worker.boc'), client: cell('ours-client.boc') },
};

const proxyOwner = addr(0x11), root = addr(0x22), clientOwner = addr(0x33), workerOwner = addr(0x44);
const proxyKey = key(1);

const out = { derivation: [], voucher: null, wallet: null, root: null };
for (const [pname, p] of Object.entries(PARAMS)) {
    for (const [cname, codes] of Object.entries(CODESETS)) {
        const rootParams = paramsCell(p, codes);
        const proxyParams = paramsCell(p, { worker: codes.worker, client: codes.client });
        const noCode = paramsCell(p, {});
        const proxyData = beginCell().storeAddress(proxyOwner).storeBuffer(proxyKey.publicKey).storeAddress(root)
            .storeUint(0, 2).storeCoins(0).storeCoins(0).storeUint(0, 32).storeRef(proxyParams).endCell();
        const proxySc = contractAddress(0, { code: codes.proxy, data: proxyData });
        const consts = beginCell().storeAddress(clientOwner).storeAddress(proxySc).storeBuffer(proxyKey.publicKey).endCell();
        const clientData = beginCell().storeUint(0, 2).storeCoins(0).storeCoins(p.minClientStake).storeUint(0, 64)
            .storeUint(0, 32).storeUint(0n, 256).storeRef(consts).storeRef(noCode).endCell();
        const workerData = beginCell().storeAddress(workerOwner).storeAddress(proxySc).storeBuffer(proxyKey.publicKey)
            .storeUint(0, 2).storeUint(0, 64).storeRef(noCode).endCell();
        out.derivation.push({
            params: pname, codes: cname,
            root_params_hash: rootParams.hash().toString('hex'),
            proxy_params_hash: proxyParams.hash().toString('hex'),
            no_code_params_hash: noCode.hash().toString('hex'),
            proxy_sc: proxySc.toRawString(),
            proxy_sc_friendly_testnet: proxySc.toString({ urlSafe: true, bounceable: false, testOnly: true }),
            client_sc: contractAddress(0, { code: codes.client, data: clientData }).toRawString(),
            worker_sc: contractAddress(0, { code: codes.worker, data: workerData }).toRawString(),
        });
    }
}

// A client charge voucher to the client contract of the first derivation.
{
    const contract = Address.parseRaw(out.derivation[0].client_sc);
    const payload = beginCell().storeUint(0xbb63ff93, 32).storeUint(0x1122334455667788n, 64)
        .storeUint(123456789n, 64).storeAddress(contract).endCell();
    const signature = sign(payload.hash(), proxyKey.secretKey);
    const wrapper = beginCell().storeUint(0xbb63ff93, 32).storeUint(0x1122334455667788n, 64)
        .storeAddress(addr(0x66)).storeBuffer(signature).storeRef(payload).endCell();
    out.voucher = {
        proxy_public_key: proxyKey.publicKey.toString('hex'),
        contract: contract.toRawString(),
        payload_hash: payload.hash().toString('hex'),
        signature: signature.toString('hex'),
        wrapper_boc: wrapper.toBoc({ idx: false, crc32: false }).toString('hex'),
    };
}

// The official cocoon wallet of key(5) owned by 0:55..55, and a signed request.
{
    const wkey = key(5);
    const code = Cell.fromBoc(fs.readFileSync(path.join(here, '..', '..', 'data', 'cocoon-wallet-official.boc')))[0];
    const wdata = beginCell().storeUint(0, 32).storeUint(0, 32).storeBuffer(wkey.publicKey).storeUint(0, 32).storeAddress(addr(0x55)).endCell();
    const waddr = contractAddress(0, { code, data: wdata });
    const msg = beginCell().store(storeMessageRelaxed(internal({ to: addr(0x77), value: 700000000n, bounce: true, body: beginCell().storeUint(0x2565934c, 32).storeUint(9n, 64).endCell() }), { forceRef: true })).endCell();
    const unsigned = beginCell().storeUint(0, 32).storeUint(1800000000, 32).storeUint(3, 32).storeUint(0, 8).storeRef(msg).endCell();
    const sig = sign(unsigned.hash(), wkey.secretKey);
    const signed = beginCell().storeBuffer(sig).storeSlice(unsigned.beginParse()).endCell();
    out.wallet = {
        code_hash: code.hash().toString('hex'),
        address: waddr.toRawString(),
        address_friendly: waddr.toString({ urlSafe: true, bounceable: false }),
        internal_message_hash: msg.hash().toString('hex'),
        signed_body_hash: signed.hash().toString('hex'),
    };
}

// A root data cell with every dictionary filled.
{
    const empty = { serialize: () => {}, parse: () => null };
    const hashes = (bytes) => {
        const d = Dictionary.empty(Dictionary.Keys.BigUint(256), empty);
        for (const b of bytes) d.set(BigInt('0x' + Buffer.alloc(32, b).toString('hex')), null);
        return beginCell().storeDictDirect(d).endCell();
    };
    const infoValue = { serialize: (t, b) => { const x = Buffer.from(t); b.storeUint(0, 1).storeUint(x.length, 7).storeBuffer(x); }, parse: () => null };
    const reg = Dictionary.empty(Dictionary.Keys.Uint(32), infoValue);
    reg.set(1, '10.0.0.1:8001 10.0.0.1:8002');
    reg.set(3, '10.0.0.3:9000');
    const d = beginCell().storeMaybeRef(hashes([0xa1, 0xa2])).storeMaybeRef(beginCell().storeDictDirect(reg).endCell())
        .storeUint(3, 32).storeMaybeRef(hashes([0xb1])).storeMaybeRef(hashes([0xc1, 0xc2, 0xc3])).endCell();
    const rootData = beginCell().storeAddress(addr(0x99)).storeUint(42, 32).storeRef(d).storeRef(paramsCell(PARAMS.v3, CODESETS.ours)).endCell();
    out.root = { data_boc: rootData.toBoc({ idx: false, crc32: false }).toString('hex'), data_hash: rootData.hash().toString('hex') };
}

console.log(JSON.stringify(out, null, 2));

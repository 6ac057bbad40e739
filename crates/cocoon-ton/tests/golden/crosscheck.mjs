// Replays the local-chain cross-check scenario on @ton/sandbox (the official
// C++ emulator compiled to WASM, with its default TON mainnet config) and
// records what happened, for `local_chain_matches_ton_sandbox_to_the_nanoton`.
// Run from the repository root:
//   node crates/cocoon-ton/tests/golden/crosscheck.mjs
// It reads tests/data/crosscheck-scenario.json (written by the Rust test with
// COCOON_UPDATE_CROSSCHECK=1) and writes tests/data/crosscheck-sandbox.json.
// With --check (what contracts/test.sh runs in CI) it writes nothing and fails
// unless the sandbox gives exactly the committed results, which the Rust test
// `local_chain_matches_ton_sandbox_to_the_nanoton` compares with LocalChain.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..', '..');
const require = createRequire(path.join(repo, 'contracts', 'package.json'));
const { Cell, Address, loadShardAccount, loadMessage } = require('@ton/core');
const { Blockchain } = require('@ton/sandbox');

const dataDir = path.join(here, '..', 'data');
const scenario = JSON.parse(fs.readFileSync(path.join(dataDir, 'crosscheck-scenario.json'), 'utf8'));
const fromB64 = (s) => Cell.fromBoc(Buffer.from(s, 'base64'))[0];

const chain = await Blockchain.create();
chain.now = scenario.now;
const known = new Map();
for (const a of scenario.accounts) {
    const address = Address.parseRaw(a.address);
    await chain.setShardAccount(address, loadShardAccount(fromB64(a.shard_account).beginParse()));
    known.set(a.address, address);
}

const steps = [];
for (const step of scenario.steps) {
    chain.now += step.advance ?? 0;
    const msg = loadMessage(fromB64(step.external).beginParse());
    let res;
    try {
        res = await chain.sendMessage(msg);
    } catch (e) {
        const m = /exit code (-?\d+)/i.exec(String(e?.message ?? e)) ?? /exitCode[^\d-]*(-?\d+)/.exec(JSON.stringify(e));
        steps.push({ name: step.name, accepted: false, exit_code: m ? Number(m[1]) : null, balances: await balances() });
        continue;
    }
    const transactions = res.transactions.map((tx) => {
        const account = new Address(0, Buffer.from(tx.address.toString(16).padStart(64, '0'), 'hex'));
        known.set(account.toRawString(), account);
        const d = tx.description;
        const exit = d.computePhase.type === 'vm' ? d.computePhase.exitCode : null;
        return { account: account.toRawString(), exit_code: exit, aborted: d.aborted, total_fees: tx.totalFees.coins.toString() };
    });
    steps.push({ name: step.name, accepted: true, transactions, balances: await balances() });
}

async function balances() {
    const out = {};
    for (const [raw, address] of [...known.entries()].sort()) {
        out[raw] = (await chain.getContract(address)).balance.toString();
    }
    return out;
}

const out = {
    generator: 'crates/cocoon-ton/tests/golden/crosscheck.mjs',
    sandbox: require('@ton/sandbox/package.json').version,
    steps,
};
const text = JSON.stringify(out, null, 2) + '\n';
const target = path.join(dataDir, 'crosscheck-sandbox.json');
if (process.argv.includes('--check')) {
    const committed = JSON.parse(fs.readFileSync(target, 'utf8'));
    const same = JSON.stringify(committed.steps) === JSON.stringify(out.steps);
    if (!same) {
        console.error('crosscheck: @ton/sandbox no longer gives the committed results; ' +
            'rerun `node crates/cocoon-ton/tests/golden/crosscheck.mjs` and the Rust test');
        process.exit(1);
    }
    console.log(`crosscheck: ${steps.length} steps replayed on @ton/sandbox ${out.sandbox}, identical to the committed results`);
} else {
    fs.writeFileSync(target, text);
    console.log(`${steps.length} steps replayed`);
}

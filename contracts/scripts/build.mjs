// Compiles the Tolk contracts in src/ with @ton/tolk-js and writes
//   build/<name>.boc         code BOC (binary)
//   build/contracts.json     { tolkVersion, contracts: { name: { codeHash, bocBase64, bocHex } } }
// With --check, compiles in memory and fails (exit 1) unless build/ equals a fresh compile.
import { runTolkCompiler, getTolkCompilerVersion } from '@ton/tolk-js';
import { Cell } from '@ton/core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(root, 'src');
const buildDir = path.join(root, 'build');
export const CONTRACTS = ['root', 'proxy', 'client', 'worker', 'wallet'];

export async function compileContract(name) {
    const res = await runTolkCompiler({
        entrypointFileName: `${name}.tolk`,
        fsReadCallback: (p) => fs.readFileSync(path.join(srcDir, p), 'utf8'),
        optimizationLevel: 2,
    });
    if (res.status !== 'ok') {
        throw new Error(`tolk: ${name}.tolk failed:\n${res.message}`);
    }
    const cell = Cell.fromBoc(Buffer.from(res.codeBoc64, 'base64'))[0];
    // Canonical BOC (no index, with crc32c), the form the Rust side embeds.
    const boc = cell.toBoc({ idx: false, crc32: true });
    return { codeHash: cell.hash().toString('hex'), boc };
}

export async function compileAll() {
    const out = { tolkVersion: await getTolkCompilerVersion(), contracts: {} };
    const bocs = {};
    for (const name of CONTRACTS) {
        const { codeHash, boc } = await compileContract(name);
        bocs[name] = boc;
        out.contracts[name] = { codeHash, bocBase64: boc.toString('base64'), bocHex: boc.toString('hex') };
    }
    return { json: JSON.stringify(out, null, 2) + '\n', bocs };
}

async function main() {
    const check = process.argv.includes('--check');
    const { json, bocs } = await compileAll();
    if (!check) {
        fs.mkdirSync(buildDir, { recursive: true });
        for (const [name, boc] of Object.entries(bocs)) fs.writeFileSync(path.join(buildDir, `${name}.boc`), boc);
        fs.writeFileSync(path.join(buildDir, 'contracts.json'), json);
        for (const name of CONTRACTS) console.log(`${name}: ${JSON.parse(json).contracts[name].codeHash}`);
        return;
    }
    let bad = 0;
    const cmp = (file, want) => {
        const p = path.join(buildDir, file);
        if (!fs.existsSync(p) || !fs.readFileSync(p).equals(Buffer.from(want))) {
            console.error(`check-build: build/${file} differs from a fresh compile (run: npm run build)`);
            bad++;
        }
    };
    for (const [name, boc] of Object.entries(bocs)) cmp(`${name}.boc`, boc);
    cmp('contracts.json', json);
    if (bad) process.exit(1);
    console.log('check-build: build/ matches a fresh compile');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    main().catch((e) => { console.error(e.message || e); process.exit(1); });
}

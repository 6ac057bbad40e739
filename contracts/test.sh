#!/usr/bin/env bash
# Contracts check: install the pinned npm deps if needed, verify that build/
# equals a fresh compile of src/, then run the sandbox tests and replay the Rust
# LocalChain cross-check scenario on @ton/sandbox (identical results required).
# Exits non-zero on any failure. Usage: contracts/test.sh
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.cocoon-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "contracts: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi

echo "contracts: check-build"
npm run --silent check-build

echo "contracts: tests"
node --test --test-concurrency=1 --test-reporter=spec tests/*.test.mjs

echo "contracts: the Rust LocalChain scenario replayed on @ton/sandbox"
node ../crates/cocoon-ton/tests/golden/crosscheck.mjs --check

#!/usr/bin/env bash
# The whole test suite of cocoon-rs, runnable on a fresh machine.
#
# Installs what the tests need (Node.js for the contract tests, if missing), then runs:
# formatting, clippy, every Rust test, a build check of the fuzz targets, and the
# contract tests. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        step "installing Node.js and npm (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    fi
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (whole workspace)"
cargo test --workspace --locked

step "fuzz targets build (cargo check; run them with cargo fuzz, see README)"
cargo check --manifest-path fuzz/Cargo.toml --locked

if [ -f contracts/test.sh ]; then
    need_node
    step "contract tests (@ton/sandbox)"
    bash contracts/test.sh
fi

step "all tests passed"

#!/usr/bin/env bash
# The whole test suite of cocoon-rs, runnable on a fresh machine.
#
# Installs what the tests need (a Python venv with the openai SDK and pytest; Node.js for
# the contract tests, and the libraries of the official COCOON binaries for the interop
# tests, if missing), then runs: formatting, clippy, every Rust test (the interop tests
# against ../shared/interop among them), a build
# check of the fuzz targets, the end-to-end tests with the official openai SDK against
# `cocoon devnet`, and the contract tests. Exits non-zero on the first failure.
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

# The official COCOON binaries in ../shared/interop (interop tests) need a few Debian
# libraries, curl, and Python's cryptography for their set-up script.
need_interop() {
    local interop=../shared/interop
    [ -x "$interop/bin/proxy-runner" ] || return 0
    if ldd "$interop/bin/proxy-runner" "$interop/bin/router" | grep -q "not found" \
        || ! command -v curl >/dev/null 2>&1 \
        || ! python3 -c "import cryptography" >/dev/null 2>&1; then
        step "installing what the official COCOON binaries need (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libboost-thread1.81.0 \
            libboost-atomic1.81.0 libatomic1 libssl3 zlib1g curl python3-cryptography
    fi
}
need_interop

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (whole workspace)"
cargo test --workspace --locked

step "fuzz targets build (cargo check; run them with cargo fuzz, see README)"
cargo check --manifest-path fuzz/Cargo.toml --locked

step "end-to-end: the official openai SDK against cocoon devnet"
cargo build --locked -p cocoon
venv=target/e2e-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/e2e/requirements.txt
COCOON_BIN="$PWD/target/debug/cocoon" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/e2e

if [ -f contracts/test.sh ]; then
    need_node
    step "contract tests (@ton/sandbox)"
    bash contracts/test.sh
fi

step "all tests passed"

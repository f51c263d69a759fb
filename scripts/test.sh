#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of every crate
# (unit, integration, end-to-end and tests/claims). Tests start the real services
# they need (etcd, moto, SoftHSM2) themselves, on loopback ports of their own.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo nextest run"
cargo nextest run --workspace --no-fail-fast "$@"

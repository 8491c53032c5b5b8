#!/usr/bin/env bash
# Brings diego up on this machine with zero set-up: `diego dev` on the embedded store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p diego
exec target/release/diego dev "$@"

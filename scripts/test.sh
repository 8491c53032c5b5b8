#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Generated requests against a live BBS: any 5xx fails (schemathesis, from PyPI).
scripts/fuzz-api.sh 20
cargo test --workspace --locked "$@"

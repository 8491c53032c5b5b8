#!/usr/bin/env bash
# Runs every test of the workspace, after installing what the tests need. Container tests need
# root (CI runs as root; elsewhere they skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Root filesystems for containers: busybox (seconds) and the stack (debootstrap, about a minute
# the first time); both are cached under /var/cache/diego/rootfs.
if [ "$(id -u)" -eq 0 ]; then
  cell/garden/scripts/make-busybox-rootfs.sh >/dev/null
  cell/garden/scripts/make-stack-rootfs.sh >/dev/null
  export DIEGO_TEST_STACK=1
fi
# Generated requests against a live BBS: any 5xx fails (schemathesis, from PyPI).
scripts/fuzz-api.sh 20
cargo test --workspace --locked "$@"

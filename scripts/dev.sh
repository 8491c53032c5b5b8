#!/usr/bin/env bash
# Brings diego up on this machine with zero set-up — `diego dev` on the embedded store: BBS,
# brain, a cell, the apps API (blob store, logs) and the router — and does its main job: pushes
# a small web app with the python buildpack and fetches it through the router. Ctrl-C stops it;
# run it again and the app is still there. Flags are `diego dev`'s (`--tls`: mutual TLS between
# the parts, the commands below presenting the certificates it makes in its data dir).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p diego
diego=target/release/diego
"$diego" dev "$@" &
dev=$!
# However this script ends, diego dev stops cleanly (its cells destroy their containers).
trap 'kill -INT $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
tls=false data=.diego prev=
for arg in "$@"; do
  case "$prev" in --data-dir) data=$arg ;; esac
  case "$arg" in
    --tls) tls=true ;;
    --data-dir=*) data=${arg#--data-dir=} ;;
  esac
  prev=$arg
done
case "$data" in /*) ;; *) data=$PWD/$data ;; esac
$tls && export DIEGO_TLS_DIR="${DIEGO_TLS_DIR:-$data/tls}"
root=false
[ "$(id -u)" -eq 0 ] && root=true
# The first run as root makes the stack rootfs (debootstrap, a few minutes); then it is cached.
for _ in $(seq 2400); do
  if "$diego" --log error apps >/dev/null 2>&1; then
    $root || break
    "$diego" --log warn cells | grep -q cell_id && break
  fi
  kill -0 $dev 2>/dev/null || { echo "diego dev stopped" >&2; exit 1; }
  sleep 0.5
done
if $root; then
  "$diego" --log warn buildpacks | grep -qw python ||
    "$diego" --log warn create-buildpack python lifecycles/buildpacks/python
  "$diego" --log warn push hello -p lifecycles/test-apps/python-web
  echo "curl http://hello.localhost:8080/ →"
  curl -fsS --resolve hello.localhost:8080:127.0.0.1 http://hello.localhost:8080/ && echo
else
  echo "not root: no cells, so no app runs (the BBS, the brain, the apps API and the router do)" >&2
fi
wait $dev

#!/usr/bin/env bash
# Brings diego up on this machine with zero set-up — `diego dev` on the embedded store: BBS,
# brain, a cell, the apps API (blob store, logs) and the router — and does its main job: pushes
# a small web app with the python buildpack and fetches it through the router. Ctrl-C stops it;
# run it again and the app is still there. Flags are `diego dev`'s.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p diego
diego=target/release/diego
"$diego" dev "$@" &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev' INT TERM
export DIEGO_API="${DIEGO_API:-http://127.0.0.1:8891}"
for _ in $(seq 600); do
  curl -fsS -o /dev/null "$DIEGO_API/v1/info" 2>/dev/null && "$diego" --log warn cells | grep -q cell && break
  kill -0 $dev 2>/dev/null || { wait $dev; exit 1; }
  sleep 0.5
done
if [ "$(id -u)" -eq 0 ]; then
  "$diego" --log warn buildpacks | grep -qw python ||
    "$diego" --log warn create-buildpack python lifecycles/buildpacks/python
  "$diego" --log warn push hello -p lifecycles/test-apps/python-web
  echo "curl http://hello.localhost:8080/ →"
  curl -fsS --resolve hello.localhost:8080:127.0.0.1 http://hello.localhost:8080/ && echo
fi
wait $dev

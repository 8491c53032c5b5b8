#!/usr/bin/env bash
# Drives a real BBS (`diego bbs`, embedded store) with schemathesis, generating requests from
# the OpenAPI description the BBS serves, and fails on any 5xx: bad input must get a 4xx.
# Usage: scripts/fuzz-api.sh [MAX_EXAMPLES]   (default 30 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
max_examples="${1:-30}"

command -v schemathesis >/dev/null || python3 -m pip install -q --disable-pip-version-check schemathesis
cargo build --locked -q -p diego

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
data=$(mktemp -d)
# The BBS alone: with a brain and cells (`diego dev`) generated LRPs would really run.
"${CARGO_TARGET_DIR:-target}/debug/diego" --log warn bbs --listen "127.0.0.1:$port" --data-dir "$data" >"$log" 2>&1 &
bbs=$!
trap 'kill $bbs 2>/dev/null || true; rm -rf "$log" "$data"' EXIT
for _ in $(seq 100); do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/v1/ping" 2>/dev/null && break
  kill -0 $bbs 2>/dev/null || { echo "the BBS did not start:"; cat "$log"; exit 1; }
  sleep 0.1
done

# Event routes stream forever; they have their own tests.
schemathesis run "http://127.0.0.1:$port/v1/openapi.json" \
  --checks not_a_server_error \
  --max-examples "$max_examples" \
  --exclude-path-regex '^/v1/events' \
  --no-color
kill -0 $bbs || { echo "the BBS died during fuzzing:"; cat "$log"; exit 1; }

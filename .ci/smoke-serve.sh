#!/usr/bin/env bash
# Start `loom serve` on a fresh SQLite file, sign in as a demo user, list apps, stop.
set -euo pipefail
tmp=$(mktemp -d)
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export LOOM_DEMO_PASSWORD="smoke-test-pass"
loom --db "sqlite:///$tmp/loom.db" serve --port "$port" > "$tmp/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 180); do
  curl -fs "http://127.0.0.1:$port/openapi.json" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$tmp/serve.log"; exit 1; }
  sleep 1
done
grep -q "http://127.0.0.1:$port/" "$tmp/serve.log" || { echo "serve did not print its URL"; cat "$tmp/serve.log"; exit 1; }
user=$(grep -o 'demo users ([a-z0-9_.]*' "$tmp/serve.log" | head -1 | sed 's/.*(//')
token=$(curl -fs -X POST "http://127.0.0.1:$port/api/auth/token" -d "username=$user&password=$LOOM_DEMO_PASSWORD" | python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
apps=$(curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/apps")
echo "$apps" | grep -q automotive_crm || { echo "apps list lacks the CRM: $apps"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/apps")
[ "$code" = 401 ] || { echo "unauthenticated /api/apps gave $code, expected 401"; exit 1; }
echo "smoke test passed: serve, sign-in as $user, list apps, 401 without token"

#!/bin/bash
# get.sh [sqlite|postgres]: measures single-resource GET throughput of a real
# `phr serve` with wrk (16 connections, 2 threads, 10 s) and prints wrk's
# latency distribution. Needs wrk (apt-get install wrk). For postgres it
# creates a fresh database on PHR_TEST_POSTGRES_URL's server.
set -euo pipefail
store=${1:-sqlite}
dur=${DURATION:-10s}
conns=${CONNS:-16}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -o "$tmp/phr" "$root/cmd/phr"
db=""
if [ "$store" = postgres ]; then
  base=${PHR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
  name=phr_get_$$
  psql "$base" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
  db=$(echo "$base" | sed -E "s#/[^/?]+(\?|$)#/$name\1#")
fi
port=$((20000 + RANDOM % 20000))
PHR_LOG_LEVEL=warn "$tmp/phr" serve --addr 127.0.0.1:$port --data "$tmp/data" --db "$db" >"$tmp/log" 2>&1 &
pid=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
tok=$("$tmp/phr" token --data "$tmp/data" --db "$db" --scope 'system/*.*' --ttl 1h)
curl -sf -X PUT -H "Authorization: Bearer $tok" -H 'Content-Type: application/fhir+json' \
  --data '{"resourceType":"Patient","id":"p1","name":[{"family":"Smith","given":["Ann"]}],"gender":"female","birthDate":"1970-01-01"}' \
  http://127.0.0.1:$port/fhir/Patient/p1 >/dev/null
echo "store=$store conns=$conns duration=$dur"
wrk -t"${THREADS:-2}" -c"$conns" -d"$dur" --latency -H "Authorization: Bearer $tok" http://127.0.0.1:$port/fhir/Patient/p1

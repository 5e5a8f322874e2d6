#!/bin/bash
# ingest.sh [sqlite|postgres]: loads the 120 Synthea patients into a real
# `phr serve` over HTTP the way a client would, with curl: the two batch
# Bundles of practitioners and hospitals first, then the 120 transaction
# Bundles, CONCURRENCY (default 2) at a time. Prints the wall time,
# resources per second and the server's CPU time (and, for postgres, its
# database backends'). The in-process equivalent is
# `PHR_LONG=1 go test ./internal/synthea -run LoadOverHTTP -v`; this one
# measures the server binary as deployed (its GOMAXPROCS switching, see
# package procs, included). SERVE_ARGS adds flags to phr serve; BIN=PATH
# runs a phr binary built before.
set -euo pipefail
store=${1:-sqlite}
conc=${CONCURRENCY:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${PHR_SYNTHEA_DIR:-$root/../shared/data/synthea-120-bundles}
[ -d "$data" ] || { echo "skipping: $data not found (the Synthea bundles of ../shared/data)"; exit 0; }
# shellcheck source=setup.sh
. "$root/tools/loadtest/setup.sh" ingest
# Decompress the Bundles first, so that the clients only send.
mkdir "$tmp/in"
for f in "$data"/*.json.gz; do gunzip -c "$f" >"$tmp/in/$(basename "$f" .gz)"; done
total=$(python3 -c 'import json,sys,glob; print(sum(len(json.load(open(f)).get("entry",[])) for f in glob.glob(sys.argv[1]+"/*.json")))' "$tmp/in")
port=$((20000 + RANDOM % 20000))
# shellcheck disable=SC2086
PHR_LOG_LEVEL=warn "$tmp/phr" serve --addr 127.0.0.1:$port --data "$tmp/data" --db "$db" ${SERVE_ARGS:-} >"$tmp/log" 2>&1 &
pid=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
tok=$("$tmp/phr" token --data "$tmp/data" --db "$db" --scope 'system/*.*' --ttl 1h)
post() {
  code=$(curl -s -o "$tmp/out.$$.$RANDOM" -w '%{http_code}' -X POST -H "Authorization: Bearer $tok" \
    -H 'Content-Type: application/fhir+json' --data-binary @"$1" "http://127.0.0.1:$port/fhir")
  [ "$code" = 200 ] || { echo "POST $(basename "$1"): HTTP $code" >&2; return 1; }
}
export -f post
export tok port tmp
t0=$(date +%s.%N)
c0=$(awk '{print $14 + $15}' /proc/$pid/stat)
for f in "$tmp"/in/0-*.json; do post "$f"; done
ls "$tmp"/in/*.json | grep -v '/0-' | xargs -P "$conc" -n 1 bash -c 'post "$0"'
t1=$(date +%s.%N)
c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
hz=$(getconf CLK_TCK)
awk -v t0="$t0" -v t1="$t1" -v n="$total" -v c="$((c1 - c0))" -v hz="$hz" -v conc="$conc" -v store="$store" 'BEGIN {
  el = t1 - t0; cpu = c / hz
  printf "%s ingest: %d resources in %.1f s, %.0f resources/s (%d Bundles at a time); server CPU %.1f s, %.0f resources per CPU-second\n", store, n, el, n / el, conc, cpu, n / cpu }'

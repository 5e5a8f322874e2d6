#!/bin/bash
# rss.sh DATA: peak resident memory (VmHWM) of a real `phr serve` process
# for a whole-store NDJSON $phr-export over HTTP from the loaded data
# directory DATA (e.g. the phrexport benchmark's PHR_BENCH_DIR), then for
# an HTTP $import of that NDJSON into a fresh, empty data directory. The
# peak is reset after the server started (/proc/PID/clear_refs), so it is
# the operation's. Linux only; SQLite.
set -euo pipefail
data=${1:?usage: rss.sh DATA}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pid=""
stop() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap 'stop; rm -rf "$tmp"' EXIT
go build -o "$tmp/phr" "$root/cmd/phr"
start() { # start DATADIR: serve it, set $port, $pid and $tok
  port=$((20000 + RANDOM % 20000))
  PHR_LOG_LEVEL=warn "$tmp/phr" serve --addr 127.0.0.1:$port --data "$1" >>"$tmp/log" 2>&1 &
  pid=$!
  for i in $(seq 200); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  tok=$("$tmp/phr" token --data "$1" --scope 'system/*.*' --ttl 2h)
  echo 5 >/proc/$pid/clear_refs
}
report() { # report WHAT
  printf '%-8s %s\n' "$1" "$(grep -E 'VmHWM|RssAnon|RssFile' /proc/$pid/status | tr -s ' \t\n' ' ')"
}
start "$data"
curl -sf -H "Authorization: Bearer $tok" "http://127.0.0.1:$port/fhir/Bundle/\$phr-export?outputFormat=ndjson" -o "$tmp/export.ndjson"
echo "export: $(wc -c <"$tmp/export.ndjson") bytes"
report export
stop
mkdir "$tmp/fresh"
start "$tmp/fresh"
curl -sf -H "Authorization: Bearer $tok" -H 'Content-Type: application/x-ndjson' -T "$tmp/export.ndjson" -X POST \
  "http://127.0.0.1:$port/fhir/Bundle/\$import?source=rss" -o "$tmp/import.json"
echo "import: $(grep -o '"name":"\(created\|rejected\)","valueInteger":[0-9]*' "$tmp/import.json" | tr '\n' ' ')"
report import

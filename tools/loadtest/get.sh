#!/bin/bash
# get.sh [sqlite|postgres]: measures single-resource GET throughput of a real
# `phr serve` with wrk (16 connections, 10 s, one wrk thread: on a 2-core
# machine a second client thread only takes CPU from the server; THREADS=2
# to compare) and prints wrk's latency distribution, then the CPU time spent
# per request by the server (and, for postgres, by its database backends):
# on a shared machine the wall-clock figures are noisy, the CPU per request
# much less so. Needs wrk (apt-get install wrk). For postgres it creates a
# fresh database on PHR_TEST_POSTGRES_URL's server. SERVE_ARGS adds flags to
# phr serve; CONNS and DURATION change the connections and the duration.
# PROFILE=FILE also takes a CPU profile of the server during the run (but
# its first and last second; through phr serve --debug-addr) and writes it
# to FILE for `go tool pprof` (DURATION must then be in seconds, >= 3s).
# BIN=PATH runs a phr binary built before instead of building this tree
# (to compare two builds back to back).
# PACE=MS makes each connection wait MS milliseconds on average between a
# response and its next request (pace.lua; fractions allowed), so that the
# latency is measured at a load below the most the server can do. Without
# it wrk keeps every connection busy, the server's thread and wrk's each
# keep one of a 2-core machine's cores fully busy, and the tail shows
# mostly how often the kernel takes a core from them for anything else
# (in 8 such runs, the two with a p99 over 10 ms were the two where the
# server's threads were preempted most, about 4,400 times against
# 1,300-2,700). With 16 connections on the 2-core development machine,
# PACE=0.7 offered 12,000-17,000 requests per second to SQLite and
# 12,000-14,000 to PostgreSQL; PACE=1 about 8,000-11,000.
set -euo pipefail
store=${1:-sqlite}
dur=${DURATION:-10s}
conns=${CONNS:-16}
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=setup.sh
. "$root/tools/loadtest/setup.sh" get
port=$((20000 + RANDOM % 20000))
debug_args=()
if [ -n "${PROFILE:-}" ]; then
  dport=$((port + 1))
  debug_args=(--debug-addr 127.0.0.1:$dport)
fi
# shellcheck disable=SC2086
PHR_LOG_LEVEL=warn "$tmp/phr" serve --addr 127.0.0.1:$port --data "$tmp/data" --db "$db" "${debug_args[@]}" ${SERVE_ARGS:-} >"$tmp/log" 2>&1 &
pid=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
tok=$("$tmp/phr" token --data "$tmp/data" --db "$db" --scope 'system/*.*' --ttl 1h)
curl -sf -X PUT -H "Authorization: Bearer $tok" -H 'Content-Type: application/fhir+json' \
  --data '{"resourceType":"Patient","id":"p1","name":[{"family":"Smith","given":["Ann"]}],"gender":"female","birthDate":"1970-01-01"}' \
  http://127.0.0.1:$port/fhir/Patient/p1 >/dev/null
# ticks PIDS...: "pid ticks" lines, the user+system CPU each process has used.
ticks() {
  local p
  for p in "$@"; do
    [ -r /proc/$p/stat ] && echo "$p $(awk '{print $14 + $15}' /proc/$p/stat)"
  done
  true
}
backends() {
  if [ "$store" = postgres ]; then psql "$base" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$name'"; fi
}
echo "store=$store conns=$conns duration=$dur${PACE:+ pace=${PACE}ms}"
ticks $pid >"$tmp/srv0"
# shellcheck disable=SC2046
ticks $(backends) >"$tmp/db0"
if [ -n "${PROFILE:-}" ]; then
  # the profile covers the run but its first and last second
  secs=$(( ${dur%s} - 2 ))
  (sleep 1; curl -sf -o "$PROFILE" "http://127.0.0.1:$dport/debug/pprof/profile?seconds=$secs") &
  prof=$!
fi
pace=()
if [ -n "${PACE:-}" ]; then pace=(-s "$root/tools/loadtest/pace.lua"); fi
wrk -t"${THREADS:-1}" -c"$conns" -d"$dur" --latency "${pace[@]}" -H "Authorization: Bearer $tok" http://127.0.0.1:$port/fhir/Patient/p1 ${PACE:+-- "$PACE"} | tee "$tmp/wrk"
ticks $pid >"$tmp/srv1"
if [ -n "${PROFILE:-}" ]; then wait $prof && echo "CPU profile: $PROFILE"; fi
# shellcheck disable=SC2046
ticks $(backends) >"$tmp/db1"
reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk")
# used BEFORE AFTER: ticks used in between (processes that started meanwhile count from zero)
used() { awk 'NR == FNR {b[$1] = $2; next} {t += $2 - b[$1]; n++} END {print t + 0, n + 0}' "$1" "$2"; }
read -r s _ < <(used "$tmp/srv0" "$tmp/srv1")
read -r d nb < <(used "$tmp/db0" "$tmp/db1")
awk -v s="$s" -v d="$d" -v n="$reqs" -v hz="$(getconf CLK_TCK)" -v nb="$nb" 'BEGIN {
  printf "server CPU: %.1f s, %.0f us/request\n", s / hz, s / hz / n * 1e6
  if (nb > 0) printf "database CPU (%d backends): %.1f s, %.0f us/request\n", nb, d / hz, d / hz / n * 1e6
}'

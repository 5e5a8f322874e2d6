# setup.sh, sourced by the load test scripts after they set store (sqlite
# or postgres) and root (the repository): makes the temporary directory
# $tmp, puts a phr binary at $tmp/phr (BIN=PATH copies one built before,
# otherwise it builds this tree), and for postgres creates a fresh database
# phr_<prefix>_PID on PHR_TEST_POSTGRES_URL's server, whose URL it puts in
# $db ("" for SQLite). The EXIT trap stops the server in $pid, drops the
# database and removes $tmp.
# usage: . setup.sh PREFIX
tmp=$(mktemp -d)
pid=""
name=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$name" ]; then psql "$base" -qc "DROP DATABASE IF EXISTS $name" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -n "${BIN:-}" ]; then cp "$BIN" "$tmp/phr"; else go build -o "$tmp/phr" "$root/cmd/phr"; fi
db=""
if [ "$store" = postgres ]; then
  base=${PHR_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
  name=phr_${1:?usage: . setup.sh PREFIX}_$$
  PGOPTIONS="-c client_min_messages=warning" psql "$base" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
  db=$(echo "$base" | sed -E "s#/[^/?]+(\?|$)#/$name\1#")
fi

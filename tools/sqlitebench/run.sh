#!/bin/sh
# run.sh builds the three driver programs and runs each ROUNDS times (default 3),
# interleaved so that other load on the machine hits all drivers alike. Extra
# arguments go to every run, e.g. ./run.sh -n 100000 -group 1
set -eu
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -o "$out/" ./modernc ./mattn ./ncruces
for r in $(seq "${ROUNDS:-3}"); do
	for d in modernc mattn ncruces; do
		echo "# round $r, load average $(cut -d' ' -f1-3 /proc/loadavg)"
		"$out/$d" "$@"
	done
done

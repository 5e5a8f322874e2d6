#!/bin/bash
# ab.sh: compares two builds on a shared, noisy machine by running their
# benchmark commands alternately (A B A B ...), so that a slow period hits
# both, and prints each run's figure and, per side, the median, minimum and
# maximum. On the 2-core development machine the same build's import rate
# varies by about 10% from run to run: a difference smaller than that needs
# several pairs, and the CPU-time figures the benchmarks also report.
#
# usage: A='command' B='command' METRIC=unit [N=pairs] tools/loadtest/ab.sh
#
# METRIC names the figure in the commands' output: the word after it
# ("resources/s", "resources/cpu-s" of the benchmarks), or, when METRIC ends
# with a colon or is a percentile such as "99%", the word before it
# ("Requests/sec:" and "99%" of wrk, as get.sh prints them; a unit stuck to
# the number, as in 3.11ms, is dropped). N defaults to 3. Examples, the
# importer benchmark of two test binaries built with `go test -c`, and the
# GET tail of two phr binaries:
#
#   A="/tmp/old.test -test.run ^$ -test.bench ImportSynthea/sqlite -test.benchtime 1x" \
#   B="/tmp/new.test -test.run ^$ -test.bench ImportSynthea/sqlite -test.benchtime 1x" \
#   METRIC=resources/s N=4 tools/loadtest/ab.sh
#   A="BIN=/tmp/phr-old THREADS=1 tools/loadtest/get.sh sqlite" \
#   B="BIN=/tmp/phr-new THREADS=1 tools/loadtest/get.sh sqlite" METRIC=99% tools/loadtest/ab.sh
#
# (run test binaries from the package's directory: they read
# ../shared/data relative to it).
set -euo pipefail
: "${A:?A: the first command}" "${B:?B: the second command}" "${METRIC:?METRIC: the unit after the figure}"
n=${N:-3}
figure() {
  # the first figure named METRIC in the output (see above), as a number
  awk -v m="$METRIC" '{
    for (i = 1; i <= NF; i++) {
      if ($i != m) continue
      v = (m ~ /(:|%)$/) ? $(i+1) : $(i-1)
      if (v ~ /^[-+.0-9]/) {sub(/[^-+.0-9eE].*$/, "", v); print v; exit}
    }
  }'
}
declare -a fa fb
for i in $(seq "$n"); do
  for side in A B; do
    cmd=${!side}
    v=$(bash -c "$cmd" 2>&1 | figure || true)
    if [ -z "$v" ]; then
      echo "run $i $side: no figure in $METRIC in the output of: $cmd" >&2
      exit 1
    fi
    echo "run $i $side: $v $METRIC"
    if [ "$side" = A ]; then fa+=("$v"); else fb+=("$v"); fi
  done
done
summary() {
  printf '%s\n' "${@:2}" | sort -g | awk -v side="$1" -v m="$METRIC" '
    {v[NR] = $1}
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s: median %g %s, min %g, max %g (%d runs)\n", side, med, m, v[1], v[NR], NR
    }'
}
summary A "${fa[@]}"
summary B "${fb[@]}"

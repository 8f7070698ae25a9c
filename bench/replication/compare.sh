#!/usr/bin/env bash
# Before/after of the replication and transport benchmarks in one run:
# builds the test binaries of BASE (a git revision) and of the working
# tree, runs them alternately COUNT times each, so that both see the same
# machine load, and compares them with benchstat. Every run also measures
# the floor (BenchmarkPingPongRawTCP), the same-run reference.
#
#   bash bench/replication/compare.sh BASE                  # COUNT=6 BENCHTIME=2s
#   COUNT=10 bash bench/replication/compare.sh 70cb2b5~1
#
# Needs benchstat: go install golang.org/x/perf/cmd/benchstat@latest
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=${1:?usage: compare.sh BASE}
COUNT=${COUNT:-6}
BENCHTIME=${BENCHTIME:-2s}
OUT=${OUT:-$(mktemp -d)}
command -v benchstat >/dev/null || { echo "benchstat missing: go install golang.org/x/perf/cmd/benchstat@latest" >&2; exit 1; }

old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git archive "$BASE" | tar -x -C "$old"
for pkg in replication internal/transport; do
  name=${pkg//\//-}
  (cd "$old" && go test -c -o "$OUT/$name.old" "./$pkg/")
  go test -c -o "$OUT/$name.new" "./$pkg/"
done

run() { # binary package bench-regexp output
  (cd "$2" && "$1" -test.run '^$' -test.bench "$3" -test.benchtime "$BENCHTIME" -test.benchmem) | grep '^Benchmark' >>"$4"
}
for i in $(seq "$COUNT"); do
  echo "round $i/$COUNT" >&2
  for v in old new; do
    run "$OUT/replication.$v" replication 'PingPongRawTCP|Save' "$OUT/replication-$v.txt"
    run "$OUT/internal-transport.$v" internal/transport 'PingPongRawTCP|Call' "$OUT/transport-$v.txt"
  done
done
echo "# $(go version | cut -d' ' -f3), $(nproc) CPUs, $(date -u +%F), base $(git rev-parse --short "$BASE"), new $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- replication internal || echo '+changes')"
for p in replication transport; do
  echo "## $p"
  benchstat "$OUT/$p-old.txt" "$OUT/$p-new.txt"
done
echo "raw results in $OUT" >&2

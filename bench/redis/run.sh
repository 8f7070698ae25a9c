#!/usr/bin/env bash
# Troupe's sync-replicated Save against Redis with one replica (SET + WAIT
# 1 0), same payload and concurrency, in one run on loopback. Installs
# Debian's redis-server if it is missing (needs root). Not run in CI.
#
#   bash bench/redis/run.sh              # 10 s per measurement, 64 clients, 3 rounds
#   DURATION=30s CLIENTS=64 ROUNDS=5 bash bench/redis/run.sh
#
# The throughput comparison takes ROUNDS turns, Troupe then Redis, so that
# both see the same load on a shared machine, and reports each round's
# ratio and their median.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-64}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-3}
PRIMARY_PORT=${PRIMARY_PORT:-7379}
REPLICA_PORT=${REPLICA_PORT:-7380}

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# No persistence: both sides keep data in memory only, as Troupe does.
common=(--bind 127.0.0.1 --save "" --appendonly no --protected-mode no --daemonize no --loglevel warning)
redis-server "${common[@]}" --port "$PRIMARY_PORT" --dir "$work" --dbfilename p.rdb >"$work/primary.log" 2>&1 &
pids+=($!)
redis-server "${common[@]}" --port "$REPLICA_PORT" --dir "$work" --dbfilename r.rdb \
  --replicaof 127.0.0.1 "$PRIMARY_PORT" >"$work/replica.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  if redis-cli -p "$REPLICA_PORT" info replication 2>/dev/null | grep -q 'master_link_status:up'; then
    break
  fi
  sleep 0.1
done
redis-cli -p "$REPLICA_PORT" info replication | grep -q 'master_link_status:up' || {
  echo "replica did not attach" >&2; cat "$work"/*.log >&2; exit 1; }

echo "$(redis-server --version | cut -d' ' -f1-3), $(go version | cut -d' ' -f3), $(nproc) CPUs"
go build -o "$work/benchsave" ./replication/internal/benchsave
go build -o "$work/redisbench" ./bench/redis

# Troupe, twice: a 1 KiB session of 8 attributes with one changed per Save
# (what Save sends; with the floor and one client), and, in the rounds, a
# 1 KiB session of one attribute, all of it changed per Save (the same
# bytes on the wire as Redis's SET).
"$work/benchsave" -duration "$DURATION" -clients "$CLIENTS" -size "$SIZE" -attrs 8
"$work/redisbench" -addr "127.0.0.1:$PRIMARY_PORT" -clients "$CLIENTS" -size "$SIZE" -duration "$DURATION"
ratios=()
for round in $(seq "$ROUNDS"); do
  troupe=$("$work/benchsave" -duration "$DURATION" -clients "$CLIENTS" -size "$SIZE" -attrs 1 -quiet)
  redis=$("$work/redisbench" -addr "127.0.0.1:$PRIMARY_PORT" -clients "$CLIENTS" -size "$SIZE" -duration "$DURATION" -quiet)
  ratio=$(awk -v t="$troupe" -v r="$redis" 'BEGIN { printf "%.2f", t / r }')
  ratios+=("$ratio")
  echo "round $round: $SIZE B changed per op, $CLIENTS clients: troupe $troupe/s, redis $redis/s, ratio $ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { printf "median ratio over %d rounds: %s\n", NR, r[int((NR + 1) / 2)] }'

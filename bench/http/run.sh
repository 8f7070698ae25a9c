#!/usr/bin/env bash
# HTTP sessions end to end, in one run on loopback (127.0.0.x only):
# requests that read and update a session, and requests that create one,
# on one handler (bench/http/server) with different session stores,
# interleaved, ROUNDS repetitions each; then failover after kill -9 of a
# worker under load. Not run in CI; asserts nothing.
#
#   bash bench/http/run.sh                        # about 9.5 minutes
#   DURATION=20s ROUNDS=5 bash bench/http/run.sh
#   TOMCAT=0 bash bench/http/run.sh               # without Tomcat
#   LOADGEN=go bash bench/http/run.sh             # bench/http/load instead of wrk
#   PROFILE=1 bash bench/http/run.sh              # and a CPU profile of a Troupe worker
#   VARIANTS="troupe memory" FAILOVER_ROUNDS=0 TOMCAT=0 bash bench/http/run.sh   # a quick A/B
#   VARIANTS="troupe troupe-async memory" ROUNDS=7 FAILOVER_ROUNDS=0 TOMCAT=0 bash bench/http/run.sh
#                                                 # what waiting for the secondary costs
#
# Variants, each a cluster of its own (every Go server is a full Troupe
# node that binds its URL under services/web, where examples/proxy finds
# it; only the session store differs):
#   troupe         two servers -store troupe (ModeSync, cluster key) behind examples/proxy
#   troupe-direct  the same two servers, without the proxy: each wrk thread (each
#                  load client) sticks to one worker, where its sessions were made
#   memory         two servers -store memory (a map under a mutex) behind examples/proxy,
#                  which routes each session to its server by the cookie, as for troupe
#   memory-direct  the same two, without the proxy, as troupe-direct
#   scs            two servers -store scs (scs v2 + redisstore, WAIT 1 0 after each
#                  commit) on a Redis with one replica, behind examples/proxy (round
#                  robin: every server reads every session from Redis)
#   troupe-async   as troupe, with -async (ModeAsync: Save returns before the
#                  secondary answers), only when VARIANTS names it: what the
#                  wait for the secondary costs, against troupe
#   tomcat         two Debian tomcat10 instances, BackupManager, static membership,
#                  a JSP counter, direct as troupe-direct (examples/proxy cannot
#                  route by JSESSIONID's jvmRoute)
#
# Load: wrk -t2 -c$CLIENTS with bench/http/wrk.lua (a pool of session
# cookies per thread, one per connection, none in two requests at once).
# Failover and the readiness checks use bench/http/load, which checks
# every counter and times every request.
#
# Installs Debian's redis-server and wrk, and tomcat10 unless TOMCAT=0, if
# missing (needs root). Prints every measurement, then the ratios per
# round and their medians; everything also goes to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-8s}
PREWARM=${PREWARM:-4s}   # once per variant and workload before round 1, not counted (JIT, caches)
TOMCAT_PREWARM=${TOMCAT_PREWARM:-20s} # the JVM's JIT takes longer
CLIENTS=${CLIENTS:-32}
ROUNDS=${ROUNDS:-3}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-3}
TOMCAT=${TOMCAT:-1}
LOADGEN=${LOADGEN:-wrk}
PROFILE=${PROFILE:-0}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
if [ "$LOADGEN" = wrk ] && ! command -v wrk >/dev/null; then need+=(wrk); fi
if [ "$TOMCAT" = 1 ] && [ ! -x /usr/share/tomcat10/bin/catalina.sh ]; then need+=(tomcat10); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
OUT=${OUT:-$work/results.txt}
declare -A PID=()
cleanup() {
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "building into $work" >&2
(cd bench/http && go build -o "$work/" ./server ./load)
go build -o "$work/proxy" ./examples/proxy
head -c 32 /dev/urandom | base64 >"$work/cluster.key"
load=$work/load

# node STORE NAME CLUSTER IP WKA_IP [flags...]: a bench server, gossip on
# IP:7946, transport :7947, HTTP :8080.
node() {
  local store=$1 name=$2 cluster=$3 ip=$4 wka=$5
  shift 5
  "$work/server" -store "$store" -name "$name" -cluster "$cluster" -bind "$ip:7946" -wka "$wka:7946" \
    -http "$ip:8080" -key-file "$work/cluster.key" "$@" >"$work/$name.log" 2>&1 &
  PID[$name]=$!
}
# proxy NAME CLUSTER IP WKA_IP: examples/proxy on IP:8080, a client node.
proxy() {
  "$work/proxy" -name "$1" -cluster "$2" -bind "$3:7946" -wka "$4:7946" -http "$3:8080" \
    -key-file "$work/cluster.key" -console-prefix "" -profile local -log-level warn >"$work/$1.log" 2>&1 &
  PID[$1]=$!
}
stop() {
  for n in "$@"; do
    kill -9 "${PID[$n]}" 2>/dev/null || true
    wait "${PID[$n]}" 2>/dev/null || true
    unset "PID[$n]"
  done
}
urls() { # "ip:port ip:port" -> "http://ip:port,http://ip:port"
  local u="" t
  for t in $1; do u="$u${u:+,}http://$t"; done
  echo "$u"
}
ready() { # TARGETS NODES
  "$load" -mode wait -targets "$(urls "$1")" -nodes "$2" -timeout 90s >/dev/null || {
    echo "not ready: $1" >&2; tail -n 20 "$work"/*.log >&2; exit 1; }
}

# Redis: a primary and one replica, no persistence (as bench/redis/run.sh).
redis_common=(--port 6379 --save "" --appendonly no --protected-mode no --daemonize no --loglevel warning --dir "$work")
redis-server "${redis_common[@]}" --bind 127.0.0.34 --dbfilename p.rdb >"$work/redis-primary.log" 2>&1 &
PID[redis-primary]=$!
redis-server "${redis_common[@]}" --bind 127.0.0.35 --dbfilename r.rdb --replicaof 127.0.0.34 6379 >"$work/redis-replica.log" 2>&1 &
PID[redis-replica]=$!

pprof=()
[ "$PROFILE" = 1 ] && pprof=(-pprof 127.0.0.11:6060)
node troupe t-w1 bench-troupe 127.0.0.11 127.0.0.11 "${pprof[@]}"
node memory m-w1 bench-memory 127.0.0.21 127.0.0.21
sleep 1 # the first node of each cluster is its well-known member
node troupe t-w2 bench-troupe 127.0.0.12 127.0.0.11
proxy t-proxy bench-troupe 127.0.0.13 127.0.0.11
node memory m-w2 bench-memory 127.0.0.22 127.0.0.21
proxy m-proxy bench-memory 127.0.0.23 127.0.0.21

for _ in $(seq 100); do
  redis-cli -h 127.0.0.35 info replication 2>/dev/null | grep -q 'master_link_status:up' && break
  sleep 0.1
done
redis-cli -h 127.0.0.35 info replication | grep -q 'master_link_status:up' || {
  echo "redis replica did not attach" >&2; cat "$work"/redis-*.log >&2; exit 1; }
node scs s-w1 bench-scs 127.0.0.31 127.0.0.31 -redis 127.0.0.34:6379
sleep 1
node scs s-w2 bench-scs 127.0.0.32 127.0.0.31 -redis 127.0.0.34:6379
proxy s-proxy bench-scs 127.0.0.33 127.0.0.31

variants=(${VARIANTS:-troupe troupe-direct memory memory-direct scs})
if [[ " ${variants[*]} " == *" troupe-async "* ]]; then
  node troupe a-w1 bench-troupe-async 127.0.0.71 127.0.0.71 -async
  sleep 1
  node troupe a-w2 bench-troupe-async 127.0.0.72 127.0.0.71 -async
  proxy a-proxy bench-troupe-async 127.0.0.73 127.0.0.71
fi
declare -A TARGETS=(
  [troupe]="127.0.0.13:8080"
  [troupe-direct]="127.0.0.11:8080 127.0.0.12:8080"
  [troupe-async]="127.0.0.73:8080"
  [memory]="127.0.0.23:8080"
  [memory-direct]="127.0.0.21:8080 127.0.0.22:8080"
  [scs]="127.0.0.33:8080"
  [tomcat]="127.0.0.41:8080 127.0.0.42:8080"
)
# The processes whose CPU time each measurement reports (name:@process).
declare -A CPU=(
  [troupe]="proxy:@t-proxy,w1:@t-w1,w2:@t-w2"
  [troupe-direct]="proxy:@t-proxy,w1:@t-w1,w2:@t-w2"
  [troupe-async]="proxy:@a-proxy,w1:@a-w1,w2:@a-w2"
  [memory]="proxy:@m-proxy,w1:@m-w1,w2:@m-w2"
  [memory-direct]="proxy:@m-proxy,w1:@m-w1,w2:@m-w2"
  [scs]="proxy:@s-proxy,w1:@s-w1,w2:@s-w2,redis:@redis-primary,replica:@redis-replica"
  [tomcat]="w1:@tomcat-1,w2:@tomcat-2"
)

if [ "$TOMCAT" = 1 ]; then
  # tomcat_base NAME IP PEER_IP ID PEER_ID: a CATALINA_BASE with the
  # cluster's server.xml and the counter application.
  tomcat_base() {
    local b=$work/$1
    mkdir -p "$b/conf" "$b/logs" "$b/temp" "$b/work" "$b/webapps/ROOT/WEB-INF"
    sed -e "s/@ADDR@/$2/g; s/@PEER@/$3/g; s/@ID@/$4/g; s/@PEERID@/$5/g; s/@ROUTE@/$1/g" \
      bench/http/tomcat/server.xml.in >"$b/conf/server.xml"
    cp /etc/tomcat10/web.xml /etc/tomcat10/catalina.properties /etc/tomcat10/logging.properties /etc/tomcat10/context.xml "$b/conf/"
    cp bench/http/tomcat/counter.jsp "$b/webapps/ROOT/"
    cp bench/http/tomcat/web.xml "$b/webapps/ROOT/WEB-INF/"
  }
  tomcat_base tomcat-1 127.0.0.41 127.0.0.42 1 2
  tomcat_base tomcat-2 127.0.0.42 127.0.0.41 2 1
  for t in tomcat-1 tomcat-2; do
    # catalina.sh run execs java: $! is the JVM.
    CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE=$work/$t JAVA_OPTS="-Dbench.node=$t -Xms1g -Xmx1g" \
      /usr/share/tomcat10/bin/catalina.sh run >"$work/$t.log" 2>&1 &
    PID[$t]=$!
  done
  variants+=(tomcat)
fi

for v in "${variants[@]}"; do ready "${TARGETS[$v]}" 2; done
if [ "$TOMCAT" = 1 ]; then
  # Both members must see each other before sessions get a backup.
  for _ in $(seq 150); do
    grep -q 'Map member added' "$work/tomcat-1.log" && grep -q 'Map member added' "$work/tomcat-2.log" && break
    sleep 0.2
  done
  grep -q 'Map member added' "$work/tomcat-2.log" || { echo "tomcat members do not see each other" >&2; exit 1; }
fi

# counters_now VARIANT: "cpu_NAME_ms=N ... switches=N syscalls=N" of the
# variant's processes so far: each one's CPU time (utime + stime,
# /proc/PID/stat fields 14 and 15, in ticks of 10 ms), and for all of
# them together the context switches of their threads (voluntary and
# not, /proc/PID/task/*/status) and their read and write system calls
# (/proc/PID/io). On a virtual machine a switch costs more than most of
# a request's work, and a replicated request makes more of them: this
# shows how many.
counters_now() {
  local item p sw=0 rw=0
  local IFS=,
  for item in ${CPU[$1]}; do
    p=${PID[${item#*:@}]}
    echo -n "cpu_${item%%:*}_ms=$(awk '{ print ($14 + $15) * 10 }' "/proc/$p/stat") "
    sw=$((sw + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }')))
    rw=$((rw + $(awk '/^sysc[rw]:/ { n += $2 } END { print n + 0 }' "/proc/$p/io")))
  done
  echo "switches=$sw syscalls=$rw"
}
# children_ms: CPU of this shell's finished children (wrk), in ms, as
# the last "times >$work/times" in this shell (not a subshell) saw it.
children_ms() {
  awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60000 + a[2] * 1000 } printf "%.0f", n }' "$work/times"
}
# to_us: wrk's "1.23ms" -> 1230
to_us() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /m$/) f = 6e7; else f = 1e6; printf "%.0f", n * f }'
}

# run_wrk WORKLOAD VARIANT DURATION: one key=value line, as load prints.
run_wrk() {
  local t=(${TARGETS[$2]}) direct="" out reqs rps non2xx sockerr made p50 p99 ok
  [ ${#t[@]} -gt 1 ] && direct=${TARGETS[$2]}
  out=$(BENCH_MODE=$1 BENCH_TARGETS=$direct wrk -t2 -c"$CLIENTS" -d"$3" --latency -s bench/http/wrk.lua "http://${t[0]}/counter")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  sockerr=$(awk -F'[ ,]+' '/Socket errors/ { print $4 + $6 + $8 + $10 }' <<<"$out")
  made=$(awk '/requests without a cookie/ { print $NF }' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  ok=$((reqs - ${non2xx:-0}))
  echo "rate=$(awk -v r="$rps" -v ok="$ok" -v n="$reqs" 'BEGIN { printf "%.0f", r * ok / n }') ok=$ok fail=$((${non2xx:-0} + ${sockerr:-0})) p50_us=$p50 p99_us=$p99${made:+ sessions_made=$made}"
}

# measure ROUND WORKLOAD VARIANT DURATION
measure() {
  local line k v
  declare -A c0=()
  for kv in $(counters_now "$3"); do c0[${kv%%=*}]=${kv#*=}; done
  local l0
  times >"$work/times"
  l0=$(children_ms)
  if [ "$LOADGEN" = wrk ]; then
    line=$(run_wrk "$2" "$3" "$4")
  else
    line=$("$load" -mode "$2" -targets "$(urls "${TARGETS[$3]}")" -clients "$CLIENTS" -warmup 1s -duration "$4")
    line=${line%% cpu_load_ms=*}
  fi
  times >"$work/times"
  line="$line cpu_load_ms=$(($(children_ms) - l0))"
  for kv in $(counters_now "$3"); do
    k=${kv%%=*} v=${kv#*=}
    line="$line $k=$((v - c0[$k]))"
  done
  echo "round=$1 workload=$2 variant=$3 $line" | tee -a "$OUT"
}

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3)"
  echo "redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2); load generator: $LOADGEN$([ "$LOADGEN" = wrk ] && wrk -v 2>&1 | head -1 | cut -d' ' -f1-2 | sed 's/^/ /')"
  if [ "$TOMCAT" = 1 ]; then
    echo "tomcat $(CATALINA_HOME=/usr/share/tomcat10 /usr/share/tomcat10/bin/version.sh 2>/dev/null | awk '/Server number/ { print $3 }'), $(java -version 2>&1 | head -1)"
  fi
  echo "settings: DURATION=$DURATION CLIENTS=$CLIENTS ROUNDS=$ROUNDS PREWARM=$PREWARM TOMCAT_PREWARM=$TOMCAT_PREWARM"
} | tee "$OUT"

echo "pre-warming every variant for $PREWARM, Tomcat for $TOMCAT_PREWARM (round 0, not counted)" >&2
for w in update create; do
  for v in "${variants[@]}"; do
    d=$PREWARM
    [ "$v" = tomcat ] && d=$TOMCAT_PREWARM
    measure 0 "$w" "$v" "$d" >/dev/null
  done
done

n=${#variants[@]}
for round in $(seq "$ROUNDS"); do
  for w in update create; do
    # Each round starts one variant later, so that none is always first.
    for i in $(seq 0 $((n - 1))); do
      measure "$round" "$w" "${variants[$(((i + round - 1) % n))]}" "$DURATION"
    done
  done
done

if [ "$PROFILE" = 1 ]; then
  # The worker's own cost: troupe-direct load, so that it is the busiest.
  echo "profiling t-w1 for 8 s under troupe-direct update load" >&2
  BENCH_MODE=update BENCH_TARGETS="${TARGETS[troupe-direct]}" wrk -t2 -c"$CLIENTS" -d12s -s bench/http/wrk.lua \
    http://127.0.0.11:8080/counter >/dev/null &
  lp=$!
  sleep 2
  curl -s -o "$work/t-w1.pprof" "http://127.0.0.11:6060/debug/pprof/profile?seconds=8" || true
  wait "$lp"
  go tool pprof -top -nodecount 30 "$work/server" "$work/t-w1.pprof" 2>/dev/null | tee -a "$OUT" || true
  go tool pprof -top -cum -nodecount 60 "$work/server" "$work/t-w1.pprof" 2>/dev/null | tee -a "$OUT" || true
fi

# Failover: the throughput clusters stop; per round a fresh cluster of two
# workers and a third session node (it holds secondaries and serves no
# HTTP, as the manager of examples/appserver), behind a proxy; kill -9 of
# worker 1 after 3 s of load, then 5 s more. Once with an Idempotency-Key
# on every POST (the proxy may then resend a POST that the dying worker
# had received), once without (such a request fails).
for name in "${!PID[@]}"; do stop "$name"; done
for round in $(seq "$FAILOVER_ROUNDS"); do
  for idem in true false; do
    c=failover-$round-$idem
    node troupe f-w1 "$c" 127.0.0.51 127.0.0.51
    disown "${PID[f-w1]}" # load kills it: no "Killed" message from bash
    sleep 1
    node troupe f-w2 "$c" 127.0.0.52 127.0.0.51
    node troupe f-spare "$c" 127.0.0.54 127.0.0.51 -service bench/spare
    proxy f-proxy "$c" 127.0.0.53 127.0.0.51
    ready 127.0.0.53:8080 2
    line=$("$load" -mode failover -targets http://127.0.0.53:8080 -clients "$CLIENTS" -idempotency="$idem" \
      -kill-pid "${PID[f-w1]}" -kill-node f-w1 -kill-after 3s -duration 5s)
    echo "round=$round workload=failover idempotency=$idem $line" | tee -a "$OUT"
    stop f-w1 f-w2 f-spare f-proxy
  done
done

# Summary: per round and median.
awk -v rounds="$ROUNDS" '
  function kv(s,   a, i, p) { delete f; split(s, a, " "); for (i in a) { split(a[i], p, "="); f[p[1]] = p[2] } }
  function med(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return a[int((n + 1) / 2)]
  }
  /^round=[1-9]/ && / workload=(update|create) / {
    kv($0); k = f["round"] SUBSEP f["workload"] SUBSEP f["variant"]
    rate[k] = f["rate"]; fails[k] = f["fail"]; seen[f["variant"]] = 1
    srv = 0; for (x in f) if (x ~ /^cpu_/ && x != "cpu_load_ms") srv += f[x]
    cpu[k] = f["ok"] > 0 ? sprintf("%.0f/%.0f", srv * 1000 / f["ok"], f["cpu_load_ms"] * 1000 / f["ok"]) : "-"
    sw[k] = f["ok"] > 0 && f["switches"] != "" ? sprintf("%.1f/%.1f", f["switches"] / f["ok"], f["syscalls"] / f["ok"]) : "-"
  }
  / workload=failover / { kv($0); fo[f["idempotency"]] = fo[f["idempotency"]] sprintf("\n    round %s: first %s ms, all %s ms, %s affected sessions, %s failed requests, %s lost and %s doubled updates, slowest request %s ms",
    f["round"], f["gap_first_ms"], f["gap_all_ms"], f["affected"], f["fail_after"], f["lost"], f["dup"], f["max_latency_ms"]) }
  END {
    nv = split("troupe troupe-direct troupe-async memory memory-direct scs tomcat", vs, " ")
    nr = split("troupe/memory troupe-direct/memory-direct troupe/scs troupe/tomcat troupe-direct/tomcat troupe/troupe-direct memory/memory-direct troupe-async/memory troupe/troupe-async", rs, " ")
    for (wi = 1; wi <= 2; wi++) {
      w = wi == 1 ? "update" : "create"
      printf "\n%s: requests/s by round (median) | failed requests | CPU µs per request, servers (proxy, workers, Redis) / load generator | per request, the servers%s context switches / read and write calls\n", w, "\047"
      for (vi = 1; vi <= nv; vi++) {
        v = vs[vi]; if (!(v in seen)) continue
        l = ""; e = ""; c = ""; q = ""
        for (r = 1; r <= rounds; r++) { k = r SUBSEP w SUBSEP v; l = l " " rate[k]; e = e " " fails[k]; c = c " " cpu[k]; q = q " " sw[k] }
        printf "  %-14s %s (median %s) | fail%s | cpu%s | switches%s\n", v, l, med(l), e, c, q
      }
      for (ri = 1; ri <= nr; ri++) {
        split(rs[ri], ab, "/"); if (!(ab[1] in seen) || !(ab[2] in seen)) continue
        l = ""
        for (r = 1; r <= rounds; r++) l = l " " sprintf("%.2f", rate[r, w, ab[1]] / rate[r, w, ab[2]])
        printf "  %-28s %s (median %s)\n", rs[ri], l, med(l)
      }
    }
    for (i in fo) printf "\nfailover (kill -9 of a worker), Idempotency-Key %s:%s\n", i, fo[i]
  }' "$OUT" | tee -a "$OUT"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end" | tee -a "$OUT"
echo "all lines: $OUT"

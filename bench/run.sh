#!/usr/bin/env bash
# dnsward vs Unbound under dnsperf, on loopback only. See bench/README.md.
#
#   bench/run.sh                      # build release, run every workload, write bench/results/latest.md
#   DURATION=20 RATE=40000 ROUNDS=2 bench/run.sh
#   SKIP_BUILD=1 WORKLOADS="w2" LOADS="max" bench/run.sh
#   SKIP_BUILD=1 WORKLOADS="w3" FLOOD_NAMES=10000000 bench/run.sh   # random-subdomain flood only
#
# Three servers, each on its own loopback address and port:
#   upstream  127.0.0.41:$((BASE_PORT+1))  Unbound with local-data for the bench zone: the
#                                           "authoritative" server both resolvers forward to
#   dnsward   127.0.0.42:$((BASE_PORT+2))  threads=2, udp_workers=2, events off, admin off
#   unbound   127.0.0.43:$((BASE_PORT+3))  num-threads 2, forward-zone to the upstream
#   dnsward-nodetect 127.0.0.44:$((BASE_PORT+4))  as dnsward with [detect] enabled = false
#                                           (only when SCORING_OFF=1 and W1 is measured)
# dnsperf runs on the same machine and shares its cores with the server being measured, so the
# server's CPU time per completed query (from /proc/PID/stat) is reported next to queries/s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS_DIR="$ROOT/bench/results"
DURATION=${DURATION:-15}            # seconds per dnsperf run
CLIENTS=${CLIENTS:-8}               # dnsperf -c
RATE=${RATE:-50000}                 # dnsperf -Q for the "fixed" load
LOADS=${LOADS:-"fixed max capacity"} # fixed = -Q $RATE, max = no -Q (as fast as dnsperf can),
                                    # capacity = the server alone on one core, driven by blast
WORKLOADS=${WORKLOADS:-"w1 w2"}     # w1 cached allowed, w2 denied, w3 random-subdomain flood
SCORING_OFF=${SCORING_OFF:-1}       # 1 also measures W1 on a dnsward with [detect] enabled = false
FLOOD_NAMES=${FLOOD_NAMES:-1000000} # W3: unique names in the flood file (each sent once)
FLOOD_CLIENTS=${FLOOD_CLIENTS:-8}   # W3: dnsperf -c
CAP_OUTSTANDING=${CAP_OUTSTANDING:-300} # capacity: blast -q (outstanding queries per socket)
ROUNDS=${ROUNDS:-1}                 # repeat every (workload, load) pair, alternating who goes first
NAMES=${NAMES:-500}                 # distinct names per workload
BASE_PORT=${BASE_PORT:-5300}
SKIP_BUILD=${SKIP_BUILD:-0}         # 1 uses the existing binary (DNSWARD_BIN, default target/release/dnsward)
KEEP_WORK=${KEEP_WORK:-0}           # 1 keeps the temporary configs and logs
EVENTS=${EVENTS:-file}              # file: events to a file (every block, allowed sampled 1/100),
                                    # as issue 13 measures; none: sink = "none"
SERVE_ONLY=${SERVE_ONLY:-0}         # 1 starts and warms the servers, prints their addresses and
                                    # waits (for perf/strace by hand); Ctrl-C stops everything
PERF=${PERF:-0}                     # 1 records `perf record -g` of dnsward during its max-load
                                    # runs into bench/results/perf-*.raw (skews those runs)

UP_ADDR=127.0.0.41;  UP_PORT=$((BASE_PORT + 1))
DW_ADDR=127.0.0.42;  DW_PORT=$((BASE_PORT + 2))
UB_ADDR=127.0.0.43;  UB_PORT=$((BASE_PORT + 3))
DO_ADDR=127.0.0.44;  DO_PORT=$((BASE_PORT + 4))
# W3's load comes from its own source address, so dnsward puts it in its own group.
FLOOD_SRC=127.0.0.2
has_workload() { case " $WORKLOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
NODETECT=0
if [ "$SCORING_OFF" = 1 ] && { has_workload w1 || has_workload w3; }; then NODETECT=1; fi

for tool in dnsperf unbound dig awk; do
    command -v "$tool" >/dev/null || {
        echo "bench: '$tool' not found; apt-get install dnsperf unbound bind9-dnsutils" >&2
        exit 1
    }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnsward-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        # Give each a moment to exit, then make sure.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_WORK" = 1 ]; then echo "bench: work files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

port_busy() { # addr port
    { ss -Hlnu "src $1:$2" 2>/dev/null; ss -Hlnt "src $1:$2" 2>/dev/null; } | grep -q .
}
for ap in "$UP_ADDR $UP_PORT" "$DW_ADDR $DW_PORT" "$UB_ADDR $UB_PORT" "$DO_ADDR $DO_PORT"; do
    set -- $ap
    if command -v ss >/dev/null && port_busy "$1" "$2"; then
        echo "bench: $1:$2 is already in use (a server left over from an earlier run?)." >&2
        echo "       Stop it, or pick other ports with BASE_PORT=..." >&2
        exit 1
    fi
done

# ---------------------------------------------------------------------------------------------
# Build
has_load() { case " $LOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
BLAST=${BLAST_BIN:-"$ROOT/bench/blast/target/release/blast"}
if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
if has_load capacity; then
    if [ "$(nproc)" -lt 2 ]; then
        echo "bench: the capacity load needs 2 CPUs (the server on one, blast on another)" >&2
        exit 1
    fi
    command -v taskset >/dev/null || { echo "bench: 'taskset' not found (util-linux)" >&2; exit 1; }
    if [ "$SKIP_BUILD" != 1 ] || [ ! -x "$BLAST" ]; then
        log "cargo build --release (bench/blast)"
        (cd "$ROOT" && cargo build --release --quiet --manifest-path bench/blast/Cargo.toml)
    fi
fi
DNSWARD=${DNSWARD_BIN:-"$ROOT/target/release/dnsward"}
[ -x "$DNSWARD" ] || { echo "bench: $DNSWARD missing (run without SKIP_BUILD)" >&2; exit 1; }
BIN_BUILT=$(date -u -r "$DNSWARD" '+%Y-%m-%d %H:%M UTC')

# ---------------------------------------------------------------------------------------------
# Query files and zone data
# W1: names in bench.example, answered by the upstream, cached by both resolvers before measuring.
# W2: names in denied.example: dnsward blocks them by policy (not allowlisted → NXDOMAIN),
#     Unbound by `local-zone: "denied.example." always_nxdomain`. Neither touches an upstream.
: >"$WORK/w1.txt"; : >"$WORK/w2.txt"; : >"$WORK/up-local-data.conf"
for i in $(seq 1 "$NAMES"); do
    echo "host$i.bench.example A" >>"$WORK/w1.txt"
    echo "x$i.denied.example A" >>"$WORK/w2.txt"
    printf '    local-data: "host%d.bench.example. 3600 IN A 198.51.%d.%d"\n' \
        "$i" $((100 + i / 250)) $((1 + i % 250)) >>"$WORK/up-local-data.conf"
done
# W3: FLOOD_NAMES unique random names under flood.example (16-32 characters of [a-z0-9], so
# collisions are negligible: 36^16 ≈ 8e24), each sent once. The upstream answers NXDOMAIN with
# an SOA (negative TTL 60 s), so both resolvers forward every query and cache every answer.
if has_workload w3; then
    log "generating $FLOOD_NAMES flood names"
    python3 - "$FLOOD_NAMES" "$WORK/w3.txt" <<'PY'
import os, sys
n, path = int(sys.argv[1]), sys.argv[2]
table = bytes(b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(256))
with open(path, "wb", buffering=1 << 20) as out:
    done = 0
    while done < n:
        k = min(100_000, n - done)
        chars = os.urandom(k * 32).translate(table)
        lens = os.urandom(k)
        out.write(b"".join(
            chars[i * 32 : i * 32 + 16 + lens[i] % 17] + b".flood.example A\n" for i in range(k)
        ))
        done += k
PY
fi

# ---------------------------------------------------------------------------------------------
# Configs
unbound_common() { # dir
    cat <<EOF
    username: ""
    chroot: ""
    directory: "$1"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-daemonize: no
    do-ip6: no
    do-tcp: yes
    access-control: 127.0.0.0/8 allow
    # Iterator only: no DNSSEC validation (dnsward does none either), no trust anchor files.
    module-config: "iterator"
    so-rcvbuf: 4m
EOF
}

cat >"$WORK/upstream.conf" <<EOF
server:
    interface: $UP_ADDR
    port: $UP_PORT
    num-threads: 1
$(unbound_common "$WORK")
    # Loopback only: a name outside its zones is refused, never looked up on the internet.
    local-zone: "." refuse
    local-zone: "bench.example." static
$(cat "$WORK/up-local-data.conf")
    local-zone: "flood.example." static
    local-data: "flood.example. 3600 IN SOA ns.flood.example. hostmaster.flood.example. 1 3600 600 86400 60"
remote-control:
    control-enable: no
EOF

cat >"$WORK/unbound.conf" <<EOF
server:
    interface: $UB_ADDR
    port: $UB_PORT
    num-threads: 2
    so-reuseport: yes
$(unbound_common "$WORK")
    # The upstream is on loopback; Unbound refuses to query localhost unless told.
    do-not-query-localhost: no
    qname-minimisation: no
    # W2: the policy answer for denied names, from Unbound's own policy engine.
    local-zone: "denied.example." always_nxdomain
forward-zone:
    name: "bench.example."
    forward-addr: $UP_ADDR@$UP_PORT
# Loopback only: any other name goes to the upstream, which refuses it (no root servers).
forward-zone:
    name: "."
    forward-addr: $UP_ADDR@$UP_PORT
forward-zone:
    name: "flood.example."
    forward-addr: $UP_ADDR@$UP_PORT
remote-control:
    control-enable: no
EOF

events_conf() { # name
    if [ "$EVENTS" = file ]; then
        # Every block, refusal and alert is written; allowed queries are sampled one in 100
        # (the defaults). The file rotates at 64 MiB, keeping 2.
        printf 'sink = "file"\npath = "%s"\nkeep = 2\n' "$WORK/events-$1.jsonl"
    else
        printf 'sink = "none"\n'
    fi
}
dnsward_conf() { # listen-addr listen-port detect-enabled name
    cat <<EOF
[server]
listen = ["$1:$2"]
threads = 2
udp_workers = 2

[detect]
enabled = $3

[admin]
listen = ""

[upstream]
servers = [{ address = "$UP_ADDR:$UP_PORT" }]

[events]
$(events_conf "$4")

# Monitor-only (issue 13's method): every query is scored, but one client cycling through
# 500 distinct names of one domain is exactly what the volume detector contains, and a
# contained client would be answered from the sinkhole instead of doing the measured work.
[[groups]]
name = "bench"
cidrs = ["127.0.0.0/8"]
allow = ["*.bench.example"]
block = "nxdomain"

[groups.detect]
monitor_only = true

# W3's source. Monitor-only: the flood is scored (and alerted on) but never contained, so
# dnsward forwards every query as Unbound does and both do the same work.
[[groups]]
name = "flood"
cidrs = ["$FLOOD_SRC/32"]
allow = ["*.flood.example"]
block = "nxdomain"

[groups.detect]
monitor_only = true
EOF
}
dnsward_conf "$DW_ADDR" "$DW_PORT" true dnsward >"$WORK/dnsward.toml"
dnsward_conf "$DO_ADDR" "$DO_PORT" false dnsward-nodetect >"$WORK/dnsward-nodetect.toml"

unbound-checkconf "$WORK/upstream.conf" >/dev/null
unbound-checkconf "$WORK/unbound.conf" >/dev/null
"$DNSWARD" check --config "$WORK/dnsward.toml" >/dev/null
"$DNSWARD" check --config "$WORK/dnsward-nodetect.toml" >/dev/null

# ---------------------------------------------------------------------------------------------
# Start servers
wait_ready() { # name addr port pid
    local i
    for i in $(seq 1 100); do
        if ! kill -0 "$4" 2>/dev/null; then
            echo "bench: $1 exited during startup; log:" >&2
            cat "$WORK/$1.log" >&2
            exit 1
        fi
        # Any answer at all (even REFUSED/NXDOMAIN) means it is listening.
        if dig +time=1 +tries=1 @"$2" -p "$3" ready.check A >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "bench: $1 did not answer on $2:$3" >&2
    exit 1
}

unbound -d -c "$WORK/upstream.conf" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
UB_PID=$!; PIDS+=("$UB_PID")
DNSWARD_LOG=warn "$DNSWARD" serve --config "$WORK/dnsward.toml" >"$WORK/dnsward.log" 2>&1 &
DW_PID=$!; PIDS+=("$DW_PID")
DO_PID=""
SERVERS="dnsward unbound"
if [ "$NODETECT" = 1 ]; then
    DNSWARD_LOG=warn "$DNSWARD" serve --config "$WORK/dnsward-nodetect.toml" >"$WORK/dnsward-nodetect.log" 2>&1 &
    DO_PID=$!; PIDS+=("$DO_PID")
    SERVERS="dnsward unbound dnsward-nodetect"
fi
wait_ready upstream "$UP_ADDR" "$UP_PORT" "$UP_PID"
wait_ready unbound "$UB_ADDR" "$UB_PORT" "$UB_PID"
wait_ready dnsward "$DW_ADDR" "$DW_PORT" "$DW_PID"
[ -z "$DO_PID" ] || wait_ready dnsward-nodetect "$DO_ADDR" "$DO_PORT" "$DO_PID"
log "servers up: upstream pid $UP_PID, unbound pid $UB_PID, dnsward pid $DW_PID${DO_PID:+, dnsward-nodetect pid $DO_PID}"

server_addr() {
    case $1 in
        dnsward) echo "$DW_ADDR $DW_PORT" ;;
        unbound) echo "$UB_ADDR $UB_PORT" ;;
        dnsward-nodetect) echo "$DO_ADDR $DO_PORT" ;;
    esac
}
server_pid() {
    case $1 in dnsward) echo "$DW_PID" ;; unbound) echo "$UB_PID" ;; dnsward-nodetect) echo "$DO_PID" ;; esac
}

# Sanity: the answers are the ones each workload expects, from both servers.
expect() { # server name rcode
    local a p got
    read -r a p <<<"$(server_addr "$1")"
    got=$(dig +time=2 +tries=2 @"$a" -p "$p" "$2" A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')
    if [ "$got" != "$3" ]; then
        echo "bench: $1 answered $2 with '$got', expected $3" >&2
        exit 1
    fi
}
for s in $SERVERS; do
    expect "$s" host1.bench.example NOERROR
    expect "$s" x1.denied.example NXDOMAIN
done

# W1 warm-up: every name once through each resolver (this is what fills both caches), then a
# second pass that must be all NOERROR.
for s in $SERVERS; do
    read -r a p <<<"$(server_addr "$s")"
    for pass in 1 2; do
        dnsperf -s "$a" -p "$p" -d "$WORK/w1.txt" -n 1 -c 4 -Q 5000 >"$WORK/warm-$s-$pass.out" 2>&1
    done
    if ! grep -q "NOERROR $NAMES (100.00%)" "$WORK/warm-$s-2.out"; then
        echo "bench: warm-up of $s did not give $NAMES NOERROR answers:" >&2
        cat "$WORK/warm-$s-2.out" >&2
        exit 1
    fi
done
log "caches warm ($NAMES names each)"
if [ "$SERVE_ONLY" = 1 ]; then
    for s in $SERVERS; do log "$s: $(server_addr "$s") pid $(server_pid "$s")"; done
    log "SERVE_ONLY: workloads in $WORK/w1.txt, $WORK/w2.txt; Ctrl-C (or kill $$) stops"
    # `wait` on a background sleep, so a TERM (kill $$) runs the cleanup at once.
    while :; do sleep 3600 & wait $!; done
fi

# ---------------------------------------------------------------------------------------------
# Measure
cpu_ticks() { # pid → utime+stime in clock ticks (fields 14 and 15; comm may contain spaces)
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) }
    # After "comm) ", field 3 is state, so utime/stime are the 12th and 13th here.
    awk '{ print $12 + $13 }' <<<"$stat"
}
vm_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
CLK_TCK=$(getconf CLK_TCK)

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    log "warning: load average is $LOAD_START before measuring; other work on the machine will skew queries/s"
fi
RAW_TSV="$WORK/runs.tsv"
: >"$RAW_TSV"
mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS_DIR"/latest-*.raw "$RESULTS_DIR"/latest-*.tsv "$RESULTS_DIR"/perf-*.raw

# The capacity load: the server (every thread) on the last CPU, blast on the first.
SERVER_CPU=$(($(nproc) - 1))
ALL_CPUS="0-$SERVER_CPU"

measure() { # round workload load server
    local round=$1 w=$2 load=$3 s=$4 a p pid before after out qflag=() run=(-l "$DURATION" -c "$CLIENTS")
    read -r a p <<<"$(server_addr "$s")"
    pid=$(server_pid "$s")
    [ "$load" = fixed ] && qflag=(-Q "$RATE")
    # W3 sends its file of unique names once, as fast as dnsperf can, from the flood source.
    [ "$w" = w3 ] && run=(-n 1 -c "$FLOOD_CLIENTS" -a "$FLOOD_SRC")
    local client=(dnsperf -s "$a" -p "$p" -d "$WORK/$w.txt" "${run[@]}" "${qflag[@]}")
    if [ "$load" = capacity ]; then
        # dnsperf needs more CPU per query than either server (one sendto/recvfrom each), so at
        # "max" it is the bottleneck. Here the server has a core of its own and blast (batched
        # sendmmsg/recvmmsg, about half dnsperf's cost) drives it from the other until it is full.
        taskset -a -p -c "$SERVER_CPU" "$pid" >/dev/null
        client=(taskset -c 0 "$BLAST" -s "$a" -p "$p" -d "$WORK/$w.txt" -l "$DURATION" -c "$CLIENTS" -q "$CAP_OUTSTANDING")
    fi
    out="$RESULTS_DIR/latest-$w-$load-$s-r$round.raw"
    log "round $round $w $load $s"
    local perf_pid=""
    if [ "$PERF" = 1 ] && [ "$s" = dnsward ] && [ "$load" = max ] && command -v perf >/dev/null; then
        perf record -q -F 499 -g -p "$pid" -o "$RESULTS_DIR/perf-$w-r$round.raw" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    local rss_pid=""
    if [ "$w" = w3 ]; then
        # Resident memory every 5 s during the flood: it should level off at the bounds.
        (
            t0=$(date +%s)
            while kill -0 "$pid" 2>/dev/null; do
                printf '%s\t%s\n' $(($(date +%s) - t0)) "$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
                sleep 5
            done
        ) >"$RESULTS_DIR/latest-w3-rss-$s-r$round.tsv" 2>/dev/null &
        rss_pid=$!
    fi
    before=$(cpu_ticks "$pid")
    # The client's own CPU time too (bash's `time`), to show which side was the bottleneck.
    local TIMEFORMAT='%U %S' t0 t1
    t0=$(date +%s.%N)
    { time "${client[@]}" >"$out" 2>&1; } 2>"$WORK/client.time"
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    [ "$load" = capacity ] && taskset -a -p -c "$ALL_CPUS" "$pid" >/dev/null
    if [ -n "$rss_pid" ]; then kill "$rss_pid" 2>/dev/null || true; wait "$rss_pid" 2>/dev/null || true; fi
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    kill -0 "$pid" 2>/dev/null || { echo "bench: $s died during $w $load" >&2; exit 1; }
    local want=NOERROR
    if [ "$w" = w2 ] || [ "$w" = w3 ]; then want=NXDOMAIN; fi
    grep -q "Response codes:[[:space:]]*$want [0-9]* (100.00%)\$" "$out" ||
        log "warning: $s did not answer every $w query with $want: $(grep 'Response codes' "$out")"
    awk -v r="$round" -v w="$w" -v l="$load" -v s="$s" -v ticks=$((after - before)) \
        -v hz="$CLK_TCK" -v hwm="$(vm_hwm_kb "$pid")" -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        -v client_s="$(awk '{ print $1 + $2 }' "$WORK/client.time")" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/      { lost = $4; gsub(/[()%]/, "", lost) }
        /Queries per second:/ { qps = $4 }
        /Average Latency \(s\):/ { lat = $4 }
        /Response codes:/ { sub(/^[ \t]*Response codes:[ \t]*/, ""); rc = $0; gsub(/ /, "_", rc) }
        END {
            cpu_us = done > 0 ? ticks / hz * 1e6 / done : 0
            client_us = done > 0 ? client_s * 1e6 / done : 0
            # Cores the server kept busy over the run (1.00 = one full core).
            cores = wall > 0 ? ticks / hz / wall : 0
            printf "%s\t%s\t%s\t%s\t%.1f\t%s\t%.1f\t%.2f\t%s\t%s\t%s\t%.2f\t%.2f\n", r, w, l, s, qps, lost, lat * 1e6, cpu_us, hwm, done, rc, client_us, cores
        }' "$out" >>"$RAW_TSV"
}

pair=0
for round in $(seq 1 "$ROUNDS"); do
    for w in $WORKLOADS; do
        for load in $LOADS; do
            # Alternate who goes first so neither always runs right after the other's load.
            if [ $((pair % 2)) -eq 0 ]; then order="dnsward unbound"; else order="unbound dnsward"; fi
            pair=$((pair + 1))
            # W3 has one load only: the whole file once, as fast as possible.
            if [ "$w" = w3 ] && [ "$load" != max ]; then continue; fi
            for s in $order; do measure "$round" "$w" "$load" "$s"; done
            # Scoring off vs on: the same W1 (and W3) run against the dnsward with [detect]
            # disabled (W3's names are unique per server: each has its own cache).
            if [ "$w" != w2 ] && [ "$NODETECT" = 1 ]; then measure "$round" "$w" "$load" dnsward-nodetect; fi
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Report
DW_HWM=$(vm_hwm_kb "$DW_PID"); UB_HWM=$(vm_hwm_kb "$UB_PID")
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (uncommitted changes in tree)" || true)
{
    echo "# dnsward vs Unbound: dnsperf on loopback"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), dnsward $REV$DIRTY (binary built $BIN_BUILT), $(unbound -V 2>/dev/null | head -1 | sed 's/Version/Unbound/'),"
    echo "dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)."
    echo
    echo "Each run: \`dnsperf -l $DURATION -c $CLIENTS\` with \`-Q $RATE\` (fixed) or no \`-Q\` (max), $NAMES distinct names"
    echo "looped; $ROUNDS round(s), figures are the mean over rounds. Both servers: 2 threads. dnsperf"
    echo "shares the machine's cores with the server, so CPU µs/query (server utime+stime over the"
    echo "run divided by completed queries) is the steadier figure. At max, dnsperf needs more CPU per"
    echo "query than either server (client µs/query), so it, not the server, sets queries/s (the server"
    echo "keeps less than one core busy). The capacity load measures the server instead: every thread"
    echo "of it pinned to CPU $SERVER_CPU, \`bench/blast\` (batched, about half dnsperf's cost per query) on"
    echo "CPU 0 with \`-l $DURATION -c $CLIENTS -q $CAP_OUTSTANDING\`, until the server's core is full (server cores ≈ 1)."
    echo "Load average (1/5/15 min) before measuring: $LOAD_START; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    if has_workload w3; then
        echo
        echo "W3: $FLOOD_NAMES unique random names (\`<16-32 of [a-z0-9]>.flood.example A\`) sent once"
        echo "(\`dnsperf -n 1 -c $FLOOD_CLIENTS\`, no \`-Q\`) from $FLOOD_SRC; both resolvers forward every"
        echo "query to the upstream, which answers NXDOMAIN with an SOA (negative TTL 60 s)."
    fi
    echo
    echo "| workload | load | server | queries/s | lost % | avg latency µs | CPU µs/query | server cores busy | client CPU µs/query | response codes (last round) |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '
        { k = $2 SUBSEP $3 SUBSEP $4; n[k]++; qps[k] += $5; lost[k] += $6; lat[k] += $7; cpu[k] += $8; rc[k] = $11
          cl[k] += $12; cores[k] += $13
          if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
        END {
            for (i = 1; i <= m; i++) {
                k = order[i]; split(k, p, SUBSEP)
                name = (p[1] == "w1") ? "W1 cached allowed" : (p[1] == "w2") ? "W2 denied by policy" : (p[1] == "w3") ? "W3 random-subdomain flood" : p[1]
                gsub(/_/, " ", rc[k])
                printf "| %s | %s | %s | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f | %s |\n", name, p[2], p[3], qps[k]/n[k], lost[k]/n[k], lat[k]/n[k], cpu[k]/n[k], cores[k]/n[k], cl[k]/n[k], rc[k]
            }
        }' "$RAW_TSV"
    echo
    echo "| workload | load | q/s dnsward ÷ Unbound | CPU/query dnsward ÷ Unbound |"
    echo "|---|---|---:|---:|"
    awk -F'\t' '
        { k = $2 SUBSEP $3; if (!(k in seen)) { seen[k] = 1; order[++m] = k }
          q[k, $4] += $5; c[k, $4] += $8; n[k, $4]++ }
        END {
            for (i = 1; i <= m; i++) {
                k = order[i]; split(k, p, SUBSEP)
                name = (p[1] == "w1") ? "W1 cached allowed" : (p[1] == "w2") ? "W2 denied by policy" : (p[1] == "w3") ? "W3 random-subdomain flood" : p[1]
                qd = q[k, "dnsward"] / n[k, "dnsward"]; qu = q[k, "unbound"] / n[k, "unbound"]
                cd = c[k, "dnsward"] / n[k, "dnsward"]; cu = c[k, "unbound"] / n[k, "unbound"]
                printf "| %s | %s | %.2f× | %.2f× |\n", name, p[2], (qu > 0 ? qd / qu : 0), (cu > 0 ? cd / cu : 0)
            }
        }' "$RAW_TSV"
    echo
    if [ "$NODETECT" = 1 ]; then
        echo "Tunnel scoring on vs off (W1, W3; the same dnsward build and config, \`[detect] enabled = false\`):"
        echo
        echo "| workload | load | q/s on ÷ off | CPU/query on ÷ off |"
        echo "|---|---|---:|---:|"
        awk -F'\t' '
            $2 != "w2" { k = $2 SUBSEP $3; if (!(k in seen)) { seen[k] = 1; order[++m] = k }
                         q[k, $4] += $5; c[k, $4] += $8; n[k, $4]++ }
            END {
                for (i = 1; i <= m; i++) {
                    k = order[i]
                    if (!n[k, "dnsward-nodetect"]) continue
                    qon = q[k, "dnsward"] / n[k, "dnsward"]; qoff = q[k, "dnsward-nodetect"] / n[k, "dnsward-nodetect"]
                    con = c[k, "dnsward"] / n[k, "dnsward"]; coff = c[k, "dnsward-nodetect"] / n[k, "dnsward-nodetect"]
                    split(k, p, SUBSEP)
                    name = (p[1] == "w1") ? "W1 cached allowed" : "W3 random-subdomain flood"
                    printf "| %s | %s | %.2f× | %.2f× |\n", name, p[2], (qoff > 0 ? qon / qoff : 0), (coff > 0 ? con / coff : 0)
                }
            }' "$RAW_TSV"
        echo
    fi
    if has_workload w3; then
        echo "W3 memory: dnsward VmHWM after each flood run (KiB): $(awk -F'\t' '$2 == "w3" && $4 == "dnsward" { printf "%s%s", sep, $9; sep = ", " }' "$RAW_TSV");"
        echo "Unbound: $(awk -F'\t' '$2 == "w3" && $4 == "unbound" { printf "%s%s", sep, $9; sep = ", " }' "$RAW_TSV")."
        echo "dnsward's resident memory during its last flood run, sampled every 5 s (s: MiB):"
        echo "$(awk '{ printf "%s%s: %.0f", sep, $1, $2 / 1024; sep = ", " }' "$(ls -t "$RESULTS_DIR"/latest-w3-rss-dnsward-r*.tsv | head -1)")."
        echo "Bounds in force (defaults): answer cache \`[cache] max_bytes\` 64 MiB of heap, negative"
        echo "answers kept ≤ 60 s here (SOA minimum); detector tables ≤ 65 536 (client, domain) pairs, 32 768"
        echo "domains, 16 384 clients, each key a fixed-size window (two 64-register sketches); the flood is"
        echo "one client and one registrable domain, so the detector holds one key per table."
        echo
    fi
    echo "Peak RSS (VmHWM) over the whole session: dnsward $((DW_HWM / 1024)) MiB, Unbound $((UB_HWM / 1024)) MiB"
    echo "(Unbound's default caches are 4 MiB msg + 4 MiB rrset; dnsward's cache bound is its default)."
    echo
    echo "Raw dnsperf and blast output: \`bench/results/latest-*.raw\` (not committed). Reproduce with \`bench/run.sh\`."
    echo
    echo "<details><summary>Per-run rows</summary>"
    echo
    echo "| round | workload | load | server | q/s | lost % | latency µs | CPU µs/q | cores | client µs/q | VmHWM KiB | completed |"
    echo "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %.0f | %s | %.0f | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $13, $12, $9, $10 }' "$RAW_TSV"
    echo
    echo "</details>"
} >"$RESULTS_DIR/latest.md"

cat "$RESULTS_DIR/latest.md"

#!/usr/bin/env bash
# Why dnsward owns its listeners: a hickory-server 0.26 handler that does no work, next to
# Unbound and dnsward's full pipeline, under dnsperf on loopback. See docs/listeners.md and
# bench/README.md ("Own listeners or hickory-server").
#
#   bench/listeners.sh                         # builds both, W1+W2 at fixed and max load, ~4 min
#   SKIP_BUILD=1 ROUNDS=2 DURATION=10 bench/listeners.sh
#
# Four servers, each on its own loopback address (the ports follow bench/run.sh):
#   upstream  127.0.0.41:$((BASE_PORT+1))  Unbound with local-data for host1..hostN.bench.example
#   dnsward   127.0.0.42:$((BASE_PORT+2))  threads=2, udp_workers=2, events off, admin off (as run.sh)
#   unbound   127.0.0.43:$((BASE_PORT+3))  num-threads 2, forward-zone to the upstream (as run.sh)
#   hickory   127.0.0.45:$((BASE_PORT+5))  bench/hickory-baseline: hickory_server::Server, two
#                                           SO_REUSEPORT UDP sockets, 2 tokio workers, a handler
#                                           that answers a fixed A record (NXDOMAIN under
#                                           denied.example) without any cache, policy or upstream
# Writes bench/results/listeners.md; raw dnsperf output to bench/results/listeners-*.raw.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS_DIR="$ROOT/bench/results"
DURATION=${DURATION:-15}      # seconds per dnsperf run
CLIENTS=${CLIENTS:-8}         # dnsperf -c
RATE=${RATE:-50000}           # dnsperf -Q for the "fixed" load
LOADS=${LOADS:-"fixed max"}   # fixed = -Q $RATE, max = no -Q
WORKLOADS=${WORKLOADS:-"w1 w2"}
ROUNDS=${ROUNDS:-1}
NAMES=${NAMES:-500}
BASE_PORT=${BASE_PORT:-5300}
SKIP_BUILD=${SKIP_BUILD:-0}   # 1 uses the existing binaries
KEEP_WORK=${KEEP_WORK:-0}
DNSWARD=${DNSWARD_BIN:-"$ROOT/target/release/dnsward"}
HICKORY_TARGET=${HICKORY_TARGET:-"$ROOT/target-bench"}   # CARGO_TARGET_DIR for the baseline
HICKORY=${HICKORY_BIN:-"$HICKORY_TARGET/release/hickory-baseline"}

UP_ADDR=127.0.0.41;  UP_PORT=$((BASE_PORT + 1))
DW_ADDR=127.0.0.42;  DW_PORT=$((BASE_PORT + 2))
UB_ADDR=127.0.0.43;  UB_PORT=$((BASE_PORT + 3))
HK_ADDR=127.0.0.45;  HK_PORT=$((BASE_PORT + 5))
SERVERS="dnsward unbound hickory"

for tool in dnsperf unbound unbound-checkconf dig awk; do
    command -v "$tool" >/dev/null || {
        echo "listeners: '$tool' not found; apt-get install dnsperf unbound bind9-dnsutils" >&2
        exit 1
    }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnsward-listeners.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_WORK" = 1 ]; then echo "listeners: work files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[listeners %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for ap in "$UP_ADDR $UP_PORT" "$DW_ADDR $DW_PORT" "$UB_ADDR $UB_PORT" "$HK_ADDR $HK_PORT"; do
    set -- $ap
    if command -v ss >/dev/null &&
        { ss -Hlnu "src $1:$2" 2>/dev/null; ss -Hlnt "src $1:$2" 2>/dev/null; } | grep -q .; then
        echo "listeners: $1:$2 is already in use (bench/run.sh running, or a leftover server?)." >&2
        exit 1
    fi
done

# ---------------------------------------------------------------------------------------------
# Build
if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release (dnsward)"
    (cd "$ROOT" && cargo build --release --quiet)
    log "cargo build --release (bench/hickory-baseline)"
    CARGO_TARGET_DIR="$HICKORY_TARGET" cargo build --release --quiet \
        --manifest-path "$ROOT/bench/hickory-baseline/Cargo.toml"
fi
for bin in "$DNSWARD" "$HICKORY"; do
    [ -x "$bin" ] || { echo "listeners: $bin missing (run without SKIP_BUILD)" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# Query files, zone data and configs (W1/W2 and the Unbound/dnsward configs are bench/run.sh's)
: >"$WORK/w1.txt"; : >"$WORK/w2.txt"; : >"$WORK/up-local-data.conf"
for i in $(seq 1 "$NAMES"); do
    echo "host$i.bench.example A" >>"$WORK/w1.txt"
    echo "x$i.denied.example A" >>"$WORK/w2.txt"
    printf '    local-data: "host%d.bench.example. 3600 IN A 198.51.%d.%d"\n' \
        "$i" $((100 + i / 250)) $((1 + i % 250)) >>"$WORK/up-local-data.conf"
done

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
    do-not-query-localhost: no
    qname-minimisation: no
    local-zone: "denied.example." always_nxdomain
forward-zone:
    name: "bench.example."
    forward-addr: $UP_ADDR@$UP_PORT
# Loopback only: any other name goes to the upstream, which refuses it (no root servers).
forward-zone:
    name: "."
    forward-addr: $UP_ADDR@$UP_PORT
remote-control:
    control-enable: no
EOF
cat >"$WORK/dnsward.toml" <<EOF
[server]
listen = ["$DW_ADDR:$DW_PORT"]
threads = 2
udp_workers = 2

[detect]
enabled = true

[admin]
listen = ""

[upstream]
servers = [{ address = "$UP_ADDR:$UP_PORT" }]

[events]
sink = "none"
allowed = "off"

[[groups]]
name = "bench"
cidrs = ["127.0.0.0/8"]
allow = ["*.bench.example"]
block = "nxdomain"
EOF
unbound-checkconf "$WORK/upstream.conf" >/dev/null
unbound-checkconf "$WORK/unbound.conf" >/dev/null
"$DNSWARD" check --config "$WORK/dnsward.toml" >/dev/null

# ---------------------------------------------------------------------------------------------
# Start servers
wait_ready() { # name addr port pid
    local i
    for i in $(seq 1 100); do
        if ! kill -0 "$4" 2>/dev/null; then
            echo "listeners: $1 exited during startup; log:" >&2
            cat "$WORK/$1.log" >&2
            exit 1
        fi
        if dig +time=1 +tries=1 @"$2" -p "$3" ready.check A >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "listeners: $1 did not answer on $2:$3" >&2
    exit 1
}
unbound -d -c "$WORK/upstream.conf" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=("$UP_PID")
unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
UB_PID=$!; PIDS+=("$UB_PID")
DNSWARD_LOG=warn "$DNSWARD" serve --config "$WORK/dnsward.toml" >"$WORK/dnsward.log" 2>&1 &
DW_PID=$!; PIDS+=("$DW_PID")
"$HICKORY" "$HK_ADDR:$HK_PORT" >"$WORK/hickory.log" 2>&1 &
HK_PID=$!; PIDS+=("$HK_PID")
wait_ready upstream "$UP_ADDR" "$UP_PORT" "$UP_PID"
wait_ready unbound "$UB_ADDR" "$UB_PORT" "$UB_PID"
wait_ready dnsward "$DW_ADDR" "$DW_PORT" "$DW_PID"
wait_ready hickory "$HK_ADDR" "$HK_PORT" "$HK_PID"
log "servers up: upstream $UP_PID, unbound $UB_PID, dnsward $DW_PID, hickory-baseline $HK_PID"

server_addr() {
    case $1 in
        dnsward) echo "$DW_ADDR $DW_PORT" ;;
        unbound) echo "$UB_ADDR $UB_PORT" ;;
        hickory) echo "$HK_ADDR $HK_PORT" ;;
    esac
}
server_pid() {
    case $1 in dnsward) echo "$DW_PID" ;; unbound) echo "$UB_PID" ;; hickory) echo "$HK_PID" ;; esac
}

# Sanity: each server gives the answers the workloads expect.
expect() { # server name rcode
    local a p got
    read -r a p <<<"$(server_addr "$1")"
    got=$(dig +time=2 +tries=2 @"$a" -p "$p" "$2" A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')
    if [ "$got" != "$3" ]; then
        echo "listeners: $1 answered $2 with '$got', expected $3" >&2
        exit 1
    fi
}
for s in $SERVERS; do
    expect "$s" host1.bench.example NOERROR
    expect "$s" x1.denied.example NXDOMAIN
done

# Warm-up: every W1 name once through each server (fills dnsward's and Unbound's caches; the
# baseline has none), then a second pass that must be all NOERROR.
for s in $SERVERS; do
    read -r a p <<<"$(server_addr "$s")"
    for pass in 1 2; do
        dnsperf -s "$a" -p "$p" -d "$WORK/w1.txt" -n 1 -c 4 -Q 5000 >"$WORK/warm-$s-$pass.out" 2>&1
    done
    if ! grep -q "NOERROR $NAMES (100.00%)" "$WORK/warm-$s-2.out"; then
        echo "listeners: warm-up of $s did not give $NAMES NOERROR answers:" >&2
        cat "$WORK/warm-$s-2.out" >&2
        exit 1
    fi
done
log "caches warm ($NAMES names)"

# ---------------------------------------------------------------------------------------------
# Measure
cpu_ticks() { # pid → utime+stime in clock ticks (fields 14 and 15 of /proc/PID/stat)
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}
CLK_TCK=$(getconf CLK_TCK)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RAW_TSV="$WORK/runs.tsv"
: >"$RAW_TSV"
mkdir -p "$RESULTS_DIR"
rm -f "$RESULTS_DIR"/listeners-*.raw

measure() { # round workload load server
    local round=$1 w=$2 load=$3 s=$4 a p pid before after out qflag=()
    read -r a p <<<"$(server_addr "$s")"
    pid=$(server_pid "$s")
    [ "$load" = fixed ] && qflag=(-Q "$RATE")
    out="$RESULTS_DIR/listeners-$w-$load-$s-r$round.raw"
    log "round $round $w $load $s"
    before=$(cpu_ticks "$pid")
    dnsperf -s "$a" -p "$p" -d "$WORK/$w.txt" -l "$DURATION" -c "$CLIENTS" "${qflag[@]}" >"$out" 2>&1
    after=$(cpu_ticks "$pid")
    kill -0 "$pid" 2>/dev/null || { echo "listeners: $s died during $w $load" >&2; exit 1; }
    local want=NOERROR
    [ "$w" = w2 ] && want=NXDOMAIN
    grep -q "Response codes:[[:space:]]*$want [0-9]* (100.00%)\$" "$out" ||
        log "warning: $s did not answer every $w query with $want: $(grep 'Response codes' "$out")"
    awk -v r="$round" -v w="$w" -v l="$load" -v s="$s" -v ticks=$((after - before)) -v hz="$CLK_TCK" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/      { lost = $4; gsub(/[()%]/, "", lost) }
        /Queries per second:/ { qps = $4 }
        /Average Latency \(s\):/ { lat = $4 }
        END {
            cpu_us = done > 0 ? ticks / hz * 1e6 / done : 0
            printf "%s\t%s\t%s\t%s\t%.1f\t%s\t%.1f\t%.2f\t%s\n", r, w, l, s, qps, lost, lat * 1e6, cpu_us, done
        }' "$out" >>"$RAW_TSV"
}

# Rotate who goes first so that no server always runs right after the same one.
ORDERS=("dnsward unbound hickory" "unbound hickory dnsward" "hickory dnsward unbound")
pair=0
for round in $(seq 1 "$ROUNDS"); do
    for w in $WORKLOADS; do
        for load in $LOADS; do
            for s in ${ORDERS[$((pair % 3))]}; do measure "$round" "$w" "$load" "$s"; done
            pair=$((pair + 1))
        done
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Report
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
HK_VERSION=$(awk '/^name = "hickory-server"/ { getline; gsub(/[" ]/, ""); sub(/version=/, ""); print }' \
    "$ROOT/bench/hickory-baseline/Cargo.lock" 2>/dev/null || true)
{
    echo "# Own listeners or hickory-server: dnsward vs Unbound vs a do-nothing hickory-server handler"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), dnsward $REV, hickory-server ${HK_VERSION:-0.26},"
    echo "$(unbound -V 2>/dev/null | head -1 | sed 's/Version/Unbound/'), dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p')."
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)."
    echo "Load average (1/5/15 min) before measuring: $LOAD_START; after: $LOAD_END."
    echo
    echo "Each run: \`dnsperf -l $DURATION -c $CLIENTS\` with \`-Q $RATE\` (fixed) or no \`-Q\` (max), $NAMES"
    echo "names looped; $ROUNDS round(s), figures are means. All three servers: 2 threads, two UDP sockets"
    echo "(SO_REUSEPORT) on one address. CPU µs/query = server utime+stime over the run ÷ completed queries."
    echo
    echo "- **dnsward**: the full pipeline (parse, identify the client, policy, tunnel scoring, cache hit"
    echo "  for W1 / policy NXDOMAIN for W2, answer), its own UDP listener."
    echo "- **Unbound**: cache hit (W1, forward-zone to a local upstream, warmed), \`local-zone"
    echo "  always_nxdomain\` (W2)."
    echo "- **hickory**: \`bench/hickory-baseline\`, a \`RequestHandler\` on \`hickory_server::Server\` that"
    echo "  answers one fixed A record (NXDOMAIN under \`denied.example\`) with no cache, policy or upstream:"
    echo "  the floor of any resolver built on hickory-server's listeners."
    echo
    echo "| workload | load | server | queries/s | lost % | avg latency µs | CPU µs/query |"
    echo "|---|---|---|---:|---:|---:|---:|"
    awk -F'\t' -v ws="$WORKLOADS" -v ls="$LOADS" -v ss="$SERVERS" '
        { k = $2 SUBSEP $3 SUBSEP $4; n[k]++; qps[k] += $5; lost[k] += $6; lat[k] += $7; cpu[k] += $8 }
        END {
            nw = split(ws, W, " "); nl = split(ls, L, " "); ns = split(ss, S, " ")
            for (i = 1; i <= nw; i++) for (j = 1; j <= nl; j++) for (x = 1; x <= ns; x++) {
                k = W[i] SUBSEP L[j] SUBSEP S[x]
                if (!n[k]) continue
                name = (W[i] == "w1") ? "W1 cached allowed" : (W[i] == "w2") ? "W2 denied by policy" : W[i]
                printf "| %s | %s | %s | %.0f | %.2f | %.0f | %.2f |\n", name, L[j], S[x], qps[k]/n[k], lost[k]/n[k], lat[k]/n[k], cpu[k]/n[k]
            }
        }' "$RAW_TSV"
    echo
    echo "Ratios to Unbound (q/s above 1 and CPU/query below 1 are better than Unbound):"
    echo
    echo "| workload | load | dnsward q/s | dnsward CPU/query | hickory q/s | hickory CPU/query | dnsward ÷ hickory CPU/query |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    awk -F'\t' '
        { k = $2 SUBSEP $3; if (!(k in seen)) { seen[k] = 1; order[++m] = k }
          q[k, $4] += $5; c[k, $4] += $8; n[k, $4]++ }
        function mean(a, k, s) { return n[k, s] ? a[k, s] / n[k, s] : 0 }
        function ratio(x, y) { return y > 0 ? x / y : 0 }
        END {
            for (i = 1; i <= m; i++) {
                k = order[i]; split(k, p, SUBSEP)
                name = (p[1] == "w1") ? "W1 cached allowed" : (p[1] == "w2") ? "W2 denied by policy" : p[1]
                qu = mean(q, k, "unbound"); cu = mean(c, k, "unbound")
                printf "| %s | %s | %.2f× | %.2f× | %.2f× | %.2f× | %.2f× |\n", name, p[2],
                    ratio(mean(q, k, "dnsward"), qu), ratio(mean(c, k, "dnsward"), cu),
                    ratio(mean(q, k, "hickory"), qu), ratio(mean(c, k, "hickory"), cu),
                    ratio(mean(c, k, "dnsward"), mean(c, k, "hickory"))
            }
        }' "$RAW_TSV"
    echo
    echo "Reproduce: \`bench/listeners.sh\` (raw dnsperf output in \`bench/results/listeners-*.raw\`, not committed)."
    echo
    echo "<details><summary>Per-run rows</summary>"
    echo
    echo "| round | workload | load | server | q/s | lost % | latency µs | CPU µs/q | completed |"
    echo "|---|---|---|---|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %.0f | %s | %.0f | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$RAW_TSV"
    echo
    echo "</details>"
} >"$RESULTS_DIR/listeners.md"

cat "$RESULTS_DIR/listeners.md"

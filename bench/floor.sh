#!/usr/bin/env bash
# bench/floor.sh: how fast could any resolver answer on this machine's UDP stack?
#
# Starts run.sh's servers (SERVE_ONLY: the upstream, Unbound, dnsward with its bench config)
# and three `bench/floor` responders that do no DNS work at all, one per I/O method, then drives
# each at capacity (the server pinned alone on the last CPU, bench/blast on CPU 0) with the W2
# query file, rotating who goes first each round. Writes bench/results/floor.md.
#
#   floor-plain  127.0.0.46:$((BASE_PORT+6))  recvfrom/sendto per query (Unbound's I/O)
#   floor-mmsg   127.0.0.47:$((BASE_PORT+7))  recvmmsg/sendmmsg, 64 a call (dnsward's I/O)
#   floor-uring  127.0.0.48:$((BASE_PORT+8))  io_uring: one multishot RecvMsg over a ring of
#                                            provided buffers, a SendMsg per answer
#
# Knobs: ROUNDS (4), DURATION (10 s), CLIENTS (8), CAP_OUTSTANDING (300), WORKLOADS ("w2";
# "w1 w2" adds W1, which the floors answer as they answer W2), BASE_PORT (5300), SKIP_BUILD,
# DNSWARD_BIN, EVENTS (as run.sh), RESULTS (the report's path). FLOORS=0 leaves the floors
# out. BASELINE_BIN=path also runs that dnsward binary (an earlier build, for a before/after
# in the same run) as `dnsward-base` on 127.0.0.49:$((BASE_PORT+9)), same generated config.
# LOAD=fixed drives each server with `dnsperf -Q $RATE` (50000) instead, unpinned, as run.sh's
# fixed load: CPU per query at a rate both servers keep up with, for a before/after there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
CAP_OUTSTANDING=${CAP_OUTSTANDING:-300}
WORKLOADS=${WORKLOADS:-w2}
BASE_PORT=${BASE_PORT:-5300}
SKIP_BUILD=${SKIP_BUILD:-0}
FLOORS=${FLOORS:-1}
BASELINE_BIN=${BASELINE_BIN:-}
RESULTS=${RESULTS:-"$ROOT/bench/results/floor.md"}
LOAD=${LOAD:-capacity}
RATE=${RATE:-50000}
case "$LOAD" in capacity | fixed) ;; *) echo "floor: LOAD is capacity or fixed, not $LOAD" >&2; exit 2 ;; esac
[ "$(nproc)" -ge 2 ] || { echo "floor: needs 2 CPUs (the server on one, blast on another)" >&2; exit 1; }

log() { printf '[floor %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
if [ "$SKIP_BUILD" != 1 ]; then
    log "cargo build --release (bench/floor, bench/blast)"
    cargo build --release --quiet --manifest-path "$ROOT/bench/floor/Cargo.toml"
    cargo build --release --quiet --manifest-path "$ROOT/bench/blast/Cargo.toml"
fi
FLOOR="$ROOT/bench/floor/target/release/floor"
BLAST="$ROOT/bench/blast/target/release/blast"

PIDS=()
RUN_LOG=$(mktemp "${TMPDIR:-/tmp}/dnsward-floor.XXXXXX")
cleanup() {
    local pid
    # run.sh waits in `sleep`: its children go first, or its own trap waits for the sleep.
    for pid in "${PIDS[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -f "$RUN_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run.sh starts, checks and warms the upstream, Unbound and dnsward, then waits.
SERVE_ONLY=1 SCORING_OFF=0 LOADS=capacity WORKLOADS="$WORKLOADS" BASE_PORT="$BASE_PORT" \
    SKIP_BUILD="$SKIP_BUILD" "$ROOT/bench/run.sh" 2>"$RUN_LOG" &
PIDS+=("$!")
for _ in $(seq 1 600); do
    grep -q 'SERVE_ONLY:' "$RUN_LOG" && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$RUN_LOG" >&2; exit 1; }
    sleep 0.5
done
grep -q 'SERVE_ONLY:' "$RUN_LOG" || { echo "floor: run.sh did not come up" >&2; cat "$RUN_LOG" >&2; exit 1; }
WORK=$(sed -n 's/.*workloads in \(.*\)\/w1.txt.*/\1/p' "$RUN_LOG")
pid_of() { sed -n "s/.*\] $1: .* pid \([0-9]*\)\$/\1/p" "$RUN_LOG"; }
declare -A ADDR PORT PID
ADDR[dnsward]=127.0.0.42; PORT[dnsward]=$((BASE_PORT + 2)); PID[dnsward]=$(pid_of dnsward)
ADDR[unbound]=127.0.0.43; PORT[unbound]=$((BASE_PORT + 3)); PID[unbound]=$(pid_of unbound)
SERVERS="dnsward unbound"
if [ "$FLOORS" = 1 ]; then
    i=6
    for m in plain mmsg uring; do
        s=floor-$m
        ADDR[$s]=127.0.0.$((40 + i)); PORT[$s]=$((BASE_PORT + i))
        "$FLOOR" "$m" "${ADDR[$s]}:${PORT[$s]}" &
        PID[$s]=$!; PIDS+=("$!")
        SERVERS="$SERVERS $s"
        i=$((i + 1))
    done
fi
if [ -n "$BASELINE_BIN" ]; then
    s=dnsward-base
    ADDR[$s]=127.0.0.49; PORT[$s]=$((BASE_PORT + 9))
    sed -e "s/127\.0\.0\.42:$((BASE_PORT + 2))/${ADDR[$s]}:${PORT[$s]}/" \
        -e "s/events-dnsward\./events-dnsward-base./" "$WORK/dnsward.toml" >"$WORK/dnsward-base.toml"
    DNSWARD_LOG=warn "$BASELINE_BIN" serve --config "$WORK/dnsward-base.toml" >"$WORK/dnsward-base.log" 2>&1 &
    PID[$s]=$!; PIDS+=("$!")
    SERVERS="$SERVERS $s"
fi
sleep 0.5
for s in $SERVERS; do
    ok=0
    for _ in $(seq 1 20); do
        kill -0 "${PID[$s]}" 2>/dev/null || { echo "floor: $s is not running" >&2; exit 1; }
        if dig +time=1 +tries=1 @"${ADDR[$s]}" -p "${PORT[$s]}" x1.denied.example A | grep -q 'status: NXDOMAIN'; then
            ok=1
            break
        fi
        sleep 0.25
    done
    [ "$ok" = 1 ] || { echo "floor: $s did not answer x1.denied.example with NXDOMAIN" >&2; exit 1; }
done
# The baseline's cache, warmed as run.sh warms dnsward's (W1 is cache hits).
if [ -n "$BASELINE_BIN" ] && [[ " $WORKLOADS " == *" w1 "* ]]; then
    for _ in 1 2; do
        dnsperf -s "${ADDR[dnsward-base]}" -p "${PORT[dnsward-base]}" -d "$WORK/w1.txt" -n 1 -c 4 -Q 5000 >/dev/null 2>&1
    done
fi
log "servers up: $(for s in $SERVERS; do printf '%s %s:%s pid %s; ' "$s" "${ADDR[$s]}" "${PORT[$s]}" "${PID[$s]}"; done)"

# utime+stime and utime alone, in clock ticks (user time is what a change to dnsward's own code
# moves; the kernel's per-datagram work, most of the total, is the same for every build).
ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; awk '{ print $12 + $13, $12 }' <<<"$s"; }
HZ=$(getconf CLK_TCK)
LAST=$(($(nproc) - 1))
TSV=$(mktemp "${TMPDIR:-/tmp}/dnsward-floor-tsv.XXXXXX")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
set -- $SERVERS
n=$#
round_robin=("$@")
for round in $(seq 1 "$ROUNDS"); do
    for w in $WORKLOADS; do
        for k in $(seq 0 $((n - 1))); do
            s=${round_robin[$(((k + round - 1) % n))]}
            log "round $round $w $s"
            if [ "$LOAD" = fixed ]; then
                read -r b bu <<<"$(ticks "${PID[$s]}")"; t0=$(date +%s.%N)
                out=$(dnsperf -s "${ADDR[$s]}" -p "${PORT[$s]}" -d "$WORK/$w.txt" \
                    -l "$DURATION" -c "$CLIENTS" -Q "$RATE" 2>&1)
                read -r a au <<<"$(ticks "${PID[$s]}")"; t1=$(date +%s.%N)
            else
                taskset -a -p -c "$LAST" "${PID[$s]}" >/dev/null
                read -r b bu <<<"$(ticks "${PID[$s]}")"; t0=$(date +%s.%N)
                out=$(taskset -c 0 "$BLAST" -s "${ADDR[$s]}" -p "${PORT[$s]}" -d "$WORK/$w.txt" \
                    -l "$DURATION" -c "$CLIENTS" -q "$CAP_OUTSTANDING" 2>&1)
                read -r a au <<<"$(ticks "${PID[$s]}")"; t1=$(date +%s.%N)
                taskset -a -p -c "0-$LAST" "${PID[$s]}" >/dev/null
            fi
            awk -v r="$round" -v w="$w" -v s="$s" -v t=$((a - b)) -v u=$((au - bu)) -v hz="$HZ" -v t0="$t0" -v t1="$t1" '
                /Queries completed:/ { done = $3 }
                /Queries per second:/ { qps = $4 }
                END { printf "%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.3f\n", r, w, s, qps, t / hz * 1e6 / done, t / hz / (t1 - t0), u / hz * 1e6 / done }' \
                <<<"$out" >>"$TSV"
        done
    done
done

{
    if [ "$LOAD" = fixed ]; then
        echo "# dnsward against Unbound (and earlier builds, responders with no DNS work) at a fixed $RATE q/s"
    else
        echo "# The floor: a responder that does no DNS work, by I/O method, at capacity"
    fi
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), dnsward $(cd "$ROOT" && git rev-parse --short HEAD), $(unbound -V 2>/dev/null | head -1 | sed 's/Version/Unbound/'),"
    if [ "$LOAD" = fixed ]; then
        echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r). \`LOAD=fixed bench/floor.sh\`: each server"
        echo "unpinned, \`dnsperf -l $DURATION -c $CLIENTS -Q $RATE\`, $ROUNDS rounds rotating"
    else
        echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r). \`bench/floor.sh\`: each server pinned"
        echo "alone on CPU $LAST, \`bench/blast -l $DURATION -c $CLIENTS -q $CAP_OUTSTANDING\` on CPU 0, $ROUNDS rounds rotating"
    fi
    echo "the order. Load average before: $LOAD_START; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| workload | server | q/s (mean) | q/s ÷ Unbound | CPU µs/query (mean) | CPU/query ÷ Unbound | user µs/query | cores busy |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '
        { k = $2 SUBSEP $3; q[k] += $4; c[k] += $5; b[k] += $6; us[k] += $7; n[k]++
          if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
        END {
            for (i = 1; i <= m; i++) {
                k = order[i]; split(k, p, SUBSEP); u = p[1] SUBSEP "unbound"
                printf "| %s | %s | %.0f | %.2f× | %.2f | %.2f× | %.3f | %.2f |\n", toupper(p[1]), p[2],
                    q[k] / n[k], (q[k] / n[k]) / (q[u] / n[u]), c[k] / n[k], (c[k] / n[k]) / (c[u] / n[u]), us[k] / n[k], b[k] / n[k]
            }
        }' "$TSV"
    echo
    echo "<details><summary>Per-run rows</summary>"
    echo
    echo "| round | workload | server | q/s | CPU µs/query | cores busy | user µs/query |"
    echo "|---|---|---|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$TSV"
    echo
    echo "</details>"
} >"$RESULTS"
rm -f "$TSV"
cat "$RESULTS"

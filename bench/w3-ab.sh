#!/usr/bin/env bash
# W3 (cache misses) for two dnsward builds and Unbound in one run: a before/after of a change to
# the miss path, on the same machine in the same minutes.
#
#   BASELINE_BIN=/tmp/dnsward-before DNSWARD_BIN=target/release/dnsward bench/w3-ab.sh
#
# Starts bench/run.sh's servers (SERVE_ONLY: the upstream Unbound, Unbound as the resolver
# compared, dnsward on DNSWARD_BIN) plus BASELINE_BIN on the same config, then for each round
# sends a fresh file of NAMES unique random names (`<16-32 of [a-z0-9]>.flood.example A`, as
# run.sh's W3) once to each server with `dnsperf -n 1 -c 8` from the flood source, rotating who
# goes first. Each server forwards every query (every name is new to its cache) and caches the
# NXDOMAIN. Reports q/s and the server's user, system and total CPU µs a query (utime+stime
# from /proc over the run ÷ queries), per round and on average, and the ratios to Unbound.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-6}
NAMES=${NAMES:-200000}
BASELINE_BIN=${BASELINE_BIN:?set BASELINE_BIN to the build to compare against}
DNSWARD_BIN=${DNSWARD_BIN:-"$ROOT/target/release/dnsward"}
RESULTS=${RESULTS:-"$ROOT/bench/results/latest-w3-ab.md"}
BASE_PORT=${BASE_PORT:-5300}
B_ADDR=127.0.0.45; B_PORT=$((BASE_PORT + 5))
FLOOD_SRC=127.0.0.2

for tool in dnsperf unbound python3; do
    command -v "$tool" >/dev/null || { echo "w3-ab: '$tool' not found" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnsward-w3ab.XXXXXX")
SERVE_PID=""; B_PID=""
cleanup() {
    [ -z "$B_PID" ] || kill "$B_PID" 2>/dev/null || true
    [ -z "$SERVE_PID" ] || kill -TERM "$SERVE_PID" 2>/dev/null || true
    sleep 1
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '[w3-ab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "generating $ROUNDS files of $NAMES names"
python3 - "$ROUNDS" "$NAMES" "$WORK" <<'PY'
import os, sys
rounds, n, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
table = bytes(b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36] for i in range(256))
for r in range(rounds):
    chars = os.urandom(n * 32).translate(table)
    lens = os.urandom(n)
    with open(f"{work}/names-{r}.txt", "wb") as out:
        out.write(b"".join(
            chars[i * 32 : i * 32 + 16 + lens[i] % 17] + b".flood.example A\n" for i in range(n)
        ))
PY

SERVE_ONLY=1 KEEP_WORK=1 SKIP_BUILD=1 WORKLOADS="w1" SCORING_OFF=0 LOADS="max" \
    BASE_PORT="$BASE_PORT" DNSWARD_BIN="$DNSWARD_BIN" "$ROOT/bench/run.sh" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do grep -q "SERVE_ONLY" "$WORK/serve.log" 2>/dev/null && break; sleep 0.2; done
grep -q "SERVE_ONLY" "$WORK/serve.log" || { cat "$WORK/serve.log" >&2; exit 1; }
BENCH_WORK=$(sed -n 's/.*workloads in \(.*\)\/w1.txt,.*/\1/p' "$WORK/serve.log")
read -r N_ADDR N_PORT N_PID <<<"$(sed -n 's/.*dnsward: \([0-9.]*\) \([0-9]*\) pid \([0-9]*\).*/\1 \2 \3/p' "$WORK/serve.log")"
read -r U_ADDR U_PORT U_PID <<<"$(sed -n 's/.*unbound: \([0-9.]*\) \([0-9]*\) pid \([0-9]*\).*/\1 \2 \3/p' "$WORK/serve.log")"
sed -e "s/$N_ADDR:$N_PORT/$B_ADDR:$B_PORT/" -e 's/events-dnsward/events-baseline/' \
    "$BENCH_WORK/dnsward.toml" >"$WORK/baseline.toml"
DNSWARD_LOG=warn "$BASELINE_BIN" serve --config "$WORK/baseline.toml" >"$WORK/baseline.log" 2>&1 &
B_PID=$!
for _ in $(seq 1 50); do
    dig +time=1 +tries=1 @"$B_ADDR" -p "$B_PORT" host1.bench.example A >/dev/null 2>&1 && break
    sleep 0.2
done

cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
ROWS="$WORK/rows.tsv"; : >"$ROWS"
run_one() { # round name addr port pid file
    local u0 s0 u1 s1 q qps
    read -r u0 s0 < <(cpu "$5")
    dnsperf -s "$3" -p "$4" -d "$6" -n 1 -c 8 -a "$FLOOD_SRC" >"$WORK/dnsperf.txt" 2>&1
    read -r u1 s1 < <(cpu "$5")
    q=$(awk '/Queries completed/ {print $3}' "$WORK/dnsperf.txt")
    qps=$(awk '/Queries per second/ {printf "%d", $4}' "$WORK/dnsperf.txt")
    awk -v r="$1" -v n="$2" -v q="$q" -v qps="$qps" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v hz="$HZ" \
        'BEGIN { printf "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\n", r, n, qps, du * 1e6 / hz / q, ds * 1e6 / hz / q, (du + ds) * 1e6 / hz / q }' >>"$ROWS"
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 0 $((ROUNDS - 1))); do
    servers=("dnsward $N_ADDR $N_PORT $N_PID" "unbound $U_ADDR $U_PORT $U_PID" "baseline $B_ADDR $B_PORT $B_PID")
    for k in 0 1 2; do
        # shellcheck disable=SC2086
        run_one "$((r + 1))" ${servers[$(((r + k) % 3))]} "$WORK/names-$r.txt"
    done
    log "round $((r + 1)) done"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "# W3 before/after: cache misses, two dnsward builds and Unbound in one run"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), kernel $(uname -r),"
    echo "Unbound $(unbound -V 2>/dev/null | sed -n "s/^Version //p"), dnsperf $(dnsperf -h 2>&1 | sed -n "s/^Version //p" | head -1)."
    echo "\`bench/w3-ab.sh\`: $ROUNDS rounds of $NAMES fresh names each, sent once to each server (\`dnsperf -n 1 -c 8\`),"
    echo "the order rotated. \`dnsward\` = \`$DNSWARD_BIN\`, \`baseline\` = \`$BASELINE_BIN\`."
    echo "Load average before: $LOAD_BEFORE; after: $LOAD_AFTER."
    echo
    echo "| server | q/s (mean) | q/s ÷ Unbound | user µs/query | system µs/query | CPU µs/query | CPU/query ÷ Unbound |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ n[$2]++; q[$2] += $3; u[$2] += $4; s[$2] += $5; t[$2] += $6 }
        END {
            for (k in n) { mq[k] = q[k] / n[k]; mt[k] = t[k] / n[k] }
            split("dnsward unbound baseline", order, " ")
            for (i = 1; i <= 3; i++) { k = order[i]
                printf "| %s | %.0f | %.2f× | %.2f | %.2f | %.2f | %.2f× |\n", k, mq[k], mq[k] / mq["unbound"], u[k] / n[k], s[k] / n[k], mt[k], mt[k] / mt["unbound"] }
        }' "$ROWS"
    echo
    echo "| round | server | q/s | user µs/q | system µs/q | CPU µs/q |"
    echo "|---|---|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$ROWS"
} >"$RESULTS"
cat "$RESULTS"

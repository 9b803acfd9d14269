#!/usr/bin/env bash
# W1 (cached allowed names) with DNS-gated egress off vs on, under dnsperf.
#
#   bench/egress.sh                         # release build must exist (cargo build --release)
#   DURATION=10 ROUNDS=2 NAMES=500 bench/egress.sh
#
# Everything runs inside a network namespace this script creates and deletes (root needed: the
# egress run creates `table inet dnsward` there, never on the host), on that namespace's loopback:
#   upstream  127.0.0.41:5301  dnsward serving a generated zone (500 names, TTL 3600)
#   measured  127.0.0.42:5302  dnsward forwarding to it, cache warm; [egress] absent, then present
# One measured server runs at a time. Reports queries/s and the server's CPU time per query
# (utime+stime from /proc/PID/stat), which is steadier than q/s when dnsperf shares the cores.
# (`ip netns exec` execs the server, so `$!` is the server's own pid.)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DNSWARD=${DNSWARD_BIN:-"$ROOT/target/release/dnsward"}
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-1}
NAMES=${NAMES:-500}
CLIENTS=${CLIENTS:-8}
NS="dnsward-bench-egress-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dnsward-egress-bench.XXXXXX")
PIDS=()

for tool in dnsperf ip nft; do
    command -v "$tool" >/dev/null || { echo "bench: '$tool' not found (dnsperf, iproute2, nftables)" >&2; exit 1; }
done
[ -x "$DNSWARD" ] || { echo "bench: $DNSWARD missing: cargo build --release" >&2; exit 1; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns delete "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
inns() { ip netns exec "$NS" "$@"; }

mkdir -p "$WORK/zones"
{
    echo '$ORIGIN bench.example.'
    echo '$TTL 3600'
    echo '@ IN SOA ns.bench.example. h.bench.example. 1 3600 600 86400 60'
    echo '  IN NS ns'
    echo 'ns IN A 198.18.0.1'
    for i in $(seq 1 "$NAMES"); do echo "host$i IN A 198.18.$((1 + i / 250)).$((1 + i % 250))"; done
} >"$WORK/zones/bench.example.zone"
for i in $(seq 1 "$NAMES"); do echo "host$i.bench.example A"; done >"$WORK/w1.txt"

cat >"$WORK/upstream.toml" <<EOF
[server]
listen = ["127.0.0.41:5301"]
[admin]
listen = ""
[zones]
dir = "zones"
[events]
sink = "none"
[detect]
enabled = false
[[groups]]
name = "all"
cidrs = ["127.0.0.0/8"]
allow = ["*.bench.example"]
EOF
measured_conf() { # egress-section
    cat <<EOF
[server]
listen = ["127.0.0.42:5302"]
threads = 2
udp_workers = 2
[admin]
listen = ""
[upstream]
servers = [{ address = "127.0.0.41:5301" }]
[events]
sink = "none"
allowed = "off"
$1
[[groups]]
name = "bench"
cidrs = ["127.0.0.0/8"]
allow = ["*.bench.example"]
EOF
}
measured_conf "" >"$WORK/off.toml"
measured_conf $'[egress]\nbackend = "nftables"\nread_denied = false' >"$WORK/on.toml"

DNSWARD_LOG=warn ip netns exec "$NS" "$DNSWARD" serve --config "$WORK/upstream.toml" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

run_one() { # off|on round
    DNSWARD_LOG=warn ip netns exec "$NS" "$DNSWARD" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    sleep 1
    # Warm the cache (and, with egress, the set) with one pass over the names.
    inns dnsperf -s 127.0.0.42 -p 5302 -d "$WORK/w1.txt" -n 1 -c 1 >/dev/null 2>&1
    local before after out qps done
    before=$(cpu_ticks "$pid")
    out=$(inns dnsperf -s 127.0.0.42 -p 5302 -d "$WORK/w1.txt" -l "$DURATION" -c "$CLIENTS" 2>&1)
    after=$(cpu_ticks "$pid")
    qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
    done=$(echo "$out" | awk '/Queries completed/ {print $3}')
    local us
    us=$(awk -v t=$((after - before)) -v hz="$TCK" -v n="$done" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    local elements="-"
    if [ "$1" = on ]; then
        elements=$(inns nft -j list set inet dnsward allow4_bench | grep -o '"val"' | wc -l)
    fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$2" "$1" "$qps" "$done" "$us" "$elements"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "| round | egress | queries/s | completed | server CPU µs/query | elements in allow4_bench |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_one off "$r"; run_one on "$r"; else run_one on "$r"; run_one off "$r"; fi
done

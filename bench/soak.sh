#!/usr/bin/env bash
# Soak: dnsward under mixed traffic for $DURATION seconds (default 600), with a SIGHUP reload
# every $RELOAD_EVERY seconds; RSS and open file descriptors sampled every $SAMPLE_EVERY seconds
# and printed as a Markdown table, then dnsperf's summary. Loopback only.
#
#   bench/soak.sh                         # build release, 10 minutes
#   DURATION=60 SKIP_BUILD=1 bench/soak.sh
#   DNSWARD_BIN=target/debug/dnsward SKIP_BUILD=1 bench/soak.sh
#
# Traffic (dnsperf -Q $RATE, -c $CLIENTS, names in random order, over UDP):
#   - local-zone names (corp.internal): answered authoritatively, never forwarded
#   - names outside the group's allowlist: blocked
#   - $NAMES names under soak.example, forwarded to a small loopback upstream (python3) that
#     answers with a 5 s TTL, so the cache keeps expiring and misses never stop
# Pass criteria (checked at the end, exit 1 otherwise): dnsperf reports 0 queries lost, and the
# last RSS and fd samples are within $RSS_SLACK_KB / $FD_SLACK of the first ones after warm-up.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-600}
RELOAD_EVERY=${RELOAD_EVERY:-10}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-4}
NAMES=${NAMES:-2000}
PORT=${PORT:-5390}
UP_PORT=${UP_PORT:-5391}
ADMIN_PORT=${ADMIN_PORT:-5392}
RSS_SLACK_KB=${RSS_SLACK_KB:-20480}
FD_SLACK=${FD_SLACK:-16}
SKIP_BUILD=${SKIP_BUILD:-0}
DNSWARD_BIN=${DNSWARD_BIN:-$ROOT/target/release/dnsward}

command -v dnsperf >/dev/null || { echo "dnsperf is needed (apt-get install dnsperf)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 2; }
if [ "$SKIP_BUILD" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin dnsward)
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The upstream: every A query answered with 192.0.2.1, TTL 5 s; anything else NODATA.
cat >"$WORK/upstream.py" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    q, src = s.recvfrom(4096)
    if len(q) < 12:
        continue
    i = 12
    while i < len(q) and q[i] != 0:
        i += q[i] + 1
    end = i + 5
    if end > len(q):
        continue
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    flags = 0x8180
    an = 1 if qtype == 1 else 0
    r = q[:2] + struct.pack("!HHHHH", flags, 1, an, 0, 0) + q[12:end]
    if an:
        r += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([192, 0, 2, 1])
    s.sendto(r, src)
PY
python3 "$WORK/upstream.py" "$UP_PORT" &
PIDS+=($!)

cat >"$WORK/dnsward.toml" <<EOF_CFG
[server]
listen = ["127.0.0.1:$PORT"]
threads = 2
udp_workers = 2

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[upstream]
timeout = "2s"
servers = [{ address = "127.0.0.1:$UP_PORT", timeout = "1s" }]

[zones]
dir = "$ROOT/zones"

[events]
sink = "file"
path = "$WORK/events.jsonl"

[detect]
enabled = true

[[groups]]
name = "soak"
cidrs = ["127.0.0.0/8"]
allow = ["*.corp.internal", "*.soak.example"]
EOF_CFG

# The query file: a third local-zone, a sixth blocked, the rest forwarded names.
{
    for i in $(seq 1 "$NAMES"); do
        case $((i % 6)) in
            0|1) echo "api.corp.internal A" ;;
            2) echo "blocked-$((i % 50)).other.example A" ;;
            *) echo "n$i.soak.example A" ;;
        esac
    done
} | shuf >"$WORK/queries.txt"

"$DNSWARD_BIN" serve --config "$WORK/dnsward.toml" >"$WORK/dnsward.log" 2>&1 &
DW=$!
PIDS+=($DW)
for _ in $(seq 1 100); do
    grep -q "dnsward serving" "$WORK/dnsward.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "dnsward serving" "$WORK/dnsward.log" || { cat "$WORK/dnsward.log"; exit 1; }

dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$DURATION" -Q "$RATE" -c "$CLIENTS" \
    -t 5 >"$WORK/dnsperf.txt" 2>&1 &
PERF=$!
PIDS+=($PERF)

echo "| t (s) | RSS (KiB) | open fds | reloads | answers so far |"
echo "|---:|---:|---:|---:|---:|"
start=$(date +%s)
reloads=0
next_reload=$RELOAD_EVERY
first_rss=""; first_fds=""
while kill -0 "$PERF" 2>/dev/null; do
    sleep "$SAMPLE_EVERY"
    t=$(( $(date +%s) - start ))
    while [ "$t" -ge "$next_reload" ]; do
        kill -HUP "$DW"
        reloads=$((reloads + 1))
        next_reload=$((next_reload + RELOAD_EVERY))
    done
    kill -0 "$DW" || { echo "dnsward died"; cat "$WORK/dnsward.log"; exit 1; }
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$DW/status")
    fds=$(ls "/proc/$DW/fd" | wc -l)
    answered=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null \
        | awk '/^dnsward_queries_total/ {s += $NF} END {printf "%d", s}')
    echo "| $t | $rss | $fds | $reloads | $answered |"
    # The first sample after a minute of warm-up (cache filled, pools open) is the baseline.
    if [ -z "$first_rss" ] && [ "$t" -ge 60 ]; then first_rss=$rss; first_fds=$fds; fi
    last_rss=$rss; last_fds=$fds
done
wait "$PERF" || true
echo
sed -n '/Statistics:/,$p' "$WORK/dnsperf.txt"
lost=$(awk '/Queries lost:/ {print $3}' "$WORK/dnsperf.txt")
ok=1
[ "${lost:-x}" = 0 ] || { echo "FAIL: $lost queries lost"; ok=0; }
if [ -n "$first_rss" ]; then
    [ $((last_rss - first_rss)) -le "$RSS_SLACK_KB" ] || { echo "FAIL: RSS grew $first_rss -> $last_rss KiB"; ok=0; }
    [ $((last_fds - first_fds)) -le "$FD_SLACK" ] || { echo "FAIL: fds grew $first_fds -> $last_fds"; ok=0; }
fi
echo "reloads: $reloads; rejected reloads in the log: $(grep -c 'reload rejected' "$WORK/dnsward.log" || true)"
[ "$ok" = 1 ] && echo "PASS" || exit 1

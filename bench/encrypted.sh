#!/usr/bin/env bash
# DoT and DoH vs UDP and TCP on the same cached workload: queries/s and dnsward CPU per query.
# Loopback only. Needs dnsperf (>= 2.9 for -m dot/doh), unbound (the upstream), openssl.
#   bench/encrypted.sh                 # builds release; one run of $SECS s per transport
#   SKIP_BUILD=1 SECS=5 bench/encrypted.sh
#   SKIP_BUILD=1 SYSCALLS=0 DNSWARD=/tmp/other-build bench/encrypted.sh   # A/B without perf
#   MODES="tcp dot" DOH_LOAD=none SKIP_BUILD=1 bench/encrypted.sh           # some rows only
#   MODES="udp unbound-udp tcp unbound-tcp" ...   # beside the upstream Unbound's own UDP and TCP
# dnsperf cannot present a client certificate, so the encrypted listeners run with
# client_cert = "optional" and no client CA: this measures the transports, not the
# (once-per-connection) certificate check.
# dnsperf 2.10's DoH mode stalled against dnsward until each answer's HTTP/2 frames went to TLS as
# a record of their own (session 18; docs/identity.md). A second DoH row comes from examples/doh_load.rs
# (hyper, HTTP/2, CONNS x STREAMS requests in flight), built with
# `cargo build --release --example doh_load`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
DNSWARD=${DNSWARD:-$ROOT/target/release/dnsward}
UP=127.0.0.51; UPP=5401; DW=127.0.0.52; DWP=5402; DOTP=5853; DOHP=5443
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --bin dnsward --example doh_load)
DOH_LOAD=${DOH_LOAD:-$ROOT/target/release/examples/doh_load}

"$ROOT/config/examples/make-pki.sh" "$WORK/pki" >/dev/null
{
  echo "server:"
  echo "  interface: $UP"; echo "  port: $UPP"; echo "  num-threads: 2"; echo "  username: \"\""
  echo "  chroot: \"\""; echo "  directory: \"$WORK\""; echo "  pidfile: \"\""; echo "  use-syslog: no"
  echo "  logfile: \"\""; echo "  do-daemonize: no"; echo "  do-ip6: no"
  echo "  access-control: 127.0.0.0/8 allow"
  echo "  module-config: \"iterator\""; echo "  local-zone: \".\" refuse"  # loopback only
  echo "  local-zone: \"bench.example.\" static"
  for i in $(seq 1 500); do
    echo "  local-data: \"host$i.bench.example. 3600 IN A 198.51.100.$((i % 250 + 1))\""
    echo "host$i.bench.example A" >>"$WORK/queries.txt"
  done
  echo "remote-control:"; echo "  control-enable: no"
} >"$WORK/up.conf"
printf '%s\n' \
  '[server]' "listen = [\"$DW:$DWP\"]" 'threads = 2' 'udp_workers = 2' \
  '[admin]' 'listen = ""' \
  '[upstream]' "servers = [{ address = \"$UP:$UPP\" }]" \
  '[events]' 'sink = "none"' 'allowed = "off"' \
  '[tls]' 'max_in_flight = 256' \
  '[[tls.dot]]' "listen = \"$DW:$DOTP\"" "cert = \"$WORK/pki/server.crt\"" \
  "key = \"$WORK/pki/server.key\"" 'client_cert = "optional"' \
  '[[tls.doh]]' "listen = \"$DW:$DOHP\"" "cert = \"$WORK/pki/server.crt\"" \
  "key = \"$WORK/pki/server.key\"" 'client_cert = "optional"' \
  '[[groups]]' 'name = "bench"' 'cidrs = ["127.0.0.0/8"]' 'allow = ["*.bench.example"]' \
  >"$WORK/dnsward.toml"
unbound-checkconf "$WORK/up.conf" >/dev/null
"$DNSWARD" check --config "$WORK/dnsward.toml" >/dev/null
unbound -c "$WORK/up.conf" &
UPID=$!
PIDS+=($UPID)
"$DNSWARD" serve --config "$WORK/dnsward.toml" 2>"$WORK/dnsward.log" &
DPID=$!
PIDS+=($DPID)
sleep 1
# Warm the cache: every name once.
dnsperf -s $DW -p $DWP -d "$WORK/queries.txt" -n 1 >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$DPID}/stat"; }
# System calls dnsward makes a query (all its threads), counted by perf's raw_syscalls
# tracepoint over a window inside the run (from 1 s in, SECS-2 s long) and divided by the
# queries answered in it at the run's rate; "n/a" when perf cannot count (not root) or with
# SYSCALLS=0. Counting slows every system call (q/s falls by about half and CPU µs/query
# rises), so compare q/s and CPU between runs made with the same SYSCALLS setting.
# PERF_EVENTS="syscalls:sys_enter_writev,syscalls:sys_enter_sendto,..." counts those
# instead and prints perf's raw output to stderr.
PERF_OUT="$WORK/perf.csv"
count_start() {
  PERF_PID=
  if [ "${SYSCALLS:-1}" != 0 ] && command -v perf >/dev/null 2>&1 && [ "$SECS" -ge 4 ]; then
    (sleep 1; exec perf stat -x, -e ${PERF_EVENTS:-raw_syscalls:sys_enter} -t "$(ls "/proc/$DPID/task" | paste -sd,)" \
      -o "$PERF_OUT" -- sleep $((SECS - 2))) 2>/dev/null &
    PERF_PID=$!
  fi
}
count_stop() { # $1 = queries/s over the run
  [ -n "$PERF_PID" ] && wait "$PERF_PID" 2>/dev/null || true
  [ -n "${PERF_EVENTS:-}" ] && cat "$PERF_OUT" >&2
  awk -F, -v qps="${1:-0}" -v w=$((SECS - 2)) '/raw_syscalls/ && $1 ~ /^[0-9]+$/ && qps > 0 {
      printf "%.2f", $1 / (qps * w); found = 1 }
    END { if (!found) printf "n/a" }' "$PERF_OUT" 2>/dev/null || printf "n/a"
  rm -f "$PERF_OUT"
}
HZ=$(getconf CLK_TCK)
echo "| transport | queries/s | server CPU µs/query | syscalls/query | completed | lost |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in ${MODES:-udp tcp dot doh}; do
  case $mode in
    udp) args=(-m udp -p $DWP) ;;
    tcp) args=(-m tcp -p $DWP) ;;
    unbound-udp) args=(-m udp -p $UPP) ;;
    unbound-tcp) args=(-m tcp -p $UPP) ;;
    dot) args=(-m dot -p $DOTP) ;;
    doh) args=(-m doh -p $DOHP -O "doh-uri=https://$DW:$DOHP/dns-query") ;;
  esac
  # unbound-*: the same queries to the upstream Unbound itself (2 threads, the names are its
  # local-data: its cheapest answer, as a cache hit is dnsward's), its CPU; no syscall count.
  server=$DW; pid=$DPID
  case $mode in unbound-*) server=$UP; pid=$UPID ;; *) count_start ;; esac
  before=$(cpu_ticks $pid)
  out=$(dnsperf -s $server "${args[@]}" -d "$WORK/queries.txt" -l "$SECS" -c "$CLIENTS" 2>&1)
  after=$(cpu_ticks $pid)
  done_q=$(echo "$out" | awk '/Queries completed/ {print $3}')
  lost=$(echo "$out" | awk '/Queries lost/ {print $3}')
  qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
  us=$(awk -v t=$((after - before)) -v hz="$HZ" -v q="${done_q:-0}" 'BEGIN { if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print "n/a" }')
  case $mode in unbound-*) sc="-" ;; *) sc=$(count_stop "$qps") ;; esac
  echo "| $mode | ${qps%.*} | $us | $sc | $done_q | $lost |"
  [ -n "$done_q" ] || echo "$out" >&2
done
if [ -x "$DOH_LOAD" ]; then
  count_start
  before=$(cpu_ticks)
  out=$("$DOH_LOAD" "$DW:$DOHP" "$WORK/pki/ca.crt" "$SECS" "${CONNS:-8}" "${STREAMS:-16}" "$WORK/queries.txt")
  after=$(cpu_ticks)
  done_q=$(echo "$out" | awk '{print $2}')
  lost=$(echo "$out" | awk '{print $4}')
  qps=$(echo "$out" | awk '{print $6}')
  us=$(awk -v t=$((after - before)) -v hz="$HZ" -v q="${done_q:-0}" 'BEGIN { if (q > 0) printf "%.1f", t / hz * 1e6 / q; else print "n/a" }')
  sc=$(count_stop "$qps")
  echo "| doh (doh_load, h2 POST) | $qps | $us | $sc | $done_q | $lost |"
fi

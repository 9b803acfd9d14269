//! End to end against a real tunnel: `dns2tcpc` → dnsward → `dns2tcpd` → a TCP sink, all on
//! loopback, to show that dnsward sees dns2tcp and, when a group enforces, cuts it off.
//!
//! The chain, with every process a child of this test and killed when its guard drops:
//!
//! ```text
//! test ──TCP──▶ dns2tcpc (127.0.0.1:L) ──DNS TXT──▶ dnsward (127.0.0.2:53)
//!      ──forward tun.example.com──▶ dns2tcpd (127.0.0.3:P) ──TCP──▶ sink (127.0.0.1:S)
//! ```
//!
//! `dns2tcpc` always asks port 53 of the resolver address, so dnsward must bind 127.0.0.2:53:
//! that needs root (CI runs as root). The tools come from the Debian package `dns2tcp`, which
//! `.ci/run` installs. When the tools are missing or port 53 cannot be bound, the test fails in CI
//! (`CI=true`) and is skipped with a message saying why elsewhere.
//!
//! Two runs of the same transfer (up to [`PAYLOAD_BYTES`] pushed into the tunnel):
//! 1. baseline, the group in `monitor_only`: the tunnel carries data and dnsward alerts
//!    (`action: "none"`), which proves the setup works and the detector sees it;
//! 2. enforced: the same group acting on its thresholds must contain the client, so far less
//!    reaches the sink than in the baseline.
//!
//! Deadlines only bound the test; nothing asserts on speed. Each run prints a report (queries by
//! verdict, bytes through, time to containment, alert scores) to stderr.

mod common;

use common::{ChildGuard, strip_ansi};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dnsward");

/// The tunnel zone. Under `example.com` (not a special-use TLD that resolvers answer locally),
/// so its registrable domain, the key the detector scores, is `example.com`.
const TUNNEL_ZONE: &str = "tun.example.com";
/// dnsward's listening address: dns2tcpc talks to port 53 of it, and nothing else.
const RESOLVER_IP: &str = "127.0.0.2";
/// dns2tcpd's address; its port is picked free at run time.
const TUNNEL_SERVER_IP: &str = "127.0.0.3";
/// The address dns2tcpc's queries come from (the kernel's source for 127.0.0.2), i.e. the
/// client dnsward puts in the group and names in its events.
const CLIENT_IP: &str = "127.0.0.1";
/// The dnsward group of the tunnelling client, as it appears in events and metric labels.
const GROUP: &str = "tunnel-client";
/// The dns2tcpd resource that leads to the sink.
const RESOURCE: &str = "sink";

/// How much the test tries to push through the tunnel in each run.
const PAYLOAD_BYTES: u64 = 200 * 1024;
/// The baseline must carry at least this much for the comparison to mean anything.
const BASELINE_MIN_BYTES: u64 = 20 * 1024;
/// Upper bound of one transfer. A deadline, not a performance assertion.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);
/// A transfer also ends once the sink has received nothing for this long: the tunnel is cut.
const STALL: Duration = Duration::from_secs(20);
/// Bounds for a process to come up or go away.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// The enforced run must carry less than this share of the baseline.
const ENFORCED_MAX_SHARE: f64 = 0.25;

/// Verdicts of queries answered by a containment rather than by the tunnel server.
const CONTAINED_VERDICTS: [&str; 3] = ["throttle", "sinkhole", "quarantine"];

/// True when both dns2tcp tools can be run; otherwise the test cannot run (a failure under
/// `CI=true`).
fn dns2tcp_available(test: &str) -> bool {
    for tool in ["dns2tcpd", "dns2tcpc"] {
        // Both print their usage for `-h` and exit non-zero; only "cannot run it" matters.
        if let Err(e) = Command::new(tool)
            .arg("-h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            return common::cannot_run(
                test,
                &format!(
                    "`{tool}` is not runnable ({e}); install the dns2tcp package (.ci/run does)"
                ),
            );
        }
    }
    true
}

/// True when this process can bind port 53 on the resolver address (UDP and TCP, as dnsward
/// will); otherwise the test cannot run (a failure under `CI=true`, where it runs as root).
fn port_53_bindable(test: &str) -> bool {
    let addr: SocketAddr = format!("{RESOLVER_IP}:53").parse().unwrap();
    let result = UdpSocket::bind(addr).and_then(|_udp| TcpListener::bind(addr).map(drop));
    match result {
        Ok(()) => true,
        Err(e) => common::cannot_run(
            test,
            &format!(
                "cannot bind {addr} ({e}); dns2tcpc only talks to port 53 of its resolver, so \
                 this test needs root (or CAP_NET_BIND_SERVICE) and a free port 53 on {RESOLVER_IP}"
            ),
        ),
    }
}

/// A free port on `ip` for `kind` ("udp" or "tcp"): bound, read back, released. The tools take
/// fixed ports in their command lines, so they cannot be given port 0.
fn free_port(ip: &str, kind: &str) -> u16 {
    let addr = format!("{ip}:0");
    match kind {
        "udp" => UdpSocket::bind(&addr).and_then(|s| s.local_addr()),
        _ => TcpListener::bind(&addr).and_then(|s| s.local_addr()),
    }
    .unwrap_or_else(|e| panic!("finding a free {kind} port on {ip}: {e}"))
    .port()
}

/// The TCP server at the far end of the tunnel: counts every byte it receives, on any number
/// of connections. Stops accepting when dropped.
struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind((CLIENT_IP, 0)).expect("binding the sink");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let received = Arc::clone(&received);
                    // Each reader ends when dns2tcpd closes the connection (at the latest when
                    // its guard kills it).
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = conn.read(&mut buf) {
                            received.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            received,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The dnsward configuration for one run: 127.0.0.2:53, admin on a free loopback port, the
/// tunnel zone forwarded to dns2tcpd, one group for the client that allows only the tunnel zone.
fn dnsward_config(dir: &Path, tunnel_server: SocketAddr, monitor_only: bool) -> (PathBuf, PathBuf) {
    let events = dir.join("events.jsonl");
    let policy = common::tunnel_policy_toml(GROUP, CLIENT_IP, TUNNEL_ZONE, monitor_only);
    let text = format!(
        r#"
[server]
listen = ["{RESOLVER_IP}:53"]
unknown_clients = "refuse"

[admin]
listen = "127.0.0.1:0"

[upstream]
timeout = "2s"
# Only the forward zone below is ever asked; this default upstream is a loopback discard port.
servers = [{{ address = "127.0.0.1:9", protocol = "udp", timeout = "1s" }}]

[[upstream.forward]]
zone = "{TUNNEL_ZONE}"
servers = [{{ address = "{tunnel_server}" }}]

[events]
sink = "file"
path = {events:?}
allowed = "off"

{policy}"#
    );
    let path = dir.join("dnsward.toml");
    std::fs::write(&path, text).expect("writing the dnsward config");
    (path, events)
}

/// dns2tcpd's configuration: the tunnel zone, and one resource leading to the sink.
fn dns2tcpd_config(dir: &Path, listen: SocketAddr, sink: SocketAddr) -> PathBuf {
    let text = format!(
        "listen = {}\nport = {}\ndomain = {TUNNEL_ZONE}\ndebug_level = 0\nresources = {RESOURCE}:{}:{}\n",
        listen.ip(),
        listen.port(),
        sink.ip(),
        sink.port()
    );
    let path = dir.join("dns2tcpd.conf");
    std::fs::write(&path, text).expect("writing the dns2tcpd config");
    path
}

/// The address in `key=[a, b]` or `key=Some(a)` of dnsward's `serving` line.
fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = line[start..]
        .trim_start_matches('[')
        .trim_start_matches("Some(");
    let end = rest.find([',', ']', ')', ' '])?;
    rest[..end].parse().ok()
}

/// `GET /metrics` from the admin endpoint, over a plain socket.
fn fetch_metrics(admin: SocketAddr) -> String {
    let mut conn = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to the admin endpoint {admin}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: dnsward\r\nConnection: close\r\n\r\n")
        .expect("sending the metrics request");
    let mut body = String::new();
    conn.read_to_string(&mut body).expect("reading /metrics");
    body
}

/// `dnsward_queries_total` of the group, summed over query types, by verdict.
fn queries_by_verdict(metrics: &str) -> BTreeMap<String, u64> {
    let mut by_verdict = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("dnsward_queries_total{") else {
            continue;
        };
        if !rest.contains(&format!("group=\"{GROUP}\"")) {
            continue;
        }
        let verdict = rest
            .split("verdict=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("?");
        // Counters may be printed as floats.
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = value as u64;
        *by_verdict.entry(verdict.to_string()).or_insert(0) += value;
    }
    by_verdict
}

/// Deterministic incompressible-looking bytes (xorshift), so the payload is not all zeros.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// What one transfer did.
#[derive(Debug, Default)]
struct Transfer {
    /// Bytes the sink received.
    delivered: u64,
    /// Bytes dns2tcpc's local port accepted (most of it may sit in socket buffers).
    accepted: u64,
    /// How long the transfer ran.
    elapsed: Duration,
    /// Why it ended.
    ended: String,
    /// (time since start, bytes the sink had), sampled as it ran.
    progress: Vec<(Duration, u64)>,
    /// Wall clock at the start, to place dnsward's event timestamps on the timeline.
    started_at: Option<SystemTime>,
}

impl Transfer {
    fn completed(&self) -> bool {
        self.delivered >= PAYLOAD_BYTES
    }

    /// Bytes the sink had at `t` after the start.
    fn delivered_by(&self, t: Duration) -> u64 {
        self.progress
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, b)| *b)
    }
}

/// Pushes [`PAYLOAD_BYTES`] into dns2tcpc's local port and watches the sink. Ends when the sink
/// has it all, when the sink has seen nothing new for [`STALL`], or at [`TRANSFER_DEADLINE`].
fn push_through_tunnel(local: SocketAddr, sink: &Sink) -> Transfer {
    use std::fmt::Write as _;
    let data = payload(usize::try_from(PAYLOAD_BYTES).unwrap());
    let mut conn = TcpStream::connect_timeout(&local, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to dns2tcpc's local port {local}: {e}"));
    // Short write timeouts keep the loop turning while the tunnel's buffers are full.
    conn.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let before = sink.received();
    let start = Instant::now();
    let mut t = Transfer {
        started_at: Some(SystemTime::now()),
        ..Transfer::default()
    };
    let mut last_progress = start;
    let mut last_delivered = 0;
    let mut writing = true;
    loop {
        if writing && t.accepted < PAYLOAD_BYTES {
            let from = usize::try_from(t.accepted).unwrap();
            let to = (from + 4096).min(data.len());
            match conn.write(&data[from..to]) {
                Ok(n) => t.accepted += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // dns2tcpc closed the connection: nothing more will go in.
                    t.ended = format!("dns2tcpc's port stopped taking data ({e}); ");
                    writing = false;
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = Instant::now();
        t.delivered = sink.received() - before;
        if t.delivered != last_delivered {
            last_delivered = t.delivered;
            last_progress = now;
            t.progress.push((now - start, t.delivered));
        }
        if t.completed() {
            t.ended += "all bytes delivered";
            break;
        }
        if now - last_progress >= STALL {
            let _ = write!(t.ended, "no bytes reached the sink for {STALL:?}");
            break;
        }
        if now - start >= TRANSFER_DEADLINE {
            let _ = write!(t.ended, "deadline of {TRANSFER_DEADLINE:?}");
            break;
        }
    }
    t.elapsed = start.elapsed();
    let _ = conn.shutdown(Shutdown::Both);
    t
}

/// Everything one run left behind.
struct RunOutcome {
    transfer: Transfer,
    /// Every event dnsward wrote.
    events: Vec<Value>,
    /// `dnsward_queries_total` of the group by verdict, read just before shutdown.
    queries: BTreeMap<String, u64>,
}

impl RunOutcome {
    fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Alerts for this client about the tunnel's registrable domain (or the zone itself).
    fn tunnel_alerts(&self) -> Vec<&Value> {
        self.events_of("alert")
            .into_iter()
            .filter(|e| {
                e["client"] == CLIENT_IP
                    && (e["domain"] == "example.com" || e["domain"] == TUNNEL_ZONE)
            })
            .collect()
    }

    fn contained_queries(&self) -> Vec<&Value> {
        self.events_of("query")
            .into_iter()
            .filter(|e| {
                e["client"] == CLIENT_IP
                    && CONTAINED_VERDICTS
                        .iter()
                        .any(|v| e["verdict"].as_str() == Some(v))
            })
            .collect()
    }

    /// Seconds from the transfer's start to an event's `ts` (negative: before it).
    fn since_start(&self, event: &Value) -> Option<f64> {
        let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str()?).ok()?;
        let at = SystemTime::from(ts);
        let start = self.transfer.started_at?;
        Some(match at.duration_since(start) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        })
    }

    /// A human-readable account of the run, printed whether the assertions pass or not.
    fn report(&self, label: &str) -> String {
        use std::fmt::Write as _;
        let t = &self.transfer;
        let mut r = String::new();
        let total: u64 = self.queries.values().sum();
        let _ = writeln!(r, "==== dns2tcp through dnsward: {label} ====");
        let _ = writeln!(
            r,
            "payload: {} of {PAYLOAD_BYTES} bytes reached the sink in {:.1}s ({}); \
             dns2tcpc's port accepted {} bytes",
            t.delivered,
            t.elapsed.as_secs_f64(),
            t.ended,
            t.accepted
        );
        let _ = writeln!(
            r,
            "queries from the client (dnsward_queries_total{{group=\"{GROUP}\"}}): {total} {:?}",
            self.queries
        );
        let alerts = self.tunnel_alerts();
        let max = alerts
            .iter()
            .max_by_key(|a| a["score"].as_u64().unwrap_or(0));
        let _ = writeln!(
            r,
            "alerts for the tunnel domain: {} (max score {})",
            alerts.len(),
            max.map_or("-".into(), |a| a["score"].to_string())
        );
        let shown = alerts.iter().take(3).map(|a| ("alert", a));
        for (what, a) in shown.chain(max.map(|a| ("highest", a))) {
            let _ = writeln!(
                r,
                "  {what} at {:+.1}s: score {} action {} monitor_only {} window {} breakdown {}",
                self.since_start(a).unwrap_or(f64::NAN),
                a["score"],
                a["action"],
                a["monitor_only"],
                a["window"],
                a["breakdown"]
            );
        }
        if let Some(a) = alerts.first() {
            let _ = writeln!(r, "  samples: {}", a["samples"]);
        }
        let timeline: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{:+.0}s:{}",
                    self.since_start(a).unwrap_or(f64::NAN),
                    a["score"]
                )
            })
            .collect();
        let _ = writeln!(r, "  score timeline: {}", timeline.join(" "));
        let containments = self.events_of("containment_started");
        match containments.first() {
            Some(c) => {
                let at = self.since_start(c).unwrap_or(f64::NAN);
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let before = t.delivered_by(Duration::from_secs_f64(at.max(0.0)));
                let _ = writeln!(
                    r,
                    "containment started {at:+.1}s after the transfer began, {before} payload \
                     bytes through before it: {c}"
                );
                for c in containments.iter().skip(1) {
                    let _ = writeln!(r, "  then: {c}");
                }
            }
            None => {
                let _ = writeln!(r, "no containment_started event");
            }
        }
        let contained = self.contained_queries();
        let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &contained {
            *verdicts
                .entry(q["verdict"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let _ = writeln!(r, "contained query events: {verdicts:?}");
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.events {
            *kinds.entry(e["kind"].as_str().unwrap_or("?")).or_default() += 1;
        }
        let _ = writeln!(r, "events by kind: {kinds:?}");
        r
    }
}

/// One run of the whole chain with the group in `monitor_only` or enforcing.
fn run_tunnel(monitor_only: bool) -> RunOutcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = Sink::start();

    let tunnel_server: SocketAddr =
        format!("{TUNNEL_SERVER_IP}:{}", free_port(TUNNEL_SERVER_IP, "udp"))
            .parse()
            .unwrap();
    let d_conf = dns2tcpd_config(dir.path(), tunnel_server, sink.addr);
    let mut server = ChildGuard::spawn(
        "dns2tcpd",
        Command::new("dns2tcpd").arg("-F").arg("-f").arg(&d_conf),
        dir.path().join("dns2tcpd.log"),
    );

    let (config, events_path) = dnsward_config(dir.path(), tunnel_server, monitor_only);
    let mut dnsward = ChildGuard::spawn(
        "dnsward",
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("DNSWARD_LOG", "info"),
        dir.path().join("dnsward.log"),
    );
    let log = dnsward.wait_for_log("dnsward serving", STARTUP_DEADLINE);
    let serving = log.lines().find(|l| l.contains("dnsward serving")).unwrap();
    let admin =
        logged_addr(serving, "admin").unwrap_or_else(|| panic!("no admin address in {serving:?}"));

    // Resource listing through dnsward: proves the whole chain answers before any payload.
    wait_for_resource_listing(&mut server, &dnsward, dir.path());

    let local: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1", "tcp"))
        .parse()
        .unwrap();
    let mut client = ChildGuard::spawn(
        "dns2tcpc",
        Command::new("dns2tcpc")
            .args(["-z", TUNNEL_ZONE, "-r", RESOURCE, "-T", "TXT"])
            .args(["-l", &local.port().to_string(), RESOLVER_IP]),
        dir.path().join("dns2tcpc.log"),
    );
    client.wait_for_log("Listening on port", STARTUP_DEADLINE);

    let transfer = push_through_tunnel(local, &sink);
    let metrics = fetch_metrics(admin);
    drop(client);
    drop(server);
    let (status, log) = dnsward.terminate();
    assert!(
        status.success(),
        "dnsward exited with {status} after SIGTERM:\n{log}"
    );
    let text = std::fs::read_to_string(&events_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", events_path.display()));
    let events = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    RunOutcome {
        transfer,
        events,
        queries: queries_by_verdict(&metrics),
    }
}

/// Runs `dns2tcpc -z ZONE RESOLVER` (list the resources) until it names ours. Each attempt is
/// bounded; dns2tcpd may still be binding its socket on the first.
fn wait_for_resource_listing(server: &mut ChildGuard, dnsward: &ChildGuard, dir: &Path) {
    let until = Instant::now() + STARTUP_DEADLINE;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log = dir.join(format!("dns2tcpc-list-{attempt}.log"));
        let mut list = ChildGuard::spawn(
            "dns2tcpc (resource listing)",
            Command::new("dns2tcpc").args(["-z", TUNNEL_ZONE, RESOLVER_IP]),
            log,
        );
        let give_up = Instant::now() + Duration::from_secs(10);
        while list.exited().is_none() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(50));
        }
        let listed = list.log();
        drop(list);
        if listed.lines().any(|l| l.trim() == RESOURCE) {
            return;
        }
        if let Some(status) = server.exited() {
            panic!("dns2tcpd exited ({status}):\n{}", server.log());
        }
        assert!(
            Instant::now() < until,
            "dns2tcpc never listed the resource {RESOURCE:?} through dnsward; last try:\n{listed}\n\
             dns2tcpd:\n{}\ndnsward:\n{}",
            server.log(),
            strip_ansi(&dnsward.log())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn dns2tcp_is_alerted_in_monitor_mode_and_contained_when_enforced() {
    let test = "dns2tcp_is_alerted_in_monitor_mode_and_contained_when_enforced";
    if !dns2tcp_available(test) || !port_53_bindable(test) {
        return;
    }

    // 1. Baseline: monitor only. The tunnel must work, and dnsward must see it.
    let baseline = run_tunnel(true);
    eprintln!("{}", baseline.report("baseline, monitor_only = true"));
    assert!(
        baseline.transfer.delivered >= BASELINE_MIN_BYTES,
        "the tunnel carried only {} bytes without containment (need {BASELINE_MIN_BYTES}): the \
         setup is broken, so the enforced run would prove nothing",
        baseline.transfer.delivered
    );
    let alerts = baseline.tunnel_alerts();
    assert!(
        alerts
            .iter()
            .any(|a| a["monitor_only"] == true && a["action"] == "none"),
        "no monitor-only alert (action \"none\") for {CLIENT_IP} and example.com; events:\n{:#?}",
        baseline.events
    );
    assert!(
        baseline.events_of("containment_started").is_empty()
            && baseline.contained_queries().is_empty(),
        "monitor_only must never contain; events:\n{:#?}",
        baseline.events
    );

    // 2. Enforced: the same transfer must be cut off or slowed to a crawl.
    let enforced = run_tunnel(false);
    eprintln!("{}", enforced.report("enforced, monitor_only = false"));
    #[allow(clippy::cast_precision_loss)]
    let share = enforced.transfer.delivered as f64 / baseline.transfer.delivered as f64;
    let alerts = enforced.tunnel_alerts();
    assert!(
        !alerts.is_empty(),
        "no alert for {CLIENT_IP} and example.com when enforcing; events:\n{:#?}",
        enforced.events
    );
    let started: Vec<&Value> = enforced
        .events_of("containment_started")
        .into_iter()
        .filter(|e| e["client"] == CLIENT_IP && e["group"] == GROUP)
        .collect();
    assert!(
        !started.is_empty(),
        "dnsward never contained the dns2tcp client ({} of {PAYLOAD_BYTES} bytes went \
         through, {:.0}% of the baseline); see the report above for its scores",
        enforced.transfer.delivered,
        share * 100.0
    );
    let contained = enforced.contained_queries();
    assert!(
        !contained.is_empty(),
        "containment started but no query was answered by it (no verdict in \
         {CONTAINED_VERDICTS:?}); containment events: {started:#?}"
    );
    assert!(
        !enforced.transfer.completed() && share < ENFORCED_MAX_SHARE,
        "the tunnel still carried {} bytes ({:.0}% of the baseline's {}) although dnsward \
         contained the client",
        enforced.transfer.delivered,
        share * 100.0,
        baseline.transfer.delivered
    );
}

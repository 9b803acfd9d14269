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

use common::tunnel::{
    self, CLIENT_IP, GROUP, RESOLVER_IP, RunEvents, TUNNEL_SERVER_IP, TUNNEL_ZONE,
};
use common::{ChildGuard, DNSWARD, Dnsward, STARTUP_DEADLINE};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

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
/// The enforced run must carry less than this share of the baseline.
const ENFORCED_MAX_SHARE: f64 = 0.25;

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
    let mut t = Transfer::default();
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
    /// Every event dnsward wrote, timed from the transfer's start.
    events: RunEvents,
    /// `dnsward_queries_total` of the group by verdict, read just before shutdown.
    queries: BTreeMap<String, u64>,
}

impl RunOutcome {
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
        self.events.report_alerts(&mut r);
        self.events.report_containments(&mut r, |_, at| {
            let before = t.delivered_by(Duration::from_secs_f64(at.max(0.0)));
            format!("{before} payload bytes through before it")
        });
        let contained = self.events.contained_queries();
        let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &contained {
            *verdicts
                .entry(q["verdict"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let _ = writeln!(r, "contained query events: {verdicts:?}");
        self.events.report_kinds(&mut r);
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

    let (config, events_path) =
        tunnel::dnsward_config(dir.path(), &tunnel_server.to_string(), monitor_only, false);
    let dnsward = Dnsward::serve(
        Command::new(DNSWARD),
        &config,
        dir.path().join("dnsward.log"),
    );

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

    // The transfer starts at once: dnsward's event times are placed from here.
    let started_at = SystemTime::now();
    let transfer = push_through_tunnel(local, &sink);
    let metrics = dnsward.metrics();
    drop(client);
    drop(server);
    dnsward.stop();
    RunOutcome {
        transfer,
        events: RunEvents::read(&events_path, started_at),
        queries: tunnel::queries_by_verdict(&metrics),
    }
}

/// Runs `dns2tcpc -z ZONE RESOLVER` (list the resources) until it names ours. Each attempt is
/// bounded; dns2tcpd may still be binding its socket on the first.
fn wait_for_resource_listing(server: &mut ChildGuard, dnsward: &Dnsward, dir: &Path) {
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
            dnsward.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn dns2tcp_is_alerted_in_monitor_mode_and_contained_when_enforced() {
    let test = "dns2tcp_is_alerted_in_monitor_mode_and_contained_when_enforced";
    // Both tools print their usage for `-h` (and exit non-zero).
    if !common::tools_runnable(test, &["dns2tcpd", "dns2tcpc"], "-h", "dns2tcp")
        || !port_53_bindable(test)
    {
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
    baseline.events.assert_alerted_without_acting();

    // 2. Enforced: the same transfer must be cut off or slowed to a crawl.
    let enforced = run_tunnel(false);
    eprintln!("{}", enforced.report("enforced, monitor_only = false"));
    #[allow(clippy::cast_precision_loss)]
    let share = enforced.transfer.delivered as f64 / baseline.transfer.delivered as f64;
    enforced.events.assert_contained("dns2tcp");
    assert!(
        !enforced.transfer.completed() && share < ENFORCED_MAX_SHARE,
        "the tunnel still carried {} bytes ({:.0}% of the baseline's {}) although dnsward \
         contained the client",
        enforced.transfer.delivered,
        share * 100.0,
        baseline.transfer.delivered
    );
}

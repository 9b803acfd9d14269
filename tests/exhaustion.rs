//! Exhaustion (issue 9): the real `dnsward` binary under a lowered file-descriptor limit
//! (`prlimit --nofile=256`), attacked at once with 600 idle admin connections, 2,000 slow cache
//! misses and TCP clients that never read their answers. A well-behaved client's cached and
//! uncached queries must still be answered correctly and in time.
//!
//! Before the hardening, each miss opened its own upstream socket and the admin endpoint took
//! every connection, so the descriptors ran out and every miss became SERVFAIL.
//!
//! And when the descriptors do run out (`prlimit --nofile=100:100`, held TCP connections), it is
//! said: a start-up warning, failed accepts counted and logged, and a miss's SERVFAIL reason
//! naming the local cause.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{DNSWARD, Dnsward};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The descriptor limit dnsward runs under.
const NOFILE: u32 = 256;
/// How long the slow upstream takes to answer (below the 1 s attempt timeout).
const UPSTREAM_DELAY: Duration = Duration::from_millis(400);

/// A loopback upstream answering every A query with 192.0.2.9 after [`UPSTREAM_DELAY`], one
/// thread per answer so answers overlap. Stops when `stop` is set.
fn slow_upstream(stop: Arc<AtomicBool>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let sock = Arc::new(sock);
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, src)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let sock = Arc::clone(&sock);
            std::thread::spawn(move || {
                std::thread::sleep(UPSTREAM_DELAY);
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                resp.metadata.recursion_available = true;
                if let Some(q) = req.queries.first() {
                    resp.add_query(q.clone());
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        300,
                        RData::A(A::new(192, 0, 2, 9)),
                    ));
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, src);
                }
            });
        }
    });
    addr
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// One UDP query from `src`; the answer, or None after `wait`.
fn ask(server: SocketAddr, src: &str, name: &str, wait: Duration) -> Option<Message> {
    let sock = UdpSocket::bind((src, 0)).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    let q = query(name);
    sock.send_to(&q, server).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { break };
        if n >= 2 && buf[..2] == q[..2] {
            return Message::from_vec(&buf[..n]).ok();
        }
    }
    None
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_well_behaved_client_is_served_while_the_fd_limited_server_is_attacked() {
    if !common::tools_runnable(
        "a_well_behaved_client_is_served_while_the_fd_limited_server_is_attacked",
        &["prlimit"],
        "--version",
        "util-linux",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = slow_upstream(Arc::clone(&stop));
    let config = dir.path().join("dnsward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
threads = 2
udp_workers = 1
tcp_write_timeout = "1s"

[admin]
listen = "127.0.0.1:0"

[upstream]
timeout = "2s"
servers = [{{ address = "{upstream}", timeout = "1s" }}]

[detect]
enabled = false

[events]
sink = "file"
path = {events:?}

[[groups]]
name = "flooder"
cidrs = ["127.0.0.70/32"]
allow = ["*.example"]

[[groups]]
name = "agents"
cidrs = ["127.0.0.71/32"]
allow = ["*.example"]
"#,
            events = dir.path().join("events.jsonl"),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}")).arg(DNSWARD);
    let server = Dnsward::serve(cmd, &config, dir.path().join("dnsward.log"));
    let admin = server.admin.expect("admin endpoint");

    // The well-behaved client warms one name.
    let warm = ask(
        server.udp,
        "127.0.0.71",
        "warm.example",
        Duration::from_secs(3),
    )
    .expect("warm-up answered");
    assert_eq!(a_records(&warm), ["192.0.2.9"]);

    // 600 idle admin connections (more than dnsward's whole descriptor limit).
    let mut idle_admin = Vec::new();
    for _ in 0..600 {
        // With a timeout: a server out of descriptors stops accepting and connects would hang.
        if let Ok(c) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)) {
            idle_admin.push(c);
        }
    }
    // TCP clients that send queries and never read.
    let mut never_read = Vec::new();
    for _ in 0..40 {
        let Ok(mut c) = std::net::TcpStream::connect_timeout(&server.tcp, Duration::from_secs(1))
        else {
            continue;
        };
        use std::io::Write;
        let q = query("unread.example");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
        for _ in 0..200 {
            if c.write_all(&framed).is_err() {
                break;
            }
        }
        never_read.push(c);
    }
    // 2,000 slow misses, all different names, from 20 sockets.
    let flood_sockets: Vec<UdpSocket> = (0..20)
        .map(|_| UdpSocket::bind("127.0.0.70:0").unwrap())
        .collect();
    for i in 0..2_000 {
        let s = &flood_sockets[i % flood_sockets.len()];
        let _ = s.send_to(&query(&format!("flood-{i}.example")), server.udp);
    }

    // While all of that is in progress: a cached and an uncached query are answered right.
    let started = Instant::now();
    let cached = ask(
        server.udp,
        "127.0.0.71",
        "warm.example",
        Duration::from_secs(3),
    )
    .expect("the cached query is answered");
    assert_eq!(cached.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&cached), ["192.0.2.9"]);
    let fresh = ask(
        server.udp,
        "127.0.0.71",
        "fresh.example",
        Duration::from_secs(4),
    )
    .expect("the uncached query is answered");
    assert_eq!(
        fresh.metadata.response_code,
        ResponseCode::NoError,
        "an uncached query still reaches the upstream:\n{}",
        server.log()
    );
    assert_eq!(a_records(&fresh), ["192.0.2.9"]);
    assert!(started.elapsed() < Duration::from_secs(6));
    // Over TCP too, from the well-behaved client.
    {
        use std::io::{Read, Write};
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.71:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.connect_timeout(&server.tcp.into(), Duration::from_secs(3))
            .expect("TCP connect");
        let mut c: std::net::TcpStream = sock.into();
        c.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let q = query("tcp-fresh.example");
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        c.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).expect("TCP answer");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut buf).unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(a_records(&m), ["192.0.2.9"]);
    }
    // The admin endpoint itself still answers once the idle connections are let go: once
    // dnsward has seen them close and their descriptors are free again (a connection accepted
    // before then, with none to spare, is reset), so it is asked for a few seconds.
    drop(idle_admin);
    drop(never_read);
    let admin = server.admin.expect("the config has an admin endpoint");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        match common::try_fetch_metrics(admin) {
            Ok(body) if body.contains("dnsward_queries_total") => break body,
            other if std::time::Instant::now() >= deadline => {
                panic!("the admin endpoint did not come back: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(metrics.contains("dnsward_queries_total"));
    let log = server.stop();
    stop.store(true, Ordering::Relaxed);
    assert!(!log.contains("panicked"), "{log}");
}

/// A TCP connection from `src` to `server`, completed by the kernel whether or not dnsward
/// accepts it.
fn tcp_from(src: &str, server: SocketAddr) -> Option<std::net::TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())
        .ok()?;
    sock.connect_timeout(&server.into(), Duration::from_secs(1))
        .ok()?;
    Some(sock.into())
}

/// Out of descriptors, said so: under `prlimit --nofile=100:100` dnsward warns at start that the
/// limit is below its bounds; held TCP connections then exhaust it, and the failed accepts are
/// counted by kind and logged with the fix, and a cache miss whose upstream socket cannot be
/// opened is SERVFAIL with a reason that says so (`kind="local_resources"`, not `io`).
#[test]
fn running_out_of_descriptors_is_warned_about_counted_and_named() {
    if !common::tools_runnable(
        "running_out_of_descriptors_is_warned_about_counted_and_named",
        &["prlimit"],
        "--version",
        "util-linux",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = slow_upstream(Arc::clone(&stop));
    let config = dir.path().join("dnsward.toml");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
threads = 2
udp_workers = 1
tcp_idle_timeout = "60s"
tcp_max_connections_per_client = 1000

[admin]
listen = "127.0.0.1:0"

[upstream]
timeout = "2s"
servers = [{{ address = "{upstream}", timeout = "1s" }}]
# Long enough to outlast the test: the starved miss must not be remembered as a failure.
failure_ttl = "5m"

[detect]
enabled = false

[events]
sink = "file"
path = {events:?}

[[groups]]
name = "holders"
cidrs = ["127.0.0.101/32"]
allow = ["*.example"]
"#,
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=100:100").arg(DNSWARD);
    let server = Dnsward::serve(cmd, &config, dir.path().join("dnsward.log"));
    let log = server.log();
    assert!(
        log.contains("open-file limit 100 is below the") && log.contains("LimitNOFILE="),
        "a start-up warning with the numbers and the fix:\n{log}"
    );

    // 200 connections that say nothing: dnsward holds each one it accepts, until none is left.
    let held: Vec<_> = (0..200)
        .filter_map(|_| tcp_from("127.0.0.101", server.tcp))
        .collect();
    assert!(held.len() > 150, "only {} connections", held.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("cannot accept connections") {
        assert!(
            Instant::now() < deadline,
            "no accept failure logged:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("cannot accept connections"))
        .unwrap();
    assert!(
        warning.contains("WARN")
            && warning.contains("Too many open files")
            && warning.contains("LimitNOFILE=")
            && warning.contains("ulimit -n"),
        "the warning names the error and the fix: {warning}"
    );
    // A miss now: no descriptor for the upstream socket.
    let starved = ask(
        server.udp,
        "127.0.0.101",
        "starved.example",
        Duration::from_secs(4),
    )
    .expect("the starved miss is answered");
    assert_eq!(starved.metadata.response_code, ResponseCode::ServFail);
    // Half a second later still out of descriptors: no second warning within the minute.
    std::thread::sleep(Duration::from_millis(500));
    let tcp_warnings = server
        .log()
        .lines()
        .filter(|l| l.contains("cannot accept connections") && l.contains("protocol=\"tcp\""))
        .count();
    assert_eq!(tcp_warnings, 1, "rate-limited:\n{}", server.log());

    drop(held);
    // The closed connections free their descriptors; the admin endpoint accepts again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        match std::net::TcpStream::connect_timeout(
            &server.admin.unwrap(),
            Duration::from_millis(500),
        ) {
            Ok(_) => break server.metrics(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the admin endpoint does not come back: {e}"),
        }
    };
    let emfile = common::metric_sum(
        &metrics,
        "dnsward_accept_errors_total",
        &[("protocol", "tcp"), ("kind", "emfile")],
    )
    .unwrap_or(0.0);
    assert!(emfile >= 1.0, "failed accepts counted: {emfile}\n{metrics}");
    let local = common::metric_sum(
        &metrics,
        "dnsward_upstream_errors_total",
        &[("kind", "local_resources")],
    )
    .unwrap_or(0.0);
    assert!(
        local >= 1.0,
        "the upstream socket failure counted: {metrics}"
    );
    let io = common::metric_sum(&metrics, "dnsward_upstream_errors_total", &[("kind", "io")])
        .unwrap_or(0.0);
    assert_eq!(io, 0.0, "not as an I/O error of the upstream");

    // With descriptors back, misses are answered again.
    let fresh = ask(
        server.udp,
        "127.0.0.101",
        "after.example",
        Duration::from_secs(4),
    )
    .expect("answered");
    assert_eq!(a_records(&fresh), ["192.0.2.9"]);
    // The starved name too: this host's own shortage is not the name's failure, so it was not
    // remembered (RFC 9520 failure caching) and is asked again at once.
    let again = ask(
        server.udp,
        "127.0.0.101",
        "starved.example",
        Duration::from_secs(4),
    )
    .expect("answered");
    assert_eq!(a_records(&again), ["192.0.2.9"]);
    let log = server.stop();
    stop.store(true, Ordering::Relaxed);
    assert!(!log.contains("panicked"), "{log}");
    let starved_event = common::read_events(&events)
        .into_iter()
        .find(|e| e["qname"] == "starved.example")
        .expect("an event for the starved miss");
    let reason = starved_event["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("a socket could not be opened here (EMFILE"),
        "the reason names the local cause: {starved_event}"
    );
}

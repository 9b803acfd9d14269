//! Notifications (issue 12): webhooks against a local HTTP receiver on 127.0.0.1 (retries on
//! 500, no loss within the queue bound, counted drops beyond it, Slack bodies) and syslog
//! (RFC 5424) against local UDP and TCP listeners, directly and from a running dnsward.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use dnsward::clock::ManualClock;
use dnsward::events::notify::{Notifiers, NotifyConfig};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};

use crate::harness::*;

#[derive(Default)]
struct Receiver {
    attempts: HashMap<String, u32>,
    accepted: Vec<Value>,
}

type Shared = Arc<Mutex<Receiver>>;

/// An HTTP receiver answering 500 to the first `fail_first` attempts of each body, after
/// `delay`; then 200 and keeps the body.
async fn receiver(fail_first: u32, delay: Duration) -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                move |State(s): State<Shared>, Json(body): Json<Value>| async move {
                    tokio::time::sleep(delay).await;
                    let mut r = s.lock();
                    let n = r.attempts.entry(body.to_string()).or_default();
                    *n += 1;
                    if *n <= fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    r.accepted.push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

fn notify_config(text: &str) -> NotifyConfig {
    let cfg: NotifyConfig = toml::from_str(text).unwrap();
    let mut p = dnsward::config_error::ConfigProblems::default();
    cfg.validate("notify", &mut p);
    assert!(p.is_empty(), "{p}");
    cfg
}

fn alert_line(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-12-02T13:00:{:02}.000000Z","policy_version":1,"kind":"alert","client":"10.0.0.{i}","group":"agents","domain":"tun.example","score":80,"action":"quarantine"}}"#,
        i % 60
    )
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn webhook_retries_on_500_and_loses_nothing_within_the_queue() {
    let (addr, rx) = receiver(2, Duration::ZERO).await;
    let n = notify_config(&format!(
        "allowed_hosts = [\"127.0.0.1\"]\n[[webhooks]]\nurl = \"http://{addr}/hook\"\nqueue = 50\nretries = 3\nbackoff = \"5ms\""
    ));
    let notifiers = Notifiers::start(&n);
    for i in 0..50 {
        notifiers.tap.offer("alert", alert_line(i).as_bytes());
    }
    // Not asked for: queries and admin events are not sent.
    notifiers.tap.offer("query", b"{\"kind\":\"query\"}\n");
    until("50 deliveries", || rx.lock().accepted.len() == 50).await;
    // The receiver has the last body before the notifier has read its 200 and counted it.
    until("50 counted as sent", || {
        notifiers.counters[0].1.snapshot().0 == 50
    })
    .await;
    let r = rx.lock();
    // Each was tried three times (two 500s, then 200), in order, none lost.
    assert!(r.attempts.values().all(|&a| a == 3), "{:?}", r.attempts);
    for (i, body) in r.accepted.iter().enumerate() {
        assert_eq!(body["source"], "dnsward");
        assert_eq!(body["kind"], "alert");
        assert_eq!(body["event"]["client"], format!("10.0.0.{i}"));
    }
    let (sent, dropped, failed, retries) = notifiers.counters[0].1.snapshot();
    assert_eq!((sent, dropped, failed, retries), (50, 0, 0, 100));
}

#[tokio::test]
async fn a_slow_webhook_drops_beyond_its_queue_and_counts_failures() {
    let (addr, rx) = receiver(0, Duration::from_millis(200)).await;
    let (bad, _) = receiver(100, Duration::ZERO).await;
    let n = notify_config(&format!(
        "allowed_hosts = [\"127.0.0.1\"]\n[[webhooks]]\nurl = \"http://{addr}/hook\"\nqueue = 4\nformat = \"slack\"\n[[webhooks]]\nurl = \"http://{bad}/hook\"\nretries = 2\nbackoff = \"1ms\""
    ));
    let notifiers = Notifiers::start(&n);
    for i in 0..20 {
        notifiers.tap.offer("alert", alert_line(i).as_bytes());
    }
    let slow = Arc::clone(&notifiers.counters[0].1);
    let failing = Arc::clone(&notifiers.counters[1].1);
    until("the slow hook to drain", || {
        let (sent, dropped, _, _) = slow.snapshot();
        sent + dropped == 20
    })
    .await;
    let (sent, dropped, failed, _) = slow.snapshot();
    assert!(
        dropped >= 10,
        "queue of 4: most of a burst of 20 is dropped ({dropped})"
    );
    assert!(
        (4..=6).contains(&sent),
        "the queued ones (and the one in flight) arrive: {sent}"
    );
    assert_eq!(failed, 0);
    assert_eq!(rx.lock().accepted.len() as u64, sent);
    assert!(
        rx.lock().accepted[0]["text"].as_str().unwrap().starts_with(
            ":rotating_light: dnsward alert: score 80 for 10.0.0.0 (agents) on tun.example"
        ),
        "slack body"
    );
    until("the failing hook to give up", || failing.snapshot().2 == 20).await;
    assert_eq!(failing.snapshot(), (0, 0, 20, 40));
}

#[tokio::test]
async fn syslog_over_udp_is_one_rfc5424_datagram_per_event() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let n = notify_config(&format!(
        "[syslog]\naddress = \"{}\"\nprotocol = \"udp\"\nfacility = 13",
        sock.local_addr().unwrap()
    ));
    let notifiers = Notifiers::start(&n);
    for i in 0..3 {
        notifiers.tap.offer("alert", alert_line(i).as_bytes());
    }
    notifiers.tap.offer(
        "admin",
        b"{\"ts\":\"2026-12-02T13:00:09Z\",\"kind\":\"admin\"}\n",
    );
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    for _ in 0..4 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        got.push(String::from_utf8(buf[..len].to_vec()).unwrap());
    }
    // facility 13 * 8 + warning (4) = 108 for alerts; notice (5) = 109 for admin.
    assert!(
        got[0].starts_with("<108>1 2026-12-02T13:00:00.000000Z ")
            && got[0].contains(" dnsward ")
            && got[0].contains(" alert - {"),
        "{}",
        got[0]
    );
    let json = &got[0][got[0].find(" - ").unwrap() + 3..];
    assert_eq!(
        serde_json::from_str::<Value>(json).unwrap()["client"],
        "10.0.0.0"
    );
    assert!(
        got[3].starts_with("<109>1 2026-12-02T13:00:09Z "),
        "{}",
        got[3]
    );
    assert!(got[3].contains(" admin - "));
}

/// Read RFC 6587 octet-counted frames from `stream` until `want` arrive.
async fn frames(
    stream: &mut tokio::net::TcpStream,
    want: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !want(&out) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("frames in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp])
                .unwrap()
                .parse()
                .expect("octet count");
            if buf.len() < sp + 1 + len {
                break;
            }
            out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
            buf.drain(..sp + 1 + len);
        }
    }
    out
}

#[tokio::test]
async fn a_running_dnsward_sends_alerts_to_a_webhook_and_every_event_to_tcp_syslog() {
    let (hook, rx) = receiver(1, Duration::ZERO).await;
    let syslog = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let syslog_addr = syslog.local_addr().unwrap();
    let up = FakeUpstream::new().start().await;
    let clock = ManualClock::new();
    let extra = format!(
        r#"
[[groups]]
name = "notified"
cidrs = ["127.0.0.96/30"]
allow = ["*.tun.example"]
[groups.detect]
alert = 30
throttle = 40
sinkhole = 50
quarantine = 60
[notify]
allowed_hosts = ["127.0.0.1"]
[[notify.webhooks]]
url = "http://{hook}/hook"
backoff = "10ms"
[notify.syslog]
address = "{syslog_addr}"
protocol = "tcp"
"#
    );
    let mut s =
        TestServer::start_with(Some(up.addr), &extra, Some(clock.clone()), "127.0.0.1:0").await;
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), syslog.accept())
        .await
        .expect("dnsward connects to syslog (the policy event is sent at start)")
        .unwrap();
    let traffic = dnsward::detect::testgen::iodine_base32("tun.example", 120, 11);
    for q in &traffic.queries {
        udp_raw(
            s.udp,
            "127.0.0.97".parse().unwrap(),
            &raw_name_query(&q.qname, q.qtype),
        )
        .await;
        clock.advance(traffic.interval);
    }
    let got = frames(&mut conn, |f| {
        f.iter().any(|m| m.contains(" alert - "))
            && f.iter().any(|m| m.contains(" containment_started - "))
    })
    .await;
    assert!(
        got.iter().any(|m| m.contains(" policy - ")),
        "every kind goes to syslog"
    );
    assert!(
        got.iter().all(|m| m.starts_with('<') && m.contains(">1 ")),
        "{got:?}"
    );
    until("the alert and containment webhooks", || {
        let r = rx.lock();
        r.accepted.iter().any(|b| b["kind"] == "alert")
            && r.accepted
                .iter()
                .any(|b| b["kind"] == "containment_started")
    })
    .await;
    {
        let r = rx.lock();
        let alert = r.accepted.iter().find(|b| b["kind"] == "alert").unwrap();
        assert_eq!(alert["event"]["client"], "127.0.0.97");
        assert_eq!(alert["event"]["domain"], "tun.example");
        assert!(
            r.accepted.iter().all(|b| b["kind"] != "query"),
            "queries are not webhooked"
        );
        assert!(
            r.accepted.iter().all(|b| r.attempts[&b.to_string()] == 2),
            "each delivered one was retried once after its 500"
        );
    }
    s.stop_and_read_events().await;
}

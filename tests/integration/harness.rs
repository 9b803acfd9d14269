//! Test harness: a scriptable fake upstream and a dnsward started in-process on port 0.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dnsward::app::RunningApp;
use dnsward::clock::SharedClock;
use dnsward::config::Config;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn name(n: &str) -> Name {
    Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).expect("test name")
}

/// A fake upstream resolver, configured builder-style, that counts what it is asked.
#[derive(Default, Clone)]
pub struct FakeUpstream {
    records: HashMap<(String, RecordType), Vec<Record>>,
    truncate_udp: Vec<String>,
    wildcard_a: Option<[u8; 4]>,
    /// Every answer waits this long (each query on its own task, so they overlap).
    delay: Option<Duration>,
    /// How this upstream misbehaves, if it does.
    fault: Option<Fault>,
    /// Every question name it was asked, as it arrived (letter case kept); a retransmission
    /// (the same name with the same ID) is not asked again.
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    /// The (name, ID) pairs already in `asked`.
    exchanges: Arc<std::sync::Mutex<std::collections::HashSet<(String, u16)>>>,
    /// Queries that repeated an exchange already noted (a retransmission: same name and ID).
    repeats: Arc<AtomicUsize>,
    /// With [`Fault::LoseFirstUdp`]: whether the first datagram was lost yet.
    lost_one: Arc<std::sync::atomic::AtomicBool>,
    /// An owner whose AAAA answers are this many addresses never given before, TTL 0 (a
    /// tunnel's downstream in addresses), and how many answers it gave.
    fresh_aaaa: Option<(String, usize, Arc<AtomicU64>)>,
    /// PTR queries under this suffix: a target never given before (four 50-character labels
    /// under `rdns-exfil.example`), TTL 0.
    fresh_ptr: Option<(String, Arc<AtomicU64>)>,
}

/// Ways a fake upstream misbehaves (issue 9's upstream faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Reads every query and never answers, over UDP or TCP.
    BlackHole,
    /// Answers with random bytes.
    Garbage,
    /// Answers correctly but with another ID.
    WrongId,
    /// Answers with the right ID for another question.
    WrongQuestion,
    /// UDP answers have TC set; TCP connections are closed without an answer.
    TruncatedForever,
    /// Over TCP, sends the length and half the answer, then resets the connection; UDP answers
    /// are truncated so the exchange moves to TCP.
    TcpResetMidAnswer,
    /// Answers TC with no records over UDP and over TCP.
    TruncatedOverTcp,
    /// Answers every query FORMERR (a server that rejects the question itself).
    FormErr,
    /// Answers FORMERR without an OPT record to a query with one, and a query without one
    /// as usual: a server that does not know EDNS (RFC 6891 §7).
    FormErrOnEdns,
    /// Answers every query NOTIMP.
    NotImp,
    /// Answers every query REFUSED (a server that will not recurse for dnsward).
    Refused,
    /// Answers with the records but an rcode no stub knows what to do with (NOTAUTH, 9).
    OddRcode,
    /// Answers every query SERVFAIL (a resolver that cannot resolve the name).
    ServFail,
    /// Loses the first UDP datagram it receives (a dropped packet), then answers normally.
    LoseFirstUdp,
    /// Sends every UDP answer twice (a duplicated datagram: the second is late).
    AnswerTwice,
    /// Answers correctly, with extras no question asked for: AD set, an unrelated name's
    /// address in the answer section, NS records for another zone in the authority section,
    /// and glue with a private address in the additional section.
    Stuffed,
}

/// A running fake upstream.
pub struct RunningUpstream {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    repeats: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RunningUpstream {
    /// Exchanges it was asked: queries over UDP and TCP, less retransmissions of a query
    /// already asked (same name and ID; a loaded machine's slow answer is sent again).
    pub fn queries(&self) -> usize {
        (self.udp_queries.load(Ordering::SeqCst) + self.tcp_queries.load(Ordering::SeqCst))
            .saturating_sub(self.repeats.load(Ordering::SeqCst))
    }

    /// The question names it was asked so far, as they arrived (letter case kept).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

impl FakeUpstream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_a(mut self, owner: &str, ip: [u8; 4], ttl: u32) -> Self {
        let r = Record::from_rdata(
            name(owner),
            ttl,
            RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
        );
        self.records
            .entry((owner.to_string(), RecordType::A))
            .or_default()
            .push(r);
        self
    }

    pub fn with_aaaa(mut self, owner: &str, ip: std::net::Ipv6Addr, ttl: u32) -> Self {
        let r = Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA::from(ip)));
        self.records
            .entry((owner.to_string(), RecordType::AAAA))
            .or_default()
            .push(r);
        self
    }

    /// `owner` CNAME `target`, and `target` A `ip`, answered together for A queries.
    pub fn with_cname(mut self, owner: &str, target: &str, ip: [u8; 4]) -> Self {
        let c = Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))));
        let a = Record::from_rdata(
            name(target),
            300,
            RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
        );
        self.records
            .insert((owner.to_string(), RecordType::A), vec![c, a]);
        self
    }

    /// A queries for `owner` answered with `links` as CNAMEs, each `(owner, target)`, in
    /// order (a loop, a chain of any length), and nothing else.
    pub fn with_cname_links(mut self, owner: &str, links: &[(&str, &str)]) -> Self {
        let records = links
            .iter()
            .map(|(o, t)| Record::from_rdata(name(o), 300, RData::CNAME(CNAME(name(t)))))
            .collect();
        self.records
            .insert((owner.to_string(), RecordType::A), records);
        self
    }

    /// A queries for `owner` answered with `links` as CNAMEs, each `(owner, target)`, and (with
    /// `ip`) the last target's A record, all in reverse: the address first, `owner`'s CNAME
    /// last (an upstream that sends a chain out of order). Without `ip` the chain is left open.
    pub fn with_reversed_cname_chain(
        mut self,
        owner: &str,
        links: &[(&str, &str)],
        ip: Option<[u8; 4]>,
    ) -> Self {
        let mut records: Vec<Record> = links
            .iter()
            .map(|(o, t)| Record::from_rdata(name(o), 300, RData::CNAME(CNAME(name(t)))))
            .collect();
        if let (Some(ip), Some((_, last))) = (ip, links.last()) {
            records.push(Record::from_rdata(
                name(last),
                300,
                RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
            ));
        }
        records.reverse();
        self.records
            .insert((owner.to_string(), RecordType::A), records);
        self
    }

    /// `owner` SRV: one record (priority 1, weight 1) per `(target, port)`, TTL 0.
    pub fn with_srv(mut self, owner: &str, targets: &[(String, u16)]) -> Self {
        let records = targets
            .iter()
            .map(|(t, port)| {
                Record::from_rdata(name(owner), 0, RData::SRV(SRV::new(1, 1, *port, name(t))))
            })
            .collect();
        self.records
            .insert((owner.to_string(), RecordType::SRV), records);
        self
    }

    pub fn with_txt(mut self, owner: &str, text: &str) -> Self {
        let r = Record::from_rdata(
            name(owner),
            300,
            RData::TXT(TXT::new(vec![text.to_string()])),
        );
        self.records
            .entry((owner.to_string(), RecordType::TXT))
            .or_default()
            .push(r);
        self
    }

    /// `owner` AAAA: `count` addresses under 2001:db8::/32 never given before, TTL 0, in every
    /// answer.
    pub fn with_fresh_aaaa(mut self, owner: &str, count: usize) -> Self {
        self.fresh_aaaa = Some((owner.to_string(), count, Arc::new(AtomicU64::new(0))));
        self
    }

    /// PTR queries for names under `suffix`: a fresh 200-byte target each time, TTL 0 (a
    /// reverse zone's server answering with data).
    pub fn with_fresh_ptr(mut self, suffix: &str) -> Self {
        self.fresh_ptr = Some((suffix.to_string(), Arc::new(AtomicU64::new(0))));
        self
    }

    /// Every name without its own records gets this A record (NODATA for other types).
    pub fn answering_everything(mut self, ip: [u8; 4]) -> Self {
        self.wildcard_a = Some(ip);
        self
    }

    /// Every answer is sent `delay` after the query arrives.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Misbehave as `fault` says.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// What this upstream sends for `query` (None: nothing), faults applied.
    /// Note `name` asked with `id`, unless that exchange was noted already (a retransmission).
    fn note_asked(&self, name: &str, id: u16) {
        let new = self
            .exchanges
            .lock()
            .is_ok_and(|mut seen| seen.insert((name.to_ascii_lowercase(), id)));
        if !new {
            self.repeats.fetch_add(1, Ordering::SeqCst);
        } else if let Ok(mut asked) = self.asked.lock() {
            asked.push(name.to_string());
        }
    }

    fn reply(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        match self.fault {
            None => self.answer(query, udp),
            Some(Fault::BlackHole) => {
                // Counted among the names asked, then never answered.
                let m = Message::from_vec(query).ok()?;
                self.note_asked(&m.queries.first()?.name().to_ascii(), m.metadata.id);
                None
            }
            Some(Fault::Garbage) => {
                let mut x =
                    u32::from(query.first().copied().unwrap_or(7)).wrapping_mul(2_654_435_761) | 1;
                Some(
                    (0..64)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            (x & 0xFF) as u8
                        })
                        .collect(),
                )
            }
            Some(Fault::WrongId) => {
                let mut r = self.answer(query, udp)?;
                r[0] ^= 0x5A;
                r[1] ^= 0xA5;
                Some(r)
            }
            Some(Fault::WrongQuestion) => {
                let mut m = Message::from_vec(query).ok()?;
                let q = m.queries.first()?.clone();
                m.queries.clear();
                m.add_query(Query::query(name("other.example"), q.query_type()));
                let mut r = self.answer(&m.to_vec().ok()?, udp)?;
                r[0] = query[0];
                r[1] = query[1];
                Some(r)
            }
            Some(Fault::TruncatedForever | Fault::TcpResetMidAnswer) if udp => {
                let req = Message::from_vec(query).ok()?;
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                resp.metadata.truncation = true;
                resp.add_query(req.queries.first()?.clone());
                resp.to_vec().ok()
            }
            Some(Fault::TruncatedForever) => None,
            Some(Fault::OddRcode) => {
                let mut r = self.answer(query, udp)?;
                r[3] = (r[3] & 0xF0) | 9;
                Some(r)
            }
            Some(Fault::ServFail) => {
                let mut m = Message::from_vec(&self.answer(query, udp)?).ok()?;
                m.answers.clear();
                m.authorities.clear();
                m.metadata.response_code = ResponseCode::ServFail;
                m.to_vec().ok()
            }
            Some(Fault::TcpResetMidAnswer | Fault::LoseFirstUdp | Fault::AnswerTwice) => {
                self.answer(query, udp)
            }
            Some(Fault::FormErrOnEdns) => {
                let req = Message::from_vec(query).ok()?;
                if req.edns.is_none() {
                    return self.answer(query, udp);
                }
                self.note_asked(&req.queries.first()?.name().to_ascii(), req.metadata.id);
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                resp.add_query(req.queries.first()?.clone());
                resp.metadata.response_code = ResponseCode::FormErr;
                resp.to_vec().ok()
            }
            Some(
                f @ (Fault::TruncatedOverTcp | Fault::FormErr | Fault::NotImp | Fault::Refused),
            ) => {
                let req = Message::from_vec(query).ok()?;
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                resp.add_query(req.queries.first()?.clone());
                match f {
                    Fault::FormErr => resp.metadata.response_code = ResponseCode::FormErr,
                    Fault::NotImp => resp.metadata.response_code = ResponseCode::NotImp,
                    Fault::Refused => resp.metadata.response_code = ResponseCode::Refused,
                    _ => resp.metadata.truncation = true,
                }
                resp.to_vec().ok()
            }
            Some(Fault::Stuffed) => {
                let mut m = Message::from_vec(&self.answer(query, udp)?).ok()?;
                m.metadata.authentic_data = true;
                m.add_answer(Record::from_rdata(
                    name("unrelated.example.net"),
                    300,
                    RData::A(A::new(6, 6, 6, 8)),
                ));
                m.add_authority(Record::from_rdata(
                    name("pypi.org"),
                    300,
                    RData::NS(hickory_proto::rr::rdata::NS(name("ns.evil.example.net"))),
                ));
                m.add_additional(Record::from_rdata(
                    name("ns.evil.example.net"),
                    300,
                    RData::A(A::new(10, 9, 9, 9)),
                ));
                m.to_vec().ok()
            }
        }
    }

    /// UDP answers for `owner` come back with TC set and no records.
    pub fn truncating(mut self, owner: &str) -> Self {
        self.truncate_udp.push(owner.to_string());
        self
    }

    fn answer(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let req = Message::from_vec(query).ok()?;
        let q = req.queries.first()?.clone();
        self.note_asked(&q.name().to_ascii(), req.metadata.id);
        let owner = q.name().to_lowercase().to_ascii();
        let owner = owner.trim_end_matches('.').to_string();
        let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        resp.metadata.recursion_desired = true;
        resp.metadata.recursion_available = true;
        resp.add_query(q.clone());
        if udp && self.truncate_udp.contains(&owner) {
            resp.metadata.truncation = true;
            return resp.to_vec().ok();
        }
        let fresh = self
            .fresh_aaaa
            .as_ref()
            .filter(|(o, _, _)| *o == owner && q.query_type() == RecordType::AAAA);
        if let Some((_, count, given)) = fresh {
            for _ in 0..*count {
                // A counter through a bijective mix: distinct, random-looking addresses.
                let mut x = given.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
                x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                x ^= x >> 31;
                let addr = (0x2001_0db8_u128 << 96) | (u128::from(x) << 32) | u128::from(x as u32);
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    0,
                    RData::AAAA(AAAA::from(std::net::Ipv6Addr::from(addr))),
                ));
            }
            return resp.to_vec().ok();
        }
        let fresh = self.fresh_ptr.as_ref().filter(|(suffix, _)| {
            q.query_type() == RecordType::PTR && owner.ends_with(suffix.as_str())
        });
        if let Some((_, given)) = fresh {
            let mut x = given.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
            let mut label = || {
                let mut l = String::new();
                while l.len() < 50 {
                    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    x ^= x >> 31;
                    l.push_str(&format!("{x:016x}"));
                }
                l.truncate(50);
                l
            };
            let target = format!(
                "{}.{}.{}.{}.rdns-exfil.example.",
                label(),
                label(),
                label(),
                label()
            );
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                0,
                RData::PTR(hickory_proto::rr::rdata::PTR(name(&target))),
            ));
            return resp.to_vec().ok();
        }
        match self.records.get(&(owner.clone(), q.query_type())) {
            Some(rs) => {
                resp.answers = rs.clone();
            }
            None if self.wildcard_a.is_some() && q.query_type() == RecordType::A => {
                let ip = self.wildcard_a.unwrap_or_default();
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    300,
                    RData::A(A::new(ip[0], ip[1], ip[2], ip[3])),
                ));
            }
            None => {
                let exists =
                    self.wildcard_a.is_some() || self.records.keys().any(|(o, _)| *o == owner);
                if !exists {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                }
                let zone = name("example");
                let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 120);
                resp.add_authority(Record::from_rdata(zone, 600, RData::SOA(soa)));
            }
        }
        resp.to_vec().ok()
    }

    pub async fn start(self) -> RunningUpstream {
        self.start_on("127.0.0.1".parse().unwrap()).await
    }

    /// As [`Self::start`], on UDP and TCP of one ephemeral port of `ip`.
    pub async fn start_on(self, ip: IpAddr) -> RunningUpstream {
        // UDP and TCP on one port: the kernel picks a free UDP port, whose TCP twin may be
        // taken by another process on a busy machine, so try a few.
        let mut attempt = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (Arc::new(udp), addr, tcp),
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                }
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        self.serve(udp, addr, tcp)
    }

    /// As [`Self::start`], on UDP and TCP `addr` (port 53 needs root; port 0: the port the
    /// kernel gives the UDP socket, for TCP too).
    pub async fn start_at(self, addr: SocketAddr) -> std::io::Result<RunningUpstream> {
        let udp = UdpSocket::bind(addr).await?;
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr).await?;
        Ok(self.serve(Arc::new(udp), addr, tcp))
    }

    fn serve(self, udp: Arc<UdpSocket>, addr: SocketAddr, tcp: TcpListener) -> RunningUpstream {
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let asked = Arc::clone(&self.asked);
        let repeats = Arc::clone(&self.repeats);
        let me = Arc::new(self);
        let (m, count) = (Arc::clone(&me), Arc::clone(&udp_queries));
        let t1 = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, src)) = udp.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                if m.fault == Some(Fault::LoseFirstUdp) && !m.lost_one.swap(true, Ordering::SeqCst)
                {
                    continue;
                }
                let Some(r) = m.reply(&buf[..n], true) else {
                    continue;
                };
                match m.delay {
                    None => {
                        let _ = udp.send_to(&r, src).await;
                        if m.fault == Some(Fault::AnswerTwice) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let _ = udp.send_to(&r, src).await;
                        }
                    }
                    Some(d) => {
                        let udp = Arc::clone(&udp);
                        tokio::spawn(async move {
                            tokio::time::sleep(d).await;
                            let _ = udp.send_to(&r, src).await;
                        });
                    }
                }
            }
        });
        let (m, count) = (Arc::clone(&me), Arc::clone(&tcp_queries));
        let t2 = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let m = Arc::clone(&m);
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    while let Ok(len) = s.read_u16().await {
                        let mut buf = vec![0u8; usize::from(len)];
                        if s.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        if let Some(d) = m.delay {
                            tokio::time::sleep(d).await;
                        }
                        match (m.fault, m.reply(&buf, false)) {
                            (Some(Fault::TruncatedForever), _) => return,
                            (Some(Fault::BlackHole), _) => {
                                // Hold the connection open, never answer.
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return;
                            }
                            (Some(Fault::TcpResetMidAnswer), Some(r)) => {
                                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                out.extend_from_slice(&r[..r.len() / 2]);
                                let _ = s.write_all(&out).await;
                                #[allow(deprecated)] // zero linger: a reset, no blocking
                                let _ = s.set_linger(Some(Duration::ZERO));
                                return;
                            }
                            (_, Some(r)) => {
                                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                out.extend_from_slice(&r);
                                let _ = s.write_all(&out).await;
                            }
                            (_, None) => {}
                        }
                    }
                });
            }
        });
        RunningUpstream {
            addr,
            udp_queries,
            tcp_queries,
            asked,
            repeats,
            tasks: vec![t1, t2],
        }
    }
}

/// A dnsward started in-process on 127.0.0.1:0, with events in a temp file.
pub struct TestServer {
    pub app: Option<RunningApp>,
    /// The config file the server was started from (edit it and reload).
    pub config_path: PathBuf,
    /// The admin bearer token.
    pub token: String,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub events_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Rewrite the config file the server started from with `edit`, then reload it, as an
    /// operator does; the reload must be accepted.
    pub async fn edit_config_and_reload(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(&text)).unwrap();
        self.app
            .as_ref()
            .expect("an in-process server")
            .control
            .reload(Some("test"), None)
            .await
            .expect("reload");
    }

    /// Start with `groups_and_more` appended to a base config forwarding to `upstream`.
    pub async fn start(upstream: Option<SocketAddr>, extra: &str) -> Self {
        Self::start_with(upstream, extra, None, "127.0.0.1:0").await
    }

    pub async fn start_with(
        upstream: Option<SocketAddr>,
        extra: &str,
        clock: Option<SharedClock>,
        listen: &str,
    ) -> Self {
        Self::start_full(upstream, extra, clock, listen, "").await
    }

    /// As [`Self::start_with`], with extra lines for the `[server]` section.
    pub async fn start_full(
        upstream: Option<SocketAddr>,
        extra: &str,
        clock: Option<SharedClock>,
        listen: &str,
        server_extra: &str,
    ) -> Self {
        let upstreams: Vec<SocketAddr> = upstream.into_iter().collect();
        Self::start_upstreams(&upstreams, extra, clock, listen, server_extra).await
    }

    /// As [`Self::start_full`] with several default upstreams, tried in this order while
    /// healthy (each with a 500 ms attempt timeout, 1 s overall).
    pub async fn start_upstreams(
        upstreams: &[SocketAddr],
        extra: &str,
        clock: Option<SharedClock>,
        listen: &str,
        server_extra: &str,
    ) -> Self {
        Self::start_sections(upstreams, extra, clock, listen, server_extra, "").await
    }

    /// As [`Self::start_upstreams`], with extra lines for the `[admin]` section too.
    pub async fn start_sections(
        upstreams: &[SocketAddr],
        extra: &str,
        clock: Option<SharedClock>,
        listen: &str,
        server_extra: &str,
        admin_extra: &str,
    ) -> Self {
        Self::start_inner(
            upstreams,
            extra,
            clock,
            listen,
            server_extra,
            admin_extra,
            &[],
            "",
            None,
        )
        .await
    }

    /// As [`Self::start`], serving these zone files (name, text) besides the example zone.
    pub async fn start_with_zones(
        upstream: Option<SocketAddr>,
        extra: &str,
        zones: &[(&str, &str)],
    ) -> Self {
        let upstreams: Vec<SocketAddr> = upstream.into_iter().collect();
        Self::start_inner(
            &upstreams,
            extra,
            None,
            "127.0.0.1:0",
            "",
            "",
            zones,
            "",
            None,
        )
        .await
    }

    /// As [`Self::start`], with extra lines for the `[upstream]` section.
    pub async fn start_with_upstream_extra(
        upstream: SocketAddr,
        extra: &str,
        upstream_extra: &str,
    ) -> Self {
        Self::start_inner(
            &[upstream],
            extra,
            None,
            "127.0.0.1:0",
            "",
            "",
            &[],
            upstream_extra,
            None,
        )
        .await
    }

    /// Everything on `ip` (DNS and admin listeners, ephemeral ports), with this `[upstream]`
    /// section (its servers, timeouts and all) and these zone files (name, text).
    pub async fn start_on(
        ip: &str,
        upstream_section: &str,
        extra: &str,
        zones: &[(&str, &str)],
    ) -> Self {
        Self::start_inner(
            &[],
            extra,
            None,
            &format!("{ip}:0"),
            "",
            "",
            zones,
            "",
            Some((ip, upstream_section)),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_inner(
        upstreams: &[SocketAddr],
        extra: &str,
        clock: Option<SharedClock>,
        listen: &str,
        server_extra: &str,
        admin_extra: &str,
        zone_files: &[(&str, &str)],
        upstream_extra: &str,
        // The admin listener's address and the whole `[upstream]` section, when not the
        // defaults (127.0.0.1, `upstreams` with the harness's timeouts).
        on: Option<(&str, &str)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut zone_entries = Vec::new();
        for (name, text) in zone_files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            zone_entries.push(format!("{{ path = \"{}\" }}", path.display()));
        }
        let events_path = dir.path().join("events.jsonl");
        let servers: Vec<String> = upstreams
            .iter()
            .map(|a| format!("{{ address = \"{a}\", timeout = \"500ms\" }}"))
            .collect();
        let admin_ip = on.map_or("127.0.0.1", |(ip, _)| ip);
        let upstream_line = if let Some((_, section)) = on {
            section.to_string()
        } else if upstreams.is_empty() {
            "servers = []".to_string()
        } else {
            format!("servers = [{}]\ntimeout = \"1s\"", servers.join(", "))
        };
        let zones = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
        let token = "test-token-0123456789abcdef0123456789abcdef".to_string();
        write_secret(&dir.path().join("token"), &token);
        let text = format!(
            r#"
[server]
listen = ["{listen}"]
udp_workers = 2
{server_extra}
[admin]
listen = "{admin_ip}:0"
token_file = "token"
{admin_extra}
[upstream]
{upstream_line}
{upstream_extra}
[zones]
dir = "{zones}"
{zone_files}
[events]
sink = "file"
path = "{events}"
allowed = "on"
{extra}
"#,
            zones = zones.display(),
            // Only when asked: a test may add its own `files` line to this section.
            zone_files = if zone_entries.is_empty() {
                String::new()
            } else {
                format!("files = [{}]", zone_entries.join(", "))
            },
            events = events_path.display(),
        );
        let config_path = dir.path().join("dnsward.toml");
        std::fs::write(&config_path, &text).unwrap();
        let cfg = Config::load(&config_path).unwrap_or_else(|p| {
            panic!(
                "{p}
{text}"
            )
        });
        let app = match clock {
            Some(c) => RunningApp::start_with_clock(&cfg, c).await,
            None => RunningApp::start(&cfg).await,
        }
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        Self {
            udp: app.dns.udp_addrs[0],
            tcp: app.dns.tcp_addrs[0],
            admin: app.admin.as_ref().map(|a| a.addr),
            app: Some(app),
            config_path,
            token,
            events_path,
            _dir: dir,
        }
    }

    /// Stop, flush events and return them parsed.
    pub async fn stop_and_read_events(&mut self) -> Vec<serde_json::Value> {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        std::fs::read_to_string(&self.events_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every event line is JSON"))
            .collect()
    }
}

pub fn query_packet(qname: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Run a client program (dig, kdig, curl) to completion off the runtime, whose threads serve
/// the dnsward under test; its output.
pub async fn client_output(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the client runs"))
        .await
        .unwrap()
}

/// `dig` from `src` to `server` with `args` (`+tcp`, `+nsid`, `+opcode=notify`, …) for `qname`
/// and `qtype`: what it printed, stdout and stderr.
pub async fn dig(server: SocketAddr, src: &str, args: &[&str], qname: &str, qtype: &str) -> String {
    let mut cmd = std::process::Command::new("dig");
    cmd.args(["-b", src, &format!("@{}", server.ip())])
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+timeout=3"])
        .args(args)
        .args([qname, qtype]);
    let out = client_output(cmd).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The flags dig printed for the answer (`qr rd ra`), as words.
pub fn dig_flags(out: &str) -> Vec<&str> {
    out.lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|l| l.split(';').next())
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default()
}

/// Send one UDP query from `src` and wait for the answer (None on timeout).
///
/// Like dig, a datagram whose ID is not the query's is ignored: the ephemeral port may have been
/// used a moment ago by another socket whose late answer is still arriving.
pub async fn udp_raw(server: SocketAddr, src: IpAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from)))
                if from == server && n >= 2 && packet.len() >= 2 && buf[..2] == packet[..2] =>
            {
                return Some(buf[..n].to_vec());
            }
            Ok(Ok(_)) => {}
            _ => return None,
        }
    }
}

/// Query over UDP from `src` and decode the answer.
pub async fn udp_query(server: SocketAddr, src: &str, qname: &str, qtype: RecordType) -> Message {
    let packet = query_packet(qname, qtype, true);
    let raw = udp_raw(server, src.parse().unwrap(), &packet)
        .await
        .expect("an answer");
    let m = Message::from_vec(&raw).expect("answer decodes");
    assert_eq!(
        m.metadata.id,
        u16::from_be_bytes([packet[0], packet[1]]),
        "ID echoed"
    );
    m
}

/// Query over TCP from `src`, on a connection of its own.
pub async fn tcp_query(server: SocketAddr, src: &str, qname: &str, qtype: RecordType) -> Message {
    let mut s = tcp_connect(server, src).await;
    tcp_ask(&mut s, qname, qtype).await
}

/// A TCP connection to `server` from `src`.
pub async fn tcp_connect(server: SocketAddr, src: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    sock.connect(server).await.unwrap()
}

/// One query on an open TCP connection, and its answer.
pub async fn tcp_ask(s: &mut tokio::net::TcpStream, qname: &str, qtype: RecordType) -> Message {
    let packet = query_packet(qname, qtype, false);
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    s.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(4), s.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Write a secret file only its owner can read, as dnsward requires of its token and key.
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `GET /metrics` of a server's admin endpoint, with the token (labels in full).
pub async fn metrics_text(s: &TestServer) -> String {
    let admin = s.admin.expect("admin endpoint");
    reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// A query packet for a name given as text whose characters below U+0100 are wire bytes
/// (so iodine's Latin-1 base128 labels go out as the raw bytes iodine sends).
pub fn raw_name_query(qname: &str, qtype: u16) -> Vec<u8> {
    let labels: Vec<Vec<u8>> = qname
        .split('.')
        .map(|l| {
            l.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect()
        })
        .collect();
    let name = Name::from_labels(labels).expect("valid labels");
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::from(qtype)));
    m.to_vec().unwrap()
}

/// Send `packet` over TCP from `src` and return the raw answer (None on timeout or close).
pub async fn tcp_raw(server: SocketAddr, src: &str, packet: &[u8]) -> Option<Vec<u8>> {
    let mut s = tcp_connect(server, src).await;
    let mut framed = u16::try_from(packet.len()).ok()?.to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed).await.ok()?;
    let len = tokio::time::timeout(Duration::from_secs(4), s.read_u16())
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    tokio::time::timeout(Duration::from_secs(4), s.read_exact(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf)
}

/// `packet` (no OPT record yet) with an OPT record carrying a DNS Cookie: the client cookie
/// and, when given, the server cookie learnt from an earlier answer.
pub fn with_cookie(mut packet: Vec<u8>, client: [u8; 8], server: Option<&[u8]>) -> Vec<u8> {
    let server = server.unwrap_or_default();
    let option_len = u16::try_from(8 + server.len()).unwrap();
    packet.push(0);
    packet.extend_from_slice(&41u16.to_be_bytes());
    packet.extend_from_slice(&1232u16.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0]);
    packet.extend_from_slice(&(option_len + 4).to_be_bytes());
    packet.extend_from_slice(&10u16.to_be_bytes());
    packet.extend_from_slice(&option_len.to_be_bytes());
    packet.extend_from_slice(&client);
    packet.extend_from_slice(server);
    let arcount = u16::from_be_bytes([packet[10], packet[11]]) + 1;
    packet[10..12].copy_from_slice(&arcount.to_be_bytes());
    packet
}

/// The server cookie in an answer's COOKIE option, if any (dnsward puts the option, 8 bytes
/// of client cookie and 16 of server cookie, last in its OPT record).
pub fn server_cookie(answer: &[u8]) -> Option<Vec<u8>> {
    let at = answer.windows(4).rposition(|w| w == [0, 10, 0, 24])?;
    answer.get(at + 12..at + 28).map(<[u8]>::to_vec)
}

/// A query for `labels` (raw bytes, no escaping) of type `qtype`, RD set, with `an`, `ns` and
/// `ar` as the header counts; `tail` (records) follows the question.
pub fn raw_query(labels: &[&[u8]], qtype: u16, counts: [u16; 3], tail: &[u8]) -> Vec<u8> {
    let mut out = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1];
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    for l in labels {
        out.push(u8::try_from(l.len()).unwrap());
        out.extend_from_slice(l);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(tail);
    out
}

/// An OPT record owned by `owner` (wire form), EDNS `version`, no options.
pub fn opt_record(owner: &[u8], version: u8) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&1232u16.to_be_bytes());
    out.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    out
}

/// The Extended DNS Error (RFC 8914) in an answer, as (INFO-CODE, EXTRA-TEXT).
pub fn ede_of(m: &hickory_proto::op::Message) -> Option<(u16, String)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.options().get(EdnsCode::from(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        other => panic!("an EDE option that does not decode: {other:?}"),
    }
}

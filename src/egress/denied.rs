//! Denied connection attempts: the egress ruleset logs every drop to an nflog group; this reads
//! that group over a netlink socket (`NETLINK_NETFILTER`, the `nfnetlink_log` protocol) and turns
//! each drop into an `egress_denied` event (client, group, destination, port, protocol).
//!
//! What a drop means for its client (alerts, containment) is [`super::evidence`]'s business.
//!
//! The reader is a small hand-written netlink client (libc only: no maintained crate covers
//! nfnetlink_log): one blocking thread, a 64 KiB buffer, every length checked, never a panic on
//! what the kernel (or anything else) sends. It stops within half a second of being asked.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::evidence::{DeniedContext, DeniedEvidence};
use super::metric_names as mn;
use crate::events::Event;
use crate::events::sink::EventSender;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
/// Bytes of each dropped packet copied to us: enough for IPv6 + a port.
const COPY_RANGE: u32 = 64;

/// One dropped packet, as read from nflog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPacket {
    /// The log prefix the rule set (carries the group).
    pub prefix: String,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (TCP, UDP, SCTP).
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the protocol number.
    pub proto: String,
}

/// Parse the nfnetlink_log messages in one datagram. Malformed messages are skipped (and
/// counted by the caller through the returned count).
#[must_use]
pub fn parse_datagram(buf: &[u8]) -> (Vec<DroppedPacket>, usize) {
    let mut out = Vec::new();
    let mut malformed = 0;
    let mut pos = 0;
    while pos + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let ty = u16::from_ne_bytes([buf[pos + 4], buf[pos + 5]]);
        if len < NLMSG_HDRLEN || pos + len > buf.len() {
            malformed += 1;
            break;
        }
        let body = &buf[pos + NLMSG_HDRLEN..pos + len];
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            match parse_packet_msg(body) {
                Some(p) => out.push(p),
                None => malformed += 1,
            }
        }
        pos += align4(len);
    }
    (out, malformed)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn parse_packet_msg(body: &[u8]) -> Option<DroppedPacket> {
    let mut attrs = body.get(NFGEN_HDRLEN..)?;
    let mut prefix = String::new();
    let mut payload = None;
    while attrs.len() >= 4 {
        let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let aty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3FFF;
        if alen < 4 || alen > attrs.len() {
            return None;
        }
        let data = &attrs[4..alen];
        match aty {
            NFULA_PREFIX => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                prefix = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            NFULA_PAYLOAD => payload = Some(data),
            _ => {}
        }
        attrs = attrs.get(align4(alen)..).unwrap_or_default();
    }
    let (src, dst, proto, l4) = parse_ip(payload?)?;
    let port = match proto {
        6 | 17 | 132 => l4.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]])),
        _ => None,
    };
    let proto = match proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    };
    Some(DroppedPacket {
        prefix,
        src,
        dst,
        port,
        proto,
    })
}

/// (source, destination, protocol, the bytes after the IP header).
fn parse_ip(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0F) * 4;
            if ihl < 20 || p.len() < 20 {
                return None;
            }
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            Some((
                src.into(),
                dst.into(),
                p[9],
                p.get(ihl..).unwrap_or_default(),
            ))
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            Some((
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                p[6],
                &p[40..],
            ))
        }
        _ => None,
    }
}

/// The group named in a log prefix written by [`super::ruleset::log_prefix`].
#[must_use]
pub fn group_of(prefix: &str) -> Option<&str> {
    prefix
        .strip_prefix("dnsward-egress ")
        .map(|r| r.trim_end().trim_end_matches(':'))
}

/// The running nflog reader.
#[derive(Debug)]
pub struct DeniedReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeniedReader {
    /// Bind nflog group `group` and read it on a thread; each drop goes through `evidence`
    /// (attributed and counted through `ctx`) and its events to `events`.
    ///
    /// # Errors
    /// The socket cannot be opened or bound (needs `CAP_NET_ADMIN`).
    pub fn start(
        group: u16,
        evidence: DeniedEvidence,
        events: EventSender,
        ctx: Arc<dyn DeniedContext>,
    ) -> io::Result<Self> {
        let sock = bind(group)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("egress-nflog".into())
            .spawn(move || read_loop(&sock, &stop2, evidence, &events, &*ctx))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the reader (within about half a second).
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(
    sock: &OwnedFd,
    stop: &AtomicBool,
    mut evidence: DeniedEvidence,
    events: &EventSender,
    ctx: &dyn DeniedContext,
) {
    let malformed = metrics::counter!(mn::DENIED_MALFORMED_TOTAL);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes for the whole call, and
        // `sock` is an open socket owned by this thread's caller.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                // The kernel dropped messages because we were slow: count and carry on.
                Some(libc::ENOBUFS) => {
                    malformed.increment(1);
                    continue;
                }
                _ => {
                    tracing::warn!(error = %e, "nflog reader stops");
                    return;
                }
            }
        }
        let len = usize::try_from(n).unwrap_or(0).min(buf.len());
        let (packets, bad) = parse_datagram(&buf[..len]);
        malformed.increment(bad as u64);
        for p in packets {
            let g = group_of(&p.prefix).unwrap_or("-").to_string();
            metrics::counter!(mn::DENIED_TOTAL, "group" => g).increment(1);
            let version = ctx.version();
            for body in evidence.observe(ctx, &p) {
                events.emit(Event::now(version, body));
            }
        }
    }
}

/// Open a netfilter netlink socket bound to nflog group `group`, copying packet heads.
fn bind(group: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and own exclusively.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid (pid 0: the kernel assigns one).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a valid sockaddr_nl and its size is passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    // SAFETY: `tv` is a valid timeval and its size is passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    config(&sock, group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND], 1)?;
    config(&sock, group, NFULA_CFG_MODE, &mode, 2)?;
    Ok(sock)
}

/// Send one nfnetlink_log config message and read its acknowledgement.
fn config(sock: &OwnedFd, group: u16, attr: u16, data: &[u8], seq: u32) -> io::Result<()> {
    let attr_len = 4 + data.len();
    let total = NLMSG_HDRLEN + NFGEN_HDRLEN + align4(attr_len);
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    msg.extend_from_slice(&group.to_be_bytes());
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&attr.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(total, 0);
    // SAFETY: `msg` is a live buffer of `msg.len()` bytes.
    let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `buf` is a live, writable buffer of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0);
    if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nflog_message(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        for (ty, data) in [
            (NFULA_PREFIX, {
                let mut p = prefix.as_bytes().to_vec();
                p.push(0);
                p
            }),
            (NFULA_PAYLOAD, payload.to_vec()),
        ] {
            let len = 4 + data.len();
            attrs.extend_from_slice(&(len as u16).to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(&data);
            attrs.resize(align4(attrs.len()), 0);
        }
        let total = NLMSG_HDRLEN + NFGEN_HDRLEN + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0, 10]);
        m.extend_from_slice(&attrs);
        m
    }

    fn tcp_syn_v4(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x9c, 0x40]);
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn a_logged_tcp_drop_is_parsed_with_group_and_port() {
        let mut dg = nflog_message(
            "dnsward-egress agents: ",
            &tcp_syn_v4([198, 18, 1, 2], [198, 19, 0, 11], 8080),
        );
        dg.extend(nflog_message("other", &[0x60; 48]));
        let (packets, bad) = parse_datagram(&dg);
        assert_eq!(bad, 0);
        assert_eq!(packets.len(), 2);
        let p = &packets[0];
        assert_eq!(group_of(&p.prefix), Some("agents"));
        assert_eq!(p.src, IpAddr::from([198, 18, 1, 2]));
        assert_eq!(p.dst, IpAddr::from([198, 19, 0, 11]));
        assert_eq!(p.port, Some(8080));
        assert_eq!(p.proto, "tcp");
        assert_eq!(group_of(&packets[1].prefix), None);
    }

    #[test]
    fn garbage_never_panics() {
        let good = nflog_message("dnsward-egress a: ", &tcp_syn_v4([1; 4], [2; 4], 1));
        for cut in 0..good.len() {
            let _ = parse_datagram(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] = bad[i].wrapping_add(0x7F);
            let _ = parse_datagram(&bad);
        }
    }
}

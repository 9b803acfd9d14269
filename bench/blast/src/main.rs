//! blast: a low-overhead DNS-over-UDP load generator for measuring a server's capacity.
//!
//! dnsperf makes one `sendto`/`recvfrom` per query and spends more CPU per query than the
//! servers it measures on a small machine. blast is one thread driving a few connected,
//! non-blocking UDP sockets with `sendmmsg`/`recvmmsg` (up to 64 datagrams per call) and reads
//! the clock once per batch. It waits in `poll()` when it can neither send nor receive, and
//! pauses briefly when replies trickle in one or two at a time, so that they arrive in batches
//! (the server keeps a window of queued queries meanwhile). See README.md.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::str::FromStr;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// Largest query: 12 header + 255 name + 4 type/class + 11 OPT.
const SEND_BUF: usize = 512;
/// Replies longer than this are still counted (only the header and question are read).
const RECV_BUF: usize = 4096;
/// How often outstanding queries are checked for the timeout.
const SWEEP_NS: u64 = 50_000_000;
/// `poll()` timeout when idle, so the deadlines above are noticed.
const POLL_MS: i32 = 5;
/// Replies per socket worth a `recvmmsg`: fewer, and blast pauses to let them gather.
const MIN_BATCH: usize = 16;
/// Longest such pause.
const MAX_PACE_NS: u64 = 2_000_000;
const RCODES: [&str; 11] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
];
const USAGE: &str = "usage: blast -s SERVER -p PORT -d FILE -l SECONDS [-c SOCKETS=8] \
[-q OUTSTANDING_PER_SOCKET=100] [-b SOURCE_ADDR[,ADDR...]=127.0.0.1] [-t TIMEOUT_MS=1000] [-e]";

struct Args {
    server: IpAddr,
    port: u16,
    file: String,
    secs: f64,
    sockets: usize,
    per_sock: usize,
    /// Source addresses, given to the sockets in turn.
    bind: Vec<IpAddr>,
    timeout_ms: u64,
    edns: bool,
}

fn num<T: FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("invalid value for {flag}: {v:?}"))
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let (mut server, mut port, mut file, mut secs) = (None, None, None, None);
    let mut a = Args {
        server: IpAddr::from([0, 0, 0, 0]),
        port: 0,
        file: String::new(),
        secs: 0.0,
        sockets: 8,
        per_sock: 100,
        bind: vec![IpAddr::from([127, 0, 0, 1])],
        timeout_ms: 1000,
        edns: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "-e" {
            a.edns = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("option {flag} needs a value"))?;
        match flag.as_str() {
            "-s" => server = Some(num("-s", v)?),
            "-p" => port = Some(num("-p", v)?),
            "-d" => file = Some(v.clone()),
            "-l" => secs = Some(num("-l", v)?),
            "-c" => a.sockets = num("-c", v)?,
            "-q" => a.per_sock = num("-q", v)?,
            "-b" => a.bind = v.split(',').map(|b| num("-b", b)).collect::<Result<_, _>>()?,
            "-t" => a.timeout_ms = num("-t", v)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    a.server = server.ok_or("missing -s SERVER")?;
    if !a.server.is_loopback() {
        // A load generator pointed at someone else's server is an attack: this one is for
        // benchmarks on this machine only.
        return Err(format!("-s {}: blast only sends to loopback (127.0.0.0/8, ::1)", a.server));
    }
    a.port = port.ok_or("missing -p PORT")?;
    a.file = file.ok_or("missing -d FILE")?;
    a.secs = secs.ok_or("missing -l SECONDS")?;
    if a.port == 0 {
        return Err("-p must be 1..65535".into());
    }
    if !(a.secs.is_finite() && a.secs > 0.0) {
        return Err("-l must be a positive number of seconds".into());
    }
    if !(1..=1024).contains(&a.sockets) {
        return Err("-c must be 1..1024".into());
    }
    // At most 12 bits of the ID for the slot, so at least 4 bits of generation remain.
    if !(1..=4096).contains(&a.per_sock) {
        return Err("-q must be 1..4096".into());
    }
    if a.timeout_ms == 0 {
        return Err("-t must be at least 1 ms".into());
    }
    if a.bind.iter().any(|b| b.is_ipv4() != a.server.is_ipv4()) {
        return Err("-s and -b must be the same address family".into());
    }
    Ok(a)
}

/// A pre-encoded query; `wire[..2]` (the ID) is patched per send, `wire[12..qend]` is the question.
struct Query {
    wire: Vec<u8>,
    qend: usize,
}

/// Query types by name; anything else may be given as RFC 3597 `TYPE123`.
const QTYPES: &str = "A=1 NS=2 CNAME=5 SOA=6 PTR=12 HINFO=13 MX=15 TXT=16 AAAA=28 SRV=33 \
NAPTR=35 DS=43 RRSIG=46 DNSKEY=48 TLSA=52 SVCB=64 HTTPS=65 ANY=255 CAA=257";

fn qtype_code(t: &str) -> Option<u16> {
    let t = t.to_ascii_uppercase();
    let known = QTYPES.split(' ').filter_map(|kv| kv.split_once('='));
    match known.into_iter().find(|&(k, _)| k == t) {
        Some((_, code)) => code.parse().ok(),
        None => t.strip_prefix("TYPE")?.parse().ok(),
    }
}

fn encode_query(name: &str, qtype: u16, edns: bool) -> Result<Query, String> {
    // ID 0 (patched later), flags RD, QDCOUNT 1, ARCOUNT 1 if EDNS.
    let mut w = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    let name = name.strip_suffix('.').unwrap_or(name); // "." is the root: no labels
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("label {label:?} must be 1..63 octets"));
            }
            w.push(label.len() as u8);
            w.extend_from_slice(label.as_bytes());
        }
    }
    w.push(0);
    if w.len() - 12 > 255 {
        return Err(format!("name is {} octets on the wire (max 255)", w.len() - 12));
    }
    w.extend_from_slice(&qtype.to_be_bytes());
    w.extend_from_slice(&[0, 1]); // class IN
    let qend = w.len();
    if edns {
        // OPT: root name, type 41, UDP size 1232, ext-rcode/version/flags 0, RDLEN 0.
        w.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    Ok(Query { wire: w, qend })
}

/// Reads a dnsperf-format file: `name TYPE` per line (TYPE defaults to A).
fn load_queries(path: &str, edns: bool) -> Result<Vec<Query>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |e: String| format!("{path}:{}: {e}", n + 1);
        let mut f = line.split_whitespace();
        let (name, ty) = (f.next().unwrap_or_default(), f.next().unwrap_or("A"));
        if f.next().is_some() {
            return Err(at(format!("expected `name TYPE`, got {line:?}")));
        }
        let code = qtype_code(ty).ok_or_else(|| at(format!("unknown query type {ty:?}")))?;
        out.push(encode_query(name, code, edns).map_err(|e| at(format!("{name}: {e}")))?);
    }
    if out.is_empty() {
        return Err(format!("{path}: no queries in file"));
    }
    Ok(out)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_ns(ns: u64) {
    let ts =
        libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ };
    // SAFETY: `ts` is a valid timespec; a null remainder pointer is allowed.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// This process's user + system CPU time in µs.
fn cpu_us() -> u64 {
    // SAFETY: rusage is plain integers, all-zero is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// One outstanding-query slot. Its DNS ID is `gen_ << slot_bits | index`; `gen_` moves on each
/// time the slot is freed, so a late reply to an earlier use of the slot does not match.
#[derive(Clone, Copy, Default)]
struct Slot {
    sent_ns: u64,
    query: u32,
    gen_: u16,
    busy: bool,
}

/// A connected, non-blocking UDP socket and its `-q` slots.
struct Sock {
    sock: UdpSocket,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// The last send did not take everything offered: wait for POLLOUT too.
    out_blocked: bool,
}

impl Sock {
    fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn release(&mut self, idx: usize, gen_mask: u16) {
        let sl = &mut self.slots[idx];
        sl.busy = false;
        sl.gen_ = sl.gen_.wrapping_add(1) & gen_mask;
        self.free.push(idx as u16);
    }
}

#[derive(Default)]
struct Stats {
    sent: u64,
    completed: u64,
    lost: u64,
    unexpected: u64,
    rcodes: [u64; 16],
    lat_sum_ns: u64,
    lat_min_ns: u64,
    lat_max_ns: u64,
}

/// Zeroed headers for a batch; the caller points each at its iovec.
fn mmsghdrs() -> [libc::mmsghdr; BATCH] {
    // SAFETY: mmsghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
    unsafe { std::mem::zeroed() }
}

fn iovec(buf: &mut [u8]) -> libc::iovec {
    libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() }
}

/// After a failed call: Ok for "try again later", Err with a message otherwise.
fn check_errno(what: &str, fd: RawFd) -> Result<(), String> {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR | libc::ENOBUFS) => Ok(()),
        Some(libc::ECONNREFUSED) => {
            Err(format!("{what} (fd {fd}): connection refused (is the server up?)"))
        }
        _ => Err(format!("{what} (fd {fd}): {e}")),
    }
}

/// The queries, the buffers and the tallies the send/receive loop works on.
struct Blaster {
    queries: Vec<Query>,
    cursor: usize,
    slot_bits: u32,
    gen_mask: u16,
    send_bufs: Vec<[u8; SEND_BUF]>,
    recv_bufs: Vec<[u8; RECV_BUF]>,
    st: Stats,
}

impl Blaster {
    /// Sends the next queries of the file on up to BATCH free slots of `s`; returns how many.
    fn send_batch(&mut self, s: &mut Sock) -> Result<usize, String> {
        let n = s.free.len().min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        let nq = self.queries.len();
        let mut iovs = [iovec(&mut []); BATCH];
        let mut hdrs = mmsghdrs();
        for (i, buf) in self.send_bufs.iter_mut().take(n).enumerate() {
            let slot = s.free[s.free.len() - 1 - i]; // popped in this order below
            let q = &self.queries[(self.cursor + i) % nq];
            let id = ((s.slots[slot as usize].gen_ as u32) << self.slot_bits) as u16 | slot;
            let b = &mut buf[..q.wire.len()];
            b.copy_from_slice(&q.wire);
            b[..2].copy_from_slice(&id.to_be_bytes());
            iovs[i] = iovec(b);
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let now = now_ns();
        let fd = s.sock.as_raw_fd();
        // SAFETY: the first `n` headers each point at one live iovec over `send_bufs`; the
        // socket is connected, so no address is given. The kernel only reads the buffers.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            check_errno("sendmmsg", fd)?;
        }
        let sent = r.max(0) as usize;
        s.out_blocked = sent < n;
        for i in 0..sent {
            let slot = s.free.pop().expect("sent <= free.len()");
            let sl = &mut s.slots[slot as usize];
            (sl.busy, sl.sent_ns, sl.query) = (true, now, ((self.cursor + i) % nq) as u32);
        }
        self.cursor = (self.cursor + sent) % nq;
        self.st.sent += sent as u64;
        Ok(sent)
    }

    /// Receives and tallies up to BATCH replies on `s` without blocking; returns how many.
    fn recv_batch(&mut self, s: &mut Sock) -> Result<usize, String> {
        let mut iovs = [iovec(&mut []); BATCH];
        let mut hdrs = mmsghdrs();
        for (i, buf) in self.recv_bufs.iter_mut().enumerate() {
            iovs[i] = iovec(buf);
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let fd = s.sock.as_raw_fd();
        let (batch, dontwait, no_timeout) =
            (BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut());
        // SAFETY: the BATCH headers each point at one live, writable iovec over `recv_bufs`;
        // no address or control buffers; a null timeout is allowed.
        let r = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), batch, dontwait, no_timeout) };
        if r < 0 {
            check_errno("recvmmsg", fd)?;
            return Ok(0);
        }
        let now = now_ns();
        for (h, buf) in hdrs.iter().zip(&self.recv_bufs).take(r as usize) {
            let p = &buf[..(h.msg_len as usize).min(RECV_BUF)];
            let Some(idx) = self.match_reply(s, p) else {
                self.st.unexpected += 1;
                continue;
            };
            let (st, lat) = (&mut self.st, now.saturating_sub(s.slots[idx].sent_ns));
            st.completed += 1;
            st.rcodes[(p[3] & 0x0f) as usize] += 1;
            st.lat_sum_ns += lat;
            st.lat_min_ns = if st.completed == 1 { lat } else { st.lat_min_ns.min(lat) };
            st.lat_max_ns = st.lat_max_ns.max(lat);
            s.release(idx, self.gen_mask);
        }
        Ok(r as usize)
    }

    /// The slot a reply answers, if any. Never panics on a short or malformed packet.
    fn match_reply(&self, s: &Sock, p: &[u8]) -> Option<usize> {
        // A response (QR set) with exactly one question.
        if p.len() < 12 || p[2] & 0x80 == 0 || p[4..6] != [0, 1] {
            return None;
        }
        let id = u16::from_be_bytes([p[0], p[1]]) as u32;
        let idx = (id & ((1 << self.slot_bits) - 1)) as usize;
        let sl = s.slots.get(idx)?;
        if !sl.busy || sl.gen_ as u32 != id >> self.slot_bits {
            return None;
        }
        // The question must echo ours: name case-insensitively, type and class exactly.
        let q = &self.queries[sl.query as usize];
        let (ours, theirs) = (&q.wire[12..q.qend], p.get(12..q.qend)?);
        let k = ours.len() - 4;
        let same = theirs[..k].eq_ignore_ascii_case(&ours[..k]) && theirs[k..] == ours[k..];
        same.then_some(idx)
    }

    /// Counts as lost and frees every slot waiting at least `timeout_ns` (every slot if `all`).
    fn sweep(&mut self, socks: &mut [Sock], now: u64, timeout_ns: u64, all: bool) {
        for s in socks.iter_mut() {
            for idx in 0..s.slots.len() {
                let sl = s.slots[idx];
                if sl.busy && (all || now.saturating_sub(sl.sent_ns) >= timeout_ns) {
                    s.release(idx, self.gen_mask);
                    self.st.lost += 1;
                }
            }
        }
    }
}

/// Sleeps until a socket is readable (or writable, after a refused send) or POLL_MS passes.
fn wait(socks: &[Sock], pfds: &mut [libc::pollfd], sending: bool) -> Result<(), String> {
    for (p, s) in pfds.iter_mut().zip(socks) {
        let out = sending && s.out_blocked && !s.free.is_empty();
        p.events = libc::POLLIN | if out { libc::POLLOUT } else { 0 };
    }
    // SAFETY: `pfds` is a valid, writable array of `pfds.len()` pollfd structs.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
        return Err(format!("poll: {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn open_socket(a: &Args, bind: IpAddr) -> Result<Sock, String> {
    let sock = UdpSocket::bind((bind, 0)).map_err(|e| format!("bind {bind}: {e}"))?;
    let to = (a.server, a.port);
    sock.connect(to).map_err(|e| format!("connect {}:{}: {e}", a.server, a.port))?;
    sock.set_nonblocking(true).map_err(|e| format!("set_nonblocking: {e}"))?;
    // Room for a full window of replies while blast pauses (best effort: capped by rmem_max).
    let want = (a.per_sock * 2048).max(1 << 18) as libc::c_int;
    let (fd, len) = (sock.as_raw_fd(), size_of::<libc::c_int>() as libc::socklen_t);
    let (opt, level) = (libc::SO_RCVBUF, libc::SOL_SOCKET);
    // SAFETY: `want` is a live c_int and `len` its size; the kernel only reads it.
    unsafe { libc::setsockopt(fd, level, opt, (&raw const want).cast(), len) };
    let free = (0..a.per_sock as u16).rev().collect();
    Ok(Sock { sock, slots: vec![Slot::default(); a.per_sock], free, out_blocked: false })
}

fn pct(n: u64, of: u64) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

/// Runs the test and prints the report; Ok(false) if nothing was answered.
fn run(a: &Args) -> Result<bool, String> {
    let queries = load_queries(&a.file, a.edns)?;
    let mut socks = (0..a.sockets)
        .map(|i| open_socket(a, a.bind[i % a.bind.len()]))
        .collect::<Result<Vec<_>, _>>()?;
    let pollfd = |s: &Sock| libc::pollfd { fd: s.sock.as_raw_fd(), events: 0, revents: 0 };
    let mut pfds: Vec<libc::pollfd> = socks.iter().map(pollfd).collect();
    let (n, f, c, q) = (queries.len(), &a.file, a.sockets, a.per_sock);
    let to = SocketAddr::from((a.server, a.port));
    eprintln!("blast: {n} queries from {f}, {c} sockets x {q} outstanding, {}s, to {to}", a.secs);
    let slot_bits = usize::BITS - (a.per_sock - 1).leading_zeros();
    let mut b = Blaster {
        queries,
        cursor: 0,
        slot_bits,
        gen_mask: (0xffff_u32 >> slot_bits) as u16,
        send_bufs: vec![[0; SEND_BUF]; BATCH],
        recv_bufs: vec![[0; RECV_BUF]; BATCH],
        st: Stats::default(),
    };
    let timeout_ns = a.timeout_ms * 1_000_000;

    let cpu0 = cpu_us();
    let t0 = now_ns();
    let send_end = t0 + (a.secs * 1e9) as u64;
    let (mut sending, mut run_end, mut drain_end) = (true, 0, 0);
    let (mut next_sweep, mut last_sweep, mut last_completed) = (t0 + SWEEP_NS, t0, 0);
    let want = MIN_BATCH * socks.len(); // replies per pass that make the syscalls worth it
    let mut rate = 0.0; // replies per ns over the last sweep interval
    loop {
        let now = now_ns();
        if sending && now >= send_end {
            // Run time ends here (as in dnsperf); replies still count for up to the timeout.
            (sending, run_end, drain_end) = (false, now, now + timeout_ns);
        }
        if !sending && (socks.iter().all(|s| s.outstanding() == 0) || now >= drain_end) {
            b.sweep(&mut socks, now, timeout_ns, true); // whatever is left is lost
            break;
        }
        if now >= next_sweep {
            b.sweep(&mut socks, now, timeout_ns, false);
            rate = (b.st.completed - last_completed) as f64 / (now - last_sweep) as f64;
            (last_sweep, last_completed, next_sweep) = (now, b.st.completed, now + SWEEP_NS);
        }
        // Replies first, so the sends that follow fill the slots they freed in one batch.
        let (mut got, mut sent) = (0, 0);
        for s in socks.iter_mut() {
            got += b.recv_batch(s)?;
            if sending {
                sent += b.send_batch(s)?;
            }
        }
        if got + sent == 0 {
            wait(&socks, &mut pfds, sending)?;
        } else if sending && got < want && rate > 0.0 {
            // Replies trickle in: let them gather, or each costs a syscall (dnsperf's cost).
            let outstanding: usize = socks.iter().map(Sock::outstanding).sum();
            if outstanding >= 2 * want {
                sleep_ns(((want as f64 / rate) as u64).min(MAX_PACE_NS));
            }
        }
    }
    let cpu = cpu_us() - cpu0;

    let st = &b.st;
    let run_s = (run_end - t0) as f64 / 1e9;
    let code = |c: usize| RCODES.get(c).map_or(format!("RCODE{c}"), |n| n.to_string());
    let codes: Vec<String> = (0..16)
        .filter(|&c| st.rcodes[c] > 0)
        .map(|c| format!("{} {} ({:.2}%)", code(c), st.rcodes[c], pct(st.rcodes[c], st.completed)))
        .collect();
    let secs = |ns: u64| ns as f64 / 1e9;
    let avg = secs(st.lat_sum_ns.checked_div(st.completed).unwrap_or(0));
    let (min, max) = (secs(st.lat_min_ns), secs(st.lat_max_ns));
    let cpu_q = (st.completed > 0).then(|| format!("{:.2}", cpu as f64 / st.completed as f64));
    let row = |label: &str, value: String| println!("  {label:<21} {value}");
    println!("Statistics:\n");
    row("Queries sent:", st.sent.to_string());
    row("Queries completed:", format!("{} ({:.2}%)", st.completed, pct(st.completed, st.sent)));
    row("Queries lost:", format!("{} ({:.2}%)", st.lost, pct(st.lost, st.sent)));
    row("Unexpected replies:", st.unexpected.to_string());
    row("Response codes:", if codes.is_empty() { "none".into() } else { codes.join(", ") });
    row("Run time (s):", format!("{run_s:.6}"));
    row("Queries per second:", format!("{:.1}", st.completed as f64 / run_s));
    row("Average Latency (s):", format!("{avg:.6} (min {min:.6}, max {max:.6})"));
    row("Client CPU (us/query):", cpu_q.unwrap_or("n/a".into()));
    Ok(st.completed > 0)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("blast: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("blast: no replies received");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("blast: {e}");
            ExitCode::FAILURE
        }
    }
}

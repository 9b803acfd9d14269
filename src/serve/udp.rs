//! The UDP hot path: datagrams in batches, answered inline, replies out in batches.
//!
//! Each socket is registered with the runtime for readability only. Registering for
//! writability too (as `tokio::net::UdpSocket` does) puts an `EPOLLOUT` waiter on the socket,
//! and then every datagram the kernel finishes sending wakes the epoll instance: on loopback
//! that is one wakeup per answer, a large share of the whole query cost. Sends are non-blocking
//! calls that nearly always succeed at once; only when the send buffer is full does a sender
//! wait for writability, through a short-lived duplicate registration (see [`wait_writable`]).
//!
//! On Linux with glibc, one `recvmmsg` reads up to [`BATCH`] queued datagrams, each is handled
//! synchronously by [`Pipeline::handle_udp_batched`], and one `sendmmsg` sends every inline answer: two
//! system calls per batch instead of two per query. Elsewhere the same loop runs one datagram at
//! a time with the standard library's calls.
//!
//! A socket bound to a wildcard address (`0.0.0.0`, `[::]`) receives each datagram's
//! destination address (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and answers from it: otherwise the
//! kernel picks the answer's source by route, and a client that asked a secondary address, a
//! VIP or an IPv6 address beside the preferred one gets its answer from another address and
//! drops it, as Unbound's `interface-automatic` avoids. Sockets bound to one address need
//! nothing of the kind and carry no control messages.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::serve::pipeline::{Outcome, Pending, Pipeline};

/// Most datagrams read (and answers sent) per system call. 64 rather than 32: 3.7 % less CPU a
/// query at capacity (W2, `bench/results/issue13-session11-batch64.md`); the syscall itself is
/// already cheap at 32, the gain is in fewer, longer passes over the pipeline and the kernel.
pub const BATCH: usize = 64;
/// Receive buffer per datagram; longer datagrams are truncated (no query is this long).
const MAX_DATAGRAM: usize = 4096;
/// Distance between two slots' buffers: a cache line more than a slot, so that the first lines
/// of the slots (a query fits in one or two) fall in different sets of the L1 cache. At 4096
/// apart every slot's first line maps to the same set, and a full batch evicts itself from an
/// 8-way cache while the kernel copies it in and the parser reads it. Alone (at 32 slots) no
/// difference showed at capacity (`bench/results/issue13-session11-slot-skew.md`); kept for 64
/// slots, whose first lines would otherwise all share one set, and measured with them.
const SLOT: usize = MAX_DATAGRAM + 64;
/// How long a sender waits for a full send buffer to drain before dropping its answers.
const SEND_WAIT: Duration = Duration::from_secs(1);
/// Control-message room per datagram: one `in6_pktinfo` (or `in_pktinfo`) with its header,
/// aligned, fits in 64 bytes.
const CONTROL: usize = 64;

/// One datagram's control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ControlBuf([u8; CONTROL]);

/// The local address a datagram was sent to (wildcard sockets only), and the interface it
/// came in on: its answer goes out from that address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Local {
    ip: IpAddr,
    ifindex: u32,
}

/// An answer, where it goes, and (wildcard sockets) the address it must come from.
type Reply = (Vec<u8>, SocketAddr, Option<Local>);

/// Whether `sock` is bound to a wildcard address, and so must learn each datagram's
/// destination (set up by [`enable_pktinfo`]).
fn is_wildcard(sock: &UdpSocket) -> bool {
    sock.local_addr().is_ok_and(|a| a.ip().is_unspecified())
}

/// Ask the kernel for each datagram's destination address on a wildcard socket.
///
/// # Errors
/// The option cannot be set (a platform without it).
pub(super) fn enable_pktinfo(sock: &socket2::Socket, v6: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        } else {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        };
        let on: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a descriptor the socket owns, with a c_int value of its
        // exact size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, v6);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "answers from the address asked need IP_PKTINFO (Linux)",
        ))
    }
}

/// Received datagrams: one buffer per slot, with each slot's length and source.
struct RecvBatch {
    /// `BATCH` buffers of `MAX_DATAGRAM` bytes, [`SLOT`] bytes apart.
    bufs: Vec<u8>,
    /// Bytes received into each slot.
    lens: [usize; BATCH],
    /// Source of each slot (`None` if the kernel gave an address we cannot read).
    srcs: [Option<SocketAddr>; BATCH],
    /// Destination of each slot, on a wildcard socket.
    dsts: [Option<Local>; BATCH],
    /// Control-message buffers, [`CONTROL`] bytes a slot; empty unless the socket is a
    /// wildcard one.
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    control: Vec<ControlBuf>,
    /// Whether the socket is IPv6 (decides the raw address type).
    v6: bool,
}

impl RecvBatch {
    fn new(v6: bool, wildcard: bool) -> Self {
        Self {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            srcs: [None; BATCH],
            dsts: [None; BATCH],
            control: if wildcard {
                vec![ControlBuf([0; CONTROL]); BATCH]
            } else {
                Vec::new()
            },
            v6,
        }
    }

    /// Datagram `i` of the last receive: its bytes, source and (wildcard sockets) destination.
    fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>, Option<Local>) {
        let start = i * SLOT;
        (
            &self.bufs[start..start + self.lens[i]],
            self.srcs[i],
            self.dsts[i],
        )
    }
}

/// Serve one UDP socket until `stop` changes; then wait for answers still being resolved.
pub async fn serve(
    sock: UdpSocket,
    pipeline: Arc<Pipeline>,
    stop: watch::Receiver<bool>,
    how: super::UdpLoop,
) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if how == super::UdpLoop::Thread {
        return thread_loop::serve(sock, pipeline, stop).await;
    }
    let _ = how;
    // In a task of its own so that a panic outside a datagram's containment is seen: the
    // task's unwinding drops the socket (the `SO_REUSEPORT` group's others serve its clients),
    // and here it is counted and logged, as the thread loop does.
    let local = sock.local_addr().ok();
    // Aborted with this future (the server's shutdown aborts its listener tasks): the inner
    // task would otherwise outlive it, holding the socket and the pipeline.
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(serve_runtime(sock, pipeline, stop));
    let _guard = AbortOnDrop(task.abort_handle());
    if let Err(e) = task.await
        && e.is_panic()
    {
        metrics::counter!(crate::metrics::PANICS_TOTAL, "listener" => "udp").increment(1);
        tracing::error!(
            ?local,
            "a UDP listener ended unexpectedly; its socket is closed and the others serve its \
             clients (a bug: please report it with the panic above)"
        );
    }
}

/// [`serve`] on the runtime: readiness from the runtime's epoll, one task per socket.
async fn serve_runtime(sock: UdpSocket, pipeline: Arc<Pipeline>, mut stop: watch::Receiver<bool>) {
    let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
    let wildcard = is_wildcard(&sock);
    let sock = match register(sock, Interest::READABLE) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot register a UDP socket with the runtime");
            return;
        }
    };
    let mut batch = RecvBatch::new(v6, wildcard);
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH);
    let mut pending = JoinSet::new();
    loop {
        let mut guard = tokio::select! {
            r = sock.readable() => match r {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!(error = %e, "UDP socket readiness failed; listener stops");
                    break;
                }
            },
            _ = stop.changed() => break,
            Some(_) = pending.join_next(), if !pending.is_empty() => continue,
        };
        let n = match sys::recv(sock.get_ref(), &mut batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                continue;
            }
            // ICMP port-unreachable from a gone client surfaces as an error on some platforms;
            // it says nothing about this socket, so keep serving.
            Err(_) => continue,
        };
        // Fewer than a full batch means the queue was empty when the kernel looked: wait for the
        // next edge instead of spending a call to learn it. (A datagram that arrived since then
        // raised a new readiness event, which this clear does not erase.)
        if n < BATCH {
            guard.clear_ready();
        }
        drop(guard);
        // One clock read for the batch: every datagram in it was already queued at this moment.
        let received = Instant::now();
        answer_batch(
            |packet, ip| pipeline.handle_udp_batched(packet, ip, received),
            &batch,
            n,
            &mut replies,
            |p, src, local| {
                let sock = Arc::clone(&sock);
                let pipeline = Arc::clone(&pipeline);
                pending.spawn(async move {
                    if let Some(r) = pipeline.resolve(*p).await {
                        send_one(&sock, &r, src, local).await;
                        // The buffer serves this worker's next answer.
                        crate::wire::recycle_reply(r);
                    }
                });
            },
        );
        let inline = replies.len();
        send_all(&sock, batch.v6, &mut replies).await;
        // One latency reading for every answer of the batch: all were received at `received`
        // and are out now.
        pipeline.record_udp_batch_latency(received.elapsed(), inline);
    }
    // Let answers already being resolved go out.
    while pending.join_next().await.is_some() {}
}

/// Answer the first `n` datagrams of `batch` with `handle` (the pipeline, given the packet and
/// its source): inline answers go to `replies`, cache misses to `miss` with their source. Both
/// listener loops share it.
fn answer_batch(
    handle: impl Fn(&[u8], IpAddr) -> Outcome,
    batch: &RecvBatch,
    n: usize,
    replies: &mut Vec<Reply>,
    mut miss: impl FnMut(Box<Pending>, SocketAddr, Option<Local>),
) {
    for i in 0..n {
        let (packet, src, local) = batch.datagram(i);
        let Some(src) = src else { continue };
        match contained(|| handle(packet, src.ip())) {
            Outcome::Reply(r) => replies.push((r, src, local)),
            Outcome::Drop => {}
            Outcome::Resolve(p) => miss(p, src, local),
        }
    }
}

/// `handle`'s outcome for one datagram, or, if it panicked, no answer: the listener's thread
/// (or task) goes on with the next datagram. The pipeline is fuzzed never to panic; this is for
/// the bug that escapes, which would otherwise end the listener while its socket stays bound
/// in the `SO_REUSEPORT` group, so every client steered to it would go unanswered, and a query
/// that repeats the panic would end the listeners one by one. Counted in
/// `dnsward_panics_total{listener="udp"}`; the panic's message goes to stderr (Rust's hook).
fn contained(handle: impl FnOnce() -> Outcome) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle)).unwrap_or_else(|_| {
        metrics::counter!(crate::metrics::PANICS_TOTAL, "listener" => "udp").increment(1);
        Outcome::Drop
    })
}

/// Send every reply (in as few calls as the platform allows), then clear the list. A reply that
/// the kernel refuses is skipped; a full send buffer is waited out for up to [`SEND_WAIT`].
async fn send_all(sock: &AsyncFd<UdpSocket>, v6: bool, replies: &mut Vec<Reply>) {
    let mut start = 0;
    while start < replies.len() {
        match sys::send(sock.get_ref(), v6, &replies[start..]) {
            Ok(0) => break,
            Ok(sent) => start += sent,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_writable(sock.get_ref()).await {
                    break;
                }
            }
            // This datagram cannot be sent (unreachable destination and the like): skip it.
            Err(_) => start += 1,
        }
    }
    recycle(replies);
}

/// Empty `replies`, giving each sent answer's buffer back for the next batch's answers
/// ([`crate::wire::recycle_reply`]).
fn recycle(replies: &mut Vec<Reply>) {
    for (reply, _, _) in replies.drain(..) {
        crate::wire::recycle_reply(reply);
    }
}

/// Send one answer (a resolved cache miss), waiting out a full send buffer once or twice.
async fn send_one(sock: &AsyncFd<UdpSocket>, msg: &[u8], to: SocketAddr, local: Option<Local>) {
    for _ in 0..3 {
        match sys::send_one(sock.get_ref(), msg, to, local) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_writable(sock.get_ref()).await {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Wait (up to [`SEND_WAIT`]) until the socket can send again. The socket itself is registered
/// for readability only, so this registers a duplicate descriptor for writability for the
/// duration of the wait. Rare: UDP sends only block when the socket's send buffer is full.
async fn wait_writable(sock: &UdpSocket) -> bool {
    let Ok(dup) = sock.as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(fd) = register(dup, Interest::WRITABLE) else {
        return false;
    };
    matches!(
        tokio::time::timeout(SEND_WAIT, fd.writable()).await,
        Ok(Ok(_))
    )
}

/// Register a descriptor the value owns with the runtime for `interest` only.
fn register<T: AsRawFd>(io: T, interest: Interest) -> io::Result<AsyncFd<T>>
where
    OwnedFd: From<T>,
{
    // SAFETY: `T` owns its descriptor (it converts into an `OwnedFd`: a `UdpSocket` or an
    // `OwnedFd` here), so the descriptor stays open and keeps referring to the same socket for
    // as long as the `AsyncFd` holds the value, and `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register_with_interest(io, interest) }.map_err(io::Error::from)
}

/// One OS thread per socket, blocked in `recvmmsg` itself (no epoll, no runtime wakeup):
/// the socket is in blocking mode with a receive timeout, so the thread notices shutdown.
/// Cache misses are resolved on the runtime, as in the runtime loop.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod thread_loop {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use tokio::sync::{Notify, watch};

    use super::{Local, RecvBatch, Reply, sys};
    use crate::serve::pipeline::Pipeline;

    /// How often a blocked receive wakes to look for shutdown.
    const POLL_STOP: Duration = Duration::from_millis(200);

    /// Misses being resolved on the runtime, so shutdown can wait for their answers.
    #[derive(Default)]
    struct InFlight {
        count: AtomicUsize,
        idle: Notify,
    }

    /// One answer being resolved, counted in [`InFlight`] until dropped.
    struct Done(Arc<InFlight>);

    impl Drop for Done {
        fn drop(&mut self) {
            if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.0.idle.notify_waiters();
            }
        }
    }

    pub(super) async fn serve(
        sock: UdpSocket,
        pipeline: Arc<Pipeline>,
        mut stop: watch::Receiver<bool>,
    ) {
        let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
        let wildcard = super::is_wildcard(&sock);
        if let Err(e) = sock
            .set_nonblocking(false)
            .and_then(|()| sock.set_read_timeout(Some(POLL_STOP)))
        {
            tracing::error!(error = %e, "cannot set up a UDP socket; listener stops");
            return;
        }
        let sock = Arc::new(sock);
        let stopping = Arc::new(AtomicBool::new(false));
        let inflight = Arc::new(InFlight::default());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        let spawned = {
            let (sock, stopping, inflight) = (
                Arc::clone(&sock),
                Arc::clone(&stopping),
                Arc::clone(&inflight),
            );
            std::thread::Builder::new()
                .name("dnsward-udp".into())
                .spawn(move || {
                    let _rt = runtime.enter();
                    run(
                        &sock,
                        (v6, wildcard),
                        &pipeline,
                        &stopping,
                        &inflight,
                        &runtime,
                    );
                    let _ = done_tx.send(());
                })
        };
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a UDP listener thread");
            return;
        }
        // Any change, or the sender gone, means stop.
        let mut done_rx = done_rx;
        tokio::select! {
            _ = stop.changed() => {}
            _ = &mut done_rx => {
                // The thread ended on its own: a panic outside a datagram's containment. Its
                // socket must not stay bound in the `SO_REUSEPORT` group unread: it closes once
                // the answers still being resolved are out, and the kernel steers its clients
                // to the group's other sockets.
                metrics::counter!(crate::metrics::PANICS_TOTAL, "listener" => "udp").increment(1);
                tracing::error!(
                    local = ?sock.local_addr().ok(),
                    "a UDP listener thread ended unexpectedly; its socket is closed and the \
                     others serve its clients (a bug: please report it with the panic above)"
                );
                return;
            }
        }
        stopping.store(true, Ordering::Relaxed);
        // Wake the blocked receive now rather than at its next timeout: on Linux, shutting a
        // UDP socket's receive side returns a waiting `recvmmsg` at once. Sends still work,
        // for the answers still being resolved.
        sys::shutdown_read(&sock);
        let _ = done_rx.await;
        // Let answers already being resolved go out.
        loop {
            let idle = inflight.idle.notified();
            if inflight.count.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
    }

    fn run(
        sock: &Arc<UdpSocket>,
        (v6, wildcard): (bool, bool),
        pipeline: &Arc<Pipeline>,
        stopping: &AtomicBool,
        inflight: &Arc<InFlight>,
        runtime: &tokio::runtime::Handle,
    ) {
        let mut batch = RecvBatch::new(v6, wildcard);
        let mut replies: Vec<Reply> = Vec::with_capacity(super::BATCH);
        let mut failures: u64 = 0;
        while !stopping.load(Ordering::Relaxed) {
            let n = match sys::recv_wait(sock, &mut batch) {
                Ok(n) => n,
                // Timeout (look at the stop flag), a signal, or an ICMP error from a gone
                // client: none says anything about this socket.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                // Anything else (out of memory, …): keep serving, but never spin on it, and
                // log at the 1st, 2nd, 4th, 8th, … failure in a row.
                Err(e) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "UDP receive failed; retrying");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            failures = 0;
            let received = Instant::now();
            super::answer_batch(
                |packet, ip| pipeline.handle_udp_batched(packet, ip, received),
                &batch,
                n,
                &mut replies,
                |p, src, local| {
                    inflight.count.fetch_add(1, Ordering::AcqRel);
                    let (sock, pipeline) = (Arc::clone(sock), Arc::clone(pipeline));
                    // Counted out however the task ends (a panic too), or shutdown would wait
                    // for it forever.
                    let done = Done(Arc::clone(inflight));
                    runtime.spawn(async move {
                        let _done = done;
                        if let Some(r) = pipeline.resolve(*p).await {
                            send_later(&sock, &r, src, local).await;
                            // The buffer serves this worker's next answer.
                            crate::wire::recycle_reply(r);
                        }
                    });
                },
            );
            let inline = replies.len();
            send_all(sock, v6, &mut replies);
            pipeline.record_udp_batch_latency(received.elapsed(), inline);
        }
    }

    /// Send every reply from the listener's thread, waiting out a full send buffer for up to
    /// a second.
    fn send_all(sock: &UdpSocket, v6: bool, replies: &mut Vec<Reply>) {
        let mut start = 0;
        while start < replies.len() {
            match sys::send(sock, v6, &replies[start..]) {
                Ok(0) => break,
                Ok(sent) => start += sent,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !sys::wait_writable_blocking(sock, 1000) {
                        break;
                    }
                }
                Err(_) => start += 1,
            }
        }
        super::recycle(replies);
    }

    /// Send a resolved miss's answer from the runtime, never blocking a worker.
    async fn send_later(sock: &UdpSocket, msg: &[u8], to: SocketAddr, local: Option<Local>) {
        for _ in 0..3 {
            match sys::send_one(sock, msg, to, local) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !super::wait_writable(sock).await {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

/// Batched receive and send with `recvmmsg`/`sendmmsg` (Linux, glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::{BATCH, CONTROL, ControlBuf, Local, MAX_DATAGRAM, RecvBatch, Reply, SLOT};

    /// A C socket address of one family, converted without reinterpreting memory.
    trait RawAddr: Copy {
        const EMPTY: Self;
        fn to_std(&self) -> Option<SocketAddr>;
        fn from_std(addr: SocketAddr) -> Option<Self>;
    }

    impl RawAddr for libc::sockaddr_in {
        const EMPTY: Self = libc::sockaddr_in {
            sin_family: 0,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };

        fn to_std(&self) -> Option<SocketAddr> {
            (i32::from(self.sin_family) == libc::AF_INET).then(|| {
                SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(self.sin_addr.s_addr)),
                    u16::from_be(self.sin_port),
                ))
            })
        }

        fn from_std(addr: SocketAddr) -> Option<Self> {
            let SocketAddr::V4(a) = addr else { return None };
            Some(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            })
        }
    }

    impl RawAddr for libc::sockaddr_in6 {
        const EMPTY: Self = libc::sockaddr_in6 {
            sin6_family: 0,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        };

        fn to_std(&self) -> Option<SocketAddr> {
            (i32::from(self.sin6_family) == libc::AF_INET6).then(|| {
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(self.sin6_addr.s6_addr),
                    u16::from_be(self.sin6_port),
                    u32::from_be(self.sin6_flowinfo),
                    self.sin6_scope_id,
                ))
            })
        }

        fn from_std(addr: SocketAddr) -> Option<Self> {
            let SocketAddr::V6(a) = addr else { return None };
            Some(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            })
        }
    }

    fn msghdr<A>(name: *mut A, iov: *mut libc::iovec) -> libc::mmsghdr {
        libc::mmsghdr {
            msg_hdr: libc::msghdr {
                msg_name: name.cast(),
                msg_namelen: std::mem::size_of::<A>() as libc::socklen_t,
                msg_iov: iov,
                msg_iovlen: 1,
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            },
            msg_len: 0,
        }
    }

    /// Read up to [`BATCH`] datagrams without blocking.
    pub(super) fn recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        recv_flags(sock, batch, libc::MSG_DONTWAIT)
    }

    /// Read up to [`BATCH`] datagrams, waiting (up to the socket's receive timeout) for the
    /// first; the rest are whatever is queued then. The socket must be in blocking mode.
    pub(super) fn recv_wait(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        recv_flags(sock, batch, libc::MSG_WAITFORONE)
    }

    fn recv_flags(
        sock: &UdpSocket,
        batch: &mut RecvBatch,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        if batch.v6 {
            recv_as::<libc::sockaddr_in6>(sock, batch, flags)
        } else {
            recv_as::<libc::sockaddr_in>(sock, batch, flags)
        }
    }

    /// Wait up to `timeout_ms` until `sock` can send (for a full send buffer, on the
    /// listener's own thread).
    pub(super) fn wait_writable_blocking(sock: &UdpSocket, timeout_ms: i32) -> bool {
        let mut fds = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        let n = unsafe { libc::poll(&raw mut fds, 1, timeout_ms) };
        n > 0 && fds.revents & libc::POLLOUT != 0
    }

    /// Shut the socket's receive side, which wakes a thread blocked receiving on it.
    pub(super) fn shutdown_read(sock: &UdpSocket) {
        // SAFETY: a plain call on a descriptor the socket owns.
        let _ = unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD) };
    }

    /// Send one datagram without blocking, whatever the socket's mode; from `local` when
    /// given (a wildcard socket's datagram).
    pub(super) fn send_one(
        sock: &UdpSocket,
        msg: &[u8],
        to: std::net::SocketAddr,
        local: Option<Local>,
    ) -> io::Result<usize> {
        if local.is_some() {
            let reply = (msg.to_vec(), to, local);
            return match to {
                SocketAddr::V4(_) => {
                    send_as::<libc::sockaddr_in>(sock, std::slice::from_ref(&reply))
                }
                SocketAddr::V6(_) => {
                    send_as::<libc::sockaddr_in6>(sock, std::slice::from_ref(&reply))
                }
            }
            .map(|_| msg.len());
        }
        let addr = socket2::SockAddr::from(to);
        // SAFETY: `msg` and `addr` are valid for the call and only read by the kernel.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_DONTWAIT,
                addr.as_ptr().cast(),
                addr.len(),
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn recv_as<A: RawAddr>(
        sock: &UdpSocket,
        batch: &mut RecvBatch,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let mut names = [A::EMPTY; BATCH];
        let base = batch.bufs.as_mut_ptr();
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: base.wrapping_add(i * SLOT).cast(),
            iov_len: MAX_DATAGRAM,
        });
        let names_ptr = names.as_mut_ptr();
        let iovs_ptr = iovs.as_mut_ptr();
        let mut hdrs: [libc::mmsghdr; BATCH] =
            std::array::from_fn(|i| msghdr(names_ptr.wrapping_add(i), iovs_ptr.wrapping_add(i)));
        let wildcard = batch.control.len() == BATCH;
        if wildcard {
            for (hdr, control) in hdrs.iter_mut().zip(batch.control.iter_mut()) {
                hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
                hdr.msg_hdr.msg_controllen = CONTROL as _;
            }
        }
        // SAFETY: `hdrs` holds BATCH valid headers. Header i points at `names[i]` (its length
        // set to that type's size) and at `iovs[i]`, which covers bytes
        // [i * SLOT, i * SLOT + MAX_DATAGRAM) of `batch.bufs` (BATCH * SLOT bytes long), and
        // on a wildcard socket at `batch.control[i]` (CONTROL bytes, its length set to that).
        // All of them are exclusively borrowed here and outlive the call; there is no timeout.
        // The kernel writes only within those bounds.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            batch.lens[i] = (hdr.msg_len as usize).min(MAX_DATAGRAM);
            // A datagram longer than the buffer arrives cut short: parsed, its prefix would be
            // a different (malformed) message, answered FORMERR. No client sends a query this
            // long over UDP; it is dropped and counted, as other malformed packets are.
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            if truncated {
                metrics::counter!(crate::metrics::MALFORMED_TOTAL, "action" => "dropped")
                    .increment(1);
            }
            batch.srcs[i] = if truncated {
                None
            } else if hdr.msg_hdr.msg_namelen as usize == std::mem::size_of::<A>() {
                names[i].to_std()
            } else {
                None
            };
            batch.dsts[i] = if wildcard {
                destination(&hdr.msg_hdr)
            } else {
                None
            };
        }
        Ok(n)
    }

    /// The destination address in a received datagram's control messages (`IP_PKTINFO`,
    /// `IPV6_PKTINFO`), if there is one.
    fn destination(hdr: &libc::msghdr) -> Option<Local> {
        // SAFETY: `hdr` is a header the kernel has just filled: its control pointer and length
        // describe the bytes it wrote (within the buffer given), and the CMSG macros only walk
        // within `msg_controllen`. The data is read unaligned, by value.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                let c = &*cmsg;
                let data = libc::CMSG_DATA(cmsg);
                if c.cmsg_level == libc::IPPROTO_IP
                    && c.cmsg_type == libc::IP_PKTINFO
                    && c.cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize
                {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    // The local address the answer should leave from (`ipi_spec_dst`), not the
                    // header's destination (`ipi_addr`): the two differ for a query sent to a
                    // broadcast address, which is no source for an answer.
                    return Some(Local {
                        ip: Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)).into(),
                        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                    });
                }
                if c.cmsg_level == libc::IPPROTO_IPV6
                    && c.cmsg_type == libc::IPV6_PKTINFO
                    && c.cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize
                {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    return Some(Local {
                        ip: Ipv6Addr::from(info.ipi6_addr.s6_addr).into(),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }

    /// Write the control message that makes a datagram leave from `local` into `buf`;
    /// returns its length. IPv4 names the address only (the route picks the interface, as
    /// Unbound does); IPv6 names the interface too, which a link-local address needs.
    fn write_source(buf: &mut ControlBuf, local: Local) -> usize {
        let mut hdr: libc::msghdr =
            msghdr::<libc::sockaddr_in>(std::ptr::null_mut(), std::ptr::null_mut()).msg_hdr;
        hdr.msg_control = buf.0.as_mut_ptr().cast();
        hdr.msg_controllen = CONTROL as _;
        // SAFETY: `hdr` describes `buf` (CONTROL bytes, aligned for cmsghdr), which is larger
        // than the one header and payload written; CMSG_FIRSTHDR is non-null for it. The
        // payload is written unaligned, by value.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const hdr);
            debug_assert!(!cmsg.is_null());
            match local.ip {
                IpAddr::V4(ip) => {
                    let size = std::mem::size_of::<libc::in_pktinfo>() as u32;
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                    libc::CMSG_SPACE(size) as usize
                }
                IpAddr::V6(ip) => {
                    let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: local.ifindex,
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                    libc::CMSG_SPACE(size) as usize
                }
            }
        }
    }

    /// Send up to [`BATCH`] of `replies` in one call; returns how many were sent.
    pub(super) fn send(sock: &UdpSocket, v6: bool, replies: &[Reply]) -> io::Result<usize> {
        if v6 {
            send_as::<libc::sockaddr_in6>(sock, replies)
        } else {
            send_as::<libc::sockaddr_in>(sock, replies)
        }
    }

    fn send_as<A: RawAddr>(sock: &UdpSocket, replies: &[Reply]) -> io::Result<usize> {
        let count = replies.len().min(BATCH);
        let Some(first) = replies.first() else {
            return Ok(0);
        };
        // An address of the other family cannot come from this socket; send it the plain way
        // so the error (if any) is the kernel's.
        let mut names = [A::EMPTY; BATCH];
        for (slot, (_, to, _)) in names.iter_mut().zip(&replies[..count]) {
            match A::from_std(*to) {
                Some(a) => *slot = a,
                None => return sock.send_to(&first.0, first.1).map(|_| 1),
            }
        }
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| match replies.get(i) {
            Some((msg, _, _)) if i < count => libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: msg.as_ptr().cast_mut().cast(),
                iov_len: msg.len(),
            },
            _ => libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        });
        let names_ptr = names.as_mut_ptr();
        let iovs_ptr = iovs.as_mut_ptr();
        let mut hdrs: [libc::mmsghdr; BATCH] =
            std::array::from_fn(|i| msghdr(names_ptr.wrapping_add(i), iovs_ptr.wrapping_add(i)));
        // Wildcard sockets: each answer leaves from the address its query was sent to.
        let mut controls: Vec<ControlBuf> = if replies[..count].iter().any(|r| r.2.is_some()) {
            vec![ControlBuf([0; CONTROL]); count]
        } else {
            Vec::new()
        };
        {
            for ((hdr, control), (_, _, local)) in hdrs
                .iter_mut()
                .zip(controls.iter_mut())
                .zip(&replies[..count])
            {
                if let Some(local) = local {
                    let len = write_source(control, *local);
                    hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
                    hdr.msg_hdr.msg_controllen = len as _;
                }
            }
        }
        // SAFETY: the first `count` headers are valid: header i points at `names[i]`, a
        // destination of the socket's family with its exact size, at `iovs[i]`, which covers
        // reply i's bytes (borrowed from `replies` for the whole call), and for an answer
        // from a wildcard socket at `controls[i]`, holding one pktinfo message of the length
        // given. The kernel only reads the buffers and writes `msg_len` in the headers, which
        // are exclusively borrowed. `count` ≤ BATCH, the length of `hdrs`.
        let sent = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}

/// One datagram per call, with the standard library (platforms without `recvmmsg`).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    use super::{BATCH, Local, MAX_DATAGRAM, RecvBatch, Reply, SLOT};

    /// Reads until the queue is empty or the batch full, so that, as with `recvmmsg`, fewer
    /// than [`BATCH`] datagrams means the queue was drained.
    pub(super) fn recv(sock: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut n = 0;
        while n < BATCH {
            let buf = &mut batch.bufs[n * SLOT..n * SLOT + MAX_DATAGRAM];
            match sock.recv_from(buf) {
                Ok((len, src)) => {
                    batch.lens[n] = len;
                    batch.srcs[n] = Some(src);
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    pub(super) fn send(sock: &UdpSocket, _v6: bool, replies: &[Reply]) -> io::Result<usize> {
        match replies.first() {
            Some((msg, to, _)) => sock.send_to(msg, *to).map(|_| 1),
            None => Ok(0),
        }
    }

    /// One answer; the source is the kernel's choice here (no `IP_PKTINFO`).
    pub(super) fn send_one(
        sock: &UdpSocket,
        msg: &[u8],
        to: SocketAddr,
        _local: Option<Local>,
    ) -> io::Result<usize> {
        sock.send_to(msg, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of `packets` from 127.0.0.10, as a receive would leave it.
    fn batch_of(packets: &[&[u8]]) -> RecvBatch {
        let mut batch = RecvBatch::new(false, false);
        for (i, p) in packets.iter().enumerate() {
            batch.bufs[i * SLOT..i * SLOT + p.len()].copy_from_slice(p);
            batch.lens[i] = p.len();
            batch.srcs[i] = Some("127.0.0.10:5300".parse().unwrap());
        }
        batch
    }

    #[test]
    fn a_panic_handling_one_datagram_leaves_the_others_of_its_batch_answered() {
        let batch = batch_of(&[b"one", b"two", b"three"]);
        let mut replies = Vec::new();
        let handle = |packet: &[u8], _: IpAddr| {
            assert_ne!(packet, b"two", "a bug on the second datagram");
            Outcome::Reply(packet.to_vec())
        };
        answer_batch(handle, &batch, 3, &mut replies, |_, _, _| {
            unreachable!("no miss")
        });
        let answered: Vec<&[u8]> = replies.iter().map(|(r, _, _)| r.as_slice()).collect();
        assert_eq!(answered, [b"one".as_slice(), b"three"]);
        // And the next batch on the same thread is answered whole.
        replies.clear();
        answer_batch(
            |p: &[u8], _: IpAddr| Outcome::Reply(p.to_vec()),
            &batch,
            3,
            &mut replies,
            |_, _, _| unreachable!("no miss"),
        );
        assert_eq!(replies.len(), 3);
    }
}

//! `floor MODE ADDR:PORT`: answer every UDP datagram on ADDR:PORT with NXDOMAIN, doing no DNS
//! work at all (the query's header is patched in place and the datagram is sent back). What it
//! costs per query at capacity is the kernel's per-packet UDP work for that I/O method, plus a
//! few hundred instructions: the floor under any resolver using the method.
//!
//! MODE:
//! - `plain`: one `recvfrom` and one `sendto` per query (Unbound's way);
//! - `mmsg`: `recvmmsg`/`sendmmsg` up to 64 datagrams a call (dnsward's way);
//! - `uring`: io_uring, one multishot `RecvMsg` reading into a ring of 1,024 provided buffers
//!   (each handed back as soon as its datagram is copied out), a `SendMsg` per answer; one
//!   `io_uring_enter` submits every new operation and waits for the next completion.
//!
//! Single-threaded on purpose: pin it (`taskset`) and compare it with a server on one core.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BUF: usize = 512;
const BATCH: usize = 64;

/// Turn a query into an NXDOMAIN answer in place (QR, RA, RCODE 3; the question and any OPT
/// record are echoed as they came).
#[inline]
fn answer(buf: &mut [u8]) -> bool {
    if buf.len() < 12 || buf[2] & 0x80 != 0 {
        return false;
    }
    buf[2] |= 0x80; // QR
    buf[3] = 0x80 | 3; // RA, NXDOMAIN
    true
}

fn plain(sock: &UdpSocket) -> io::Result<()> {
    let mut buf = [0u8; BUF];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        if answer(&mut buf[..n]) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

fn mmsg(sock: &UdpSocket) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; BUF]; BATCH];
    // SAFETY: plain C structs; all-zero is a valid value for each.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: BUF,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut out: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut out_iovs: Vec<libc::iovec> = iovs.clone();
    loop {
        for i in 0..BATCH {
            iovs[i].iov_len = BUF;
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&raw mut addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &raw mut iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut k = 0;
        for i in 0..n as usize {
            let len = msgs[i].msg_len as usize;
            if !answer(&mut bufs[i][..len]) {
                continue;
            }
            out_iovs[k] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: len,
            };
            let h = &mut out[k].msg_hdr;
            h.msg_name = (&raw mut addrs[i]).cast();
            h.msg_namelen = msgs[i].msg_hdr.msg_namelen;
            h.msg_iov = &raw mut out_iovs[k];
            h.msg_iovlen = 1;
            k += 1;
        }
        let mut sent = 0;
        while sent < k {
            // SAFETY: as above.
            let r = unsafe { libc::sendmmsg(fd, out.as_mut_ptr().add(sent), (k - sent) as u32, 0) };
            if r <= 0 {
                break;
            }
            sent += r as usize;
        }
    }
}

/// A send in flight: the answer and its destination, kept until the kernel is done with them.
struct Slot {
    buf: [u8; BUF],
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

const RING_BUFS: u16 = 1024;
const RING_BUF_SIZE: usize = 1024;
const BGID: u16 = 7;
const RECV: u64 = u64::MAX;

fn uring(sock: &UdpSocket) -> io::Result<()> {
    use io_uring::types::{BufRingEntry, RecvMsgOut};
    use io_uring::{IoUring, cqueue, opcode, types};
    use std::sync::atomic::{AtomicU16, Ordering};
    let fd = types::Fd(sock.as_raw_fd());
    let mut ring: IoUring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(u32::from(RING_BUFS) * 4)
        .build(u32::from(RING_BUFS))?;

    // The provided-buffer ring: RING_BUFS entries (page-aligned) and the buffers they point at.
    let entries_layout = std::alloc::Layout::from_size_align(
        usize::from(RING_BUFS) * size_of::<BufRingEntry>(),
        4096,
    )
    .expect("valid layout");
    // SAFETY: a non-zero size; zeroed memory is a valid (empty) ring.
    let entries = unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
    let mut bufs = vec![0u8; usize::from(RING_BUFS) * RING_BUF_SIZE];
    let base = bufs.as_mut_ptr();
    let provide = |bid: u16, tail: u16| {
        // SAFETY: `tail & mask` is within the ring; the buffer is within `bufs`.
        unsafe {
            let e = &mut *entries.add(usize::from(tail & (RING_BUFS - 1)));
            e.set_addr(base.add(usize::from(bid) * RING_BUF_SIZE) as u64);
            e.set_len(RING_BUF_SIZE as u32);
            e.set_bid(bid);
        }
    };
    let mut tail: u16 = 0;
    for bid in 0..RING_BUFS {
        provide(bid, tail);
        tail = tail.wrapping_add(1);
    }
    // SAFETY: the tail field lives in the first entry's reserved word (the kernel's layout).
    let tail_ptr = unsafe { &*(BufRingEntry::tail(entries).cast::<AtomicU16>()) };
    tail_ptr.store(tail, Ordering::Release);
    // SAFETY: the ring memory lives until the process ends.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(entries as u64, RING_BUFS, BGID, 0)?
    };

    // The receive template: room for any address, no control data.
    // SAFETY: all-zero is a valid msghdr.
    let mut template: libc::msghdr = unsafe { zeroed() };
    template.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
    let recv = opcode::RecvMsgMulti::new(fd, &raw const template, BGID)
        .build()
        .user_data(RECV);

    let mut slots: Vec<Box<Slot>> =
        // SAFETY: plain C structs and bytes; all-zero is valid.
        (0..usize::from(RING_BUFS)).map(|_| Box::new(unsafe { zeroed::<Slot>() })).collect();
    let mut free: Vec<usize> = (0..slots.len()).collect();
    let mut pending: Vec<io_uring::squeue::Entry> = Vec::with_capacity(usize::from(RING_BUFS) * 2);
    pending.push(recv.clone());
    loop {
        {
            let mut sq = ring.submission();
            for e in pending.drain(..) {
                // SAFETY: every pointer in the entries outlives the operation.
                unsafe { sq.push(&e).expect("submission queue sized for every send") };
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let mut returned = false;
        for cqe in ring.completion() {
            if cqe.user_data() != RECV {
                free.push(cqe.user_data() as usize);
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                pending.push(recv.clone());
            }
            let res = cqe.result();
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                continue;
            };
            if res > 0 {
                // SAFETY: the kernel wrote `res` bytes into buffer `bid`.
                let data = unsafe {
                    std::slice::from_raw_parts(
                        base.add(usize::from(bid) * RING_BUF_SIZE),
                        res as usize,
                    )
                };
                if let (Ok(msg), Some(i)) = (RecvMsgOut::parse(data, &template), free.pop()) {
                    let s = &mut *slots[i];
                    let payload = msg.payload_data();
                    let name = msg.name_data();
                    let n = payload.len().min(BUF);
                    s.buf[..n].copy_from_slice(&payload[..n]);
                    if answer(&mut s.buf[..n]) {
                        // SAFETY: copying at most sizeof(sockaddr_storage) bytes into it.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                name.as_ptr(),
                                (&raw mut s.addr).cast::<u8>(),
                                name.len().min(size_of::<libc::sockaddr_storage>()),
                            );
                        }
                        s.iov = libc::iovec {
                            iov_base: s.buf.as_mut_ptr().cast(),
                            iov_len: n,
                        };
                        s.hdr.msg_name = (&raw mut s.addr).cast();
                        s.hdr.msg_namelen = msg
                            .incoming_name_len()
                            .min(size_of::<libc::sockaddr_storage>() as u32);
                        s.hdr.msg_iov = &raw mut s.iov;
                        s.hdr.msg_iovlen = 1;
                        pending.push(
                            opcode::SendMsg::new(fd, &raw const s.hdr)
                                .build()
                                .user_data(i as u64),
                        );
                    } else {
                        free.push(i);
                    }
                }
            }
            provide(bid, tail);
            tail = tail.wrapping_add(1);
            returned = true;
        }
        if returned {
            tail_ptr.store(tail, Ordering::Release);
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: floor plain|mmsg|uring ADDR:PORT");
        std::process::exit(2);
    };
    let sock = UdpSocket::bind(addr)?;
    match mode.as_str() {
        "plain" => plain(&sock),
        "mmsg" => mmsg(&sock),
        "uring" => uring(&sock),
        _ => {
            eprintln!("floor: unknown mode {mode} (plain, mmsg, uring)");
            std::process::exit(2);
        }
    }
}

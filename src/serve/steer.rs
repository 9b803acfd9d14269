//! Client affinity for the UDP sockets of one address: a classic BPF program attached to the
//! `SO_REUSEPORT` group picks the socket from the **source address** (IPv6: its /64), not
//! from the kernel's default hash of address *and port*.
//!
//! Why: everything dnsward keeps per client (the detector's (client, domain) and client
//! windows, the rate limiter, containment) then lives on one listener thread's core. With
//! the default hash, a client's queries from its many source ports land on every socket, and
//! each query moves that client's state between cores (on the 2-core bench machine that was
//! most of the ~17 % tunnel scoring cost at 50k q/s, `bench/README.md`). It also confines a
//! flooding client: its queries queue on one socket, and the other listeners keep serving
//! everyone else.
//!
//! The program reads the IPv4 source address (or the two words of an IPv6 /64) through the
//! kernel's negative network-header offset, mixes it (multiply, shift) and returns it modulo
//! the number of sockets. Linux only; attaching is best effort (a kernel without it keeps the
//! default hash, and the server says so once).

use std::io;
use std::net::UdpSocket;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_MUL: u16 = 0x20;
const BPF_RSH: u16 = 0x70;
const BPF_MOD: u16 = 0x90;
const BPF_XOR: u16 = 0xa0;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_RET: u16 = 0x06;
const BPF_A: u16 = 0x10;
const BPF_MISC: u16 = 0x07;
const BPF_TAX: u16 = 0x00;
/// `SKF_NET_OFF`: loads relative to the network header.
const NET: u32 = 0xfff0_0000;

fn op(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The program for a group of `sockets` sockets of one family.
fn program(sockets: u32, v6: bool) -> Vec<libc::sock_filter> {
    let mut p = if v6 {
        vec![
            // A = first word of the source address's /64, X = A, A = second word, A ^= X.
            op(BPF_LD | BPF_W | BPF_ABS, NET + 8),
            op(BPF_MISC | BPF_TAX, 0),
            op(BPF_LD | BPF_W | BPF_ABS, NET + 12),
            op(BPF_ALU | BPF_XOR | BPF_X, 0),
        ]
    } else {
        // A = the IPv4 source address.
        vec![op(BPF_LD | BPF_W | BPF_ABS, NET + 12)]
    };
    p.extend([
        // Mix, so that neighbouring addresses (10.0.0.10, .20, …) spread.
        op(BPF_ALU | BPF_MUL | BPF_K, 0x9e37_79b1),
        op(BPF_ALU | BPF_RSH | BPF_K, 16),
        op(BPF_ALU | BPF_MOD | BPF_K, sockets.max(1)),
        op(BPF_RET | BPF_A, 0),
    ]);
    p
}

/// Attach the steering program to the reuseport group that `sock` belongs to (`sockets`
/// sockets, bound in order; the program's result is the index of the socket).
///
/// # Errors
/// When the kernel refuses the program.
pub fn by_source(sock: &UdpSocket, sockets: usize, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut code = program(u32::try_from(sockets).unwrap_or(u32::MAX), v6);
    let prog = libc::sock_fprog {
        len: u16::try_from(code.len()).unwrap_or(u16::MAX),
        filter: code.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `code`, `len` instructions that outlive the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            u32::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap_or(u32::MAX),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    fn member(addr: SocketAddr) -> UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.set_nonblocking(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.into()
    }

    /// Which socket of the group each datagram from `src` (new source port each time) lands on.
    fn landings(group: &[UdpSocket], to: SocketAddr, src: &str, n: usize) -> HashMap<usize, usize> {
        for _ in 0..n {
            let c = UdpSocket::bind(format!("{src}:0")).unwrap();
            c.send_to(b"q", to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut seen = HashMap::new();
        let mut buf = [0u8; 16];
        for (i, s) in group.iter().enumerate() {
            while s.recv_from(&mut buf).is_ok() {
                *seen.entry(i).or_insert(0) += 1;
            }
        }
        seen
    }

    #[test]
    fn one_source_address_always_lands_on_one_socket_and_sources_spread() {
        let first = member("127.0.0.1:0".parse().unwrap());
        let to = first.local_addr().unwrap();
        let group = vec![first, member(to), member(to), member(to)];
        by_source(&group[0], group.len(), false).expect("the kernel takes the program");
        // Every source port of one address: one socket.
        for src in ["127.0.0.10", "127.0.0.20", "127.0.0.33"] {
            let seen = landings(&group, to, src, 40);
            assert_eq!(seen.len(), 1, "{src}: {seen:?}");
            assert_eq!(seen.values().sum::<usize>(), 40);
        }
        // Different addresses spread over the sockets.
        let mut used = std::collections::HashSet::new();
        for i in 1..=32 {
            let seen = landings(&group, to, &format!("127.0.1.{i}"), 2);
            used.extend(seen.keys().copied());
        }
        assert!(used.len() >= 3, "32 addresses used only sockets {used:?}");
    }

    #[test]
    fn the_ipv6_program_is_accepted_and_keys_on_the_source() {
        let mk = |addr: SocketAddr| -> Option<UdpSocket> {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).ok()?;
            s.set_only_v6(true).ok()?;
            s.set_reuse_port(true).ok()?;
            s.set_nonblocking(true).ok()?;
            s.bind(&addr.into()).ok()?;
            Some(s.into())
        };
        let Some(first) = mk("[::1]:0".parse().unwrap()) else {
            assert!(std::env::var("CI").is_err(), "no IPv6 loopback under CI");
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let to = first.local_addr().unwrap();
        let group = vec![first, mk(to).unwrap()];
        by_source(&group[0], group.len(), true).expect("the kernel takes the IPv6 program");
        let seen = landings(&group, to, "[::1]", 30);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen.values().sum::<usize>(), 30);
    }
}

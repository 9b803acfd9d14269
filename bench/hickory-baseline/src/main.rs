//! A hickory-server 0.26 DNS server that does no work: the floor under any resolver built on
//! `hickory_server::Server`.
//!
//! Every query is answered with one fixed A record (`198.51.100.1`, TTL 3600) under the query's
//! own name, except names under `denied.example`, which get NXDOMAIN. No cache, no policy, no
//! upstream: what is measured is hickory-server's UDP path (receive, parse into a
//! `MessageRequest`, a task per request, the generic response encoder, send) plus a handler that
//! returns at once. `bench/listeners.sh` runs it next to Unbound and dnsward under dnsperf.
//!
//! Like dnsward and Unbound in that script: two SO_REUSEPORT UDP sockets on the same address
//! (4 MiB receive buffers), a tokio multi-thread runtime with 2 worker threads.
//!
//! ```sh
//! cargo build --release --manifest-path bench/hickory-baseline/Cargo.toml
//! hickory-baseline 127.0.0.45:5305
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use socket2::{Domain, Protocol, Socket, Type};

/// The address every allowed query is answered with.
const ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The answer's TTL.
const TTL: u32 = 3600;
/// UDP sockets bound to the listen address with SO_REUSEPORT.
const SOCKETS: usize = 2;
/// tokio worker threads.
const WORKERS: usize = 2;

/// Answers a fixed A record, or NXDOMAIN under `denied`.
struct FixedAnswer {
    denied: LowerName,
}

#[async_trait::async_trait]
impl RequestHandler for FixedAnswer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = request.queries.queries().first();
        let sent = match query {
            Some(q) if !self.denied.zone_of(q.name()) => {
                let record =
                    Record::from_rdata(q.original().name().clone(), TTL, RData::A(A(ANSWER)));
                let answers = [record];
                response_handle
                    .send_response(builder.build(metadata, answers.iter(), [], [], []))
                    .await
            }
            Some(_) => {
                metadata.response_code = ResponseCode::NXDomain;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            None => {
                metadata.response_code = ResponseCode::FormErr;
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        sent.unwrap_or_else(|_| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }
}

/// A non-blocking UDP socket bound to `addr` with SO_REUSEPORT, as dnsward binds its own.
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    // Best effort, like dnsward (and Unbound's `so-rcvbuf: 4m` in the bench config).
    let _ = sock.set_recv_buffer_size(4 << 20);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.45:5305")
        .parse()?;
    let denied = LowerName::from(Name::from_str("denied.example.")?);
    let sockets = (0..SOCKETS)
        .map(|_| reuseport_socket(addr))
        .collect::<std::io::Result<Vec<_>>>()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut server = Server::new(FixedAnswer { denied });
        for sock in sockets {
            server.register_socket(tokio::net::UdpSocket::from_std(sock)?);
        }
        eprintln!(
            "hickory-baseline: listening on udp {addr} ({SOCKETS} sockets, {WORKERS} workers)"
        );
        server.block_until_done().await?;
        Ok(())
    })
}

//! A small DoH load generator for `bench/encrypted.sh`: HTTP/2 POSTs with many streams in
//! flight on a few connections, counting answers for a fixed time. dnsperf 2.10's DoH mode
//! stalls against dnsward (its connection-level HTTP/2 window is not replenished in time), so
//! the DoH row of the bench uses this instead.
//!
//! `cargo run --release --example doh_load -- ADDR CA_PEM SECONDS CONNECTIONS STREAMS NAMES_FILE`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = args[1].parse().unwrap();
    let secs: u64 = args[3].parse().unwrap();
    let conns: usize = args[4].parse().unwrap();
    let streams: usize = args[5].parse().unwrap();
    let names: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&args[6])
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args[2]).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // As browsers, curl and dnsperf do: with Nagle's algorithm on, this client's small
        // requests waited for the server's (delayed) ACKs and the run measured that wait.
        tcp.set_nodelay(true).unwrap();
        let tls = connector
            // The example PKI names the server `localhost`; the bench listens on 127.0.0.52.
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for s in 0..streams {
            let mut send = send.clone();
            let (done, failed, names) =
                (Arc::clone(&done), Arc::clone(&failed), Arc::clone(&names));
            let uri = format!("https://{addr}/dns-query");
            tasks.push(tokio::spawn(async move {
                let mut i = c * streams + s;
                while Instant::now() < until {
                    let name = &names[i % names.len()];
                    i += 7;
                    let req = hyper::Request::post(&uri)
                        .header("content-type", "application/dns-message")
                        .body(Full::new(Bytes::from(query(name, 0))))
                        .unwrap();
                    match send.send_request(req).await {
                        Ok(resp) if resp.status() == 200 => {
                            let _ = resp.into_body().collect().await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "completed {n} failed {} qps {}",
        failed.load(Ordering::Relaxed),
        n / secs.max(1)
    );
}

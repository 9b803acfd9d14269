//! Integration tests: dnsward through real UDP/TCP sockets on 127.0.0.x, with a fake upstream.
//! One test binary made of modules; distinct loopback source addresses play different agents.

// The helpers the end-to-end tests share; here for the Prometheus text parser.
mod alert_filter;
mod cname_chase;
#[path = "../common/mod.rs"]
mod common;
mod detection;
mod egress;
mod failure_backoff;
mod failure_cache;
mod faults;
mod governance;
mod hardening;
mod hardening_serve;
mod harness;
mod identity;
mod notify;
mod observability;
mod protocol;
mod resolver;
mod review;
mod robustness;
mod tls_exhaustion;
mod tls_shutdown;
mod upstream_rounds;
mod volume;

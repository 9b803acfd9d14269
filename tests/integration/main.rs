//! Integration tests: dnsward through real UDP/TCP sockets on 127.0.0.x, with a fake upstream.
//! One test binary made of modules; distinct loopback source addresses play different agents.

// The helpers the end-to-end tests share; here for the Prometheus text parser.
#[path = "../common/mod.rs"]
mod common;
mod detection;
mod faults;
mod governance;
mod hardening;
mod harness;
mod observability;
mod resolver;
mod robustness;

//! Integration tests: dnsward through real UDP/TCP sockets on 127.0.0.x, with a fake upstream.
//! One test binary made of modules; distinct loopback source addresses play different agents.

mod detection;
mod governance;
mod harness;
mod identity;
mod observability;
mod resolver;
mod robustness;

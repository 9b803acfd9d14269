//! Resolution: where allowed answers come from.
//!
//! - [`cache`]: the bounded, pre-encoded answer cache (TTL countdown, negative caching).
//! - [`encode`]: writing a prepared answer with compression and without hickory's allocations.
//! - [`failures`]: recent resolution failures, answered SERVFAIL at once for a few seconds
//!   (RFC 9520).
//! - [`inflight`]: the bound on cache misses in flight and coalescing of identical ones.
//! - [`scrub`]: what a forwarded answer may carry on (its question's chain; no AD).
//! - [`zones`]: local authoritative zones from RFC 1035 zone files.
//! - [`upstream`]: the forwarder (random port and ID, TC → TCP, retry rounds over the servers,
//!   conditional forward zones).
//!
//! May import only the foundation modules (`clock`, `config_error`, `metrics`, `names`, `wire`).
//! It knows nothing about clients, groups or policy: the pipeline decides first, then asks here.

pub mod cache;
pub mod encode;
pub mod failures;
pub mod inflight;
pub mod scrub;
pub mod upstream;
pub mod zones;

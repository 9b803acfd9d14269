//! # dnsward
//!
//! A DNS security resolver for fleets of AI agents: each client group resolves only the names it
//! is allowed, every query is scored for tunneling and exfiltration, and every block, alert and
//! containment becomes an event a security team can review.
//!
//! ## Layout
//! - [`server`]: UDP and TCP listeners, connection limits, graceful shutdown.
//! - [`pipeline`]: the one place that orders the query stages.
//! - [`wire`]: the hand-owned DNS wire fast path (query parsing, answer encoding, TTL patching).
//! - [`identify`]: source address → client group.
//! - [`identity`]: agent identity: TLS configuration, client certificates, bearer tokens.
//! - [`contain`]: rate limits, sinkholes and quarantines.
//! - [`policy`]: per-group allow/deny rules and block answers.
//! - [`detect`]: tunnel and exfiltration scoring.
//! - [`cache`]: the bounded answer cache.
//! - [`zones`]: local authoritative zones.
//! - [`upstream`]: forwarding to upstream resolvers.
//! - [`answer_check`]: policy checks on answers (CNAME chains).
//! - [`events`]: event types and the bounded event sink.
//! - [`metrics`]: metric names and the Prometheus endpoint.
//! - [`config`]: the TOML configuration composed of each stage's section.
//! - [`active_policy`]: the compiled, versioned policy that queries read.
//! - [`policy_store`]: policy versions on disk: history, diffs and exact rollback.
//! - [`admin`]: the admin HTTP endpoint (metrics, health).
//! - [`app`]: assembling a running server from a configuration.
#![warn(missing_docs)]

pub mod active_policy;
pub mod admin;
pub mod analyst;
pub mod answer_check;
pub mod api;
pub mod app;
pub mod audit;
pub mod cache;
pub mod clock;
pub mod config;
pub mod config_error;
pub mod contain;
pub mod control;
pub mod detect;
pub mod events;
pub mod identify;
pub mod identity;
pub mod metrics;
pub mod names;
pub mod overrides;
pub mod pipeline;
pub mod policy;
pub mod policy_store;
pub mod server;
pub mod upstream;
pub mod wire;
pub mod zones;

//! # dnsward
//!
//! A DNS security resolver for fleets of AI agents: each client group resolves only the names it
//! is allowed, every query is scored for tunneling and exfiltration, and every block, alert and
//! containment becomes an event a security team can review.
//!
//! ## Layout
//! Folders by concern, lower layers first; a module imports only from its own layer or below,
//! so there is no import circle between folders.
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | foundation | [`clock`], [`config_error`], [`names`], [`printable`], [`recall`], [`wire`], [`metrics`] | time, problem lists, name helpers, untrusted text made safe to show, per-thread recall of what a repeated name or client always works out the same, the DNS wire fast path, metric names and the recorder |
//! | identity | [`identity`] | who an agent is: TLS settings, verified client certificates (SPIFFE/DNS SAN), bearer tokens, the client key containment and detection use |
//! | events | [`events`] | event types, the bounded sink with rotation, the one event-log reader |
//! | detection | [`detect`] | tunnel and exfiltration scoring |
//! | containment | [`contain`] | rate limits, throttles, sinkholes, quarantines, exceptions in force |
//! | resolution | [`resolve`] | answer cache, local zones, upstream forwarder |
//! | policy | [`policy`] | groups and their rules, client identification, answer checks, the compiled policy |
//! | egress | [`egress`] | firewall sets fed by allowed answers (nftables), the ruleset, denied-connection events |
//! | serving | [`serve`] | UDP/TCP listeners and the pipeline that orders the query stages |
//! | governance | [`govern`] | policy store, reload/rollback control, audit chain |
//! | review | [`review`] | users and roles, triage of suspects, the review API and CLI |
//! | admin | [`admin`] | HTTP API, HTML overview, the review console, `/metrics` |
//! | composition | [`config`], [`app`] | the TOML file composed of each folder's section; start-up |
//! | command line | [`cli`] | subcommands and the analyst views |
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_error;
pub mod contain;
pub mod detect;
pub mod egress;
pub mod events;
pub mod govern;
pub mod identity;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod printable;
pub mod recall;
pub mod resolve;
pub mod resources;
pub mod review;
pub mod serve;
pub mod wire;

//! Governance: what changed, who changed it, and proof that the record is whole.
//!
//! - [`store`]: the versioned, content-addressed policy store (history, diffs, exact rollback).
//! - [`control`]: the policy lifecycle of a running server (load, reload, rollback).
//! - [`audit`]: the hash chain over the event log (chain, resume, verify, report).
//! - [`checkpoint`]: signed checkpoints of the log's head and tail, kept apart from the log.
//! - [`secret_file`]: who may read the admin token and the audit key.
//!
//! May import the foundation modules, `events`, `policy` (a compiled policy and its version) and
//! `serve` (control swaps the pipeline's policy). It does not import the composed `config`:
//! control loads configuration files through the [`control::ConfigLoader`] trait that
//! `config` implements, because `config` composes this folder's own sections (`[store]`,
//! `[audit]`) and a direct import would be a circle.

pub mod audit;
pub mod checkpoint;
pub mod control;
pub mod secret_file;
pub mod store;

//! Policy: who a client is and what its group may resolve.
//!
//! - [`deny_edit`]: the one edit dnsward makes to a configuration file: a domain added to a
//!   group's inline `deny` list, for a proposed policy version.
//! - [`group`]: one group's compiled rules (allow/deny lists, block answers, per-group detection
//!   settings) and the decision for a name.
//! - [`identify`]: source address → group (the client table).
//! - [`identities`]: verified agent identity (SPIFFE ID, DNS name, token subject) → group,
//!   exact or by `/*` prefix patterns.
//! - [`verdict`]: what the pipeline decided for a query, as a value with a stable name.
//! - [`answer_check`]: policy checks on answers (CNAME targets a group may not reach).
//! - [`active`]: the compiled, versioned [`ActivePolicy`](active::ActivePolicy) that each query
//!   reads once: groups, the client table, local zones and upstreams.
//!
//! May import: the foundation modules (`config_error`, `names`, `wire`, `metrics`), `resolve`
//! (zones and upstreams are part of a compiled policy) and `detect` (a group's detection
//! settings). Nothing here imports `serve`, `govern`, `admin`, `cli` or the composed `config`:
//! the policy is built from its own sections ([`active::PolicySections`]).

pub mod active;
pub mod answer_check;
pub mod deny_edit;
pub mod group;
pub mod identify;
pub mod identities;
pub mod verdict;

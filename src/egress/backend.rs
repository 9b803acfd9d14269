//! The firewall side: a [`SetBackend`] applies a batch of set operations atomically.
//!
//! [`NftBackend`] speaks the nftables JSON API (libnftables-json, `nft -j -f -`): one `nft`
//! process per *batch*, never per answer, and the kernel applies each batch as one transaction.
//! We build the few JSON objects we need (table, set, element) with `serde_json` instead of
//! pulling in the `nftables` crate, which does the same thing (spawns `nft -j`) behind a large
//! typed schema; netlink crates (`rustables`, `nftnl`) would avoid the process but need
//! libnftnl or are thinly maintained. The process cost (a few ms) is paid once per batch, off the
//! query path, and batches grow with load.
//!
//! Refreshing an element's timeout: `add element` leaves an existing element's timeout alone
//! (dnsmasq's `--nftset` never refreshes for that reason), so a refresh is `add` (creates it if
//! absent), `delete`, `add` with the new timeout, inside one transaction: packets never see the
//! address missing.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the table if it does not exist (adopt it otherwise: its contents stay).
    EnsureTable,
    /// Create a group's two sets if they do not exist.
    EnsureSets {
        /// The IPv4 set.
        v4: Arc<str>,
        /// The IPv6 set.
        v6: Arc<str>,
    },
    /// Empty and delete a group's two sets.
    DeleteSets {
        /// The IPv4 set.
        v4: Arc<str>,
        /// The IPv6 set.
        v6: Arc<str>,
    },
    /// Empty a group's two sets (when they cannot be deleted because a rule references them).
    FlushSets {
        /// The IPv4 set.
        v4: Arc<str>,
        /// The IPv6 set.
        v6: Arc<str>,
    },
    /// Add an address, or refresh its timeout.
    Element {
        /// The set (must match the address family).
        set: Arc<str>,
        /// The address.
        ip: IpAddr,
        /// Timeout in whole seconds.
        timeout_secs: u32,
    },
}

/// A backend could not apply a batch or list the sets.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The program could not be run.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{program} failed: {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its standard error.
        stderr: String,
    },
    /// Its output was not what the JSON API promises.
    #[error("unexpected output from nft: {0}")]
    Output(String),
}

/// One set as listed by [`SetBackend::list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetStatus {
    /// Set name.
    pub name: String,
    /// Elements in it.
    pub elements: usize,
    /// The element that expires first: address and seconds left.
    pub first_to_expire: Option<(String, u64)>,
    /// The element that expires last: address and seconds left.
    pub last_to_expire: Option<(String, u64)>,
}

/// Something that holds per-group address sets.
pub trait SetBackend: Send + Sync + fmt::Debug {
    /// Apply `ops` as one transaction: all or nothing.
    ///
    /// # Errors
    /// The batch was not applied.
    fn apply(&self, ops: &[Op]) -> Result<(), BackendError>;

    /// The sets in the table, with sizes and expiry extremes.
    ///
    /// # Errors
    /// The table cannot be read.
    fn list(&self) -> Result<Vec<SetStatus>, BackendError>;
}

/// nftables through `nft -j`.
#[derive(Debug, Clone)]
pub struct NftBackend {
    /// The `nft` program.
    program: PathBuf,
    /// Table family (`inet`).
    family: String,
    /// Table name.
    table: String,
}

impl NftBackend {
    /// A backend for table `family name`, running `program`.
    #[must_use]
    pub fn new(program: PathBuf, family: &str, table: &str) -> Self {
        Self {
            program,
            family: family.to_string(),
            table: table.to_string(),
        }
    }

    /// The JSON document for a batch.
    #[must_use]
    pub fn batch_json(&self, ops: &[Op]) -> Value {
        let (family, table) = (self.family.as_str(), self.table.as_str());
        let set = |name: &str, ty: &str| {
            json!({"set": {"family": family, "table": table, "name": name, "type": ty,
                          "flags": ["timeout"]}})
        };
        let set_ref = |name: &str| json!({"set": {"family": family, "table": table, "name": name}});
        let mut cmds = Vec::with_capacity(ops.len() * 3);
        for op in ops {
            match op {
                Op::EnsureTable => {
                    cmds.push(json!({"add": {"table": {"family": family, "name": table}}}));
                }
                Op::EnsureSets { v4, v6 } => {
                    cmds.push(json!({"add": set(v4, "ipv4_addr")}));
                    cmds.push(json!({"add": set(v6, "ipv6_addr")}));
                }
                Op::DeleteSets { v4, v6 } => {
                    for (name, ty) in [(v4, "ipv4_addr"), (v6, "ipv6_addr")] {
                        // `add` first so that deleting a set that is already gone is no error.
                        cmds.push(json!({"add": set(name, ty)}));
                        cmds.push(json!({"flush": set_ref(name)}));
                        cmds.push(json!({"delete": set_ref(name)}));
                    }
                }
                Op::FlushSets { v4, v6 } => {
                    for (name, ty) in [(v4, "ipv4_addr"), (v6, "ipv6_addr")] {
                        cmds.push(json!({"add": set(name, ty)}));
                        cmds.push(json!({"flush": set_ref(name)}));
                    }
                }
                Op::Element {
                    set,
                    ip,
                    timeout_secs,
                } => {
                    let val = ip.to_string();
                    let elem = |with_timeout: bool| {
                        let e = if with_timeout {
                            json!([{"elem": {"val": val, "timeout": timeout_secs}}])
                        } else {
                            json!([val])
                        };
                        json!({"element": {"family": family, "table": table, "name": &**set,
                                           "elem": e}})
                    };
                    cmds.push(json!({"add": elem(true)}));
                    cmds.push(json!({"delete": elem(false)}));
                    cmds.push(json!({"add": elem(true)}));
                }
            }
        }
        json!({ "nftables": cmds })
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, BackendError> {
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BackendError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .map_err(|source| BackendError::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| BackendError::Spawn {
                program: program.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            stderr.truncate(2000);
            Err(BackendError::Failed {
                program,
                stderr: stderr.trim().to_string(),
            })
        }
    }
}

impl SetBackend for NftBackend {
    fn apply(&self, ops: &[Op]) -> Result<(), BackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        let doc = self.batch_json(ops).to_string();
        self.run(&["-j", "-f", "-"], Some(doc.as_bytes())).map(drop)
    }

    fn list(&self) -> Result<Vec<SetStatus>, BackendError> {
        let out = self.run(&["-j", "list", "table", &self.family, &self.table], None)?;
        let doc: Value =
            serde_json::from_slice(&out).map_err(|e| BackendError::Output(e.to_string()))?;
        Ok(parse_sets(&doc))
    }
}

/// Sets and their elements from `nft -j list table …` output.
#[must_use]
pub fn parse_sets(doc: &Value) -> Vec<SetStatus> {
    let mut sets = Vec::new();
    for obj in doc["nftables"].as_array().into_iter().flatten() {
        let Some(set) = obj.get("set") else { continue };
        let name = set["name"].as_str().unwrap_or_default().to_string();
        let mut elements = 0;
        let mut first: Option<(String, u64)> = None;
        let mut last: Option<(String, u64)> = None;
        for e in set["elem"].as_array().into_iter().flatten() {
            elements += 1;
            // Elements with a timeout are objects; plain values have no expiry.
            let (val, expires) = match e.get("elem") {
                Some(inner) => (
                    inner["val"].as_str().unwrap_or_default().to_string(),
                    inner["expires"].as_u64(),
                ),
                None => (e.as_str().unwrap_or_default().to_string(), None),
            };
            let Some(expires) = expires else { continue };
            if first.as_ref().is_none_or(|(_, x)| expires < *x) {
                first = Some((val.clone(), expires));
            }
            if last.as_ref().is_none_or(|(_, x)| expires > *x) {
                last = Some((val, expires));
            }
        }
        sets.push(SetStatus {
            name,
            elements,
            first_to_expire: first,
            last_to_expire: last,
        });
    }
    sets
}

/// `dnsward egress status` as a table: one line per set.
#[must_use]
pub fn render_status(table: &str, sets: &[SetStatus]) -> String {
    use std::fmt::Write as _;
    let mut o = format!("table {table}: {} sets\n", sets.len());
    let _ = writeln!(
        o,
        "{:<32} {:>8}  {:<32} EXPIRES LAST",
        "SET", "ELEMENTS", "EXPIRES FIRST"
    );
    let show = |e: &Option<(String, u64)>| {
        e.as_ref()
            .map_or_else(|| "-".to_string(), |(ip, s)| format!("{ip} in {s}s"))
    };
    for s in sets {
        let _ = writeln!(
            o,
            "{:<32} {:>8}  {:<32} {}",
            s.name,
            s.elements,
            show(&s.first_to_expire),
            show(&s.last_to_expire)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_is_add_delete_add_in_one_document() {
        let b = NftBackend::new("nft".into(), "inet", "dnsward");
        let doc = b.batch_json(&[Op::Element {
            set: "allow4_agents".into(),
            ip: "198.18.0.1".parse().unwrap(),
            timeout_secs: 12,
        }]);
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0].get("add").is_some());
        assert!(cmds[1].get("delete").is_some());
        assert_eq!(
            cmds[2]["add"]["element"]["elem"][0]["elem"]["timeout"],
            json!(12)
        );
    }

    #[test]
    fn listing_output_is_summarised() {
        let doc: Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"set": {"family": "inet", "name": "allow4_agents", "table": "dnsward",
              "type": "ipv4_addr", "flags": ["timeout"], "elem": [
                {"elem": {"val": "198.18.0.1", "timeout": 30, "expires": 29}},
                {"elem": {"val": "198.18.0.2", "timeout": 30, "expires": 3}}]}},
            {"set": {"family": "inet", "name": "allow6_agents", "table": "dnsward",
              "type": "ipv6_addr", "flags": ["timeout"]}}]}"#,
        )
        .unwrap();
        let sets = parse_sets(&doc);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].elements, 2);
        assert_eq!(sets[0].first_to_expire, Some(("198.18.0.2".into(), 3)));
        assert_eq!(sets[0].last_to_expire, Some(("198.18.0.1".into(), 29)));
        assert_eq!(sets[1].elements, 0);
    }
}

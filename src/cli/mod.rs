//! The command line: subcommands of the `dnsward` binary and the analyst's terminal views.
//!
//! - [`analyst`]: `dnsward alerts` and `dnsward events tail` over the event log.
//!
//! May import anything in the library; nothing in the library imports it.

pub mod analyst;

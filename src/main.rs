//! The `dnsward` binary: parse the command line, start logging, hand over to [`dnsward::cli`],
//! where the subcommands live (and where `anyhow` is allowed: it is the binary's edge).

use std::process::ExitCode;

use clap::Parser as _;
use dnsward::cli::{Cli, init_logging, run};

/// `--features mimalloc`: mimalloc instead of glibc's malloc (see bench/results/issue13-memory.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    run(cli)
}

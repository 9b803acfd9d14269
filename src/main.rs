//! The `dnsward` binary: parse the command line, start logging, hand over to [`dnsward::cli`],
//! where the subcommands live (and where `anyhow` is allowed: it is the binary's edge).

use std::process::ExitCode;

use clap::Parser as _;
use dnsward::cli::{Cli, init_logging, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    run(cli)
}

//! The `node-cert-agent` command line: parse it, run the command, print
//! the whole error chain once, here, at the edge.

mod app;
mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => app::run(args),
        Command::Check(args) => Ok(app::check(&args)),
        Command::Renew(args) => app::renew(args),
        Command::Uninstall(args) => app::uninstall(args),
        Command::Status(args) => {
            // Scripts tell "unhealthy" (1) from "could not look" (2).
            return app::status(args).unwrap_or_else(|e| {
                app::report_error(&e);
                ExitCode::from(node_cert_agent::status::EXIT_STATUS_ERROR)
            });
        }
    };
    result.unwrap_or_else(|e| {
        app::report_error(&e);
        ExitCode::FAILURE
    })
}

//! The `node-cert-agent` command line: parse it, run the command, print
//! the whole error chain once, here, at the edge.

mod app;
mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};

fn main() -> ExitCode {
    // As a kubectl plugin (`kubectl node-cert fleet` through a
    // `kubectl-node_cert` link) the binary behaves the same; only help and
    // errors name it as kubectl does.
    let mut command = Cli::command();
    if std::env::args_os()
        .next()
        .is_some_and(|a| cli::invoked_as_kubectl_plugin(&a))
    {
        command = command
            .name("kubectl node-cert")
            .bin_name("kubectl node-cert");
    }
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run(args) => app::run(args),
        Command::Check(args) => Ok(app::check(&args)),
        Command::Renew(args) => app::renew(args),
        Command::Fleet(args) => return app::fleet(args),
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

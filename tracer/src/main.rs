//! `msitrace`: follows every MSI/MSI-X vector across suspend, hibernation and resume and says
//! when one diverged so that its device gets no more interrupts.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracer::cmd;

#[derive(Parser)]
#[command(name = "msitrace", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every hook: present on this kernel, attached, fallback used, and why not.
    Probes(cmd::probes::Args),
    /// Stream events to a trace file until Ctrl-C, SIGTERM or --duration.
    Record(cmd::record::Args),
    /// Print the events of a trace file as text or JSON Lines.
    Dump(cmd::dump::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probes(a) => cmd::probes::run(a),
        Command::Record(a) => cmd::record::run(a),
        Command::Dump(a) => cmd::dump::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, the outermost context first: what failed and what to do.
            eprintln!("msitrace: {e:#}");
            ExitCode::from(2)
        }
    }
}

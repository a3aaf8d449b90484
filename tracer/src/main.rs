//! `msitrace`: follows every MSI/MSI-X vector across suspend, hibernation and resume and says
//! when one diverged so that its device gets no more interrupts.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracer::cmd;
use tracer::color::ColorChoice;

#[derive(Parser)]
#[command(name = "msitrace", version, about, long_about = None)]
struct Cli {
    /// Colour in the TUI and in --help: auto (a terminal, NO_COLOR unset or empty, TERM not
    /// dumb), always or never. The text reports have none.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every hook: present on this kernel, attached, fallback used, and why not.
    Probes(cmd::probes::Args),
    /// Stream events to a trace file until Ctrl-C, SIGTERM or --duration.
    Record(cmd::record::Args),
    /// Record while CMD runs, wait for the resume to settle, report; exit 0 clean, 1 error (--fail-on), 2 unusable input or nothing proven.
    Verify(cmd::verify::Args),
    /// The systemd service: journal entries per divergence, sd_notify, a flight recorder.
    Daemon(cmd::daemon::Args),
    /// The TUI: every vector, its state and its divergences, live or (--replay) from a file.
    Live(cmd::live::Args),
    /// Diagnose vectors now, with no trace: genirq's view against the device's masks and messages; exit 0 clean, 1 finding (--fail-on), 2 unreadable.
    Check(cmd::check::Args),
    /// Print the events of a trace file as text or JSON Lines.
    Dump(cmd::dump::Args),
    /// Rebuild the state from a trace file and print the divergence report; exit 0 clean, 1 error (--fail-on), 2 unusable input or nothing proven.
    Replay(cmd::replay::Args),
    /// Write a trace file as Chrome trace-event JSON for Perfetto or chrome://tracing.
    Export(cmd::export::Args),
    /// One table across machines from their journals (systemd-journal-remote's): per kernel and rule, how many machines diverged, on which drivers and devices, first and last seen.
    Fleet(cmd::fleet::Args),
    /// Print the completion script for SHELL, e.g. `msitrace completions fish > ~/.config/fish/completions/msitrace.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages into a directory (`cargo xtask dist` packs them).
    #[command(hide = true)]
    Assets {
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
}

/// man/msitrace.1 and man/msitrace-<command>.1, from the same clap definition the binary
/// parses with: they cannot drift from it. The package's completions come from
/// `msitrace completions`, so that they are the ones a user would generate.
fn assets(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell`, from the clap definition the binary parses with.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "msitrace", &mut script);
    tracer::output::print_stdout(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

/// The command line, parsed. `--color` is looked for first: clap styles `--help` (bold
/// headings and flags) as it parses, and `--color never` or NO_COLOR must reach it too.
fn parse() -> Result<Cli, clap::Error> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let choice = ColorChoice::from_args(args.get(1..).unwrap_or_default()).unwrap_or_default();
    let styled = if choice.for_stdout() {
        clap::ColorChoice::Always
    } else {
        clap::ColorChoice::Never
    };
    let mut matches = Cli::command().color(styled).try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut Cli::command()))
}

/// A wrong flag gets one line, like every other error: clap's own message, its indented
/// continuation (the missing arguments) folded in, and where to look.
fn usage_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_string());
    }
    format!(
        "msitrace: {}; see `msitrace --help` or `msitrace COMMAND --help`",
        parts.join(" ")
    )
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", usage_error(&e));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Probes(a) => cmd::probes::run(a),
        Command::Record(a) => cmd::record::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Dump(a) => cmd::dump::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Fleet(a) => cmd::fleet::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Live(a) => cmd::live::run(a, cli.color.for_stdout()),
        Command::Daemon(a) => cmd::daemon::run(a),
        Command::Completions { shell } => completions(shell),
        Command::Assets { out } => assets(&out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, the outermost context first: what failed and what to do. A message
            // may quote a trace file or the kernel, hence terminal_safe.
            tracer::output::note(&tracer::output::terminal_safe(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

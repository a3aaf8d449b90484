//! `msitrace replay`: rebuild the state from a trace file with the same engine the live run
//! used, and print the divergence report (text, or `--json`). Exit 0 when no divergence
//! counts (by default: no error; `--fail-on warning`: none at all), 1 when one does, 2 on
//! unusable input or a report that proves nothing (no event read, no rule evaluable).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::engine::RuleTiming;
use crate::replayer::{DelayOverrides, replay_files};
use crate::report::FailOn;

#[derive(clap::Args)]
pub struct Args {
    /// Trace file written by `msitrace record`; several are read as one stream, in the order
    /// given; a directory stands for the daemon's flight-recorder files in it, oldest first.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub fail_on: FailOnArg,
}

/// `--fail-on`, shared by replay and verify so that both exit alike.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct FailOnArg {
    /// Which divergences make the exit code 1: `error` (default; warnings are listed but the
    /// run passes) or `warning` (any divergence, like -Werror).
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
}

/// The delays of the time-based rules, shared by record, verify, live and replay. A live run
/// takes the defaults for what is not given; a replay takes the recording's.
#[derive(clap::Args, Clone, Debug)]
pub struct TimingArgs {
    /// G5: seconds a vector that fired before suspend may stay silent after resume [default:
    /// 10 when recording; a replay uses the recording's].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = crate::duration::parse_delay_secs)]
    pub silence: Option<f64>,
    /// G1: seconds after resume a vector with an action may still be masked [default: 2 when
    /// recording; a replay uses the recording's].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = crate::duration::parse_delay_secs)]
    pub grace: Option<f64>,
}

fn ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

impl TimingArgs {
    /// What the user asked for, for a replay.
    pub fn overrides(&self) -> DelayOverrides {
        DelayOverrides {
            g5_silence_ns: self.silence.map(ns),
            g1_grace_ns: self.grace.map(ns),
        }
    }

    /// The delays of a live run: the defaults where nothing was given.
    pub fn timing(&self) -> RuleTiming {
        let d = RuleTiming::default();
        RuleTiming {
            g5_silence_ns: self.silence.map_or(d.g5_silence_ns, ns),
            g1_grace_ns: self.grace.map_or(d.g1_grace_ns, ns),
            ..d
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let replayed = replay_files(&args.files, args.timing.overrides())?;
    let report = replayed.report;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .context("cannot format the report as JSON")?;
        crate::output::print_stdout(&format!("{text}\n"))?;
    } else {
        crate::output::print_stdout(&crate::output::terminal_safe(&report.to_text()))?;
    }
    Ok(ExitCode::from(report.exit_code_for(args.fail_on.fail_on)))
}

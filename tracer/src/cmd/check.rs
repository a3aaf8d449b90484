//! `msitrace check`: read the machine's present MSI/MSI-X state (or a saved snapshot), print
//! the findings, exit like `replay`: 0 nothing that counts, 1 a finding that counts
//! (`--fail-on`), 2 nothing essential could be read.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::replay::FailOnArg;
use crate::check::{ReadOptions, Snapshot, analyse, read_snapshot};
use crate::output::{note, print_stdout, terminal_safe};

#[derive(clap::Args)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Check only this PCI function (e.g. 0000:03:00.0, or 03:00.0 in domain 0); repeatable.
    #[arg(long = "device", value_name = "BDF")]
    pub devices: Vec<String>,
    /// Seconds between two readings of /proc/interrupts, to see which vectors fire (C4);
    /// 0 reads once.
    #[arg(long, value_name = "SECS", default_value = "1",
          value_parser = super::duration::parse_delay_secs)]
    pub window: f64,
    /// Also write everything that was read to FILE (JSON), to attach to a bug report.
    #[arg(long, value_name = "FILE", conflicts_with = "from")]
    pub save: Option<PathBuf>,
    /// Analyse a snapshot written by `--save` instead of this machine.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub fail_on: FailOnArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let snapshot = match &args.from {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Snapshot::from_json(&text).with_context(|| format!("{}", path.display()))?
        }
        None => read_snapshot(&ReadOptions {
            devices: args.devices.clone(),
            window: Duration::from_secs_f64(args.window),
        })?,
    };
    if let Some(path) = &args.save {
        let text = serde_json::to_string_pretty(&snapshot)
            .context("cannot format the snapshot as JSON")?;
        std::fs::write(path, format!("{text}\n")).with_context(|| {
            format!(
                "cannot write the snapshot to {} (check the directory)",
                path.display()
            )
        })?;
    }
    let report = analyse(&snapshot);
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .context("cannot format the report as JSON")?;
        print_stdout(&format!("{text}\n"))?;
    } else {
        print_stdout(&terminal_safe(&report.to_text()))?;
    }
    if let Some(why) = &report.unusable {
        note(&terminal_safe(&format!("check: {why}")));
    }
    Ok(ExitCode::from(report.exit_code_for(args.fail_on.fail_on)))
}

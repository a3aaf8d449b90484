//! `msitrace check`: read the machine's present MSI/MSI-X state (or a saved snapshot), print
//! the findings, exit like `replay`: 0 nothing that counts, 1 a finding that counts
//! (`--fail-on`), 2 nothing essential could be read.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::replay::FailOnArg;
use crate::check::{ReadOptions, Snapshot, analyse, read_snapshot};
use crate::output::{note, print_stdout, terminal_safe};
use crate::private_file::{PrivateFile, io_error};

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
          value_parser = crate::duration::parse_delay_secs)]
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
    // A path that cannot be written fails before a second is spent reading the machine.
    if let Some(path) = &args.save {
        crate::private_file::check_target(path, &[])?;
    }
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
        // The shared creation path: never through a symlink, never half-written, 0600.
        let mut out = PrivateFile::create(path, &[])?;
        out.file_mut()
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|e| io_error(path, "write the snapshot to", e))?;
        out.persist()?;
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

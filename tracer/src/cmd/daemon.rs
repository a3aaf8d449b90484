//! `msitrace daemon`: the systemd service (see `daemon` for what it does). Flags win over
//! /etc/msitrace/msitrace.toml, which wins over the defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::replay::TimingArgs;
use crate::daemon::config::{FileConfig, KmsgLevel, LogTarget};

#[derive(clap::Args)]
pub struct Args {
    /// Settings file (default /etc/msitrace/msitrace.toml, optional).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the flight-recorder files go (default /var/lib/msitrace).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Size at which a flight-recorder file is closed and the next begun (default 64).
    #[arg(long, value_name = "MIB")]
    pub max_file_mib: Option<u64>,
    /// Flight-recorder files kept, the oldest deleted first (default 8).
    #[arg(long, value_name = "N")]
    pub max_files: Option<usize>,
    /// Ring buffer size in MiB, a power of two (default 16).
    #[arg(long, value_name = "MIB")]
    pub ring_mib: Option<u32>,
    /// Where handler counts come from: kernel (default; the kernel's own counters, no program
    /// on the per-interrupt path) or bpf (irq:irq_handler_entry; see `msitrace record --help`).
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub irq_counts: Option<crate::irq_counts::IrqCountMode>,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Where entries go: the journal when stderr is connected to it (auto), or always one.
    #[arg(long, value_enum, value_name = "TARGET")]
    pub log_target: Option<LogTarget>,
    /// No flight recorder: journal entries only.
    #[arg(long)]
    pub no_record: bool,
    /// Error-level findings also to the kernel log, rate-limited, for when the journal's disk
    /// or the shipper's network is the dead device (default error; never for --replay).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub kmsg: Option<KmsgLevel>,
    /// node_exporter's textfile directory, where msitrace.prom is rewritten (default
    /// /var/lib/prometheus/node-exporter). With --replay, the only place a replay writes it.
    #[arg(long, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,
    /// No metrics file.
    #[arg(long, conflicts_with = "metrics_dir")]
    pub no_metrics: bool,
    /// Write the entries for recorded trace files (or a flight-recorder directory) instead of
    /// the running kernel, then exit.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub replay: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let file = FileConfig::load(args.config.as_deref())?;
    let flags = FileConfig {
        state_dir: args.state_dir,
        max_file_mib: args.max_file_mib,
        max_files: args.max_files,
        ring_mib: args.ring_mib,
        irq_counts: args.irq_counts,
        silence_secs: args.timing.silence,
        grace_secs: args.timing.grace,
        log_target: args.log_target,
        record: args.no_record.then_some(false),
        kmsg: args.kmsg,
        metrics: args.no_metrics.then_some(false),
        metrics_dir: args.metrics_dir.clone(),
    };
    let cfg = file.merge(flags)?;
    if !args.replay.is_empty() {
        // The flags, not the settings file, override a replay's delays: the file configures
        // this machine's daemon, not the run that recorded the traces. So does its metrics
        // directory: a replay writes metrics only where --metrics-dir says.
        let nothing = crate::daemon::replay(
            &args.replay,
            &cfg,
            args.timing.overrides(),
            args.metrics_dir.as_deref(),
        )?;
        // Entries that evaluated nothing must not pass for a clean run in a pipeline.
        if let Some(why) = nothing.first() {
            crate::output::note(&crate::output::terminal_safe(&format!(
                "nothing proven: {why}"
            )));
            return Ok(ExitCode::from(2));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::daemon::run(&cfg))?;
    Ok(ExitCode::SUCCESS)
}

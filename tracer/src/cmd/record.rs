//! `msitrace record -o FILE`: stream every event to a trace file until Ctrl-C, SIGTERM or
//! `--duration`, saying live on stderr each divergence the engine finds.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    collector::CollectorOptions,
    engine::{Change, DivergenceUpdate},
    irq_counts::IrqCountMode,
    session::{Session, SessionOptions, StopReason},
};

#[derive(clap::Args)]
pub struct Args {
    /// Trace file to write (created 0600; an existing file is replaced).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "S", allow_negative_numbers = true,
          value_parser = crate::duration::parse_limit_secs)]
    pub duration: Option<f64>,
    /// Ring buffer size in MiB (a power of two): what survives while user space is frozen.
    #[arg(long, value_name = "MIB", default_value_t = tracer_common::DEFAULT_RING_BYTES >> 20,
          value_parser = crate::collector::parse_ring_mib)]
    pub ring_mib: u32,
    /// Where handler counts (G5's input) come from: kernel, the kernel's own counters read
    /// from /sys/kernel/irq (no program on the per-interrupt path); bpf, a program on
    /// irq:irq_handler_entry (107-277 ns per interrupt) that only adds counting across an IRQ
    /// descriptor freed and allocated again, and works without /sys/kernel/irq.
    #[arg(long, value_enum, value_name = "SOURCE", default_value_t = IrqCountMode::Kernel)]
    pub irq_counts: IrqCountMode,
    #[command(flatten)]
    pub timing: super::replay::TimingArgs,
    /// Do not print divergences as they are found.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn session_options(
    ring_mib: u32,
    irq_counts: IrqCountMode,
    timing: &super::replay::TimingArgs,
) -> Result<SessionOptions> {
    Ok(SessionOptions {
        collector: CollectorOptions {
            ring_bytes: ring_mib << 20,
            irq_counts,
        },
        timing: timing.timing(),
    })
}

/// One line per new divergence (and per escalation), as a tester would want on stderr.
pub fn print_update(u: &DivergenceUpdate) {
    let d = &u.divergence;
    let sev = serde_json::to_value(d.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let what = match u.change {
        Change::New => "",
        Change::Updated => " (updated)",
    };
    eprintln!("msitrace: {} {sev}{what}: {}", d.rule, d.meaning);
}

pub fn run(args: Args) -> Result<ExitCode> {
    // A path that cannot be written is said before the probes are attached.
    crate::private_file::check_target(&args.output, &[])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut session = Session::start(&session_options(args.ring_mib, args.irq_counts, &args.timing)?, Some(&args.output))?;
        let (attached, total) = session.collector().attached_count();
        eprintln!(
            "msitrace: recording to {} ({attached} of {total} hooks attached; `msitrace probes` says why not); Ctrl-C to stop",
            args.output.display()
        );
        let duration = args.duration;
        // A closed terminal (SIGHUP) ends the recording as Ctrl-C does, with its trailer,
        // instead of killing it with the last chunk unwritten.
        let mut hup = signal(SignalKind::hangup())?;
        let stop = async move {
            let limit = async {
                match duration {
                    Some(s) => {
                        tokio::time::sleep(Duration::from_secs_f64(s)).await;
                        StopReason::Duration
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = limit => r,
                _ = hup.recv() => StopReason::Signal("SIGHUP"),
            }
        };
        let quiet = args.quiet;
        let reason = session
            .run(stop, |_| false, |u| {
                if !quiet {
                    print_update(u)
                }
            })
            .await?;
        let outcome = session.finish()?;
        if !quiet {
            outcome.final_updates.iter().for_each(print_update);
        }
        eprintln!("msitrace: {}", outcome.closing_line(&reason, &args.output));
        // The recording's whole point is the file: one that stopped early is a failure, even
        // though the engine (and the lines above) went on to the end.
        if let Some(e) = &outcome.write_error {
            anyhow::bail!("{e}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

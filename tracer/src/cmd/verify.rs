//! `msitrace verify -- CMD…`: record while CMD runs (a suspend or hibernate cycle, or a test
//! that triggers one), wait for the resume to settle, print the report and exit like
//! `replay` — what testers of 915cff7f38c5 did by hand with /proc/interrupts, as one command.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};

use crate::{
    engine::Engine,
    irq_counts::IrqCountMode,
    report::Report,
    session::{Session, StopReason},
};

#[derive(clap::Args)]
pub struct Args {
    /// Give up waiting this many seconds after CMD started (the report is still printed).
    #[arg(long, value_name = "S", default_value_t = 300.0, allow_negative_numbers = true,
          value_parser = crate::duration::parse_limit_secs)]
    pub timeout: f64,
    /// Keep the trace in FILE (by default it is written to a temporary file and removed).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the report as JSON (the same object as `replay --json`).
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in MiB (a power of two).
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
    #[command(flatten)]
    pub fail_on: super::replay::FailOnArg,
    /// The command to run, e.g. `sh -c 'echo disk > /sys/power/state'`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Removes the temporary trace however `run` ends, an error or a failed print included: a
/// root-owned file per run must not pile up in /tmp.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(p) = &args.output {
        crate::private_file::check_target(p, &[])?;
    }
    let (path, temporary) = match &args.output {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("msitrace-verify-{}.trace", std::process::id())),
            true,
        ),
    };
    let _remove = temporary.then(|| RemoveOnDrop(path.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut session =
            Session::start(&super::record::session_options(args.ring_mib, args.irq_counts, &args.timing)?, Some(&path))?;
        let (attached, total) = session.collector().attached_count();
        eprintln!(
            "msitrace: {attached} of {total} hooks attached; running: {}",
            args.command.join(" ")
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout);
        let mut child = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .spawn()
            .with_context(|| format!("cannot run {}", args.command[0]))?;
        let print = |u: &crate::engine::DivergenceUpdate| super::record::print_update(u);

        let first = tokio::select! {
            r = session.run(async { let _ = child.wait().await; StopReason::Done }, |_| false, print) => Some(r?),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        // The select above only ends the recording loop; CMD's exit status is read here.
        let mut notes = Vec::new();
        let cmd_status = child.try_wait()?;
        if cmd_status.is_none() {
            let _ = child.start_kill();
            notes.push(match first {
                Some(StopReason::Signal(s)) => format!("stopped by {s} while {} was still running", args.command[0]),
                _ => format!(
                    "timed out after {} s while {} was still running; it was killed",
                    args.timeout, args.command[0]
                ),
            });
        }
        let reason = match first {
            Some(StopReason::Done) => {
                let settle = async {
                    tokio::time::sleep_until(deadline).await;
                    StopReason::Duration
                };
                session.run(settle, Engine::cycle_settled, print).await?
            }
            Some(r) => r,
            None => StopReason::Duration,
        };
        if reason == StopReason::Duration || !session.engine().cycle_settled() {
            notes.push(format!(
                "timed out after {} s waiting for the resume to settle: delayed rules may be unevaluated",
                args.timeout
            ));
        }
        let st = session.engine().state();
        // verify is there to check a sleep cycle: without one it proved nothing, whatever
        // the CPU and vector rules found clean.
        let no_cycle = (st.suspend_ts_ns.is_none() && st.epochs.is_empty()).then(|| {
            "no suspend or resume was observed while the command ran: only the CPU and vector \
             rules were checked; run a command that suspends (e.g. `systemctl suspend`)"
                .to_string()
        });
        let outcome = session.finish()?;
        outcome
            .final_updates
            .iter()
            .for_each(super::record::print_update);
        anyhow::Ok((outcome, cmd_status, notes, no_cycle))
    });
    let (outcome, cmd_status, mut notes, no_cycle) = result?;
    if let Some(s) = cmd_status
        && !s.success()
    {
        notes.push(format!("{} exited with {s}", args.command[0]));
    }
    let mut report = Report::from_engine(&outcome.engine).with_input_warnings(notes.clone());
    if let Some(why) = no_cycle {
        report = report.inconclusive(why);
    }
    let printed = if args.json {
        serde_json::to_string_pretty(&report.to_json())
            .context("cannot format the report as JSON")
            .and_then(|text| crate::output::print_stdout(&format!("{text}\n")))
    } else {
        crate::output::print_stdout(&crate::output::terminal_safe(&report.to_text()))
    };
    printed?;
    if !temporary {
        eprintln!("msitrace: trace kept in {}", path.display());
    }
    // A command that failed or never finished proves nothing about the cycle it was to run.
    if cmd_status.is_some_and(|s| !s.success()) || cmd_status.is_none() {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::from(report.exit_code_for(args.fail_on.fail_on)))
}

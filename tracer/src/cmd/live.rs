//! `msitrace live`: the TUI, on the running kernel or (`--replay`) on a recorded file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::irq_counts::IrqCountMode;

use super::replay::TimingArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Browse a recorded trace file (several: a rotated set, oldest first) instead of the
    /// running kernel.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["output", "ring_mib"])]
    pub replay: Vec<PathBuf>,
    /// With --replay: open at the start of the file, paused, instead of at its end.
    #[arg(long, requires = "replay")]
    pub from_start: bool,
    /// Also record to this trace file, as `msitrace record` does.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
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
    pub timing: TimingArgs,
}

/// `color`: whether the screen uses colours (`--color`, NO_COLOR); without, it keeps bold and
/// reverse video.
pub fn run(args: Args, color: bool) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if args.replay.is_empty() {
            let opts =
                super::record::session_options(args.ring_mib, args.irq_counts, &args.timing)?;
            crate::live::run_live(&opts, args.output.as_deref(), color).await
        } else {
            crate::live::run_replay(
                &args.replay,
                args.timing.overrides(),
                args.from_start,
                color,
            )
            .await
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

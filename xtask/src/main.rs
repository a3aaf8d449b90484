//! The jobs around the code: install what the build needs (`setup`), build everything
//! (`build`), run every test (`test`, what CI runs), the QEMU rig (`vm-test`, `demo`), and the
//! benchmarks (`bench`).

mod bench;
mod bench_host;
mod dist;
mod fuzz;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "msitrace's build, test and VM jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build needs (rust-src for nightly, bpf-linker); idempotent.
    Setup,
    /// Run every test: setup, fmt, clippy, the workspace's tests, then the QEMU guests.
    Test(test::TestArgs),
    /// Boot Debian kernels under QEMU and run the guest scenarios with msitrace inside.
    VmTest(vm::VmTestArgs),
    /// Boot the 6.12 guest, run a buggy-mode hibernation with msitrace recording, print the report.
    Demo(vm::DemoArgs),
    /// Build the Debian package (binary, unit, man pages, completions) and verify the unit.
    Dist(dist::DistArgs),
    /// Fuzz the trace-file reader and the BTF layout resolver for a bounded time (cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
    /// Replay throughput (events/s from the native file) and memory per vector; prints figures.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test(a) => test::run(a),
        Command::VmTest(a) => vm::vm_test(a),
        Command::Demo(a) => vm::demo(a),
        Command::Bench(a) => bench::run(a),
        Command::Dist(a) => dist::run(a),
        Command::Fuzz(a) => fuzz::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run and return stdout; an error with stderr when it exits non-zero.
pub(crate) fn run_output(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

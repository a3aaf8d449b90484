//! The jobs around the code: install what the build needs (`setup`), run every test (`test`,
//! what CI runs), the QEMU rig (`vm-test`, `demo`), the package (`dist`), fuzzing (`fuzz`),
//! the benchmarks (`bench`) and README.md's compatibility matrix (`matrix`).
//!
//! Every command that builds msitrace starts with the same idempotent setup: [`plan`] puts it
//! first and [`main`] runs exactly the plan's steps, so `--dry-run` prints what a real run
//! does and no command can forget the setup.

mod bench;
mod bench_host;
mod dist;
mod fuzz;
mod matrix;
mod setup;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

use anyhow::Result;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "msitrace's build, test and VM jobs")]
struct Cli {
    /// Print the steps the command would run, in order, and run none of them.
    #[arg(long, global = true)]
    dry_run: bool,
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
    /// Write README.md's compatibility matrix from the BTF fixtures and the last vm-test.
    Matrix(matrix::MatrixArgs),
    /// Judge recorded vm-test runs again, without booting: to compare two builds of the checks.
    Verdicts(vm::VerdictsArgs),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Setup => "setup",
            Command::Test(_) => "test",
            Command::VmTest(_) => "vm-test",
            Command::Demo(_) => "demo",
            Command::Dist(_) => "dist",
            Command::Fuzz(_) => "fuzz",
            Command::Bench(_) => "bench",
            Command::Matrix(_) => "matrix",
            Command::Verdicts(_) => "verdicts",
        }
    }

    /// Whether the command compiles msitrace (its eBPF programs need nightly, rust-src and
    /// bpf-linker). No wildcard arm: a new command has to answer.
    fn builds_msitrace(&self) -> bool {
        match self {
            // Verdicts runs a binary it is given (or the one already built).
            Command::Setup | Command::Verdicts(_) => false,
            Command::Test(_)
            | Command::VmTest(_)
            | Command::Demo(_)
            | Command::Dist(_)
            | Command::Fuzz(_)
            | Command::Bench(_)
            // The layouts come from the tracer library, run on the fixtures.
            | Command::Matrix(_) => true,
        }
    }
}

/// One step of a command's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// [`setup::run`]: install what is missing, leave what is there.
    Setup,
    /// The command's own work.
    Work,
}

/// The steps a command runs, in order: the setup first for every command that builds.
fn plan(cmd: &Command) -> Vec<Step> {
    match cmd {
        Command::Setup => vec![Step::Setup],
        c if c.builds_msitrace() => vec![Step::Setup, Step::Work],
        _ => vec![Step::Work],
    }
}

fn work(command: Command) -> Result<()> {
    match command {
        Command::Setup => Ok(()),
        Command::Test(a) => test::run(a),
        Command::VmTest(a) => vm::vm_test(a),
        Command::Demo(a) => vm::demo(a),
        Command::Bench(a) => bench::run(a),
        Command::Dist(a) => dist::run(a),
        Command::Fuzz(a) => fuzz::run(a),
        Command::Matrix(a) => matrix::run(a),
        Command::Verdicts(a) => vm::verdicts(a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let steps = plan(&cli.command);
    let name = cli.command.name();
    if cli.dry_run {
        for (i, step) in steps.iter().enumerate() {
            let what = match step {
                Step::Setup => setup::SUMMARY.to_string(),
                Step::Work => format!("{name}: the command's own work"),
            };
            println!("step {}: {what}", i + 1);
        }
        return ExitCode::SUCCESS;
    }
    let mut command = Some(cli.command);
    let result = steps.iter().try_for_each(|step| match step {
        Step::Setup => setup::run(),
        Step::Work => command.take().map_or(Ok(()), work),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask bench`: run the benchmarks (tracer/benches/replay.rs: events per second from
//! the native trace file and bytes per vector; render.rs: a TUI frame with 10,000 vectors) and
//! print their figures next to the targets. It prints; it never fails on a time (a loaded
//! machine is not a broken build).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only print the figures, skip divan's statistical runs.
    #[arg(long)]
    pub figures_only: bool,
}

/// tracer/benches/<name>.rs, each printing `figure:` lines.
const BENCHES: [&str; 2] = ["replay", "render"];

pub fn run(args: BenchArgs) -> Result<()> {
    let mut figures = Vec::new();
    for bench in BENCHES {
        let found = run_bench(bench, args.figures_only)?;
        if found.is_empty() {
            bail!("the {bench} benchmark printed no figures: is tracer/benches/{bench}.rs intact?");
        }
        figures.extend(found);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nxtask: benchmark figures (load average {}):",
        load.split_whitespace().next().unwrap_or("?")
    );
    for f in &figures {
        println!("  {f}");
    }
    Ok(())
}

fn run_bench(bench: &str, figures_only: bool) -> Result<Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "tracer", "--bench", bench, "--"]);
    if figures_only {
        // A filter that matches no divan benchmark: the figures are printed before divan runs.
        cmd.arg("no-divan-benchmark");
    }
    println!("xtask: cargo bench -p tracer --bench {bench}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo bench")?;
    let stdout = child.stdout.take().context("cargo bench has no stdout")?;
    let mut figures = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo bench's output")?;
        println!("{line}");
        if let Some(f) = line.strip_prefix("figure: ") {
            figures.push(f.to_string());
        }
    }
    let status = child.wait().context("cargo bench did not finish")?;
    if !status.success() {
        bail!("`cargo bench -p tracer --bench {bench}` failed ({status})");
    }
    Ok(figures)
}

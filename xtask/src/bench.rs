//! `cargo xtask bench`: run the replay benchmark (tracer/benches/replay.rs) and print its
//! figures — events per second from the native trace file and bytes per vector — next to the
//! targets. It prints; it never fails on a time (a loaded machine is not a broken build).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only print the figures, skip divan's statistical runs.
    #[arg(long)]
    pub figures_only: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "tracer", "--bench", "replay", "--"]);
    if args.figures_only {
        // A filter that matches no divan benchmark: the figures are printed before divan runs.
        cmd.arg("no-divan-benchmark");
    }
    println!("xtask: cargo bench -p tracer --bench replay");
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
        bail!("`cargo bench -p tracer --bench replay` failed ({status})");
    }
    if figures.is_empty() {
        bail!("the replay benchmark printed no figures: is tracer/benches/replay.rs intact?");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nxtask: replay benchmark figures (load average {}):",
        load.split_whitespace().next().unwrap_or("?")
    );
    for f in &figures {
        println!("  {f}");
    }
    Ok(())
}

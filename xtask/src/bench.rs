//! `cargo xtask bench`: run the benchmarks (tracer/benches/replay.rs: events per second from
//! the native trace file and bytes per vector; render.rs: a TUI frame with 10,000 vectors),
//! then measure the release binary on this kernel (`bench_host`: in-kernel cost per event
//! against bpftrace, the daemon's memory and idle CPU), add the guests' per-program costs from
//! the last `vm-test`, print one table and write it to target/bench/figures.json. It prints;
//! it never fails on a time (a loaded machine is not a broken build).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench_host;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only print the figures, skip divan's statistical runs.
    #[arg(long)]
    pub figures_only: bool,
    /// Seconds the idle daemon is watched for its CPU use.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_secs: u64,
}

/// tracer/benches/<name>.rs, each printing `figure:` lines.
const BENCHES: [&str; 2] = ["replay", "render"];

pub fn run(args: BenchArgs) -> Result<()> {
    let repo = crate::util::repo_root();
    let out = repo.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let workload = out.join("workload-10000-vectors.msit");
    let mut figures = Vec::new();
    for bench in BENCHES {
        let found = run_bench(bench, args.figures_only, &workload)?;
        if found.is_empty() {
            bail!("the {bench} benchmark printed no figures: is tracer/benches/{bench}.rs intact?");
        }
        figures.extend(found);
    }

    let cargo = crate::util::cargo();
    println!("xtask: cargo build --release -p tracer");
    if !Command::new(cargo)
        .args(["build", "--release", "-p", "tracer"])
        .current_dir(&repo)
        .status()?
        .success()
    {
        bail!("`cargo build --release -p tracer` failed");
    }
    let bin = repo.join("target/release/msitrace");
    let mut table: Vec<(String, String)> = figures
        .iter()
        .map(|f| match f.split_once(": ") {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (f.clone(), String::new()),
        })
        .collect();
    let mut json_out = json!({ "figures": figures });

    println!(
        "xtask: in-kernel cost per event, msitrace and bpftrace on the same hook (5 s of disk load)"
    );
    match bench_host::kernel_costs(&bin) {
        Ok(v) => {
            table.push((
                format!("in-kernel cost, {}", v["hook"].as_str().unwrap_or("?")),
                format!(
                    "msitrace {:.0} ns/event ({} events), bpftrace {:.0} ns/event ({} events): ratio {:.2} (target <= 0.5)",
                    v["msitrace_ns_per_event"].as_f64().unwrap_or(0.0),
                    v["msitrace_events"],
                    v["bpftrace_ns_per_event"].as_f64().unwrap_or(0.0),
                    v["bpftrace_events"],
                    v["ratio"].as_f64().unwrap_or(0.0)
                ),
            ));
            for p in v["msitrace_programs"].as_array().into_iter().flatten() {
                table.push((
                    format!("  msitrace {} (host)", p["probe"].as_str().unwrap_or("?")),
                    format!("{} ns/event over {} runs", p["ns_per_event"], p["runs"]),
                ));
            }
            json_out["kernel_cost"] = v;
        }
        Err(e) => table.push((
            "in-kernel cost vs bpftrace".into(),
            format!("not measured: {e:#}"),
        )),
    }
    match guest_costs(&repo) {
        Some((rows, v)) => {
            table.extend(rows);
            json_out["guest_kprobe_costs"] = v;
        }
        None => table.push((
            "kprobe costs in the guests".into(),
            "not measured: run `cargo xtask vm-test` first (it writes vm-work/out/kprobe-costs.json)".into(),
        )),
    }
    match bench_host::daemon_rss(&bin, &workload) {
        Ok(b) => {
            table.push((
                "daemon peak RSS, 10,000 vectors (daemon --replay of the workload)".into(),
                format!("{:.1} MiB (target <= 32 MiB)", b as f64 / (1 << 20) as f64),
            ));
            json_out["daemon_rss_bytes"] = json!(b);
        }
        Err(e) => table.push(("daemon peak RSS".into(), format!("not measured: {e:#}"))),
    }
    println!("xtask: the live daemon, idle, for {} s", args.idle_secs);
    match bench_host::daemon_idle_cpu(&bin, args.idle_secs) {
        Ok(pct) => {
            table.push((
                format!("daemon CPU, idle, over {} s", args.idle_secs),
                format!("{pct:.3} % of one CPU (target <= 0.1 %)"),
            ));
            json_out["daemon_idle_cpu_percent"] = json!(pct);
        }
        Err(e) => table.push(("daemon idle CPU".into(), format!("not measured: {e:#}"))),
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    json_out["load_average"] = json!(load);
    println!("\nxtask: benchmark figures (load average {load}):");
    for (k, v) in &table {
        println!("  {k}: {v}");
    }
    let path = out.join("figures.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json_out)?)?;
    println!("xtask: written to {}", path.display());
    Ok(())
}

/// The guests' per-program costs from the last vm-test (the kprobes only run there).
fn guest_costs(repo: &Path) -> Option<(Vec<(String, String)>, Value)> {
    let work = std::env::var_os("MSITRACE_VM_WORK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("vm-work"));
    let path = work.join("out/kprobe-costs.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let when = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| format!("{:.0} min ago", d.as_secs_f64() / 60.0))
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (kernel, progs) in v["kernels"].as_object()? {
        for (p, c) in progs.as_object()? {
            rows.push((
                format!("  msitrace {p} (guest {kernel}, TCG)"),
                format!("{} ns/event over {} runs", c["ns_per_event"], c["runs"]),
            ));
        }
    }
    rows.insert(
        0,
        (
            "kprobe costs in the guests (last vm-test, emulated ns)".into(),
            format!("{} ({when})", path.display()),
        ),
    );
    Some((rows, v))
}

fn run_bench(bench: &str, figures_only: bool, keep: &Path) -> Result<Vec<String>> {
    let cargo = crate::util::cargo();
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "tracer", "--bench", bench, "--"])
        .env("MSITRACE_BENCH_KEEP", keep);
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

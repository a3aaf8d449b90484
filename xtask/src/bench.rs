//! `cargo xtask bench`: run the benchmarks (tracer/benches/replay.rs: events per second from
//! the native trace file and bytes per vector; render.rs: a TUI frame with 10,000 vectors),
//! then measure the release binary on this kernel (`bench_host`: in-kernel cost per event
//! against bpftrace, the live daemon's idle CPU, wake-ups and memory), add the guests'
//! per-program costs from the last `vm-test`, print one table and write it to
//! target/bench/figures.json. It prints; it never fails on a time (a loaded machine is not a
//! broken build). The machine is shared, so comparisons run interleaved, several times, and
//! print median [min–max], with the load average at start and end.

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

/// Rounds of the msitrace-vs-bpftrace comparison (each runs both at once, 5 s).
const KERNEL_ROUNDS: usize = 3;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// "median [min–max]" of `v`, with `prec` decimals.
fn spread(v: &[f64], prec: usize) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.last()) {
        (Some(lo), Some(hi)) => format!("{:.prec$} [{lo:.prec$}–{hi:.prec$}]", v[v.len() / 2]),
        _ => "no runs".into(),
    }
}

/// What a figure can be compared with: `ratio` figures hold between machines, `absolute`
/// ones only on this machine under this load, `exact` ones are the same everywhere.
fn kind_of(figure: &str) -> &'static str {
    if figure.contains("[exact") {
        "exact"
    } else if figure.contains("[ratio") {
        "ratio"
    } else {
        "absolute"
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let repo = crate::util::repo_root();
    let out = repo.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let load_start = loadavg();
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
    // (figure, value, kind)
    let mut table: Vec<(String, String, &str)> = figures
        .iter()
        .map(|f| {
            let kind = kind_of(f);
            let f = f
                .split(" [exact")
                .next()
                .unwrap_or(f)
                .split(" [absolute")
                .next()
                .unwrap_or(f);
            match f.split_once(": ") {
                Some((k, v)) => (k.to_string(), v.to_string(), kind),
                None => (f.to_string(), String::new(), kind),
            }
        })
        .collect();
    let mut json_out = json!({ "figures": figures });

    println!(
        "xtask: in-kernel cost per event, msitrace and bpftrace on the same hook at once (5 s of disk load), {KERNEL_ROUNDS} rounds"
    );
    let mut rounds = Vec::new();
    let mut last_err = None;
    for _ in 0..KERNEL_ROUNDS {
        match bench_host::kernel_costs(&bin) {
            Ok(v) => rounds.push(v),
            Err(e) => last_err = Some(e),
        }
    }
    if let Some(v) = rounds.last() {
        let col = |k: &str| -> Vec<f64> { rounds.iter().filter_map(|r| r[k].as_f64()).collect() };
        table.push((
            format!(
                "in-kernel cost, {}, msitrace / bpftrace",
                v["hook"].as_str().unwrap_or("?")
            ),
            format!(
                "ratio {} over {} rounds (target <= 0.5)",
                spread(&col("ratio"), 2),
                rounds.len()
            ),
            "ratio",
        ));
        table.push((
            "  ns per event".into(),
            format!(
                "msitrace {}, bpftrace {}",
                spread(&col("msitrace_ns_per_event"), 0),
                spread(&col("bpftrace_ns_per_event"), 0)
            ),
            "absolute",
        ));
        for p in v["msitrace_programs"].as_array().into_iter().flatten() {
            table.push((
                format!(
                    "  msitrace {} (host, last round)",
                    p["probe"].as_str().unwrap_or("?")
                ),
                format!("{} ns/event over {} runs", p["ns_per_event"], p["runs"]),
                "absolute",
            ));
        }
        json_out["kernel_cost_rounds"] = json!(rounds);
    } else if let Some(e) = last_err {
        table.push((
            "in-kernel cost vs bpftrace".into(),
            format!("not measured: {e:#}"),
            "ratio",
        ));
    }
    match guest_stream(&repo) {
        Ok((rows, v)) => {
            table.extend(rows.into_iter().map(|(k, v)| (k, v, "ratio")));
            json_out["guest_stream_vs_bpftrace"] = v;
        }
        Err(why) => table.push((
            "streaming path in the guests, msitrace / bpftrace".into(),
            why,
            "ratio",
        )),
    }
    match guest_costs(&repo) {
        Some((rows, v)) => {
            table.extend(rows.into_iter().map(|(k, v)| (k, v, "absolute")));
            json_out["guest_kprobe_costs"] = v;
        }
        None => table.push((
            "kprobe costs in the guests".into(),
            "not measured: run `cargo xtask vm-test` first (it writes vm-work/out/kprobe-costs.json)".into(),
            "absolute",
        )),
    }
    match bench_host::daemon_rss(&bin, &workload) {
        Ok(b) => {
            table.push((
                "daemon --replay peak RSS, 10,000 vectors".into(),
                format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
                "absolute",
            ));
            json_out["daemon_replay_rss_bytes"] = json!(b);
        }
        Err(e) => table.push((
            "daemon --replay peak RSS".into(),
            format!("not measured: {e:#}"),
            "absolute",
        )),
    }
    println!("xtask: the live daemon, idle, for {} s", args.idle_secs);
    match bench_host::live_daemon(&bin, args.idle_secs) {
        Ok(v) => {
            let col = |k: &str| -> Vec<f64> {
                v[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_f64)
                    .collect()
            };
            let mib = |k: &str| v["memory_kib"][k].as_f64().unwrap_or(0.0) / 1024.0;
            let secs = v["seconds"].as_f64().unwrap_or(0.0);
            table.push((
                format!("live daemon CPU, idle, over {secs:.0} s"),
                format!(
                    "{:.3} % of one CPU; per {}-s window {} (target <= 0.02 %)",
                    v["cpu_percent"].as_f64().unwrap_or(0.0),
                    args.idle_secs / 6,
                    spread(&col("cpu_percent_windows"), 3)
                ),
                "absolute",
            ));
            table.push((
                "live daemon wake-ups, idle".into(),
                format!(
                    "{:.2}/s, {} thread(s); per window {} (target <= 2)",
                    v["wakeups_per_s"].as_f64().unwrap_or(0.0),
                    v["threads"],
                    spread(&col("wakeups_per_s_windows"), 2)
                ),
                "absolute",
            ));
            let ring = mib("ring");
            table.push((
                "live daemon memory, steady".into(),
                format!(
                    "{:.1} MiB resident (target <= ring + 16 = {:.1} MiB): ring {ring:.1}, heap (engine, buffers) {:.1}, code {:.1}, stacks {:.1}, other {:.1}; RSS {:.1} MiB counts the ring's pages twice; start-up peak {:.1} MiB (parsing {:.1} MiB of vmlinux BTF, freed after attach)",
                    mib("resident"),
                    ring + 16.0,
                    mib("heap"),
                    mib("code"),
                    mib("stacks"),
                    mib("other"),
                    mib("rss"),
                    v["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    v["btf_vmlinux_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
                ),
                "absolute",
            ));
            json_out["live_daemon"] = v;
        }
        Err(e) => table.push((
            "live daemon (idle CPU, wake-ups, memory)".into(),
            format!("skipped: {e:#}"),
            "absolute",
        )),
    }

    let load_end = loadavg();
    json_out["load_average"] = json!({ "start": load_start, "end": load_end });
    json_out["table"] = json!(
        table
            .iter()
            .map(|(k, v, kind)| json!({ "figure": k, "value": v, "kind": kind }))
            .collect::<Vec<_>>()
    );
    println!(
        "\nxtask: benchmark figures (load average {load_start} at start, {load_end} at end; ratio = comparable between machines, absolute = this machine and load only, exact = the same everywhere):"
    );
    for (k, v, kind) in &table {
        println!("  [{kind}] {k}: {v}");
    }
    let path = out.join("figures.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json_out)?)?;
    println!("xtask: written to {}", path.display());
    Ok(())
}

fn vm_work(repo: &Path) -> std::path::PathBuf {
    crate::vm::resolve_work_dir(None, repo)
}

/// The guests' streaming-path comparison with bpftrace from the newest vm-test that ran it
/// (the kprobes and vector tracepoints can be driven only there), or what to run to get one.
fn guest_stream(repo: &Path) -> Result<(Vec<(String, String)>, Value), String> {
    let work = vm_work(repo);
    stream_rows(&work.join(crate::vm::STREAM_RECORD), &work)
}

fn stream_rows(path: &Path, work: &Path) -> Result<(Vec<(String, String)>, Value), String> {
    let missing = || {
        format!(
            "not measured: no comparison recorded in {} (`cargo xtask vm-test --work-dir {} --kernel 6.12 --only stream` makes one)",
            path.display(),
            work.display()
        )
    };
    let text = std::fs::read_to_string(path).map_err(|_| missing())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let age = v["recorded_unix"]
        .as_u64()
        .and_then(|t| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some(format!(
                "{:.0} min ago",
                now.saturating_sub(t) as f64 / 60.0
            ))
        })
        .unwrap_or_else(|| "at an unknown time".into());
    let mut rows = vec![(
        format!(
            "streaming path in the guests (vm-test, guest {}, {}: ratios only)",
            v["kernel"].as_str().unwrap_or("?"),
            // Records from before the step counted instructions timed the emulator.
            v["guest_clock"].as_str().unwrap_or("TCG, wall time")
        ),
        format!("recorded {age} from {}", v["step"].as_str().unwrap_or("?")),
    )];
    for l in v["comparison"]["lines"].as_array().into_iter().flatten() {
        rows.push((
            format!("  {}", l["figure"].as_str().unwrap_or("?")),
            l["value"].as_str().unwrap_or("?").to_string(),
        ));
    }
    if rows.len() == 1 {
        return Err(format!("{} holds no figures", path.display()));
    }
    Ok((rows, v))
}

/// The guests' per-program costs from the last vm-test (the kprobes only run there).
fn guest_costs(repo: &Path) -> Option<(Vec<(String, String)>, Value)> {
    let work = vm_work(repo);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_comparison_is_read_from_vm_tests_record_or_said_missing() {
        // What vm-test wrote after the run of tests/fixtures/vm/6.12-stream.fixed.
        let repo = crate::util::repo_root();
        let record = repo.join("tests/fixtures/vm/stream-vs-bpftrace.json");
        let (rows, v) = stream_rows(&record, Path::new("/vm-work")).unwrap();
        assert!(rows[0].0.contains("guest 6.12, TCG"), "{rows:?}");
        assert!(rows[0].1.contains("stream.fixed"), "{rows:?}");
        assert_eq!(
            rows[1],
            (
                "  per event by each program's median run, guest instructions counted on its own vCPU, msitrace / bpftrace".to_string(),
                "0.44 [0.44–0.44] over 6 passes (target <= 0.5)".to_string()
            )
        );
        assert_eq!(rows.len(), 12);
        assert_eq!(v["kernel"], "6.12");
        let why =
            stream_rows(Path::new("/nonexistent/stream.json"), Path::new("/vm-work")).unwrap_err();
        assert!(
            why.contains("--work-dir /vm-work --kernel 6.12 --only stream"),
            "{why}"
        );
    }
}

//! `cargo xtask fuzz`: the cargo-fuzz targets (fuzz/), each for a bounded time, seeded from
//! tests/fuzz-corpus/<target>/ (kept in git) with the inputs libFuzzer finds going to
//! fuzz/corpus/<target>/ (not kept). A crash leaves its input in fuzz/artifacts/<target>/ and
//! fails the run; so does an input that reads in more than linear work, more than 1 s per MiB
//! or more than 64 MiB held (the targets assert these). Not part of CI: it needs minutes to
//! be worth anything.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, bail};

use crate::setup::NIGHTLY;

const TARGETS: [&str; 2] = ["trace_reader", "btf_layout"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub seconds: u64,
    /// Only this target (trace_reader, btf_layout).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
}

fn ensure_cargo_fuzz() -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    println!("fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    if !Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()?
        .success()
    {
        bail!("could not install cargo-fuzz: see cargo's output above");
    }
    Ok(())
}

/// The eBPF object the last build of tracer made: the fuzz build embeds it rather than
/// building it again under the sanitizer's flags.
fn ebpf_object(repo: &Path) -> Result<PathBuf> {
    let cargo = crate::util::cargo();
    if !Command::new(cargo)
        .args(["build", "-p", "tracer"])
        .current_dir(repo)
        .status()?
        .success()
    {
        bail!("`cargo build -p tracer` failed");
    }
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for profile in ["debug", "release"] {
        let Ok(dirs) = std::fs::read_dir(repo.join("target").join(profile).join("build")) else {
            continue;
        };
        for d in dirs.filter_map(|e| e.ok()) {
            let obj = d.path().join("out/tracer");
            if d.file_name().to_string_lossy().starts_with("tracer-")
                && let Ok(m) = std::fs::metadata(&obj).and_then(|m| m.modified())
                && best.as_ref().is_none_or(|(t, _)| m > *t)
            {
                best = Some((m, obj));
            }
        }
    }
    best.map(|(_, p)| p).context(
        "no eBPF object under target/*/build/tracer-*/out: did `cargo build -p tracer` build it?",
    )
}

pub fn run(args: FuzzArgs) -> Result<()> {
    let repo = crate::util::repo_root();
    ensure_cargo_fuzz()?;
    let object = ebpf_object(&repo)?;
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "unknown fuzz target `{t}`: use one of {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let mut failed = Vec::new();
    for t in targets {
        let work = repo.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&work)?;
        let seeds = repo.join("tests/fuzz-corpus").join(t);
        println!("fuzz: {t} for {} s", args.seconds);
        let ok = Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args(["fuzz", "run", t])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            // The targets check time and memory per input themselves (issue #18: 1 s per
            // MiB, 64 MiB held); these are the backstops for what they cannot see: a hang
            // (libFuzzer's timeout) and a single allocation past 64 MiB. RSS includes the
            // sanitizer's shadow memory, so its limit stays loose.
            .args([
                "-timeout=10",
                "-rss_limit_mb=2048",
                "-malloc_limit_mb=64",
                "-print_final_stats=1",
            ])
            .env("MSITRACE_EBPF_OBJECT", &object)
            .current_dir(&repo)
            .status()
            .context("cannot run cargo fuzz")?
            .success();
        if !ok {
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzzing found crashes in {}: the inputs are in fuzz/artifacts/<target>/ (add each as a regression test, then fix)",
            failed.join(", ")
        );
    }
    println!("fuzz: no crash");
    Ok(())
}

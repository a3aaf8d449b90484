//! The verdicts over runs already recorded: `vm-test`'s judgement replayed on a work
//! directory's `out/<abi>/run-<n>/` without booting anything. A refactoring of the checks must
//! give the same verdict on the same outputs; this prints every verdict in a stable form so two
//! builds of the checks can be compared on real guest outputs.
//!
//! ```text
//! cargo xtask verdicts --out vm-work/out --bin target/debug/msitrace > verdicts.txt
//! ```
//!
//! The artifacts are copied to a temporary directory first: the checks write beside them
//! (replay.json, live-last-frame.txt) and the recorded runs stay as they were.

use anyhow::{Context, Result};
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    checks::{self, StepInput, Verdict},
    g5_silence_s,
    kernel::abi_at_least,
    msitrace::Msitrace,
    plan::{Front, Mode, Scenario, Step},
};

/// The G5 window the run recorded with (`vmt.g5silence=`): its buggy steps stopped recording
/// that long after the resume, so a longer one would find no silence to judge.
fn g5_silence(cmdline: &str, steps: &[Step]) -> u64 {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("vmt.g5silence=")?.parse().ok())
        .unwrap_or_else(|| g5_silence_s(steps))
}

/// The steps the run's kernel command line planned (`vmt.plan=hibernate.buggy.live,...`).
fn planned(cmdline: &str) -> Vec<Step> {
    let Some(plan) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("vmt.plan="))
    else {
        return Vec::new();
    };
    plan.split(',')
        .filter_map(|item| {
            let mut it = item.split('.');
            let scenario = Scenario::from_name(it.next()?)?;
            let mode = match it.next()? {
                "fixed" => Mode::Fixed,
                "buggy" => Mode::Buggy,
                "opaque" => Mode::Opaque,
                _ => return None,
            };
            let front = match it.next().unwrap_or("record") {
                "record" => Front::Record,
                "live" => Front::Live,
                "daemon" => Front::Daemon,
                "service" => Front::Service,
                "verify" => Front::Verify,
                _ => return None,
            };
            Some(Step::new(scenario, mode).with(front))
        })
        .collect()
}

fn show(out: &mut String, what: &str, v: &Verdict) {
    let _ = writeln!(out, "{what}: {}", if v.pass() { "pass" } else { "FAIL" });
    for f in &v.failures {
        let _ = writeln!(out, "  failure: {f}");
    }
    for f in &v.facts {
        let _ = writeln!(out, "  fact: {f}");
    }
}

/// Every verdict of one recorded run (`out/<abi>/run-<n>`).
fn judge_recorded_run(run: &Path, abi: &str, m: &Msitrace, scratch: &Path) -> String {
    let mut out = String::new();
    let _ = fs::remove_dir_all(scratch);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(run)
        .arg(scratch)
        .status()
        .is_ok_and(|s| s.success());
    assert!(copied, "cannot copy {}", run.display());
    let art = scratch.join("artifacts");
    let e1000e = fs::read_to_string(art.join("e1000e")).ok();
    let e1000e = e1000e.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let cmdline = fs::read_to_string(art.join("cmdline")).unwrap_or_default();
    let steps = planned(&cmdline);
    let g5_silence_s = g5_silence(&cmdline, &steps);
    show(
        &mut out,
        "probes",
        &checks::check_probes(&art.join("probes.json")),
    );
    if super::plan::boots_systemd(&steps) {
        show(
            &mut out,
            "service",
            &checks::check_service(&art.join("service"), m),
        );
    }
    for step in steps {
        let dir = art.join(step.id());
        let v = checks::check_step(&StepInput {
            step,
            dir: &dir,
            e1000e,
            msitrace: Some(m),
            g5_silence_s,
            tty1: &scratch.join("tty1.log"),
            h4_gated_off: abi_at_least(abi, 6, 17),
        });
        show(&mut out, &step.plan_item(), &v);
    }
    out
}

#[derive(clap::Args)]
pub struct VerdictsArgs {
    /// A vm-test output directory (<vm-work>/out), read only.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The msitrace binary the checks run (replay, dump) [default: target/debug/msitrace].
    #[arg(long, value_name = "FILE")]
    pub bin: Option<PathBuf>,
}

/// Every recorded run's verdicts, printed in a stable form.
pub fn run(args: VerdictsArgs) -> Result<()> {
    let root = args.out;
    let bin = args
        .bin
        .unwrap_or_else(|| crate::util::repo_root().join("target/debug/msitrace"));
    let m = Msitrace {
        bin: fs::canonicalize(&bin).with_context(|| format!("{}", bin.display()))?,
        record: true,
        probes: true,
        replay: true,
        dump: true,
        live: true,
        daemon: true,
    };
    let scratch = std::env::temp_dir().join(format!("xtask-recorded-{}", std::process::id()));
    let mut abis: Vec<PathBuf> = fs::read_dir(&root)
        .with_context(|| format!("{}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    abis.sort();
    for abi in abis {
        let mut runs: Vec<PathBuf> = fs::read_dir(&abi)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("artifacts").is_dir())
            .collect();
        runs.sort();
        let name = abi.file_name().unwrap_or_default().to_string_lossy();
        for run in runs {
            println!(
                "== {name}/{}",
                run.file_name().unwrap_or_default().to_string_lossy()
            );
            print!("{}", judge_recorded_run(&run, &name, &m, &scratch));
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_judged_with_the_window_they_recorded_with() {
        let old = "console=ttyS0 vmt.plan=hibernate.buggy.live vmt.msitrace=1 vmt.g5silence=7";
        assert_eq!(g5_silence(old, &planned(old)), 7);
        let service = "vmt.plan=hibernate.buggy.service";
        assert_eq!(g5_silence(service, &planned(service)), 10);
        let record = "vmt.plan=s3.fixed.record";
        assert_eq!(g5_silence(record, &planned(record)), 4);
        assert_eq!(
            planned(old),
            [Step::new(Scenario::Hibernate, Mode::Buggy).with(Front::Live)]
        );
    }
}

//! Exit codes a test suite can trust, through the real binary: by default 1 means an
//! error-level divergence; a run with only warnings (G5's heuristic silence) lists them and
//! exits 0; `--fail-on warning` makes warnings count, like -Werror.

mod support;

use support::msitrace;

use std::path::{Path, PathBuf};

use tracer::engine::EngineConfig;
use tracer::event::{Event, EventKind};
use tracer::seed::{Seed, SeedVector};
use tracer::trace_file::{TraceHeader, TraceWriter};

/// A recording with errors: the buggy stand-in's hibernation (H1 and H4 errors, G5 warnings).
fn with_errors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/6.12-hibernate-buggy.msit")
}

/// A recording with only a warning: a vector that fired before an S3 cycle and then stayed
/// silent for 2 s after it (G5, a heuristic: the device may just have had no work).
fn with_only_warnings() -> PathBuf {
    let path = std::env::temp_dir().join(format!("msitrace-exit-warn-{}.msit", std::process::id()));
    let header = TraceHeader {
        kernel_release: "6.12.117+deb12-amd64".into(),
        probes: EngineConfig::all_probes_attached(),
        seed: Seed {
            taken_ns: 1_000_000_000,
            online_cpus: vec![0, 1],
            vectors: vec![SeedVector {
                irq: 50,
                device: Some("0000:00:03.0".into()),
                driver: Some("e1000e".into()),
                kind: Some("MSI-X".into()),
                chip: Some("PCI-MSIX-0000:00:03.0".into()),
                actions: Some("eth0".into()),
                count: 10,
                msi_index: Some(0),
                ..Default::default()
            }],
        },
        ..Default::default()
    };
    let s = 1_000_000_000u64;
    let ev = |ts: u64, kind: EventKind| Event {
        ts_ns: ts,
        cpu: 0,
        tgid: 1,
        kind,
    };
    let pm = |ts: u64, action: &str, val: u32| {
        ev(
            ts,
            EventKind::SuspendResume {
                action: action.into(),
                val,
                start: true,
            },
        )
    };
    let counts = |ts: u64, c: u64| {
        ev(
            ts,
            EventKind::IrqCounts {
                counts: vec![(50, c)],
            },
        )
    };
    let events = [
        counts(2 * s, 10),
        counts(3 * s, 20),
        pm(4 * s, "suspend_enter", 3),
        pm(4 * s + 1_000, "freeze_processes", 0),
        pm(5 * s, "dpm_resume_noirq", 0x10),
        pm(5 * s + 1_000, "thaw_processes", 0),
        // The sample the recorder takes as it reads the resume: G5 counts from it.
        counts(5 * s + 2_000, 20),
        counts(6 * s, 20),
        counts(7 * s, 20),
        counts(8 * s, 20),
    ];
    let mut w = TraceWriter::create(&path, &header).expect("trace file");
    for e in &events {
        w.append(e).expect("append");
    }
    w.finish(&serde_json::json!({})).expect("finish");
    path
}

/// (exit code, rules of the divergences with their severity) of `replay --json ARGS`.
fn replay(file: &Path, extra: &[&str]) -> (i32, Vec<(String, String)>) {
    let mut args = vec!["replay", file.to_str().unwrap(), "--json", "--silence", "1"];
    args.extend_from_slice(extra);
    let o = msitrace(&args);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stderr));
    });
    let divs = report["divergences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["rule"].as_str().unwrap_or("?").to_string(),
                d["severity"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    (o.status.code().unwrap_or(-1), divs)
}

#[test]
fn warnings_alone_exit_0_unless_fail_on_warning() {
    let file = with_only_warnings();
    let (code, divs) = replay(&file, &[]);
    assert_eq!(divs, vec![("G5".to_string(), "warning".to_string())]);
    assert_eq!(code, 0, "a heuristic warning is listed, not a failure");
    assert_eq!(replay(&file, &["--fail-on", "error"]).0, 0);
    assert_eq!(replay(&file, &["--fail-on", "warning"]).0, 1);
    // The text report says the warning too, whatever the exit code.
    let o = msitrace(&["replay", file.to_str().unwrap(), "--silence", "1"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("WARNING G5"));
    let _ = std::fs::remove_file(file);
}

#[test]
fn errors_exit_1_whatever_fail_on_says() {
    let file = with_errors();
    let (code, divs) = replay(&file, &[]);
    assert!(divs.iter().any(|(_, s)| s == "error"), "{divs:?}");
    assert_eq!(code, 1);
    assert_eq!(replay(&file, &["--fail-on", "warning"]).0, 1);
    assert_eq!(replay(&file, &["--fail-on", "error"]).0, 1);
}

#[test]
fn fail_on_is_offered_by_verify_and_checked() {
    let o = msitrace(&["verify", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--fail-on"));
    let o = msitrace(&["replay", "--fail-on", "notice", "x.msit"]);
    assert_eq!(o.status.code(), Some(2));
}

//! The engine on traces recorded by msitrace inside real kernels (QEMU guests, Debian 6.1 and
//! 6.12, the stand-in for pci-hyperv on an e1000e): the buggy runs report exactly the two
//! 915cff7f38c5 bugs (H1, H4) and the silence that follows (G5) on the stand-in's test
//! vectors, the fixed runs and the control vector nothing. See tests/fixtures/traces/README.md.

use std::{collections::BTreeSet, path::PathBuf};

use tracer::{cmd::replay::replay_files, engine::RuleTiming};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/traces")
        .join(name)
}

/// `(rule, irq)` of every divergence, with G5's window as the guests' recordings allow.
fn verdict(name: &str) -> (BTreeSet<(String, u32)>, u8) {
    let timing = RuleTiming {
        g5_silence_ns: 4_000_000_000,
        ..RuleTiming::default()
    };
    let r = replay_files(&[fixture(name)], timing).unwrap();
    let found = r
        .engine
        .divergences()
        .iter()
        .map(|d| (d.rule.to_string(), d.irq.unwrap_or(0)))
        .collect();
    (found, r.report.exit_code())
}

fn both_bugs() -> BTreeSet<(String, u32)> {
    ["H1", "H4", "G5"]
        .iter()
        .flat_map(|r| [38, 39].map(|irq| (r.to_string(), irq)))
        .collect()
}

#[test]
fn buggy_runs_report_both_bugs_on_the_test_vectors_only() {
    for name in [
        "6.12-hibernate-buggy.msit",
        "6.12-s3-buggy.msit",
        "6.1-hibernate-buggy.msit",
    ] {
        let (found, code) = verdict(name);
        assert_eq!(found, both_bugs(), "{name}");
        assert_eq!(code, 1, "{name}");
    }
}

#[test]
fn fixed_runs_and_plain_cpu_hotplug_are_clean() {
    for name in [
        "6.12-hibernate-fixed.msit",
        "6.12-s3-fixed.msit",
        "6.12-hotplug.msit",
        "6.1-pmtest-platform-fixed.msit",
    ] {
        let (found, code) = verdict(name);
        assert!(found.is_empty(), "{name}: {found:?}");
        assert_eq!(code, 0, "{name}");
    }
}

#[test]
fn h4_names_the_failed_unmask_inside_the_cpu_offline_migration() {
    let r = replay_files(
        &[fixture("6.12-hibernate-buggy.msit")],
        RuleTiming::default(),
    )
    .unwrap();
    let h4 = r
        .engine
        .divergences()
        .iter()
        .find(|d| d.rule.to_string() == "H4" && d.irq == Some(38))
        .expect("H4 on irq 38");
    assert!(h4.meaning.contains("offline migration"), "{}", h4.meaning);
    assert!(
        h4.evidence
            .iter()
            .any(|e| e.event.starts_with("hv_irq_unmask")),
        "{:?}",
        h4.evidence
    );
    assert_eq!(h4.device.as_deref(), Some("0000:02:00.0"));
}

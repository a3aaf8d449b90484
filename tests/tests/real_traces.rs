//! The engine on traces recorded by msitrace inside real kernels (QEMU guests, Debian 6.1 and
//! 6.12, the stand-in for pci-hyperv on an e1000e): the buggy runs report exactly the two
//! 915cff7f38c5 bugs (H1, H4) and the silence that follows (G5) on the stand-in's test
//! vectors, the fixed runs and the control vector nothing. See tests/fixtures/traces/README.md.

use std::{collections::BTreeSet, path::PathBuf};

use tracer::replayer::{DelayOverrides, replay_files};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/traces")
        .join(name)
}

/// `(rule, irq)` of every divergence, with G5's window as the guests' recordings allow.
fn verdict(name: &str) -> (BTreeSet<(String, u32)>, u8) {
    let timing = DelayOverrides {
        g5_silence_ns: Some(4_000_000_000),
        ..Default::default()
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
        "5.10-hibernate-fixed.msit",
        "7.3-hibernate-fixed-offline.msit",
    ] {
        let (found, code) = verdict(name);
        assert!(found.is_empty(), "{name}: {found:?}");
        assert_eq!(code, 0, "{name}");
    }
}

/// msitrace.service's flight recorder through `systemctl hibernate` on 6.12 (the stand-in's
/// test vectors are 42 and 43 there). virtio-blk freed its queues' vectors at the freeze and got
/// them back under the same numbers at the restore: the swap disk's req.0 (irq 30) is missing
/// from the first samples after the resume, then counts 32 and 48 again, as many as before the
/// sleep. Judged by its count alone it looked silent (G5, which failed that vm-test step); it is left
/// out as requested again, and the bugs are found where they are.
#[test]
fn a_queue_given_back_its_irq_number_is_not_called_silent() {
    let timing = DelayOverrides {
        g5_silence_ns: Some(10_000_000_000),
        ..Default::default()
    };
    let r = replay_files(&[fixture("6.12-service-hibernate-buggy.msit")], timing).unwrap();
    let found: BTreeSet<(String, u32)> = r
        .engine
        .divergences()
        .iter()
        .map(|d| (d.rule.to_string(), d.irq.unwrap_or(0)))
        .collect();
    let expected: BTreeSet<(String, u32)> = ["H1", "H4", "G5"]
        .iter()
        .flat_map(|rule| [42, 43].map(|irq| (rule.to_string(), irq)))
        .collect();
    assert_eq!(found, expected);
    assert!(
        r.report.not_evaluated.iter().any(|n| n
            .reason
            .starts_with("irq 30,39,40 were freed and requested again")),
        "{:?}",
        r.report.not_evaluated
    );
}

#[test]
fn h4_names_the_failed_unmask_inside_the_cpu_offline_migration() {
    let r = replay_files(
        &[fixture("6.12-hibernate-buggy.msit")],
        DelayOverrides::default(),
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

/// Issue #13. In this recording CPU1 went offline for the hibernation and the kernel moved the
/// stand-in's test vectors (38, 39, pinned to CPU1) to CPU0: `irq_do_set_affinity` returned 0
/// for each in CPU1's migration window (`irq_migrate_all_off_this_cpu`, migrate_one_irq being
/// inlined on 6.12) while CPU0 was the only CPU left, and `__pci_write_msi_msg` rewrote their
/// messages from APIC 1 to APIC 0 (`fee01000` -> `fee00000`). The kernel logged no
/// `irq_vectors:*` event for them, and they are Hyper-V-chip vectors whose message the engine
/// does not decode, so the move is the migration's. The report ended on the seed's CPU1.
#[test]
fn the_test_vectors_moved_to_cpu0_during_the_hibernation_end_on_cpu0() {
    let r = replay_files(
        &[fixture("6.12-hibernate-buggy.msit")],
        DelayOverrides::default(),
    )
    .unwrap();
    let j = r.report.to_json();
    let vector = |irq: u32| {
        j["vectors"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["irq"] == irq))
            .cloned()
            .unwrap_or_else(|| panic!("no vector {irq} in the report"))
    };
    for irq in [38, 39] {
        let v = vector(irq);
        assert_eq!(v["before_suspend"]["cpu"], 1, "{v}");
        assert_eq!(v["after_resume"]["cpu"], 0, "{v}");
        assert_eq!(v["target"]["cpu"], 0, "{v}");
        assert_eq!(v["target"]["source"], "migration", "{v}");
    }
    // The control vector was on CPU0 all along.
    assert_eq!(vector(37)["after_resume"]["cpu"], 0);
}

/// Issue #15: the text report printed Rust's debug form (`Hyper-V bus ?: state
/// Some(Installed)`, `(Hibernation)`). Every line a person reads is in words.
#[test]
fn the_text_report_shows_no_debug_formatting() {
    for name in [
        "6.12-hibernate-buggy.msit",
        "6.12-s3-fixed.msit",
        "6.1-hibernate-buggy.msit",
    ] {
        let r = replay_files(&[fixture(name)], DelayOverrides::default()).unwrap();
        let text = r.report.to_text();
        assert!(text.contains("Hyper-V bus"), "{name}: no bus line:\n{text}");
        for debug in [
            "Some(",
            "None",
            "(Hibernation)",
            "(Suspend)",
            "Installed",
            "[",
            "{",
        ] {
            assert!(
                !text.contains(debug),
                "{name}: {debug:?} in the report:\n{text}"
            );
        }
    }
}

// virtio frees its vectors at freeze and requests them again at restore; on 6.12 the numbers
// come back shuffled between the three virtio devices. Each device's vector must keep its
// identity (driver, actions, the view before the suspend) at its new IRQ, and the IRQ it left
// must say where it went, or the before/after view compares nothing for them.
#[test]
fn a_vector_reallocated_across_the_hibernation_keeps_its_identity() {
    let r = replay_files(
        &[fixture("6.12-hibernate-buggy.msit")],
        DelayOverrides::default(),
    )
    .unwrap();
    let virtio: Vec<_> = r
        .report
        .vectors
        .iter()
        .filter(|v| {
            v.device
                .as_deref()
                .is_some_and(|d| ["0000:01:00.0", "0000:03:00.0", "0000:04:00.0"].contains(&d))
        })
        .collect();
    assert_eq!(virtio.len(), 9, "{virtio:#?}");
    for v in &virtio {
        assert_eq!(v.driver.as_deref(), Some("virtio-pci"), "irq {}", v.irq);
        assert!(v.actions.is_some(), "irq {} lost its actions", v.irq);
        assert!(v.before_suspend.is_some(), "irq {} has no before", v.irq);
        assert!(v.previous_irq.is_some(), "irq {}", v.irq);
    }
    // Read from the fixture's seed and its restore: 0000:01:00.0's config vector was irq 34.
    let irq28 = virtio.iter().find(|v| v.irq == 28).unwrap();
    assert_eq!(irq28.device.as_deref(), Some("0000:01:00.0"));
    assert_eq!(irq28.kind, "MSI-X 0");
    assert_eq!(irq28.previous_irq, Some(34));
    assert_eq!(irq28.actions.as_deref(), Some("virtio0-config"));
    // The shuffle was a permutation: every number freed was taken again, by another vector.
    let freed: BTreeSet<u32> = virtio.iter().filter_map(|v| v.previous_irq).collect();
    let now: BTreeSet<u32> = virtio.iter().map(|v| v.irq).collect();
    assert_eq!(freed, now);
    let (found, _) = verdict("6.12-hibernate-buggy.msit");
    assert_eq!(found, both_bugs());
}

/// 7.3, fixed: 1.94 s after the resume the guest takes CPU1 offline through sysfs, and the
/// migration masks each vector on it for a few microseconds around its move. A CI run whose
/// G1 deadline fell inside one of those pairs reported G1 on a virtio config vector. Every
/// grace across the window (and around it) must leave the run clean.
#[test]
fn a_g1_deadline_inside_the_offline_migration_window_waits_for_it() {
    // The window runs from 1.9354 s to 1.9421 s after `resumed` in this recording.
    for grace_us in (1_930_000..=1_946_000).step_by(250).chain([2_000_000]) {
        let timing = DelayOverrides {
            g5_silence_ns: Some(4_000_000_000),
            g1_grace_ns: Some(grace_us * 1000),
        };
        let r = replay_files(&[fixture("7.3-hibernate-fixed-offline.msit")], timing).unwrap();
        let found: Vec<_> = r
            .engine
            .divergences()
            .iter()
            .map(|d| (d.rule.to_string(), d.irq))
            .collect();
        assert!(found.is_empty(), "grace {grace_us} us: {found:?}");
        assert_eq!(r.report.exit_code(), 0, "grace {grace_us} us");
    }
}

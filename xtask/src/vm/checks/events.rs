//! `msitrace dump --json`: the kernel events the step must have left in the recording.

use super::{
    Verdict,
    json::{Event, Kind},
};
use crate::vm::plan::{Mode, Scenario, Step};

/// The ordinary vector hv_stub disables across every sleep: its mask before the sleep and its
/// unmask after the resume were seen, through whichever path this kernel masks ordinary
/// devices with (the per-device MSI domains' callbacks from 6.2), and nothing was raised on
/// it (the report checks already fail on any divergence beyond the test vectors).
pub(super) fn check_plain_vector(step: Step, events: &[Event], irq: u32, v: &mut Verdict) {
    if !step.scenario.resumes() {
        return;
    }
    let evs = events;
    let kinds = |mask: bool| -> Vec<(u64, Kind)> {
        let names: &[Kind] = if mask {
            &[Kind::PciIrqMask, Kind::PciMsiMask]
        } else {
            &[Kind::PciIrqUnmask, Kind::PciMsiUnmask]
        };
        evs.iter()
            .filter(|e| names.contains(&e.kind()) && e.irq() == Some(irq))
            .map(|e| (e.ts_ns, e.kind()))
            .collect()
    };
    let masks = kinds(true);
    let unmasks = kinds(false);
    let first_mask = masks.first().map(|m| m.0);
    match (first_mask, unmasks.iter().find(|u| Some(u.0) > first_mask)) {
        (Some(_), Some((_, how))) => v.facts.push(format!(
            "plain irq {irq}: masked across the sleep, unmask seen ({how}), no G1"
        )),
        _ => v.failures.push(format!(
            "plain irq {irq}: mask/unmask across the sleep not seen ({} masks, {} unmasks recorded)",
            masks.len(),
            unmasks.len()
        )),
    }
}

pub(super) fn check_events(
    step: Step,
    events: &[Event],
    bdf: Option<&str>,
    control: u32,
    tests: &[u32],
    v: &mut Verdict,
) {
    let evs = events;
    if evs.is_empty() {
        v.failures.push("the trace holds no events".into());
        return;
    }
    let has = |kind: Kind, irq: Option<u32>, after: u64| {
        evs.iter()
            .any(|e| e.kind() == kind && e.ts_ns > after && (irq.is_none() || e.irq() == irq))
    };
    let restore_of_device = |kind: Kind, after: u64| {
        evs.iter().any(|e| {
            e.kind() == kind && e.ts_ns > after && (bdf.is_none() || e.device().as_deref() == bdf)
        })
    };
    let restored = |irq: u32, after: u64| {
        evs.iter().any(|e| {
            e.kind() == Kind::WriteMsiMsg
                && e.ts_ns > after
                && e.irq() == Some(irq)
                && e.in_restore() == Some(true)
        })
    };
    let mut missing = Vec::new();
    let all: Vec<u32> = std::iter::once(control)
        .chain(tests.iter().copied())
        .collect();
    let migration = |after: u64| {
        (has(Kind::MigrateAllOffEnter, None, after) && has(Kind::MigrateAllOffExit, None, after))
            || has(Kind::MigrateOneIrq, None, after)
    };
    if step.scenario.offlines_cpus() {
        if !migration(0) {
            missing.push("migration window".to_string());
        }
        for &t in tests {
            for k in [Kind::MaskEnter, Kind::UnmaskEnter, Kind::UnmaskExit] {
                if !has(k, Some(t), 0) {
                    missing.push(format!("{k} irq {t}"));
                }
            }
        }
    }
    if step.scenario == Scenario::Reset || step.scenario.resumes() {
        for k in [Kind::RestoreEnter, Kind::RestoreExit] {
            if !restore_of_device(k, 0) {
                missing.push(format!("{k} of {}", bdf.unwrap_or("the e1000e")));
            }
        }
        for &i in &all {
            if !restored(i, 0) {
                missing.push(format!("restore write irq {i}"));
            }
        }
    }
    if step.scenario.resumes() {
        if !has(Kind::SuspendResume, None, 0) {
            missing.push("phase transitions (power:suspend_resume)".into());
        }
        for k in [Kind::HvPciSuspendEnter, Kind::HvPciResumeEnter] {
            if !has(k, None, 0) {
                missing.push(k.to_string());
            }
        }
        for &i in &all {
            let composed = has(Kind::ComposeExit, Some(i), 0);
            let should = step.mode != Mode::Buggy || i == control;
            if should && !composed {
                missing.push(format!("ComposeExit irq {i}"));
            }
            if !should && composed {
                v.failures
                    .push(format!("irq {i} was composed in buggy mode"));
            }
        }
        // The guest offlines a CPU and resets the e1000e once the resume is over: kprobes,
        // kretprobes and the migration window must still fire.
        let resumed = evs
            .iter()
            .filter(|e| e.kind() == Kind::SuspendResume)
            .map(|e| e.ts_ns)
            .max()
            .unwrap_or(0);
        let mut dead = Vec::new();
        if !migration(resumed) {
            dead.push("migration window");
        }
        for k in [Kind::RestoreEnter, Kind::RestoreExit] {
            if !restore_of_device(k, resumed) {
                dead.push(if k == Kind::RestoreEnter {
                    "pci_restore_msi_state"
                } else {
                    "pci_restore_msi_state:return"
                });
            }
        }
        if !has(Kind::WriteMsiMsg, None, resumed) {
            dead.push("__pci_write_msi_msg");
        }
        if dead.is_empty() {
            v.facts.push("probes fire after resume".into());
        } else {
            v.failures
                .push(format!("silent after the resume: {}", dead.join(", ")));
        }
    }
    if !missing.is_empty() {
        v.failures
            .push(format!("not recorded: {}", missing.join(", ")));
    }
}

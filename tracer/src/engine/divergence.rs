//! What the rules report: a [`Divergence`] (rule, severity, vector, epoch, evidence, one
//! sentence of meaning) and the log that keeps one divergence per vector, cause and epoch,
//! updated as evidence grows instead of flooding.

use std::collections::HashMap;

use serde::Serialize;
use tracer_common::ProbeId;

use crate::event::{Event, EventKind};

/// The rules the engine evaluates (README.md, "Rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RuleId {
    H1,
    H2,
    H3,
    H4,
    H5,
    H9,
    G1,
    G2,
    G3,
    G5,
}

impl RuleId {
    pub const ALL: [RuleId; 10] = [
        RuleId::H1,
        RuleId::H2,
        RuleId::H3,
        RuleId::H4,
        RuleId::H5,
        RuleId::H9,
        RuleId::G1,
        RuleId::G2,
        RuleId::G3,
        RuleId::G5,
    ];

    pub fn title(self) -> &'static str {
        match self {
            RuleId::H1 => "restored without compose",
            RuleId::H2 => "restored message differs from the composed one",
            RuleId::H3 => "compose failed",
            RuleId::H4 => "unmask left masked",
            RuleId::H5 => "unmask without compose",
            RuleId::H9 => "Hyper-V bus state",
            RuleId::G1 => "masked after resume",
            RuleId::G2 => "targets an offline CPU",
            RuleId::G3 => "managed vector never restarted",
            RuleId::G5 => "silent after resume",
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    /// As the JSON report, the journal's MSITRACE_SEVERITY and the trailer spell it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One event that supports a divergence, reduced to what a reader needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub ts_ns: u64,
    /// CPU the event ran on; `None` for a note (a deadline, a state read at an instant).
    pub cpu: Option<u32>,
    /// The hook that produced it, e.g. `hv_compose_msi_msg:return`.
    pub event: String,
    /// Its key fields, e.g. `irq 35 msg 00000000:fee01000/00004021 chip_data 0x0`.
    pub detail: String,
}

impl Evidence {
    pub fn of(ev: &Event) -> Evidence {
        Evidence {
            ts_ns: ev.ts_ns,
            cpu: Some(ev.cpu),
            event: event_name(&ev.kind).to_string(),
            detail: crate::event_text::detail(&ev.kind),
        }
    }

    /// Evidence that is not one event (a deadline passed, a state read at an instant).
    pub fn note(ts_ns: u64, event: &str, detail: String) -> Evidence {
        Evidence {
            ts_ns,
            cpu: None,
            event: event.to_string(),
            detail,
        }
    }
}

/// Hook name of an event, as `msitrace probes` shows it.
pub fn event_name(k: &EventKind) -> &'static str {
    use EventKind as K;
    match k {
        K::ComposeEnter(_) => "hv_compose_msi_msg",
        K::ComposeExit { .. } => "hv_compose_msi_msg:return",
        K::UnmaskEnter(_) => "hv_irq_unmask",
        K::UnmaskExit(_) => "hv_irq_unmask:return",
        K::MaskEnter(_) => "hv_irq_mask",
        K::MaskExit(_) => "hv_irq_mask:return",
        K::PciMsiMask(_) => "pci_msi_mask_irq",
        K::PciMsiUnmask(_) => "pci_msi_unmask_irq",
        K::MigrateOneIrq { .. } => "migrate_one_irq",
        K::MigrateAllOffEnter => "irq_migrate_all_off_this_cpu",
        K::MigrateAllOffExit => "irq_migrate_all_off_this_cpu:return",
        K::SetAffinityEnter { .. } => "irq_do_set_affinity",
        K::SetAffinityExit { .. } => "irq_do_set_affinity:return",
        K::RestoreEnter { .. } => "pci_restore_msi_state",
        K::RestoreExit { .. } => "pci_restore_msi_state:return",
        K::WriteMsiMsg { .. } => "__pci_write_msi_msg",
        K::HvPciSuspendEnter { .. } => "hv_pci_suspend",
        K::HvPciSuspendExit { .. } => "hv_pci_suspend:return",
        K::HvPciResumeEnter { .. } => "hv_pci_resume",
        K::HvPciResumeExit { .. } => "hv_pci_resume:return",
        K::SuspendResume { .. } => "power:suspend_resume",
        K::DevicePmStart { .. } => "power:device_pm_callback_start",
        K::DevicePmEnd { .. } => "power:device_pm_callback_end",
        K::VectorUpdate { .. } => "irq_vectors:vector_update",
        K::VectorClear { .. } => "irq_vectors:vector_clear",
        K::VectorConfig { .. } => "irq_vectors:vector_config",
        K::VectorActivate { .. } => "irq_vectors:vector_activate",
        K::VectorDeactivate { .. } => "irq_vectors:vector_deactivate",
        K::Lost { .. } => "lost",
        K::IrqCounts { .. } => "irq counts",
        K::Gap { .. } => "gap",
        K::Notice { .. } => "notice",
        K::PciIrqMask { msix: false, .. } => "pci_irq_mask_msi",
        K::PciIrqMask { msix: true, .. } => "pci_irq_mask_msix",
        K::PciIrqUnmask { msix: false, .. } => "pci_irq_unmask_msi",
        K::PciIrqUnmask { msix: true, .. } => "pci_irq_unmask_msix",
        K::ComposeCompl { .. } => "hv_pci_compose_compl",
        K::ReturnWithoutEntry { probe } => crate::probes::hook_of(*probe).hook,
    }
}

/// The probe an event came from (None for the recorder's own records).
pub fn event_probe(k: &EventKind) -> Option<ProbeId> {
    use EventKind as K;
    use ProbeId as P;
    Some(match k {
        K::ComposeEnter(_) => P::HvComposeEnter,
        K::ComposeExit { .. } => P::HvComposeExit,
        K::UnmaskEnter(_) => P::HvUnmaskEnter,
        K::UnmaskExit(_) => P::HvUnmaskExit,
        K::MaskEnter(_) => P::HvMaskEnter,
        K::MaskExit(_) => P::HvMaskExit,
        K::PciMsiMask(_) => P::PciMsiMask,
        K::PciMsiUnmask(_) => P::PciMsiUnmask,
        K::MigrateOneIrq { .. } => P::MigrateOneIrq,
        K::MigrateAllOffEnter => P::MigrateAllOffEnter,
        K::MigrateAllOffExit => P::MigrateAllOffExit,
        K::SetAffinityEnter { .. } => P::SetAffinityEnter,
        K::SetAffinityExit { .. } => P::SetAffinityExit,
        K::RestoreEnter { .. } => P::RestoreMsiEnter,
        K::RestoreExit { .. } => P::RestoreMsiExit,
        K::WriteMsiMsg { .. } => P::WriteMsiMsg,
        K::HvPciSuspendEnter { .. } => P::HvPciSuspendEnter,
        K::HvPciSuspendExit { .. } => P::HvPciSuspendExit,
        K::HvPciResumeEnter { .. } => P::HvPciResumeEnter,
        K::HvPciResumeExit { .. } => P::HvPciResumeExit,
        K::SuspendResume { .. } => P::SuspendResume,
        K::DevicePmStart { .. } => P::DevicePmStart,
        K::DevicePmEnd { .. } => P::DevicePmEnd,
        K::VectorUpdate { .. } => P::VectorUpdate,
        K::VectorClear { .. } => P::VectorClear,
        K::VectorConfig { .. } => P::VectorConfig,
        K::VectorActivate { .. } => P::VectorActivate,
        K::VectorDeactivate { .. } => P::VectorDeactivate,
        K::IrqCounts { .. } => P::IrqHandlerEntry,
        K::PciIrqMask { msix: false, .. } => P::PciIrqMaskMsi,
        K::PciIrqMask { msix: true, .. } => P::PciIrqMaskMsix,
        K::PciIrqUnmask { msix: false, .. } => P::PciIrqUnmaskMsi,
        K::PciIrqUnmask { msix: true, .. } => P::PciIrqUnmaskMsix,
        K::ComposeCompl { .. } => P::HvComposeCompl,
        K::ReturnWithoutEntry { probe } => *probe,
        K::Lost { .. } | K::Gap { .. } | K::Notice { .. } => return None,
    })
}

/// The most evidence items a divergence keeps: the first ones and the latest.
pub const MAX_EVIDENCE: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub rule: RuleId,
    pub severity: Severity,
    /// The vector it is about (None for a bus-level finding).
    pub irq: Option<u32>,
    /// Every vector concerned (a multi-MSI block, the vectors of a bus).
    pub irqs: Vec<u32>,
    /// BDF of the vector's device, or the Hyper-V bus for a bus-level finding.
    pub device: Option<String>,
    pub epoch: u32,
    /// What exactly went wrong, stable across updates (e.g. `stale-mask`, `offline-cpu-1`).
    pub cause: String,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub occurrences: u32,
    pub evidence: Vec<Evidence>,
    /// Evidence items dropped to keep the list bounded.
    pub evidence_dropped: u32,
    pub meaning: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    New,
    /// Severity or meaning changed (escalated, downgraded, explained by later evidence).
    Updated,
}

/// A new or updated divergence, returned by `Engine::apply` so a live front-end logs each once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DivergenceUpdate {
    pub change: Change,
    pub divergence: Divergence,
}

/// The identity of a divergence: one per rule, scope (vector or bus), cause and epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub rule: RuleId,
    pub scope: Scope,
    pub cause: String,
    pub epoch: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// IRQ and its generation (a reused IRQ number is another vector).
    Vector(u32, u32),
    Bus(String),
}

/// What a rule found, before it is merged into the log.
pub struct Finding {
    pub key: Key,
    pub severity: Severity,
    pub irq: Option<u32>,
    pub irqs: Vec<u32>,
    pub device: Option<String>,
    pub ts_ns: u64,
    pub evidence: Vec<Evidence>,
    pub meaning: String,
}

/// Every divergence, in the order they were first found (deterministic for a given input).
#[derive(Clone, Debug, Default)]
pub struct DivergenceLog {
    list: Vec<Divergence>,
    keys: Vec<Key>,
    index: HashMap<Key, usize>,
}

impl DivergenceLog {
    pub fn all(&self) -> &[Divergence] {
        &self.list
    }

    pub fn get(&self, key: &Key) -> Option<&Divergence> {
        self.index.get(key).map(|&i| &self.list[i])
    }

    /// Divergences with their keys, for rules that revisit earlier findings.
    pub fn iter_keyed(&self) -> impl Iterator<Item = (&Key, &Divergence)> {
        self.keys.iter().zip(self.list.iter())
    }

    /// Merge a finding: a new divergence, or more evidence for an existing one. Returns an
    /// update only when something a reader must see changed (new, severity, meaning).
    pub fn raise(&mut self, f: Finding) -> Option<DivergenceUpdate> {
        if let Some(&i) = self.index.get(&f.key) {
            let d = &mut self.list[i];
            d.occurrences = d.occurrences.saturating_add(1);
            d.last_ts_ns = d.last_ts_ns.max(f.ts_ns);
            for e in f.evidence {
                push_evidence(d, e);
            }
            for irq in f.irqs {
                if !d.irqs.contains(&irq) {
                    d.irqs.push(irq);
                }
            }
            let changed = d.severity != f.severity || d.meaning != f.meaning;
            d.severity = f.severity;
            d.meaning = f.meaning;
            return changed.then(|| DivergenceUpdate {
                change: Change::Updated,
                divergence: d.clone(),
            });
        }
        let mut d = Divergence {
            rule: f.key.rule,
            severity: f.severity,
            irq: f.irq,
            irqs: f.irqs,
            device: f.device,
            epoch: f.key.epoch,
            cause: f.key.cause.clone(),
            first_ts_ns: f.ts_ns,
            last_ts_ns: f.ts_ns,
            occurrences: 1,
            evidence: Vec::new(),
            evidence_dropped: 0,
            meaning: f.meaning,
        };
        for e in f.evidence {
            push_evidence(&mut d, e);
        }
        self.index.insert(f.key.clone(), self.list.len());
        self.keys.push(f.key);
        self.list.push(d.clone());
        Some(DivergenceUpdate {
            change: Change::New,
            divergence: d,
        })
    }

    /// Change an existing divergence's severity and meaning (and add evidence).
    pub fn revise(
        &mut self,
        key: &Key,
        severity: Severity,
        meaning: String,
        evidence: Option<Evidence>,
    ) -> Option<DivergenceUpdate> {
        let &i = self.index.get(key)?;
        let d = &mut self.list[i];
        if let Some(e) = evidence {
            d.last_ts_ns = d.last_ts_ns.max(e.ts_ns);
            push_evidence(d, e);
        }
        let changed = d.severity != severity || d.meaning != meaning;
        d.severity = severity;
        d.meaning = meaning;
        changed.then(|| DivergenceUpdate {
            change: Change::Updated,
            divergence: d.clone(),
        })
    }
}

/// Keep the first items and the latest one: the trigger and where it ended.
fn push_evidence(d: &mut Divergence, e: Evidence) {
    if d.evidence.contains(&e) {
        return;
    }
    if d.evidence.len() < MAX_EVIDENCE {
        d.evidence.push(e);
    } else {
        d.evidence_dropped = d.evidence_dropped.saturating_add(1);
        if let Some(last) = d.evidence.last_mut() {
            *last = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(cause: &str, sev: Severity, meaning: &str, ts: u64) -> Finding {
        Finding {
            key: Key {
                rule: RuleId::H4,
                scope: Scope::Vector(35, 0),
                cause: cause.into(),
                epoch: 1,
            },
            severity: sev,
            irq: Some(35),
            irqs: vec![35],
            device: Some("0000:00:03.0".into()),
            ts_ns: ts,
            evidence: vec![Evidence::note(ts, "x", format!("at {ts}"))],
            meaning: meaning.into(),
        }
    }

    #[test]
    fn one_divergence_per_key_updated_only_on_change() {
        let mut log = DivergenceLog::default();
        let u = log
            .raise(finding("stale", Severity::Warning, "m1", 1))
            .unwrap();
        assert_eq!(u.change, Change::New);
        assert!(
            log.raise(finding("stale", Severity::Warning, "m1", 2))
                .is_none()
        );
        let u = log
            .raise(finding("stale", Severity::Error, "m2", 3))
            .unwrap();
        assert_eq!(u.change, Change::Updated);
        assert_eq!(u.divergence.severity, Severity::Error);
        assert_eq!(log.all().len(), 1);
        assert_eq!(log.all()[0].occurrences, 3);
        log.raise(finding("other", Severity::Warning, "m", 4));
        assert_eq!(log.all().len(), 2);
    }

    #[test]
    fn evidence_stays_bounded() {
        let mut log = DivergenceLog::default();
        for ts in 0..100 {
            log.raise(finding("stale", Severity::Warning, "m", ts));
        }
        let d = &log.all()[0];
        assert_eq!(d.evidence.len(), MAX_EVIDENCE);
        assert_eq!(d.evidence_dropped, 100 - MAX_EVIDENCE as u32);
        assert_eq!(d.evidence[0].ts_ns, 0);
        assert_eq!(d.evidence[MAX_EVIDENCE - 1].ts_ns, 99);
    }
}

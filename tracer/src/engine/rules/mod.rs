//! The rules of README.md ("Rules"), evaluated by the engine as events arrive (H1–H5, H9, G2) or when
//! a deadline passes (G1, G3, G5). Each finding names the rule, the vector(s), the epoch and the
//! evidence, and says in one sentence what a kernel engineer should look at.
//!
//! Severities: error where the device will get no interrupts (H1–H4, G1–G3, a failed
//! hv_pci_resume); warning for the heuristic G5, for findings whose escalation is pending (a
//! failed compose not yet used, an unmask that left the mask set but not yet written to the
//! device) and for findings weakened by later evidence (a re-compose, an unmask, lost events).
//!
//! One file per rule family: [`compose_restore`] (H1, H2, H3), [`unmask`] (H4, H5), [`bus`]
//! (H9 and the Hyper-V bus states it reads), [`migration`] (G2) and [`deadlines`] (G1, G3, G5
//! and the queue of rules waiting for time to pass). What they find goes to the sink in
//! `super::findings`.

mod bus;
mod compose_restore;
mod deadlines;
mod migration;
mod unmask;

use tracer_common::ProbeId;

use super::Engine;
use super::divergence::{Evidence, Finding, Key, RuleId, Scope, Severity};

pub(crate) use compose_restore::{ComposeInFlight, ComposeWatch};
pub(crate) use deadlines::{Deadlines, Pending};
pub(crate) use migration::MigrationWatch;
pub(crate) use unmask::UnmaskWatch;

const COMPOSE_PROBES: &[ProbeId] = &[ProbeId::HvComposeEnter, ProbeId::HvComposeExit];
/// H1 also rests on the absence of the host's reply in a compose.
const COMPOSE_REPLY_PROBES: &[ProbeId] = &[
    ProbeId::HvComposeEnter,
    ProbeId::HvComposeExit,
    ProbeId::HvComposeCompl,
];
// Every probe whose events move a target (see `Engine::target_after_migration` and co).
const TARGET_PROBES: &[ProbeId] = &[
    ProbeId::VectorUpdate,
    ProbeId::VectorConfig,
    ProbeId::VectorClear,
    ProbeId::SetAffinityExit,
    ProbeId::WriteMsiMsg,
];
const ACTIVATE_PROBES: &[ProbeId] = &[ProbeId::VectorActivate];
const UNMASK_PROBES: &[ProbeId] = &[
    ProbeId::HvUnmaskEnter,
    ProbeId::HvUnmaskExit,
    ProbeId::PciMsiUnmask,
    ProbeId::PciIrqUnmaskMsi,
    ProbeId::PciIrqUnmaskMsix,
    ProbeId::WriteMsiMsg,
];

impl Engine {
    /// `+1.234 s` from the start of the trace.
    pub(crate) fn t(&self, ts: u64) -> String {
        crate::duration::offset(ts, self.origin_ns())
    }

    fn key(&self, rule: RuleId, irq: u32, cause: &str, epoch: u32) -> Key {
        let generation = self.state.vectors.get(&irq).map_or(0, |v| v.generation);
        Key {
            rule,
            scope: Scope::Vector(irq, generation),
            cause: cause.to_string(),
            epoch,
        }
    }

    fn describe(&self, irq: u32) -> (String, Option<String>) {
        match self.state.vectors.get(&irq) {
            Some(v) => (v.describe(), v.device.as_deref().map(str::to_owned)),
            None => ("device unknown".into(), None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_finding(
        &self,
        rule: RuleId,
        irq: u32,
        cause: &str,
        epoch: u32,
        severity: Severity,
        ts: u64,
        evidence: Vec<Evidence>,
        meaning: String,
    ) -> Finding {
        let device = self
            .state
            .vectors
            .get(&irq)
            .and_then(|v| v.device.as_deref().map(str::to_owned));
        Finding {
            key: self.key(rule, irq, cause, epoch),
            severity,
            irq: Some(irq),
            irqs: vec![irq],
            device,
            ts_ns: ts,
            evidence,
            meaning,
        }
    }

    /// See [`super::findings::Findings::input_contradiction`].
    fn input_contradiction(&mut self, irq: u32, ts: u64, text: String) {
        let generation = self.state.vectors.get(&irq).map_or(0, |v| v.generation);
        self.findings.input_contradiction(irq, generation, ts, text);
    }
}

/// Name of a negative errno for sentences.
pub fn errno_name(ret: i32) -> &'static str {
    match -ret {
        1 => "EPERM",
        5 => "EIO",
        11 => "EAGAIN",
        12 => "ENOMEM",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        28 => "ENOSPC",
        110 => "ETIMEDOUT",
        _ => "error",
    }
}

//! G2: a vector left on a CPU that went offline, or whose move off it failed.

use std::collections::{BTreeMap, BTreeSet};

use super::{TARGET_PROBES, errno_name};
use crate::engine::divergence::{DivergenceUpdate, Evidence, RuleId, Severity};
use crate::engine::state::VectorState;
use crate::engine::{Engine, FastMap};
use crate::event::Event;

/// The migration family's bookkeeping: the CPU-offline windows in progress and what failed
/// in them.
#[derive(Default)]
pub(crate) struct MigrationWatch {
    /// CPU → start of its `irq_migrate_all_off_this_cpu` window.
    pub migration_windows: BTreeMap<u32, u64>,
    /// CPU → IRQs whose `irq_do_set_affinity` failed in its window (and did not succeed since).
    pub affinity_failures: BTreeMap<u32, BTreeMap<u32, (i32, Evidence)>>,
    /// CPU → the `irq_do_set_affinity` call in progress on it (IRQ, entry time). One entry
    /// and one removal per call: hashed, as for the composes in flight.
    pub affinity_calls: FastMap<u32, (u32, u64)>,
    /// CPU in `CPU_OFF` (begin seen, end not yet), and when it began.
    pub cpu_going_down: Option<(u32, u64)>,
    /// CPUs whose "still targeted" check ran since they went offline.
    pub offline_checked: BTreeSet<u32>,
}

impl Engine {
    pub(crate) fn g2_affinity_failures(&mut self, ev: &Event, out: &mut Vec<DivergenceUpdate>) {
        let Some(fails) = self.migration.affinity_failures.remove(&ev.cpu) else {
            return;
        };
        if !self.enabled(RuleId::G2) {
            return;
        }
        let cpu = ev.cpu;
        for (irq, (ret, evidence)) in fails {
            if !self
                .state
                .vectors
                .get(&irq)
                .is_some_and(VectorState::has_action)
            {
                continue;
            }
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "irq_do_set_affinity for irq {irq} ({desc}) returned {ret} ({}) in the CPU{cpu} \
                 offline migration at {}: the vector stays on the dying CPU and its interrupts \
                 are lost; look at vector exhaustion on the remaining CPUs or the chip's \
                 set_affinity",
                errno_name(ret),
                self.t(evidence.ts_ns)
            );
            let epoch = self.cycle_epoch();
            let f = self.vector_finding(
                RuleId::G2,
                irq,
                &format!("set-affinity-failed-cpu{cpu}"),
                epoch,
                Severity::Error,
                evidence.ts_ns,
                vec![evidence, Evidence::of(ev)],
                meaning,
            );
            self.raise(f, out);
        }
    }

    pub(crate) fn g2_offline_cpu(&mut self, cpu: u32, ev: &Event, out: &mut Vec<DivergenceUpdate>) {
        self.migration.offline_checked.insert(cpu);
        if !self.enabled(RuleId::G2) {
            return;
        }
        let left: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| {
                v.target.as_ref().is_some_and(|t| {
                    // irq_do_set_affinity succeeding in this CPU's migration window moved the
                    // vector even when no irq_vectors:vector_update follows (x86 on 6.12
                    // rewrites the message of a suspended line without one).
                    t.cpu == Some(cpu)
                        && !v.last_migration.as_ref().is_some_and(|m| {
                            m.from_cpu == cpu && m.ret == Some(0) && m.ts_ns >= t.ts_ns
                        })
                }) && v.has_action()
                    && v.reallocated_to.is_none()
                    && v.active != Some(false)
                    && v.shutdown.is_none()
                    && v.managed_shutdown != Some(true)
            })
            .map(|v| v.irq)
            .collect();
        let from = self
            .migration
            .cpu_going_down
            .map(|(_, t)| t)
            .unwrap_or(ev.ts_ns)
            .min(ev.ts_ns);
        for irq in left {
            let Some(t) = self.state.vectors.get(&irq).and_then(|v| v.target.clone()) else {
                continue;
            };
            let (desc, _) = self.describe(irq);
            let vector = t
                .vector
                .map_or_else(String::new, |v| format!("vector {v}, "));
            let meaning = format!(
                "irq {irq} ({desc}) still targets CPU{cpu} ({vector}from {}, {}, at {}) after \
                 CPU{cpu} went offline at {}: its interrupts are delivered to a dead CPU; look at \
                 why migrate_one_irq skipped or failed it",
                t.source.name(),
                t.via,
                self.t(t.ts_ns),
                self.t(ev.ts_ns)
            );
            let epoch = self.cycle_epoch();
            let evidence = vec![
                Evidence::note(
                    t.ts_ns,
                    t.via,
                    format!(
                        "irq {irq} on CPU{cpu}{}",
                        t.vector
                            .map_or_else(String::new, |v| format!(" vector {v}"))
                    ),
                ),
                Evidence::of(ev),
            ];
            let f = self.vector_finding(
                RuleId::G2,
                irq,
                &format!("offline-cpu{cpu}"),
                epoch,
                Severity::Error,
                ev.ts_ns,
                evidence,
                meaning,
            );
            self.raise_absence(f, TARGET_PROBES, from, out);
        }
    }
}

//! One event to the part of the engine it concerns: the vector model, the phase tracker or a
//! rule family.

use tracer_common::ProbeId;

use super::divergence::{DivergenceUpdate, Evidence, event_name};
use super::phase::PmStep;
use super::rules::ComposeInFlight;
use super::state::{self, Migration, MigrationVia};
use super::{Engine, HostSeen};
use crate::event::{Event, EventKind};

impl Engine {
    /// Any event that ran on a CPU shows that CPU online (a CPU brought up outside a PM
    /// transition has no `CPU_ON` event).
    pub(super) fn note_cpu_alive(&mut self, ev: &Event) {
        let userspace = matches!(
            ev.kind,
            EventKind::Lost { .. }
                | EventKind::IrqCounts { .. }
                | EventKind::Gap { .. }
                | EventKind::Notice { .. }
        );
        if userspace
            || matches!(ev.kind, EventKind::MigrateAllOffExit)
            || self.state.online_cpus.contains(&ev.cpu)
        {
            return;
        }
        self.state.cpu_change(ev.ts_ns, ev.cpu, true, "event on it");
        self.migration.offline_checked.remove(&ev.cpu);
    }

    pub(super) fn dispatch(&mut self, ev: &Event, out: &mut Vec<DivergenceUpdate>) {
        let ts = ev.ts_ns;
        match &ev.kind {
            EventKind::ReturnWithoutEntry { probe } => {
                *self.observed.orphan_returns.entry(*probe).or_default() += 1;
            }
            EventKind::Notice { .. } => {}
            EventKind::ComposeEnter(v) => {
                let irq = self.vector_for(v, ts, "hv_compose_msi_msg", false);
                self.mark_hyperv(irq);
                self.compose
                    .composing
                    .insert(irq, ComposeInFlight::default());
                self.h9_removing_bus(ev, irq, "composed", out);
            }
            EventKind::ComposeExit { v, msg } => {
                let irq = self.vector_for(v, ts, "hv_compose_msi_msg:return", false);
                self.mark_hyperv(irq);
                let in_flight = self.compose.composing.remove(&irq);
                let host = if !self.gates.available(ProbeId::HvComposeCompl, &self.seen) {
                    HostSeen::Unknown
                } else {
                    match in_flight {
                        Some(ComposeInFlight {
                            reply: Some((status, event)),
                            ..
                        }) => HostSeen::Replied { status, event },
                        Some(ComposeInFlight {
                            reply: None,
                            unattributed: false,
                        }) => HostSeen::NoReply,
                        _ => HostSeen::Unknown,
                    }
                };
                self.on_compose_exit(ev, irq, v, *msg, host, out);
            }
            EventKind::UnmaskEnter(v) => {
                let irq = self.vector_for(v, ts, "hv_irq_unmask", true);
                self.mark_hyperv(irq);
                if let Some(vs) = self.state.vectors.get_mut(&irq) {
                    vs.unmasked_seen = true;
                }
                self.on_unmask_enter(ev, irq, v, out);
            }
            EventKind::UnmaskExit(v) => {
                let irq = self.vector_for(v, ts, "hv_irq_unmask:return", false);
                self.mark_hyperv(irq);
                self.on_unmask_exit(ev, irq, v, out);
            }
            EventKind::MaskEnter(v) => {
                let irq = self.vector_for(v, ts, "hv_irq_mask", true);
                self.mark_hyperv(irq);
            }
            EventKind::MaskExit(v) => {
                let irq = self.vector_for(v, ts, "hv_irq_mask:return", false);
                self.mark_hyperv(irq);
            }
            EventKind::PciMsiMask(v) => {
                // A kprobe on entry: the function is about to set the mask bit.
                let irq = self.vector_for(v, ts, "pci_msi_mask_irq", true);
                if let Some(vs) = self.state.vectors.get_mut(&irq) {
                    vs.set_cache_masked(true, ts, "pci_msi_mask_irq");
                }
            }
            EventKind::PciMsiUnmask(v) => {
                let irq = self.vector_for(v, ts, "pci_msi_unmask_irq", true);
                if let Some(vs) = self.state.vectors.get_mut(&irq) {
                    vs.set_cache_masked(false, ts, "pci_msi_unmask_irq");
                    vs.unmasked_seen = true;
                }
                self.on_unmasked(ev, irq, out);
            }
            // The per-device MSI domains' callbacks: the same device-level mask as
            // pci_msi_(un)mask_irq, for the ordinary devices of 6.2 and later.
            EventKind::PciIrqMask { v, .. } => {
                let by = event_name(&ev.kind);
                let irq = self.vector_for(v, ts, by, true);
                if let Some(vs) = self.state.vectors.get_mut(&irq) {
                    vs.set_cache_masked(true, ts, by);
                }
            }
            EventKind::PciIrqUnmask { v, .. } => {
                let by = event_name(&ev.kind);
                let irq = self.vector_for(v, ts, by, true);
                if let Some(vs) = self.state.vectors.get_mut(&irq) {
                    vs.set_cache_masked(false, ts, by);
                    vs.unmasked_seen = true;
                }
                self.on_unmasked(ev, irq, out);
            }
            // The host's reply: kept for the compose it belongs to, decided at its return.
            EventKind::ComposeCompl { irq, status, .. } => match irq {
                Some(irq) => {
                    if let Some(c) = self.compose.composing.get_mut(irq) {
                        c.reply = Some((*status, ev.clone()));
                    }
                }
                None => {
                    for c in self.compose.composing.values_mut() {
                        c.unattributed = true;
                    }
                }
            },
            EventKind::MigrateOneIrq { irq } => {
                if let Some(v) = self.state.vectors.get_mut(irq) {
                    v.last_migration = Some(Migration {
                        ts_ns: ts,
                        from_cpu: ev.cpu,
                        via: MigrationVia::MigrateOneIrq,
                        ret: None,
                    });
                }
            }
            EventKind::MigrateAllOffEnter => {
                self.migration.migration_windows.insert(ev.cpu, ts);
            }
            EventKind::MigrateAllOffExit => {
                self.migration.migration_windows.remove(&ev.cpu);
                self.g2_affinity_failures(ev, out);
                self.state
                    .cpu_change(ts, ev.cpu, false, "irq_migrate_all_off_this_cpu");
                self.g2_offline_cpu(ev.cpu, ev, out);
                self.release_held_g1(ts, out);
            }
            EventKind::SetAffinityEnter { irq, .. } => {
                self.migration.affinity_calls.insert(ev.cpu, (*irq, ts));
            }
            EventKind::SetAffinityExit {
                irq,
                ret,
                in_migration,
            } => {
                let call = self.migration.affinity_calls.remove(&ev.cpu);
                let in_window =
                    *in_migration || self.migration.migration_windows.contains_key(&ev.cpu);
                if in_window {
                    if *ret == 0 {
                        let since = match call {
                            Some((i, t)) if i == *irq => t,
                            _ => self
                                .migration
                                .migration_windows
                                .get(&ev.cpu)
                                .copied()
                                .unwrap_or(ts),
                        };
                        self.target_after_migration(*irq, ev.cpu, since, ts);
                    }
                    if let Some(v) = self.state.vectors.get_mut(irq) {
                        v.last_migration = Some(Migration {
                            ts_ns: ts,
                            from_cpu: ev.cpu,
                            via: MigrationVia::SetAffinityInWindow,
                            ret: Some(*ret),
                        });
                    }
                    let fails = self.migration.affinity_failures.entry(ev.cpu).or_default();
                    if *ret != 0 {
                        fails.insert(*irq, (*ret, Evidence::of(ev)));
                    } else {
                        // migrate_one_irq retries -ENOSPC with every online CPU: a later
                        // success clears the failure.
                        fails.remove(irq);
                    }
                }
            }
            EventKind::RestoreEnter { .. } | EventKind::RestoreExit { .. } => {}
            EventKind::WriteMsiMsg {
                v, msg, in_restore, ..
            } => {
                let irq = self.vector_for(v, ts, "__pci_write_msi_msg", false);
                let managed = match self.state.vectors.get_mut(&irq) {
                    Some(vs) => {
                        vs.last_written = Some((*msg, ts));
                        vs.managed == Some(true)
                    }
                    None => false,
                };
                // msi_domain_deactivate() writes a zeroed message: the vector was shut down
                // (a managed vector with the last CPU of its mask). On 6.12's CPU-offline
                // path no irq_vectors:vector_deactivate follows, so this is the only sign.
                if msg.is_zero() && !*in_restore {
                    self.on_activate(irq, managed, false, ev);
                }
                if !msg.is_zero() {
                    self.target_from_message(irq, *msg, ts);
                }
                if *in_restore {
                    self.on_restore_write(ev, irq, v, *msg, out);
                }
            }
            EventKind::HvPciSuspendEnter { bus, state } => {
                self.bus_update(bus, *state, None, ts, Some(true));
            }
            EventKind::HvPciSuspendExit { bus, ret, state } => {
                let inferred = (*ret == 0).then_some(3);
                self.bus_update(bus, state.or(inferred), Some(*ret), ts, None);
            }
            EventKind::HvPciResumeEnter { bus, state } => {
                self.bus_update(bus, *state, None, ts, None);
            }
            EventKind::HvPciResumeExit { bus, ret, state } => {
                let inferred = (*ret == 0).then_some(2);
                self.bus_update(bus, state.or(inferred), Some(*ret), ts, Some(false));
                if *ret != 0 {
                    self.h9_resume_failed(ev, bus.as_deref().unwrap_or("?"), *ret, out);
                }
            }
            EventKind::SuspendResume { action, val, start } => {
                self.on_suspend_resume(ev, PmStep::parse(action, *val, *start), out);
            }
            EventKind::DevicePmStart { .. } | EventKind::DevicePmEnd { .. } => {}
            EventKind::VectorUpdate {
                irq, vector, cpu, ..
            } => {
                self.set_target(*irq, Some(*cpu), Some(*vector), ts, "vector_update");
            }
            EventKind::VectorConfig {
                irq,
                vector,
                cpu,
                apicdest,
            } => {
                // hw_irq_cfg.dest_apicid is what the kernel puts in the message's destination.
                let known = self
                    .observed
                    .apic_cpus
                    .entry(*apicdest)
                    .or_insert(Some(*cpu));
                if *known != Some(*cpu) {
                    *known = None;
                }
                self.set_target(*irq, Some(*cpu), Some(*vector), ts, "vector_config");
            }
            EventKind::VectorClear { irq, .. } => {
                // clear_irq_vector: the vector (and a move in progress) released; the IRQ has
                // none until the vector_config that normally follows.
                self.set_target(*irq, None, None, ts, "vector_clear");
            }
            EventKind::VectorActivate { irq, managed, .. } => {
                self.on_activate(*irq, *managed, true, ev);
            }
            EventKind::VectorDeactivate { irq, managed, .. } => {
                self.on_activate(*irq, *managed, false, ev);
            }
            EventKind::Lost { probe, count } => {
                let origin = self.origin_ns();
                let r = self.losses.record(
                    *probe,
                    *count,
                    ts,
                    origin,
                    self.state.phase,
                    self.state.epoch,
                );
                self.on_loss(&r, out);
            }
            EventKind::IrqCounts { counts } => self.on_counts(ts, counts),
            EventKind::Gap { reason } => {
                if self.state.gaps.len() < state::MAX_TIMELINE {
                    self.state.gaps.push(state::GapMark {
                        ts_ns: ts,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
}

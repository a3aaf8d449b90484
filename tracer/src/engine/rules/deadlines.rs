//! The rules that wait for time to pass: G1 masked after resume, G3 managed vector never
//! restarted, G5 silent after resume. Each is a deadline settled when a later event's
//! timestamp passes it, or at end of input.

use std::collections::{BTreeMap, BTreeSet};

use super::{ACTIVATE_PROBES, UNMASK_PROBES};
use crate::duration::secs;
use crate::engine::divergence::{DivergenceUpdate, Evidence, RuleId, Severity};
use crate::engine::gates::NotEvaluated;
use crate::engine::{Engine, VectorState};

/// A rule waiting for time to pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    G1 {
        epoch: u32,
    },
    G5 {
        epoch: u32,
    },
    G3 {
        cpu: u32,
        online_ts: u64,
        epoch: u32,
    },
}

/// Rules waiting for time to pass, by deadline (and order of scheduling).
#[derive(Default)]
pub(crate) struct Deadlines {
    pub pending: BTreeMap<(u64, u64), Pending>,
    pub pending_seq: u64,
    /// G1 decisions held, by epoch, for vectors masked inside a CPU-offline migration window
    /// that was still open when their deadline came: decided when the last window closes.
    pub held_g1: BTreeMap<u32, BTreeSet<u32>>,
}

impl Engine {
    pub(crate) fn schedule(&mut self, deadline: u64, p: Pending) {
        self.deadlines.pending_seq += 1;
        self.deadlines
            .pending
            .insert((deadline, self.deadlines.pending_seq), p);
    }

    /// Settle every deadline at or before `ts`, in deadline order.
    pub(crate) fn settle(&mut self, ts: u64, out: &mut Vec<DivergenceUpdate>) {
        while let Some((&(deadline, seq), _)) = self.deadlines.pending.first_key_value() {
            if deadline > ts {
                break;
            }
            if let Some(p) = self.deadlines.pending.remove(&(deadline, seq)) {
                self.run_pending(p, deadline, out);
            }
        }
    }

    pub(crate) fn run_pending(&mut self, p: Pending, now: u64, out: &mut Vec<DivergenceUpdate>) {
        match p {
            Pending::G1 { epoch } => self.g1_masked_after_resume(epoch, None, now, out),
            Pending::G5 { epoch } => self.g5_silent_after_resume(epoch, now, out),
            Pending::G3 {
                cpu,
                online_ts,
                epoch,
            } => self.g3_not_restarted(cpu, online_ts, epoch, now, out),
        }
    }

    /// **G1 masked after resume.** Decided, at `resumed` + grace, by the device-level mask as
    /// the kernel last set it: the last mask operation observed (`pci_msi_(un)mask_irq`, the
    /// per-device domains' `pci_irq_(un)mask_msi(x)`, hv_irq_unmask's return) or the mask
    /// cache the restore wrote into the device (`__pci_write_msi_msg`), for a vector with an
    /// action that genirq believes enabled. Handler counts overrule it: an interrupt of the
    /// vector counted between two samples taken after both this resume began and the last
    /// masked observation proves the kernel delivered it, so it is not still masked (an unmask
    /// went through a path msitrace does not see). Growth across the suspend (the first sample
    /// after it against the last before) proves nothing: those interrupts may predate the
    /// mask. A vector whose samples show no such growth only corroborates the finding (said in
    /// it); without samples the mask observation decides alone.
    ///
    /// A vector masked inside a CPU-offline migration window that is still open is not judged
    /// yet: `migrate_one_irq` masks a vector around its move and unmasks it after, and a
    /// deadline can fall between the two (seen on 7.3, a sysfs CPU offline 1.94 s after a
    /// resume). Its decision is held until the last open window closes ([`Self::release_held_g1`]);
    /// `only` is then the vectors held.
    fn g1_masked_after_resume(
        &mut self,
        epoch: u32,
        only: Option<&BTreeSet<u32>>,
        now: u64,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.enabled(RuleId::G1) {
            return;
        }
        let window_open_since = self.migration.migration_windows.values().min().copied();
        let grace = secs(self.timing.g1_grace_ns);
        let epoch_start = self
            .state
            .epoch_info(epoch)
            .map_or(u64::MAX, |e| e.start_ts_ns);
        // A vector masked inside a migration window still open is held, not judged.
        let (held, masked): (Vec<_>, Vec<_>) = self
            .state
            .vectors
            .values()
            .filter(|v| only.is_none_or(|o| o.contains(&v.irq)))
            .filter(|v| {
                let fired_since = v
                    .counts
                    .last_growth
                    .is_some_and(|(from, _)| from >= v.cache_masked_ts_ns.max(epoch_start));
                // A vector whose device and index moved to another IRQ was freed: the kernel
                // delivers nothing there any more, masked or not.
                v.reallocated_to.is_none()
                    && v.has_action()
                    && v.genirq_enabled() == Some(true)
                    && v.cache_masked == Some(true)
                    && v.active != Some(false)
                    && !fired_since
            })
            .map(|v| {
                let in_window = window_open_since.is_some_and(|t| v.cache_masked_ts_ns >= t);
                (v.irq, in_window)
            })
            .partition(|&(_, in_window)| in_window);
        if !held.is_empty() {
            self.deadlines
                .held_g1
                .entry(epoch)
                .or_default()
                .extend(held.into_iter().map(|(irq, _)| irq));
        }
        for (irq, _) in masked {
            let Some(v) = self.state.vectors.get(&irq) else {
                continue;
            };
            let seen_at = v.cache_masked_ts_ns;
            let seen_by = v.cache_masked_by;
            let sampled_since = v.counts.last_sample_ts_ns > seen_at;
            let note = Evidence::note(
                now,
                "deadline",
                format!("still masked {grace} after resume of epoch {epoch}"),
            );
            let still = format!("it was still masked {grace} after resume epoch {epoch}");
            if let Some((key, meaning)) = self.open_note(RuleId::H4, irq, still, true) {
                self.revise(&key, Severity::Error, meaning, Some(note), out);
                continue;
            }
            let (desc, _) = self.describe(irq);
            let silent = if sampled_since {
                ", and no interrupt of it was counted after that"
            } else {
                ""
            };
            let meaning = format!(
                "irq {irq} ({desc}) has an action and genirq says it is enabled, but its \
                 device-level mask was still set {grace} after resume epoch {epoch} (last seen \
                 masked by {seen_by} at {}{silent}): the device cannot raise this interrupt; \
                 look at what masked it before suspend and why resume did not unmask it",
                self.t(seen_at)
            );
            let evidence = vec![
                Evidence::note(seen_at, seen_by, format!("irq {irq} mask cache set")),
                note,
            ];
            let f = self.vector_finding(
                RuleId::G1,
                irq,
                "masked",
                epoch,
                Severity::Error,
                now,
                evidence,
                meaning,
            );
            self.raise_absence(f, UNMASK_PROBES, seen_at, out);
        }
    }

    /// The last open migration window closed at `now`: decide the G1s it held.
    pub(crate) fn release_held_g1(&mut self, now: u64, out: &mut Vec<DivergenceUpdate>) {
        if !self.migration.migration_windows.is_empty() {
            return;
        }
        for (epoch, irqs) in std::mem::take(&mut self.deadlines.held_g1) {
            self.g1_masked_after_resume(epoch, Some(&irqs), now, out);
        }
    }

    /// G1s held for a migration window that will not close in time (end of input, the next
    /// suspend): said, not decided.
    pub(crate) fn drop_held_g1(&mut self, why: &str) {
        for (epoch, irqs) in std::mem::take(&mut self.deadlines.held_g1) {
            let list: Vec<String> = irqs.iter().map(u32::to_string).collect();
            self.findings.not_evaluated(NotEvaluated {
                rule: RuleId::G1,
                part: Some(format!("irq {}", list.join(","))),
                epoch: Some(epoch),
                reason: format!(
                    "masked inside a CPU-offline migration window that was still open at the \
                     deadline, and {why} before it closed"
                ),
            });
        }
    }

    fn g3_not_restarted(
        &mut self,
        cpu: u32,
        online_ts: u64,
        epoch: u32,
        now: u64,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.enabled(RuleId::G3) {
            return;
        }
        let down: Vec<(u32, u64)> = self
            .state
            .vectors
            .values()
            .filter_map(|v| {
                let s = v.shutdown.as_ref()?;
                (s.cpu == cpu
                    && s.ts_ns <= online_ts
                    && v.has_action()
                    && v.reallocated_to.is_none())
                .then_some((v.irq, s.ts_ns))
            })
            .collect();
        for (irq, down_ts) in down {
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "managed irq {irq} ({desc}) was shut down when CPU{cpu} went offline at {} and \
                 not restarted {} after CPU{cpu} came back at {}: the device's queue for that \
                 CPU gets no interrupts; look at irq_affinity_online_cpu / irq_startup for this \
                 vector",
                self.t(down_ts),
                secs(now.saturating_sub(online_ts)),
                self.t(online_ts)
            );
            let evidence = vec![
                Evidence::note(
                    down_ts,
                    "irq_vectors:vector_deactivate",
                    format!("irq {irq} managed, CPU{cpu} going down"),
                ),
                Evidence::note(
                    online_ts,
                    "power:suspend_resume",
                    format!("CPU_ON {cpu} end"),
                ),
            ];
            let f = self.vector_finding(
                RuleId::G3,
                irq,
                &format!("not-restarted-cpu{cpu}"),
                epoch,
                Severity::Error,
                now,
                evidence,
                meaning,
            );
            self.raise_absence(f, ACTIVATE_PROBES, down_ts, out);
        }
    }

    fn g5_silent_after_resume(&mut self, epoch: u32, now: u64, out: &mut Vec<DivergenceUpdate>) {
        if !self.enabled(RuleId::G5) {
            return;
        }
        let Some(resumed) = self.state.epoch_info(epoch).and_then(|e| e.resumed_ts_ns) else {
            return;
        };
        // Silence is judged from the first sample after the resume (see `on_counts`): there
        // must be one, and a later one to compare it with.
        let baseline_ts = match self.observed.resume_sample {
            Some((ep, t)) if ep == epoch && t >= resumed => Some(t),
            _ => None,
        };
        let Some(baseline_ts) =
            baseline_ts.filter(|&b| self.observed.last_counts_ts.is_some_and(|t| t > b))
        else {
            self.findings.not_evaluated(NotEvaluated {
                rule: RuleId::G5,
                part: None,
                epoch: Some(epoch),
                reason: format!(
                    "fewer than two handler-count samples between resume of epoch {epoch} and {} later",
                    secs(self.timing.g5_silence_ns)
                ),
            });
            return;
        };
        let window = secs(self.timing.g5_silence_ns);
        // A vector its driver freed and requested again across the sleep is left out: in the
        // 6.12 guests virtio-blk's second queue came back that way with no work after the
        // resume (its I/O went through the first), and silence there says nothing about the
        // device. Said once per epoch, not silently.
        // The same goes for one given back its number, which shows as its kernel count
        // restarting after the suspend started.
        let suspend_ts = self
            .state
            .epoch_info(epoch)
            .and_then(|e| e.suspend_ts_ns)
            .unwrap_or(resumed);
        let again = |v: &VectorState| {
            v.previous_irq.is_some() || v.counts.restarted_ts_ns.is_some_and(|t| t >= suspend_ts)
        };
        let requested_again: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| again(v) && v.counts.fired_before_suspend)
            .map(|v| v.irq)
            .collect();
        if !requested_again.is_empty() {
            self.findings.not_evaluated(NotEvaluated {
                rule: RuleId::G5,
                part: Some("vectors requested again".into()),
                epoch: Some(epoch),
                reason: format!(
                    "irq {} were freed and requested again by their driver across the sleep \
                     (under a new IRQ number, which the vector follows, or its own with the \
                     kernel's count restarted): an idle queue of theirs \
                     cannot be told from a dead one by handler counts",
                    requested_again
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            });
        }
        let silent: Vec<(u32, u64, u64)> = self
            .state
            .vectors
            .values()
            .filter_map(|v| {
                let after = v.counts.after_resume?;
                let quiet = v.counts.fired_before_suspend
                    && v.reallocated_to.is_none()
                    && !again(v)
                    && v.counts.last == Some(after)
                    && v.active != Some(false)
                    && v.shutdown.is_none();
                quiet.then_some((v.irq, after, v.counts.last_increase_ts_ns.unwrap_or(0)))
            })
            .collect();
        for (irq, count, fired_at) in silent {
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "irq {irq} ({desc}) fired before suspend (count {count}, last growth seen at {}) \
                 but 0 times from the first sample after resume epoch {epoch} ({}) to {window} \
                 after it: the device looks silent (heuristic, the check testers ran by hand on \
                 /proc/interrupts); check its MSI state above and whether the device had work \
                 to do",
                self.t(fired_at),
                self.t(baseline_ts)
            );
            let evidence = vec![
                Evidence::note(
                    fired_at,
                    "irq counts",
                    format!("irq {irq} count grew to {count}"),
                ),
                Evidence::note(now, "deadline", format!("irq {irq} count still {count}")),
            ];
            let f = self.vector_finding(
                RuleId::G5,
                irq,
                "silent",
                epoch,
                Severity::Warning,
                now,
                evidence,
                meaning,
            );
            self.raise(f, out);
        }
    }
}

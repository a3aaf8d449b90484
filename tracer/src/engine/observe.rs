//! What the engine observes of each vector before any rule judges it: which vector an event
//! is about (retiring a reused IRQ's old one), its target (CPU and vector), activation and
//! handler counts.

use std::collections::{BTreeMap, HashMap};

use tracer_common::ProbeId;

use super::phase::Phase;
use super::state::{HvEvidence, ManagedShutdown, Target, TargetSource, VectorState};
use super::vector::Counts;
use super::{Engine, MAX_RETIRED};
use crate::event::{Event, VectorSnap};

/// irq_vectors facts about an IRQ not (yet) known as an MSI vector; merged when it becomes one.
#[derive(Clone, Debug, Default)]
pub(crate) struct OtherIrq {
    target: Option<Target>,
    active: Option<bool>,
    managed: Option<bool>,
}

/// Device, MSI-X or not, index → the IRQ that vector has now.
pub(crate) type Identities = HashMap<(String, bool, u32), u32>;

fn identities(vectors: &super::state::VectorMap) -> Identities {
    vectors
        .values()
        .filter_map(|v| {
            let (d, x, i) = v.identity()?;
            Some(((d.to_owned(), x, i), v.irq))
        })
        .collect()
}

/// What observation keeps beside the vectors: facts about IRQs not (yet) known as MSI
/// vectors, the APIC ids seen with their CPUs, where each device's vector is now, the
/// handler-count samples' clock, and return probes that came without their entry.
pub(crate) struct Observed {
    /// Message destination (APIC id) → CPU, as `vector_config` showed them side by side;
    /// `None` once two CPUs were seen with one id. The only way to read a CPU out of an x86
    /// message without guessing that APIC ids are CPU numbers.
    pub apic_cpus: BTreeMap<u32, Option<u32>>,
    pub other_irqs: BTreeMap<u32, OtherIrq>,
    /// Where each device's vector is now, to follow it across a free and re-request.
    pub identities: Identities,
    pub counts_baseline_taken: bool,
    pub last_counts_ts: Option<u64>,
    /// The epoch whose first handler-count sample after its resume was taken, and when.
    pub resume_sample: Option<(u32, u64)>,
    /// Return probes that fired without their entry, by probe: used for nothing but saying so.
    pub orphan_returns: BTreeMap<ProbeId, u64>,
}

impl Observed {
    pub fn new(vectors: &super::state::VectorMap) -> Observed {
        Observed {
            apic_cpus: BTreeMap::new(),
            other_irqs: BTreeMap::new(),
            identities: identities(vectors),
            counts_baseline_taken: false,
            last_counts_ts: None,
            resume_sample: None,
            orphan_returns: BTreeMap::new(),
        }
    }
}

impl Engine {
    /// Make sure the vector of a snapshot exists (retiring an older one on IRQ reuse), take
    /// the snapshot and return its IRQ.
    pub(super) fn vector_for(
        &mut self,
        s: &VectorSnap,
        ts: u64,
        by: &'static str,
        pre_state: bool,
    ) -> u32 {
        let irq = s.irq;
        let mut created_msi = false;
        let mut created = false;
        let known = self
            .state
            .vectors
            .get(&irq)
            .map(|v| (v.device.is_some(), v.kind));
        match self.state.vectors.get_mut(&irq) {
            Some(v) if v.conflicts_with(s) => {
                let old = v.clone();
                let mut fresh = VectorState::new(irq);
                fresh.generation = old.generation + 1;
                // The handler counter belongs to the IRQ number and goes on counting: the new
                // vector's baseline is where the old one left it.
                fresh.counts.first = old.counts.last;
                fresh.counts.last = old.counts.last;
                fresh.counts.last_sample_ts_ns = old.counts.last_sample_ts_ns;
                *v = fresh;
                created = true;
                if self.state.retired.len() < MAX_RETIRED {
                    self.state.retired.push(old);
                }
                self.findings.close_irq(irq);
                created_msi = s.msix == Some(false);
            }
            Some(_) => {}
            None => {
                let mut v = VectorState::new(irq);
                if let Some(o) = self.observed.other_irqs.remove(&irq) {
                    v.target = o.target;
                    v.active = o.active;
                    v.managed = o.managed;
                }
                self.state.vectors.insert(irq, v);
                created = true;
                created_msi = s.msix == Some(false);
            }
        }
        let mut identified = false;
        if let Some(v) = self.state.vectors.get_mut(&irq) {
            v.observe(s, ts, by, pre_state);
            identified = created || known != Some((v.device.is_some(), v.kind));
        }
        if created_msi {
            self.state.assign_multi_msi();
        }
        if identified {
            self.follow_identity(irq);
        }
        irq
    }

    /// `irq` now shows its device and index: if that device's vector was at another IRQ, the
    /// driver freed it and requested it again (virtio at every freeze/restore), and what was
    /// known of it carries over.
    fn follow_identity(&mut self, irq: u32) {
        let Some(id) = self.state.vectors.get(&irq).and_then(|v| v.identity()) else {
            return;
        };
        let key = (id.0.to_owned(), id.1, id.2);
        let Some(old_irq) = self.observed.identities.insert(key.clone(), irq) else {
            return;
        };
        if old_irq == irq {
            return;
        }
        let same = |v: &VectorState| {
            v.irq == old_irq
                && v.reallocated_to.is_none()
                && v.identity() == Some((key.0.as_str(), key.1, key.2))
        };
        let old = match self.state.vectors.get_mut(&old_irq) {
            Some(v) if same(v) => {
                v.reallocated_to = Some(irq);
                v.clone()
            }
            // Its number was taken by another vector since: the old one was retired then.
            _ => match self.state.retired.iter_mut().rev().find(|v| same(v)) {
                Some(v) => {
                    v.reallocated_to = Some(irq);
                    v.clone()
                }
                None => return,
            },
        };
        if let Some(v) = self.state.vectors.get_mut(&irq) {
            v.inherit(&old);
        }
    }

    pub(super) fn mark_hyperv(&mut self, irq: u32) {
        if let Some(v) = self.state.vectors.get_mut(&irq)
            && v.hyperv.is_none()
        {
            v.hyperv = Some(HvEvidence::ChipCallback);
        }
    }

    /// The target an `irq_vectors` tracepoint shows.
    pub(super) fn set_target(
        &mut self,
        irq: u32,
        cpu: Option<u32>,
        vector: Option<u32>,
        ts: u64,
        via: &'static str,
    ) {
        let t = Target {
            cpu,
            vector,
            ts_ns: ts,
            source: TargetSource::VectorTracepoint,
            via,
        };
        match self.state.vectors.get_mut(&irq) {
            Some(v) => v.target = Some(t),
            None => self.observed.other_irqs.entry(irq).or_default().target = Some(t),
        }
    }

    /// `irq_do_set_affinity` returned 0 for `irq` in the offline migration window of `dying`
    /// (entered at `since`): the vector left `dying`. An exact observation made during the
    /// call (a vector tracepoint, a decoded message) already says where it went; otherwise
    /// the new CPU is one of those still online (migrate_one_irq falls back to any online CPU
    /// when none of the affinity is), so it is known only when a single one is left. The new
    /// vector is not known from the window.
    pub(super) fn target_after_migration(&mut self, irq: u32, dying: u32, since: u64, ts: u64) {
        let mut left = self.state.online_cpus.iter().filter(|&&c| c != dying);
        let cpu = match (left.next(), left.next()) {
            (Some(&c), None) => Some(c),
            _ => None,
        };
        let Some(v) = self.state.vectors.get_mut(&irq) else {
            return;
        };
        if let Some(t) = &v.target
            && t.source.exact()
            && t.ts_ns >= since
            && t.cpu.is_some_and(|c| c != dying)
        {
            return;
        }
        v.target = Some(Target {
            cpu,
            vector: None,
            ts_ns: ts,
            source: TargetSource::Migration,
            via: "irq_do_set_affinity",
        });
    }

    /// A message written to the device for `irq`: on x86 without remapping it names the CPU
    /// (through the APIC id → CPU pairs `vector_config` showed) and the vector. Ignored where
    /// the message is not a destination (Hyper-V, remapped; see
    /// [`VectorState::message_names_target`]) or the APIC id was never seen with a CPU.
    pub(super) fn target_from_message(&mut self, irq: u32, msg: crate::event::MsiMsg, ts: u64) {
        let Some((dest, vector)) = msg.x86_destination() else {
            return;
        };
        let Some(&Some(cpu)) = self.observed.apic_cpus.get(&dest) else {
            return;
        };
        let Some(v) = self.state.vectors.get_mut(&irq) else {
            return;
        };
        if !v.message_names_target() {
            return;
        }
        v.target = Some(Target {
            cpu: Some(cpu),
            vector: Some(vector),
            ts_ns: ts,
            source: TargetSource::MessageWrite,
            via: "__pci_write_msi_msg",
        });
    }

    pub(super) fn on_activate(&mut self, irq: u32, managed: bool, active: bool, ev: &Event) {
        // A managed vector deactivated while its CPU goes down was shut down with it.
        let dying = self
            .migration
            .migration_windows
            .contains_key(&ev.cpu)
            .then_some(ev.cpu)
            .or(self.migration.cpu_going_down.map(|(c, _)| c));
        let Some(v) = self.state.vectors.get_mut(&irq) else {
            let o = self.observed.other_irqs.entry(irq).or_default();
            o.active = Some(active);
            o.managed = Some(managed);
            return;
        };
        v.active = Some(active);
        if managed {
            v.managed = Some(true);
        }
        if active {
            v.shutdown = None;
        } else if managed && let Some(cpu) = dying {
            v.shutdown = Some(ManagedShutdown {
                cpu,
                ts_ns: ev.ts_ns,
            });
        }
    }

    pub(super) fn on_counts(&mut self, ts: u64, counts: &[(u32, u64)]) {
        let baseline = !self.observed.counts_baseline_taken;
        self.observed.counts_baseline_taken = true;
        self.observed.last_counts_ts = Some(ts);
        // User space runs up to the freezer and again only after the thaw, so a sample read
        // while the phase says suspending was taken before the freeze: what grew in it fired
        // before the suspend. The session takes one as soon as it reads the start of a PM
        // transition, to see interrupts of the last second before the freeze as such.
        let before_freeze = matches!(
            self.state.phase,
            Phase::Suspending | Phase::CpusOffline | Phase::Sleeping | Phase::Image
        );
        // The first sample after a resume is G5's baseline. The sample before the freeze
        // (periodic or at the PM start) cannot be: interrupts keep coming until the noirq
        // phase, long after user space froze, and a dead vector's count grows across the
        // sleep by what it fired then. Growth up to this sample is therefore not proof of
        // life after the resume; growth after it is. The session takes it as soon as it reads
        // the resume, so the window it leaves out is the resume itself.
        let resume_epoch = self
            .state
            .epochs
            .last()
            .filter(|e| {
                self.state.phase == Phase::Resumed && e.resumed_ts_ns.is_some_and(|r| r <= ts)
            })
            .map(|e| e.epoch)
            .filter(|&ep| {
                self.observed
                    .resume_sample
                    .is_none_or(|(seen, _)| seen != ep)
            });
        for &(irq, c) in counts {
            if let Some(v) = self.state.vectors.get_mut(&irq) {
                sample_count(&mut v.counts, c, ts, baseline, before_freeze);
            }
        }
        // A sample lists every IRQ with a non-zero count. A tracked vector that had counted
        // and is missing from it is at 0: its descriptor was freed (virtio-blk frees its queues'
        // vectors at the freeze and requests them again at the restore, and 6.12 gave them
        // back their numbers) and has not fired since. Taken as absent instead, its count
        // before the sleep stood in for the restarted one, and a queue that fired after the
        // resume up to that same count (48 and 48, 6.12 under systemd) read as silent to G5.
        // After the loop above, their last sample is an older one. A sample with no IRQ at
        // all was not read and says nothing.
        if !baseline && !counts.is_empty() {
            for v in self.state.vectors.values_mut() {
                if v.counts.last_sample_ts_ns < ts && v.counts.last.is_some_and(|n| n > 0) {
                    sample_count(&mut v.counts, 0, ts, baseline, before_freeze);
                }
            }
        }
        if let Some(epoch) = resume_epoch {
            self.observed.resume_sample = Some((epoch, ts));
            for v in self.state.vectors.values_mut() {
                v.counts.after_resume = v.counts.last;
            }
        }
    }
}

/// One IRQ's count in a sample.
fn sample_count(k: &mut Counts, c: u64, ts: u64, baseline: bool, before_freeze: bool) {
    if baseline {
        k.first = Some(c);
    } else {
        // IRQs missing from the recorder's first sample had fired 0 times.
        let prev = k.last.unwrap_or(0);
        if k.first.is_none() {
            k.first = Some(0);
        }
        // The kernel's count restarts at 0 when an IRQ's descriptor is freed and allocated
        // again (a driver re-requesting its vectors); per_cpu_count covers every possible CPU,
        // so nothing else makes it go down. After a restart whatever it shows was counted
        // since, inside this interval.
        if c < prev {
            k.restarted_ts_ns = Some(ts);
        }
        let grew = if c < prev { c > 0 } else { c > prev };
        if grew {
            k.last_increase_ts_ns = Some(ts);
            k.last_growth = Some((k.last_sample_ts_ns, ts));
            if before_freeze {
                k.fired_before_suspend = true;
            }
        }
        if before_freeze {
            k.before_suspend = Some(c);
        }
    }
    k.last = Some(c);
    k.last_sample_ts_ns = ts;
}

//! The state the engine keeps: one [`VectorState`] per MSI/MSI-X vector (keyed by Linux IRQ,
//! cross-checked with BDF + MSI index; the vector model is in `super::vector`) and the global
//! view (phase, resume epochs, online CPUs, Hyper-V buses). Plain data: the engine
//! (`super::Engine`) mutates it, the rules read it, the report and the front-ends show it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::seed::Seed;

pub use super::phase::{Phase, ResumeKind, SleepKind};
pub use super::vector::{
    Compose, Counts, HvEvidence, ManagedShutdown, Migration, MigrationVia, Restore, Target,
    TargetSource, VectorKind, VectorState, VectorView,
};

/// One resume epoch: it starts at `dpm_resume_noirq` and lasts until the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResumeEpoch {
    pub epoch: u32,
    pub kind: ResumeKind,
    pub sleep: SleepKind,
    /// Start of the suspend that led to it, when seen.
    pub suspend_ts_ns: Option<u64>,
    pub start_ts_ns: u64,
    /// When devices and processes were back (`dpm_complete`/`thaw_processes`).
    pub resumed_ts_ns: Option<u64>,
}

/// One span of the phase timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub epoch: u32,
    pub start_ts_ns: u64,
    pub end_ts_ns: Option<u64>,
    /// What started it (the suspend_resume action, or "trace start").
    pub cause: String,
}

/// A time the recorder was not reading (frozen for a suspend, stopped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GapMark {
    pub ts_ns: u64,
    pub reason: String,
}

/// A CPU going offline or coming back, for the CPU tracks of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CpuChange {
    pub ts_ns: u64,
    pub cpu: u32,
    pub online: bool,
    /// What showed it: `CPU_OFF`, `irq_migrate_all_off_this_cpu`, `CPU_ON`, an event on it.
    pub evidence: String,
}

/// `enum hv_pcibus_state` of pci-hyperv (stable since the driver's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HvBusState {
    Init,
    Probed,
    Installed,
    Removing,
    Other(u32),
}

impl HvBusState {
    pub fn from_raw(v: u32) -> HvBusState {
        match v {
            0 => HvBusState::Init,
            1 => HvBusState::Probed,
            2 => HvBusState::Installed,
            3 => HvBusState::Removing,
            v => HvBusState::Other(v),
        }
    }

    /// As pci-hyperv names them (`enum hv_pcibus_state`).
    pub fn name(self) -> String {
        match self {
            HvBusState::Init => "init".into(),
            HvBusState::Probed => "probed".into(),
            HvBusState::Installed => "installed".into(),
            HvBusState::Removing => "removing".into(),
            HvBusState::Other(v) => format!("unknown ({v})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HvBus {
    pub state: Option<HvBusState>,
    pub state_ts_ns: u64,
    /// Inside `hv_pci_suspend` .. `hv_pci_resume`: `removing` is expected there.
    pub suspended: bool,
    /// Return code of the last failed `hv_pci_suspend` / `hv_pci_resume`.
    pub last_error: Option<i32>,
}

/// The global part of the state.
#[derive(Clone, Debug, Serialize)]
pub struct EngineState {
    pub phase: Phase,
    /// 0 until the first `dpm_resume_noirq`.
    pub epoch: u32,
    pub epochs: Vec<ResumeEpoch>,
    pub online_cpus: BTreeSet<u32>,
    pub hv_buses: BTreeMap<String, HvBus>,
    pub vectors: VectorMap,
    /// Vectors whose IRQ number was reused, as they were last seen.
    pub retired: Vec<VectorState>,
    pub timeline: Vec<PhaseSpan>,
    pub cpu_changes: Vec<CpuChange>,
    pub gaps: Vec<GapMark>,
    /// `power:suspend_resume` actions the engine does not know, with their count.
    pub unknown_actions: BTreeMap<String, u64>,
    /// Suspend start of the cycle in progress.
    pub suspend_ts_ns: Option<u64>,
    pub sleep: SleepKind,
    pub first_ts_ns: Option<u64>,
    /// The latest event time: the engine's only clock.
    pub now_ns: u64,
    pub events: u64,
}

impl EngineState {
    pub fn from_seed(seed: &Seed) -> EngineState {
        let mut vectors = VectorMap::with_capacity(seed.vectors.len());
        if let Some(max) = seed
            .vectors
            .iter()
            .map(|v| v.irq)
            .filter(|&i| i < DENSE_IRQS)
            .max()
        {
            vectors.index.reserve_exact(max as usize + 1);
        }
        for s in &seed.vectors {
            vectors.insert(s.irq, VectorState::from_seed(s));
        }
        let mut st = EngineState {
            phase: Phase::Running,
            epoch: 0,
            epochs: Vec::new(),
            online_cpus: seed.online_cpus.iter().copied().collect(),
            hv_buses: BTreeMap::new(),
            vectors,
            retired: Vec::new(),
            timeline: Vec::new(),
            cpu_changes: Vec::new(),
            gaps: Vec::new(),
            unknown_actions: BTreeMap::new(),
            suspend_ts_ns: None,
            sleep: SleepKind::Unknown,
            first_ts_ns: None,
            now_ns: seed.taken_ns,
            events: 0,
        };
        st.assign_multi_msi();
        st
    }

    /// MSI vectors of one device sharing a descriptor form a multi-MSI block, consecutive IRQs
    /// from a base: name each by its position.
    pub fn assign_multi_msi(&mut self) {
        let mut by_dev: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for v in self.vectors.values() {
            if let (Some(d), VectorKind::Msi | VectorKind::MultiMsi { .. }) = (&v.device, v.kind) {
                by_dev.entry(d.as_str()).or_default().push(v.irq);
            }
        }
        let blocks: Vec<Vec<u32>> = by_dev.into_values().filter(|b| b.len() > 1).collect();
        for block in blocks {
            let base = block[0];
            for (i, irq) in block.iter().enumerate() {
                if let Some(v) = self.vectors.get_mut(irq) {
                    v.kind = VectorKind::MultiMsi {
                        index: i as u32,
                        base_irq: base,
                    };
                }
            }
        }
    }

    /// The IRQs a restore write for `irq` covers: itself, or its whole multi-MSI block when it
    /// is the base.
    pub fn restore_block(&self, irq: u32) -> Vec<u32> {
        match self.vectors.get(&irq).map(|v| v.kind) {
            Some(VectorKind::MultiMsi { base_irq, .. }) if base_irq == irq => self
                .vectors
                .values()
                .filter(|v| matches!(v.kind, VectorKind::MultiMsi { base_irq: b, .. } if b == irq))
                .map(|v| v.irq)
                .collect(),
            _ => vec![irq],
        }
    }

    pub fn epoch_info(&self, epoch: u32) -> Option<&ResumeEpoch> {
        epoch
            .checked_sub(1)
            .and_then(|i| self.epochs.get(i as usize))
    }

    /// Close the current timeline span and open one for `phase`.
    pub fn set_phase(&mut self, phase: Phase, ts_ns: u64, cause: &str) {
        if self.phase == phase && !self.timeline.is_empty() {
            return;
        }
        if let Some(last) = self.timeline.last_mut()
            && last.end_ts_ns.is_none()
        {
            last.end_ts_ns = Some(ts_ns);
        }
        self.phase = phase;
        if self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(PhaseSpan {
                phase,
                epoch: self.epoch,
                start_ts_ns: ts_ns,
                end_ts_ns: None,
                cause: cause.to_string(),
            });
        }
    }

    pub fn cpu_change(&mut self, ts_ns: u64, cpu: u32, online: bool, evidence: &str) {
        let changed = if online {
            self.online_cpus.insert(cpu)
        } else {
            self.online_cpus.remove(&cpu)
        };
        if changed && self.cpu_changes.len() < MAX_TIMELINE {
            self.cpu_changes.push(CpuChange {
                ts_ns,
                cpu,
                online,
                evidence: evidence.to_string(),
            });
        }
    }
}

/// Vectors by IRQ. Linux hands out small IRQ numbers, so a dense index makes the per-event
/// lookup an array access; iteration is in IRQ order (deterministic reports).
#[derive(Clone, Debug, Default)]
pub struct VectorMap {
    /// IRQ → slot + 1 (0 = none), for IRQs below [`DENSE_IRQS`].
    index: Vec<u32>,
    /// IRQs from [`DENSE_IRQS`] up → slot.
    sparse: BTreeMap<u32, u32>,
    slots: Vec<VectorState>,
}

/// IRQ numbers indexed densely (4 bytes each up to the highest seen).
pub const DENSE_IRQS: u32 = 1 << 20;

impl VectorMap {
    /// Room for `n` vectors (the seed's) without the doubling of a growing `Vec`.
    pub fn with_capacity(n: usize) -> VectorMap {
        VectorMap {
            index: Vec::new(),
            sparse: BTreeMap::new(),
            slots: Vec::with_capacity(n),
        }
    }

    fn slot(&self, irq: u32) -> Option<usize> {
        if irq < DENSE_IRQS {
            match self.index.get(irq as usize) {
                Some(&s) if s != 0 => Some(s as usize - 1),
                _ => None,
            }
        } else {
            self.sparse.get(&irq).map(|&s| s as usize)
        }
    }

    pub fn get(&self, irq: &u32) -> Option<&VectorState> {
        self.slot(*irq).map(|s| &self.slots[s])
    }

    pub fn get_mut(&mut self, irq: &u32) -> Option<&mut VectorState> {
        self.slot(*irq).map(|s| &mut self.slots[s])
    }

    pub fn contains_key(&self, irq: &u32) -> bool {
        self.slot(*irq).is_some()
    }

    /// Insert or replace the vector of `irq`.
    pub fn insert(&mut self, irq: u32, v: VectorState) {
        if let Some(s) = self.slot(irq) {
            self.slots[s] = v;
            return;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(v);
        if irq < DENSE_IRQS {
            if self.index.len() <= irq as usize {
                self.index.resize(irq as usize + 1, 0);
            }
            self.index[irq as usize] = slot + 1;
        } else {
            self.sparse.insert(irq, slot);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// In IRQ order.
    pub fn values(&self) -> impl Iterator<Item = &VectorState> {
        self.index
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| s as usize - 1)
            .chain(self.sparse.values().map(|&s| s as usize))
            .map(|s| &self.slots[s])
    }

    /// In insertion order (deterministic for a given input).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut VectorState> {
        self.slots.iter_mut()
    }
}

impl std::ops::Index<&u32> for VectorMap {
    type Output = VectorState;

    fn index(&self, irq: &u32) -> &VectorState {
        match self.get(irq) {
            Some(v) => v,
            None => panic!("no vector for irq {irq}"),
        }
    }
}

impl Serialize for VectorMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.values())
    }
}

/// Bound on the timeline lists: a daemon running for months must not grow without end.
pub const MAX_TIMELINE: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::SeedVector;

    fn seed_vec(irq: u32, dev: &str, kind: &str) -> SeedVector {
        SeedVector {
            irq,
            device: Some(dev.into()),
            kind: Some(kind.into()),
            ..Default::default()
        }
    }

    #[test]
    fn msi_vectors_of_one_device_form_a_multi_msi_block() {
        let seed = Seed {
            taken_ns: 0,
            online_cpus: vec![0, 1],
            vectors: vec![
                seed_vec(40, "0000:00:05.0", "msi"),
                seed_vec(41, "0000:00:05.0", "msi"),
                seed_vec(42, "0000:00:05.0", "msi"),
                seed_vec(50, "0000:00:06.0", "msi"),
                seed_vec(60, "0000:00:07.0", "msix"),
            ],
        };
        let st = EngineState::from_seed(&seed);
        assert_eq!(
            st.vectors[&41].kind,
            VectorKind::MultiMsi {
                index: 1,
                base_irq: 40
            }
        );
        assert_eq!(st.vectors[&50].kind, VectorKind::Msi);
        assert_eq!(st.vectors[&60].kind, VectorKind::MsiX { index: 0 });
        assert_eq!(st.restore_block(40), vec![40, 41, 42]);
        assert_eq!(st.restore_block(41), vec![41]);
        assert_eq!(st.restore_block(50), vec![50]);
    }
}

//! The state the engine keeps: one [`VectorState`] per MSI/MSI-X vector (keyed by Linux IRQ,
//! cross-checked with BDF + MSI index) and the global view (phase, resume epochs, online CPUs,
//! Hyper-V buses). Plain data: the engine (`super::Engine`) mutates it, the rules read it, the
//! report and the front-ends show it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::event::{MsiMsg, VectorSnap};
use crate::seed::{Seed, SeedVector};

pub use super::phase::{Phase, ResumeKind, SleepKind};

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

/// The MSI flavour and index of a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum VectorKind {
    Msi,
    MsiX {
        index: u32,
    },
    /// One vector of a multi-MSI block: the device holds one MSI descriptor for the block,
    /// restored by a single message write for the base IRQ.
    MultiMsi {
        index: u32,
        base_irq: u32,
    },
    Unknown,
}

impl std::fmt::Display for VectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VectorKind::Msi => write!(f, "MSI"),
            VectorKind::MsiX { index } => write!(f, "MSI-X {index}"),
            VectorKind::MultiMsi { index, .. } => write!(f, "multi-MSI {index}"),
            VectorKind::Unknown => write!(f, "MSI?"),
        }
    }
}

/// Why the engine treats a vector as a Hyper-V vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HvEvidence {
    /// An hv_* chip callback (compose/unmask/mask) reported it.
    ChipCallback,
    /// Its device sits on this VMBus PCI bus.
    Bus(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Compose {
    pub ts_ns: u64,
    pub epoch: u32,
    /// The engine's compose cycle (remapping entries live within one).
    pub cycle: u32,
    pub msg: Option<MsiMsg>,
    pub chip_data: Option<u64>,
    /// `Some(false)`: the returned message was zeroed or the host refused; `None`: neither
    /// the message nor the host's status could be read.
    pub ok: Option<bool>,
    /// The host's status in its reply (`hv_pci_compose_compl`) in this call.
    pub host_status: Option<i32>,
    /// Whether the host replied in this call: `Some(false)` only when the reply hook was
    /// attached, the call's entry was seen and nothing in flight went unattributed; `None`
    /// when that cannot be told (then the returned message decides, as without the hook).
    pub reached_host: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationVia {
    /// `migrate_one_irq` itself.
    MigrateOneIrq,
    /// `irq_do_set_affinity` inside the `irq_migrate_all_off_this_cpu` window (the fallback
    /// when `migrate_one_irq` is inlined).
    SetAffinityInWindow,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Migration {
    pub ts_ns: u64,
    /// The CPU going offline.
    pub from_cpu: u32,
    pub via: MigrationVia,
    /// `irq_do_set_affinity`'s return, when seen.
    pub ret: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Restore {
    pub ts_ns: u64,
    pub epoch: u32,
    pub msg: MsiMsg,
    /// The mask cache the PCI core writes into the device right after the message.
    pub cache_masked: Option<bool>,
    /// The write was for the base IRQ of this vector's multi-MSI block.
    pub via_irq: u32,
}

/// What showed a vector's target (the CPU and vector the kernel delivers it to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TargetSource {
    /// The effective affinity read at start (/proc/irq/N/effective_affinity_list).
    #[serde(rename = "seed")]
    Seed,
    /// The irq debugfs entry read at start (`Target:`, `Vector:`).
    #[serde(rename = "irq debugfs")]
    IrqDebugfs,
    /// x86 `irq_vectors:vector_update` / `vector_config` / `vector_clear`: the vector
    /// allocator's own word, CPU and vector exact.
    #[serde(rename = "vector tracepoint")]
    VectorTracepoint,
    /// A successful `irq_do_set_affinity` in the CPU-offline migration window: the vector left
    /// the dying CPU; its new CPU is known only when a single CPU was left to take it.
    #[serde(rename = "migration")]
    Migration,
    /// An x86 MSI message written to the device (`__pci_write_msi_msg`), decoded: destination
    /// APIC id (address bits 19:12) and vector (data bits 7:0). Never for Hyper-V or
    /// interrupt-remapped vectors, whose message is a handle, not a destination.
    #[serde(rename = "message write")]
    MessageWrite,
}

impl TargetSource {
    pub fn name(self) -> &'static str {
        match self {
            TargetSource::Seed => "seed",
            TargetSource::IrqDebugfs => "irq debugfs",
            TargetSource::VectorTracepoint => "vector tracepoint",
            TargetSource::Migration => "migration",
            TargetSource::MessageWrite => "message write",
        }
    }

    /// An exact observation of the CPU and vector (not an inference from a window).
    pub fn exact(self) -> bool {
        matches!(
            self,
            TargetSource::VectorTracepoint | TargetSource::MessageWrite
        )
    }
}

/// Guest-side CPU and vector of a vector, as last shown by the kernel: the seed at start, then
/// every observation that moves it (see [`TargetSource`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `None`: the vector was moved off a CPU, or its vector released (`vector_clear`), and
    /// nothing showed where it went yet.
    pub cpu: Option<u32>,
    pub vector: Option<u32>,
    pub ts_ns: u64,
    pub source: TargetSource,
    /// The event or file that showed it: `vector_update`, `irq_do_set_affinity`,
    /// `__pci_write_msi_msg`, `effective_affinity`...
    pub via: &'static str,
}

/// Handler counts from `IrqCounts` samples (cumulative since the recorder started counting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// From /proc/interrupts at start (since boot; another baseline than the samples).
    pub seed_total: u64,
    /// Last cumulative sample, and when.
    pub last: Option<u64>,
    pub last_sample_ts_ns: u64,
    /// First value sampled for this IRQ: the baseline of "fired".
    pub first: Option<u64>,
    /// Sample at which the count last grew.
    pub last_increase_ts_ns: Option<u64>,
    /// The count at the last suspend start, and whether it had grown before it.
    pub before_suspend: Option<u64>,
    pub fired_before_suspend: bool,
    /// The last growth between two samples: (previous sample, sample that grew). The
    /// handler ran in that interval, so after its start.
    pub last_growth: Option<(u64, u64)>,
}

/// What a vector looked like at one instant: the "before suspend" / "after resume" columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VectorView {
    pub ts_ns: u64,
    pub msg: Option<MsiMsg>,
    pub cache_masked: Option<bool>,
    pub irqd_masked: Option<bool>,
    pub irqd_disabled: Option<bool>,
    pub cpu: Option<u32>,
    pub vector: Option<u32>,
    /// What showed `cpu` and `vector`.
    pub target_source: Option<TargetSource>,
    pub active: Option<bool>,
    pub count: Option<u64>,
}

/// A managed vector shut down with the last CPU of its affinity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManagedShutdown {
    pub cpu: u32,
    pub ts_ns: u64,
}

/// Everything known about one vector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VectorState {
    pub irq: u32,
    /// Bumped when the IRQ number is seen reused by another device or MSI index.
    pub generation: u32,
    pub device: Option<String>,
    pub driver: Option<String>,
    pub kind: VectorKind,
    pub msi_index: Option<u32>,
    pub hwirq: Option<u64>,
    /// /proc/interrupts chip and actions at start.
    pub chip: Option<String>,
    pub actions: Option<String>,
    pub hyperv: Option<HvEvidence>,
    pub hv_bus: Option<String>,
    pub last_compose: Option<Compose>,
    /// Compose cycle (see `Engine`) of the last compose that succeeded or whose result could
    /// not be read: the host's remapping entries live from one cycle boundary to the next.
    pub compose_cycle: Option<u32>,
    /// Like `compose_cycle`, but only for composes that were not seen to return without a
    /// reply from the host (H1: only those can have re-created the host's entry).
    pub host_compose_cycle: Option<u32>,
    /// Last message composed with success: its cycle, the message, when.
    pub composed_msg: Option<(u32, MsiMsg, u64)>,
    /// The msi_desc mask cache as last observed, and when.
    pub cache_masked: Option<bool>,
    pub cache_masked_ts_ns: u64,
    /// The hook whose read gave `cache_masked`.
    pub cache_masked_by: &'static str,
    pub irqd_masked: Option<bool>,
    pub irqd_disabled: Option<bool>,
    pub managed: Option<bool>,
    pub managed_shutdown: Option<bool>,
    pub chip_data: Option<u64>,
    pub target: Option<Target>,
    /// `vector_activate` (true) / `vector_deactivate` (false).
    pub active: Option<bool>,
    pub shutdown: Option<ManagedShutdown>,
    pub last_migration: Option<Migration>,
    pub last_restore: Option<Restore>,
    /// Last message written by `__pci_write_msi_msg` (restore or not), and when.
    pub last_written: Option<(MsiMsg, u64)>,
    /// Any unmask seen (genirq started it): a sign the vector has an action.
    pub unmasked_seen: bool,
    pub counts: Counts,
    pub before_suspend: Option<VectorView>,
    pub last_event_ts_ns: Option<u64>,
}

impl VectorState {
    pub fn new(irq: u32) -> VectorState {
        VectorState {
            irq,
            generation: 0,
            device: None,
            driver: None,
            kind: VectorKind::Unknown,
            msi_index: None,
            hwirq: None,
            chip: None,
            actions: None,
            hyperv: None,
            hv_bus: None,
            last_compose: None,
            compose_cycle: None,
            host_compose_cycle: None,
            composed_msg: None,
            cache_masked: None,
            cache_masked_ts_ns: 0,
            cache_masked_by: "",
            irqd_masked: None,
            irqd_disabled: None,
            managed: None,
            managed_shutdown: None,
            chip_data: None,
            target: None,
            active: None,
            shutdown: None,
            last_migration: None,
            last_restore: None,
            last_written: None,
            unmasked_seen: false,
            counts: Counts::default(),
            before_suspend: None,
            last_event_ts_ns: None,
        }
    }

    pub fn from_seed(s: &SeedVector) -> VectorState {
        let mut v = VectorState::new(s.irq);
        v.device = s.device.clone();
        v.driver = s.driver.clone();
        v.msi_index = s.msi_index;
        v.kind = match (s.kind.as_deref(), s.msi_index) {
            (Some(k), Some(index)) if is_msix(k) => VectorKind::MsiX { index },
            (Some(k), None) if is_msix(k) => VectorKind::MsiX { index: 0 },
            (Some(_), _) => VectorKind::Msi,
            (None, _) => VectorKind::Unknown,
        };
        v.chip = s.chip.clone();
        v.actions = s.actions.clone().filter(|a| !a.is_empty());
        v.hv_bus = s.hv_bus.clone();
        if let Some(bus) = &s.hv_bus {
            v.hyperv = Some(HvEvidence::Bus(bus.clone()));
        }
        v.counts.seed_total = s.count;
        if let Some([cpu]) = s.effective_cpus.as_deref() {
            v.target = Some(Target {
                cpu: Some(*cpu),
                vector: None,
                ts_ns: 0,
                source: TargetSource::Seed,
                via: "effective_affinity",
            });
        }
        if let Some(d) = &s.debugfs {
            v.irqd_masked = Some(d.masked);
            v.irqd_disabled = Some(d.disabled);
            v.managed = Some(d.managed);
            v.managed_shutdown = Some(d.managed_shutdown);
            v.active = Some(d.activated);
            if let Some(cpu) = d.target_cpu {
                v.target = Some(Target {
                    cpu: Some(cpu),
                    vector: d.vector,
                    ts_ns: 0,
                    source: TargetSource::IrqDebugfs,
                    via: "irq debugfs",
                });
            }
        }
        v
    }

    pub fn is_hyperv(&self) -> bool {
        self.hyperv.is_some()
    }

    /// Whether an x86 message written for this vector names its CPU: not for a Hyper-V vector
    /// (the message is the host's opaque handle; the stand-in's looks x86 but after a teardown
    /// it is not, e.g. `feef0000`), nor behind interrupt remapping (chip `IR-*`).
    pub fn message_names_target(&self) -> bool {
        let chip = self.chip.as_deref().unwrap_or("");
        !self.is_hyperv() && !chip.starts_with("Hyper-V") && !chip.starts_with("IR-")
    }

    /// The device expects interrupts from this vector: it had an action at start, it fired, or
    /// genirq unmasked it (request_irq starts the line).
    pub fn has_action(&self) -> bool {
        self.actions.is_some()
            || self.counts.seed_total > 0
            || self.counts.last_increase_ts_ns.is_some()
            || self.unmasked_seen
    }

    /// genirq believes the line is enabled (neither masked nor disabled), when known.
    pub fn genirq_enabled(&self) -> Option<bool> {
        match (self.irqd_masked, self.irqd_disabled) {
            (Some(m), d) => Some(!m && d != Some(true)),
            (None, Some(true)) => Some(false),
            (None, _) => None,
        }
    }

    /// Short identity for sentences: `0000:00:03.0 MSI-X 1`.
    pub fn describe(&self) -> String {
        match &self.device {
            Some(d) => format!("{d} {}", self.kind),
            None => format!("device unknown, {}", self.kind),
        }
    }

    pub fn view(&self, ts_ns: u64) -> VectorView {
        VectorView {
            ts_ns,
            msg: self.message(),
            cache_masked: self.cache_masked,
            irqd_masked: self.irqd_masked,
            irqd_disabled: self.irqd_disabled,
            cpu: self.target.as_ref().and_then(|t| t.cpu),
            vector: self.target.as_ref().and_then(|t| t.vector),
            target_source: self.target.as_ref().map(|t| t.source),
            active: self.active,
            count: self.counts.last,
        }
    }

    /// The message the device holds as far as we know: the last one written by MMIO or
    /// composed, whichever came last.
    pub fn message(&self) -> Option<MsiMsg> {
        let composed = self.composed_msg.map(|(_, m, ts)| (ts, m));
        match (self.last_written, composed) {
            (Some((w, wts)), Some((cts, c))) => Some(if cts > wts { c } else { w }),
            (Some((w, _)), None) => Some(w),
            (None, Some((_, c))) => Some(c),
            (None, None) => None,
        }
    }

    /// Take what a probe read of this vector; fields it could not read stay as they were.
    /// `by` names the hook; `pre_state` is set for the entry of a mask/unmask callback, whose
    /// mask cache is the state before the callback acts and must not count as "last observed".
    pub fn observe(&mut self, s: &VectorSnap, ts_ns: u64, by: &'static str, pre_state: bool) {
        if s.device.is_some() && self.device.is_none() {
            self.device = s.device.clone();
        }
        if let Some(i) = s.msi_index {
            self.msi_index = Some(i);
        }
        if s.hwirq != 0 {
            self.hwirq = Some(s.hwirq);
        }
        match (s.msix, self.kind) {
            (Some(true), _) => {
                self.kind = VectorKind::MsiX {
                    index: s.msi_index.or(self.msi_index).unwrap_or(0),
                }
            }
            (Some(false), VectorKind::Unknown | VectorKind::MsiX { .. }) => {
                self.kind = VectorKind::Msi
            }
            _ => {}
        }
        if let Some(m) = s.cache_masked
            && !pre_state
        {
            self.set_cache_masked(m, ts_ns, by);
        }
        if s.irqd_masked.is_some() {
            self.irqd_masked = s.irqd_masked;
        }
        if s.irqd_disabled.is_some() {
            self.irqd_disabled = s.irqd_disabled;
        }
        if s.managed.is_some() {
            self.managed = s.managed;
        }
        if s.managed_shutdown.is_some() {
            self.managed_shutdown = s.managed_shutdown;
        }
        if s.chip_data.is_some() {
            self.chip_data = s.chip_data;
        }
        self.last_event_ts_ns = Some(ts_ns);
    }

    pub fn set_cache_masked(&mut self, masked: bool, ts_ns: u64, by: &'static str) {
        self.cache_masked = Some(masked);
        self.cache_masked_ts_ns = ts_ns;
        self.cache_masked_by = by;
    }

    /// The snapshot names another device or MSI index than the one this IRQ had: the IRQ
    /// number was freed and reused.
    pub fn conflicts_with(&self, s: &VectorSnap) -> bool {
        let dev = matches!((&self.device, &s.device), (Some(a), Some(b)) if a != b);
        let idx = matches!(self.kind, VectorKind::MsiX { .. })
            && s.msix == Some(true)
            && matches!((self.msi_index, s.msi_index), (Some(a), Some(b)) if a != b);
        dev || idx
    }
}

fn is_msix(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("msix") || kind.eq_ignore_ascii_case("msi-x")
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

    #[test]
    fn a_snapshot_of_another_device_is_a_reused_irq() {
        let mut v = VectorState::new(30);
        v.observe(
            &VectorSnap {
                irq: 30,
                device: Some("0000:00:02.0".into()),
                msi_index: Some(1),
                msix: Some(true),
                ..Default::default()
            },
            5,
            "test",
            false,
        );
        let same = VectorSnap {
            irq: 30,
            device: Some("0000:00:02.0".into()),
            msi_index: Some(1),
            msix: Some(true),
            ..Default::default()
        };
        assert!(!v.conflicts_with(&same));
        let other_index = VectorSnap {
            msi_index: Some(2),
            ..same.clone()
        };
        assert!(v.conflicts_with(&other_index));
        let other_dev = VectorSnap {
            device: Some("0000:00:03.0".into()),
            ..same
        };
        assert!(v.conflicts_with(&other_dev));
    }
}

//! The vector model: everything known about one MSI/MSI-X vector, keyed by Linux IRQ and
//! cross-checked with BDF + MSI index, and how a probe's snapshot updates it.

use compact_str::CompactString;
use serde::Serialize;

use crate::event::{MsiMsg, VectorSnap};
use crate::seed::SeedVector;

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
    /// The count at the last suspend start, and whether it had grown before it (samples
    /// taken after the start but before the freeze included).
    pub before_suspend: Option<u64>,
    pub fired_before_suspend: bool,
    /// The count at the first sample after the last resume: G5's baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_resume: Option<u64>,
    /// The last growth between two samples: (previous sample, sample that grew). The
    /// handler ran in that interval, so after its start.
    pub last_growth: Option<(u64, u64)>,
    /// The last sample in which the kernel's count had gone down (to 0 when the IRQ was left
    /// out of it): the descriptor was freed and allocated again under the same number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_ts_ns: Option<u64>,
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
    /// The IRQ this device's vector had before its driver freed and re-requested it (virtio
    /// does at every freeze/restore, and the numbers come back shuffled between devices).
    pub previous_irq: Option<u32>,
    /// This vector's device and index now live at that IRQ: this one was freed.
    pub reallocated_to: Option<u32>,
    pub device: Option<CompactString>,
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
            previous_irq: None,
            reallocated_to: None,
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
        v.device = s.device.as_deref().map(CompactString::from);
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

    /// The device and MSI index (or plain MSI) that name this vector across a free and
    /// re-request, when both are known.
    pub fn identity(&self) -> Option<(&str, bool, u32)> {
        let device = self.device.as_deref()?;
        match self.kind {
            VectorKind::MsiX { index } => Some((device, true, index)),
            VectorKind::Msi => Some((device, false, 0)),
            VectorKind::MultiMsi { index, .. } => Some((device, false, index)),
            VectorKind::Unknown => None,
        }
    }

    /// Take over what `old` knew of this device's vector before the driver freed it and got
    /// this IRQ: who owns it and how it looked before the suspend, so that the before/after
    /// view compares the device's vector, not the IRQ number.
    pub fn inherit(&mut self, old: &VectorState) {
        self.previous_irq = Some(old.irq);
        if self.driver.is_none() {
            self.driver = old.driver.clone();
        }
        if self.actions.is_none() {
            self.actions = old.actions.clone();
        }
        if self.chip.is_none() {
            self.chip = old.chip.clone();
        }
        if self.hyperv.is_none() {
            self.hyperv = old.hyperv.clone();
        }
        if self.hv_bus.is_none() {
            self.hv_bus = old.hv_bus.clone();
        }
        if self.before_suspend.is_none() {
            self.before_suspend = old.before_suspend.clone();
        }
        // Whether the device's vector fired before the suspend (G5 says it leaves these out).
        if !self.counts.fired_before_suspend {
            self.counts.fired_before_suspend = old.counts.fired_before_suspend;
        }
    }

    /// The snapshot names another device or MSI index than the one this IRQ had: the IRQ
    /// number was freed and reused.
    pub fn conflicts_with(&self, s: &VectorSnap) -> bool {
        let dev = matches!((&self.device, &s.device), (Some(a), Some(b)) if **a != **b);
        let idx = matches!(self.kind, VectorKind::MsiX { .. })
            && s.msix == Some(true)
            && matches!((self.msi_index, s.msi_index), (Some(a), Some(b)) if a != b);
        dev || idx
    }
}

fn is_msix(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("msix") || kind.eq_ignore_ascii_case("msi-x")
}

#[cfg(test)]
mod tests {
    use super::*;

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

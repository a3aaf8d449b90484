//! From a [`Snapshot`] to findings: per vector, what genirq believes next to what the device
//! holds, and the rules that compare them. Pure: no file is read here, so the same analysis
//! runs on this machine, on a snapshot attached to a bug report, and in tests.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::device::{self, Capabilities, Destination, MsiCap, MsixCap};
use super::snapshot::{DebugfsAccess, DeviceSnapshot, IrqSnapshot, Snapshot, Unreadable};
use crate::engine::Severity;
use crate::event::MsiMsg;
use crate::report::FailOn;
use crate::seed::{self, IrqDebugfs, ProcIrq};

/// The checks. Each is the snapshot form of a trace rule: C1 is what G1/H4 see happen, C2
/// G2's, C4 G5's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum CheckRule {
    C1,
    C2,
    C3,
    C4,
}

impl CheckRule {
    pub const ALL: [CheckRule; 4] = [CheckRule::C1, CheckRule::C2, CheckRule::C3, CheckRule::C4];

    pub fn title(self) -> &'static str {
        match self {
            CheckRule::C1 => "masked in the device while enabled in genirq",
            CheckRule::C2 => "message destination is not where genirq targets",
            CheckRule::C3 => "MSI/MSI-X off or function-masked while vectors are in use",
            CheckRule::C4 => "silent while other vectors of its device fire",
        }
    }
}

impl std::fmt::Display for CheckRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One fact behind a finding: where it was read and what it said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckEvidence {
    /// e.g. `/proc/interrupts`, `MSI-X table entry 1`, `irq debugfs`.
    pub source: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: CheckRule,
    pub severity: Severity,
    /// The vector, or null for a device-level finding (C3).
    pub irq: Option<u32>,
    /// Every vector concerned.
    pub irqs: Vec<u32>,
    pub device: String,
    pub driver: Option<String>,
    /// What is wrong, in a few words.
    pub cause: String,
    pub evidence: Vec<CheckEvidence>,
    /// One sentence a kernel engineer can act on.
    pub meaning: String,
}

/// A check that could not be made, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckNotEvaluated {
    pub rule: CheckRule,
    pub device: Option<String>,
    pub reason: String,
}

/// What genirq believes about one vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GenirqView {
    pub chip: Option<String>,
    pub actions: Option<String>,
    /// Handler count since boot, summed over CPUs.
    pub count: Option<u64>,
    /// Interrupts during the window between the two readings.
    pub count_in_window: Option<u64>,
    pub effective_cpus: Option<Vec<u32>>,
    pub affinity: Option<Vec<u32>>,
    /// The irq debugfs state, where it could be read.
    pub debugfs: Option<IrqDebugfs>,
    /// Whether genirq has the line enabled: from debugfs (started, not disabled, not masked),
    /// else a handler is installed and its affinity has an online CPU.
    pub enabled: bool,
    /// What `enabled` rests on.
    pub enabled_from: &'static str,
}

/// What the device holds for one vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    pub message: Option<MsiMsg>,
    /// The entry's Vector Control mask bit (MSI-X) or the MSI mask bit; null where the
    /// device cannot mask (MSI without per-vector masking) or it was not read.
    pub masked: Option<bool>,
    pub destination: Option<Destination>,
    /// The online CPU whose APIC id the destination is.
    pub destination_cpu: Option<u32>,
    /// Why the device side is unknown, when it is.
    pub unknown: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VectorCheck {
    pub irq: u32,
    pub device: String,
    /// `MSI-X` or `MSI`.
    pub kind: String,
    pub index: Option<u32>,
    pub genirq: GenirqView,
    pub device_state: DeviceView,
    pub findings: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceCheck {
    pub bdf: String,
    pub driver: Option<String>,
    pub power_state: Option<String>,
    pub msix: Option<MsixCap>,
    pub msi: Option<MsiCap>,
    /// `read` or why the MSI-X table was not.
    pub msix_table: Option<String>,
    /// Why the capabilities were not decoded, when they were not.
    pub config_problem: Option<String>,
    pub hv_bus: Option<super::snapshot::HvBusSnapshot>,
    pub vectors: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    pub devices: usize,
    pub vectors: usize,
    pub errors: usize,
    pub warnings: usize,
    pub not_evaluated: usize,
    pub unreadable: usize,
    pub verdict: String,
}

/// `schema_version` of the report `check --json` prints, described by
/// docs/schema/check.schema.json; bumped on the same terms as [`crate::report::SCHEMA_VERSION`]
/// (a field removed, renamed, retyped or changing meaning; an enum value gone).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// [`SCHEMA_VERSION`]: which docs/schema/check.schema.json describes this object.
    pub schema_version: u32,
    pub kernel_release: String,
    pub privileged: bool,
    /// Set when nothing essential could be read: the one line saying what to do (exit 2).
    pub unusable: Option<String>,
    /// Devices with vectors in use whose own mask state could not be read (C1 not evaluated
    /// for them: a BAR the kernel would not map, a device not in D0). Without a finding that
    /// counts, this is exit 2: "nothing found" would be said of a device nobody looked at —
    /// on Debian's kernels (CONFIG_IO_STRICT_DEVMEM) every device with a driver bound, unless
    /// booted with iomem=relaxed.
    pub unchecked_devices: Vec<String>,
    pub summary: CheckSummary,
    pub findings: Vec<Finding>,
    pub devices: Vec<DeviceCheck>,
    pub vectors: Vec<VectorCheck>,
    pub not_evaluated: Vec<CheckNotEvaluated>,
    pub unreadable: Vec<Unreadable>,
    /// What the reader should know and the checks cannot decide: Hyper-V's host-side
    /// remapping, messages whose destination is not readable, the irq debugfs state.
    pub notes: Vec<String>,
}

impl CheckReport {
    /// 0 nothing that `fail_on` counts, 1 a finding it counts, 2 unusable: the report's codes.
    pub fn exit_code_for(&self, fail_on: FailOn) -> u8 {
        if self.unusable.is_some() {
            return 2;
        }
        let counts = |f: &Finding| match fail_on {
            FailOn::Error => f.severity == Severity::Error,
            FailOn::Warning => true,
        };
        if self.findings.iter().any(counts) {
            1
        } else if !self.unchecked_devices.is_empty() {
            2
        } else {
            0
        }
    }
}

fn msg_of(address: u64, data: u32) -> MsiMsg {
    MsiMsg {
        address_lo: address as u32,
        address_hi: (address >> 32) as u32,
        data,
    }
}

fn cpus_text(cpus: &[u32]) -> String {
    if cpus.is_empty() {
        return "none".into();
    }
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The MSI index of a vector: from its hwirq, which per-device MSI domains number by index
/// and the global PCI-MSI domains (pci-hyperv's too) pack as `index | dev_id << 11 | …`;
/// for a multi-MSI block whose hwirq says nothing, its place among the device's IRQs.
fn msi_index(
    irq: u32,
    chip: Option<&str>,
    hwirq: Option<u64>,
    kind: &str,
    dev: &DeviceSnapshot,
) -> Option<u32> {
    if let (Some(chip), Some(hwirq)) = (chip, hwirq) {
        if let Some(i) = seed::msi_index_from_hwirq(chip, hwirq) {
            return Some(i);
        }
        if chip.contains("MSI") {
            return Some((hwirq & 0x7ff) as u32);
        }
    }
    if kind == "msi" {
        let first = dev
            .msi_irqs
            .iter()
            .filter(|(_, k)| *k == "msi")
            .map(|(i, _)| *i)
            .min()?;
        return irq.checked_sub(first);
    }
    None
}

struct Ctx<'a> {
    snap: &'a Snapshot,
    first: BTreeMap<u32, ProcIrq>,
    later: Option<BTreeMap<u32, ProcIrq>>,
    online: Option<Vec<u32>>,
    apic_to_cpu: BTreeMap<u32, u32>,
    x86: bool,
}

/// Run every check on a snapshot.
pub fn analyse(snap: &Snapshot) -> CheckReport {
    let parse = |t: &Option<String>| {
        t.as_deref().map(|t| {
            seed::parse_proc_interrupts(t)
                .into_iter()
                .map(|p| (p.irq, p))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let ctx = Ctx {
        snap,
        first: parse(&snap.proc_interrupts).unwrap_or_default(),
        later: parse(&snap.proc_interrupts_later),
        online: snap
            .online_cpus
            .as_deref()
            .and_then(|t| seed::parse_cpu_list(t).ok()),
        apic_to_cpu: snap.apic_ids.iter().map(|(c, a)| (*a, *c)).collect(),
        x86: matches!(snap.arch.as_str(), "x86_64" | "x86"),
    };
    let mut out = Out::default();

    match &snap.irq_debugfs {
        DebugfsAccess::Readable => {}
        DebugfsAccess::Absent(why) | DebugfsAccess::Unreadable(why) => out.notes.push(format!(
            "irq debugfs not available ({why}): genirq's enabled state is taken from whether a handler is installed, so a vector its driver disabled on purpose (disable_irq) would look enabled"
        )),
        DebugfsAccess::NotRead => {}
    }

    let mut devices = Vec::new();
    for dev in &snap.devices {
        devices.push(check_device(&ctx, dev, &mut out));
    }

    let unusable = unusable_reason(snap, &devices);
    let mut findings = out.findings;
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.device.cmp(&b.device))
            .then(a.irq.cmp(&b.irq))
            .then(a.rule.cmp(&b.rule))
    });
    let mut per_irq: BTreeMap<u32, usize> = BTreeMap::new();
    for f in &findings {
        for irq in &f.irqs {
            *per_irq.entry(*irq).or_default() += 1;
        }
    }
    let mut vectors = out.vectors;
    for v in &mut vectors {
        v.findings = per_irq.get(&v.irq).copied().unwrap_or(0);
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let mut unchecked_devices: Vec<String> = out
        .not_evaluated
        .iter()
        .filter(|n| n.rule == CheckRule::C1)
        .filter_map(|n| n.device.clone())
        .filter(|bdf| {
            devices
                .iter()
                .any(|d| &d.bdf == bdf && !d.vectors.is_empty())
        })
        .collect();
    unchecked_devices.sort();
    unchecked_devices.dedup();
    let verdict = if let Some(u) = &unusable {
        format!("could not check: {u}")
    } else if findings.is_empty() && !unchecked_devices.is_empty() {
        format!(
            "nothing found in {} vectors of {} devices where the device could be read, but the masks of {} could not be read (see \"not evaluated\" above{}): those devices were not checked",
            vectors.len(),
            devices.len(),
            unchecked_devices.join(", "),
            if snap.privileged {
                "; a bound device's BAR is mapped only with iomem=relaxed on kernels built with CONFIG_IO_STRICT_DEVMEM"
            } else {
                "; run it as root"
            }
        )
    } else if findings.is_empty() {
        format!(
            "nothing found in {} vectors of {} devices{}",
            vectors.len(),
            devices.len(),
            if out.not_evaluated.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} checks not evaluated, listed above)",
                    out.not_evaluated.len()
                )
            }
        )
    } else {
        format!(
            "{} finding(s), {errors} error(s) and {warnings} warning(s), in {} vectors of {} devices",
            findings.len(),
            vectors.len(),
            devices.len()
        )
    };
    CheckReport {
        schema_version: SCHEMA_VERSION,
        kernel_release: snap.kernel_release.clone(),
        privileged: snap.privileged,
        summary: CheckSummary {
            devices: devices.len(),
            vectors: vectors.len(),
            errors,
            warnings,
            not_evaluated: out.not_evaluated.len(),
            unreadable: snap.unreadable.len(),
            verdict,
        },
        unusable,
        unchecked_devices,
        findings,
        devices,
        vectors,
        not_evaluated: out.not_evaluated,
        unreadable: snap.unreadable.clone(),
        notes: out.notes,
    }
}

/// Exit 2 when genirq's side is unknown, or when no device with vectors could be decoded at
/// all: then every check would be "not evaluated" and exit 0 would lie.
fn unusable_reason(snap: &Snapshot, devices: &[DeviceCheck]) -> Option<String> {
    if snap.proc_interrupts.is_none() {
        return Some("/proc/interrupts is unreadable: mount /proc and run again".into());
    }
    let with_vectors: Vec<&DeviceCheck> =
        devices.iter().filter(|d| !d.vectors.is_empty()).collect();
    if !with_vectors.is_empty()
        && with_vectors
            .iter()
            .all(|d| d.msi.is_none() && d.msix.is_none())
    {
        let why = with_vectors
            .iter()
            .find_map(|d| d.config_problem.clone())
            .unwrap_or_else(|| "no device's MSI or MSI-X capability could be read".into());
        return Some(if snap.privileged {
            format!("no device's MSI/MSI-X registers could be read ({why})")
        } else {
            format!(
                "no device's MSI/MSI-X registers could be read ({why}): run it as root, e.g. `sudo msitrace check`"
            )
        });
    }
    None
}

#[derive(Default)]
struct Out {
    findings: Vec<Finding>,
    vectors: Vec<VectorCheck>,
    not_evaluated: Vec<CheckNotEvaluated>,
    notes: Vec<String>,
}

impl Out {
    fn not_evaluated(&mut self, rule: CheckRule, device: &str, reason: String) {
        self.not_evaluated.push(CheckNotEvaluated {
            rule,
            device: Some(device.to_string()),
            reason,
        });
    }
}

fn check_device(ctx: &Ctx, dev: &DeviceSnapshot, out: &mut Out) -> DeviceCheck {
    let caps: Result<Capabilities, String> = match dev.config.as_deref() {
        Some(c) => device::capabilities(c).map_err(|p| p.to_string()),
        None => Err("config space not read".into()),
    };
    let (msi, msix) = caps.as_ref().map_or((None, None), |c| (c.msi, c.msix));
    let table = dev.msix_table.as_ref().and_then(|t| t.bytes.as_deref());
    let table_problem = match (&msix, dev.msix_table.as_ref()) {
        (None, _) => None,
        (Some(_), None) | (Some(_), Some(super::snapshot::MsixTableRead { bytes: None, .. })) => {
            Some(
                ctx.snap
                    .unreadable
                    .iter()
                    .find(|u| u.what.contains(&dev.bdf))
                    .map_or_else(|| "not read".to_string(), |u| u.why.clone()),
            )
        }
        (Some(_), Some(_)) if table.is_some_and(device::table_all_ones) => Some(
            "every entry reads as all ones: the device does not answer (powered off, reset or gone)"
                .into(),
        ),
        _ => None,
    };
    let check = DeviceCheck {
        bdf: dev.bdf.clone(),
        driver: dev.driver.clone(),
        power_state: dev.power_state.clone(),
        msix,
        msi,
        msix_table: msix.map(|_| table_problem.clone().unwrap_or_else(|| "read".into())),
        config_problem: caps.as_ref().err().cloned(),
        hv_bus: dev.hv_bus.clone(),
        vectors: dev.msi_irqs.keys().copied().collect(),
    };
    if dev.msi_irqs.is_empty() {
        out.notes.push(format!(
            "{}: no MSI/MSI-X vectors allocated (msi_irqs is empty): nothing to check",
            dev.bdf
        ));
        return check;
    }
    if let Err(why) = &caps {
        for rule in [CheckRule::C1, CheckRule::C2, CheckRule::C3] {
            out.not_evaluated(rule, &dev.bdf, format!("config space: {why}"));
        }
    }
    if let Some(t) = &table_problem {
        for rule in [CheckRule::C1, CheckRule::C2] {
            out.not_evaluated(rule, &dev.bdf, format!("MSI-X table: {t}"));
        }
    }
    let hyperv = dev.hv_bus.is_some();
    if let Some(bus) = &dev.hv_bus {
        out.notes.push(format!(
            "{} sits on the Hyper-V vPCI bus {} (driver {}{}): its messages are the host's handles, so whether the host still holds an interrupt-remapping entry for each vector cannot be checked from inside the guest; C1 and C3 are checked, C2 is not (a trace with `msitrace verify` sees the composes)",
            dev.bdf,
            bus.vmbus_device,
            bus.driver.as_deref().unwrap_or("unknown"),
            bus.channel_state
                .as_deref()
                .map_or_else(String::new, |s| format!(", channel state {s}"))
        ));
    }
    let xen = ctx.snap.hypervisor_type.as_deref() == Some("xen");

    let mut vectors = Vec::new();
    for (irq, kind) in &dev.msi_irqs {
        let v = vector_check(
            ctx,
            dev,
            *irq,
            kind,
            msi.as_ref(),
            msix.as_ref(),
            table_problem.is_none().then_some(table).flatten(),
        );
        vectors.push(v);
    }

    function_level(dev, msi.as_ref(), msix.as_ref(), &vectors, out);
    for v in &vectors {
        masked_while_enabled(dev, v, out);
        if ctx.x86 && !hyperv && !xen {
            destination(ctx, dev, v, out);
        }
    }
    if !ctx.x86 {
        out.not_evaluated(
            CheckRule::C2,
            &dev.bdf,
            format!(
                "messages are decoded for x86 only; this is {}",
                ctx.snap.arch
            ),
        );
    } else if xen {
        out.not_evaluated(
            CheckRule::C2,
            &dev.bdf,
            "Xen: the message carries a pirq, not an APIC id".into(),
        );
    } else if ctx.apic_to_cpu.is_empty() {
        out.not_evaluated(
            CheckRule::C2,
            &dev.bdf,
            "no APIC ids in /proc/cpuinfo: destinations cannot be read as CPUs".into(),
        );
    }
    let mut notes = BTreeMap::<&'static str, Vec<u32>>::new();
    for v in &vectors {
        match v.device_state.destination {
            Some(Destination::Remapped) => notes.entry("in remappable format: the destination is in the IOMMU's interrupt-remapping table, not in the message").or_default().push(v.irq),
            Some(Destination::Logical) => notes.entry("in logical destination mode: the id names an APIC cluster, not a CPU").or_default().push(v.irq),
            Some(Destination::NotApic) if !hyperv => notes.entry("outside the local-APIC window 0xFEE00000: not an x86 interrupt message").or_default().push(v.irq),
            _ => {}
        }
    }
    for (what, irqs) in notes {
        out.notes.push(format!(
            "{}: the messages of IRQ {} are {what}; C2 does not check them",
            dev.bdf,
            cpus_text(&irqs)
        ));
    }
    silent_sibling(ctx, dev, &vectors, out);
    out.vectors.extend(vectors);
    check
}

fn vector_check(
    ctx: &Ctx,
    dev: &DeviceSnapshot,
    irq: u32,
    kind: &str,
    msi: Option<&MsiCap>,
    msix: Option<&MsixCap>,
    table: Option<&[u8]>,
) -> VectorCheck {
    let none = IrqSnapshot::default();
    let sys = ctx.snap.irqs.get(&irq).unwrap_or(&none);
    let proc_line = ctx.first.get(&irq);
    let chip = sys
        .chip_name
        .clone()
        .or_else(|| proc_line.and_then(|p| p.chip.clone()));
    let hwirq = sys
        .hwirq
        .as_deref()
        .and_then(|h| h.trim().parse::<u64>().ok())
        .or_else(|| proc_line.and_then(|p| p.hwirq));
    let actions = sys
        .actions
        .clone()
        .or_else(|| proc_line.and_then(|p| p.actions.clone()))
        .filter(|a| !a.trim().is_empty());
    let count = proc_line.map(|p| p.per_cpu.iter().map(|(_, n)| n).sum::<u64>());
    let count_in_window = match (&ctx.later, count) {
        (Some(later), Some(before)) => later.get(&irq).map(|p| {
            p.per_cpu
                .iter()
                .map(|(_, n)| n)
                .sum::<u64>()
                .saturating_sub(before)
        }),
        _ => None,
    };
    let list = |t: &Option<String>| t.as_deref().and_then(|t| seed::parse_cpu_list(t).ok());
    let effective_cpus = list(&sys.effective_affinity_list);
    let affinity = list(&sys.smp_affinity_list);
    let debugfs = sys.debugfs.as_deref().map(seed::parse_irq_debugfs);
    let on_online_cpu = match (&affinity, &ctx.online) {
        (Some(a), Some(online)) => a.iter().any(|c| online.contains(c)),
        _ => true,
    };
    let (enabled, enabled_from) = match &debugfs {
        Some(d) => (
            d.started && !d.disabled && !d.masked && !d.managed_shutdown,
            "irq debugfs: IRQD_IRQ_STARTED set, IRQD_IRQ_DISABLED, IRQD_IRQ_MASKED and IRQD_MANAGED_SHUTDOWN clear",
        ),
        None => (
            actions.is_some() && on_online_cpu,
            "a handler is installed and its affinity has an online CPU (no irq debugfs)",
        ),
    };
    let kind_name = if kind == "msix" { "MSI-X" } else { "MSI" };
    let index = msi_index(irq, chip.as_deref(), hwirq, kind, dev);

    let mut state = DeviceView::default();
    match (kind, msix, msi) {
        ("msix", Some(cap), _) => match (index, table) {
            (Some(i), _) if i >= u32::from(cap.table_size) => {
                state.unknown = Some(format!(
                    "index {i} is past the table's {} entries",
                    cap.table_size
                ));
            }
            (Some(i), Some(t)) => match device::msix_entry(t, i) {
                Some(e) => {
                    state.message = Some(msg_of(e.address, e.data));
                    state.masked = Some(e.masked);
                    state.destination = Some(device::x86_destination(e.address, e.data));
                }
                None => state.unknown = Some(format!("table entry {i} was not read")),
            },
            (None, _) => state.unknown = Some("its MSI-X index is unknown (no hwirq)".into()),
            (_, None) => state.unknown = Some("the MSI-X table was not read".into()),
        },
        ("msi", _, Some(cap)) => {
            let i = index.unwrap_or(0);
            // Multi-MSI: vector i sends the shared message with i in the data's low bits.
            let data = u32::from(cap.data) | i;
            state.message = Some(msg_of(cap.address, data));
            state.masked = cap.mask_bits.map(|m| i < 32 && m & (1 << i) != 0);
            state.destination = Some(device::x86_destination(cap.address, data));
        }
        _ => {
            state.unknown = Some(format!("no {kind_name} capability was read"));
        }
    }
    if let (Some(Destination::Apic { apic_id, .. }), Some(online)) =
        (state.destination, &ctx.online)
    {
        state.destination_cpu = ctx
            .apic_to_cpu
            .get(&apic_id)
            .copied()
            .filter(|c| online.contains(c));
    }
    VectorCheck {
        irq,
        device: dev.bdf.clone(),
        kind: kind_name.into(),
        index,
        genirq: GenirqView {
            chip,
            actions,
            count,
            count_in_window,
            effective_cpus,
            affinity,
            debugfs,
            enabled,
            enabled_from,
        },
        device_state: state,
        findings: 0,
    }
}

fn genirq_evidence(v: &VectorCheck) -> CheckEvidence {
    let g = &v.genirq;
    let state = match &g.debugfs {
        Some(d) => format!(
            "started {}, disabled {}, masked {}",
            d.started, d.disabled, d.masked
        ),
        None => "no irq debugfs: enabled means a handler is installed".into(),
    };
    CheckEvidence {
        source: "genirq".into(),
        detail: format!(
            "irq {} handler {:?}, {} interrupts since boot, effective CPU {}, {state}",
            v.irq,
            g.actions.as_deref().unwrap_or(""),
            g.count.map_or_else(|| "?".into(), |c| c.to_string()),
            g.effective_cpus
                .as_deref()
                .map_or_else(|| "?".into(), cpus_text),
        ),
    }
}

fn device_evidence(v: &VectorCheck) -> CheckEvidence {
    let d = &v.device_state;
    CheckEvidence {
        source: match (v.kind.as_str(), v.index) {
            ("MSI-X", Some(i)) => format!("MSI-X table entry {i}"),
            (_, Some(i)) => format!("MSI capability, vector {i}"),
            _ => "device".into(),
        },
        detail: format!(
            "message {}, mask bit {}",
            d.message.map_or_else(|| "?".into(), |m| m.to_string()),
            match d.masked {
                Some(true) => "set",
                Some(false) => "clear",
                None => "none",
            }
        ),
    }
}

/// C1: the vector is enabled in genirq and masked in the device. Nothing will unmask it: the
/// signature of the unmask that failed while CPUs went offline (915cff7f38c5), restored into
/// the device at resume.
fn masked_while_enabled(dev: &DeviceSnapshot, v: &VectorCheck, out: &mut Out) {
    if !(v.genirq.enabled && v.device_state.masked == Some(true)) {
        return;
    }
    out.findings.push(Finding {
        rule: CheckRule::C1,
        severity: Severity::Error,
        irq: Some(v.irq),
        irqs: vec![v.irq],
        device: dev.bdf.clone(),
        driver: dev.driver.clone(),
        cause: "genirq has the vector enabled, the device has it masked".into(),
        evidence: vec![genirq_evidence(v), device_evidence(v)],
        meaning: "the device will not send this interrupt and the kernel will not unmask it: the signature of an unmask that failed while CPUs went offline and was restored at resume (fixed for Hyper-V by 915cff7f38c5); rebinding the driver or reloading its module re-requests the vector".into(),
    });
}

/// C2: the message's destination is not an online CPU, or not the one genirq chose. On x86
/// the vector number is per CPU, so an interrupt sent anywhere else is lost ("No irq
/// handler for vector").
fn destination(ctx: &Ctx, dev: &DeviceSnapshot, v: &VectorCheck, out: &mut Out) {
    let Some(Destination::Apic { apic_id, vector }) = v.device_state.destination else {
        return;
    };
    // Only vectors that can fire: a masked or shut-down vector's message is not in use.
    if !v.genirq.enabled || v.device_state.masked == Some(true) || ctx.apic_to_cpu.is_empty() {
        return;
    }
    let cpu_of_apic = ctx.apic_to_cpu.get(&apic_id).copied();
    let mut cause = None;
    let online = ctx.online.as_deref().unwrap_or(&[]);
    match cpu_of_apic {
        None => cause = Some(format!("destination APIC id {apic_id} is no CPU's")),
        Some(c) if ctx.online.is_some() && !online.contains(&c) => {
            cause = Some(format!(
                "destination APIC id {apic_id} is CPU {c}, which is offline"
            ))
        }
        Some(c) => {
            if let Some(eff) = v
                .genirq
                .effective_cpus
                .as_deref()
                .filter(|e| !e.is_empty() && !e.contains(&c))
            {
                cause = Some(format!(
                    "destination APIC id {apic_id} is CPU {c}, genirq targets CPU {}",
                    cpus_text(eff)
                ));
            } else if let Some(gv) = v.genirq.debugfs.as_ref().and_then(|d| d.vector)
                && gv != u32::from(vector)
            {
                cause = Some(format!(
                    "message vector {vector:#x}, genirq allocated vector {gv:#x}"
                ));
            }
        }
    }
    let Some(cause) = cause else {
        return;
    };
    let mut evidence = vec![genirq_evidence(v), device_evidence(v)];
    evidence.push(CheckEvidence {
        source: "/proc/cpuinfo".into(),
        detail: format!(
            "APIC ids {}; online CPUs {}",
            ctx.snap
                .apic_ids
                .iter()
                .map(|(c, a)| format!("cpu{c}={a}"))
                .collect::<Vec<_>>()
                .join(" "),
            ctx.online.as_deref().map_or_else(|| "?".into(), cpus_text)
        ),
    });
    out.findings.push(Finding {
        rule: CheckRule::C2,
        severity: Severity::Error,
        irq: Some(v.irq),
        irqs: vec![v.irq],
        device: dev.bdf.clone(),
        driver: dev.driver.clone(),
        cause,
        evidence,
        meaning: "the device sends this interrupt where no handler waits for it (x86 vectors are per CPU): it is lost; the message was not rewritten after the vector moved, e.g. a restore from before a CPU went offline".into(),
    });
}

/// C3: MSI/MSI-X switched off, or the MSI-X function mask set, while vectors of the function
/// have handlers: every vector of the device is silenced at once.
fn function_level(
    dev: &DeviceSnapshot,
    msi: Option<&MsiCap>,
    msix: Option<&MsixCap>,
    vectors: &[VectorCheck],
    out: &mut Out,
) {
    let in_use = |kind: &str| -> Vec<&VectorCheck> {
        vectors
            .iter()
            .filter(|v| v.kind == kind && v.genirq.enabled)
            .collect()
    };
    let mut push = |kind: &str, users: Vec<&VectorCheck>, cause: String, register: String| {
        if users.is_empty() {
            return;
        }
        let mut evidence: Vec<CheckEvidence> =
            users.iter().take(4).map(|v| genirq_evidence(v)).collect();
        evidence.push(CheckEvidence {
            source: format!("{kind} Message Control"),
            detail: register,
        });
        out.findings.push(Finding {
            rule: CheckRule::C3,
            severity: Severity::Error,
            irq: None,
            irqs: users.iter().map(|v| v.irq).collect(),
            device: dev.bdf.clone(),
            driver: dev.driver.clone(),
            cause,
            evidence,
            meaning: format!("no vector of this device can interrupt while genirq expects them to; the {kind} state was not restored after resume or reset"),
        });
    };
    if let Some(x) = msix {
        let reg = format!(
            "capability at {:#x}: MSI-X Enable {}, Function Mask {}, {} entries",
            x.at, x.enabled, x.function_mask, x.table_size
        );
        if !x.enabled {
            push(
                "MSI-X",
                in_use("MSI-X"),
                "MSI-X Enable is clear while vectors have handlers".into(),
                reg,
            );
        } else if x.function_mask {
            push(
                "MSI-X",
                in_use("MSI-X"),
                "the MSI-X Function Mask is set while vectors have handlers".into(),
                reg,
            );
        }
    }
    if let Some(m) = msi
        && !m.enabled
    {
        push(
            "MSI",
            in_use("MSI"),
            "MSI Enable is clear while vectors have handlers".into(),
            format!("capability at {:#x}: MSI Enable false", m.at),
        );
    }
}

/// How many interrupts a vector must be expected to take during the window, at its average
/// rate since boot, for its silence to mean something: with 5, an idle-by-chance vector stays
/// silent with a probability under 1% (Poisson, e^-5). Configuration-change vectors and
/// queues that are merely idle fall below it.
const C4_MIN_EXPECTED: f64 = 5.0;

/// C4 (heuristic, a warning): a vector that usually fires often enough to expect several
/// interrupts during the window took none, while another vector of its device fired. The rate
/// since boot includes the time before the resume, which is what a dead-after-resume vector
/// still remembers. Traffic decides what fires, so this only points where to look.
fn silent_sibling(ctx: &Ctx, dev: &DeviceSnapshot, vectors: &[VectorCheck], out: &mut Out) {
    let (Some(_), Some(window_ms), Some(uptime)) =
        (&ctx.later, ctx.snap.window_ms, ctx.snap.uptime_secs)
    else {
        out.not_evaluated(
            CheckRule::C4,
            &dev.bdf,
            "one reading of /proc/interrupts only (--window 0), or no uptime: which vectors fire now is unknown".into(),
        );
        return;
    };
    let firing: BTreeSet<u32> = vectors
        .iter()
        .filter(|v| v.genirq.count_in_window.unwrap_or(0) > 0)
        .map(|v| v.irq)
        .collect();
    if firing.is_empty() || uptime <= 0.0 {
        return;
    }
    let window = window_ms as f64 / 1000.0;
    for v in vectors {
        let silent = v.genirq.count_in_window == Some(0);
        let count = v.genirq.count.unwrap_or(0);
        let expected = count as f64 / uptime * window;
        if !(silent && v.genirq.enabled && expected >= C4_MIN_EXPECTED) {
            continue;
        }
        let mut evidence = vec![genirq_evidence(v)];
        evidence.push(CheckEvidence {
            source: "/proc/interrupts".into(),
            detail: format!(
                "over {window_ms} ms: irq {} fired 0 times where its rate since boot ({count} in {uptime:.0} s) expects {expected:.0}; irq {} of the same device fired",
                v.irq,
                cpus_text(&firing.iter().copied().collect::<Vec<_>>())
            ),
        });
        out.findings.push(Finding {
            rule: CheckRule::C4,
            severity: Severity::Warning,
            irq: Some(v.irq),
            irqs: vec![v.irq],
            device: dev.bdf.clone(),
            driver: dev.driver.clone(),
            cause: format!("silent for {window_ms} ms while other vectors of its device fired"),
            evidence,
            meaning: "it may have stopped at a resume, or its work stopped: run `msitrace check` again under load and compare its count in /proc/interrupts".into(),
        });
    }
}

fn yn(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

impl CheckReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("report does not serialise: {e}") }),
        )
    }

    /// The report for a person. Text from sysfs is in it: the caller passes it through
    /// `terminal_safe`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "msitrace check: kernel {}, {} devices, {} vectors{}",
            if self.kernel_release.is_empty() {
                "unknown"
            } else {
                &self.kernel_release
            },
            self.summary.devices,
            self.summary.vectors,
            if self.privileged {
                ""
            } else {
                ", not root (see what could not be read)"
            }
        );
        let _ = writeln!(s, "\nDevices");
        for d in &self.devices {
            let mut parts = Vec::new();
            if let Some(x) = &d.msix {
                parts.push(format!(
                    "MSI-X {} function mask {} {} entries in BAR{}+{:#x}, table {}",
                    if x.enabled { "enabled," } else { "DISABLED," },
                    if x.function_mask { "SET," } else { "clear," },
                    x.table_size,
                    x.table_bar,
                    x.table_offset,
                    d.msix_table.as_deref().unwrap_or("?")
                ));
            }
            if let Some(m) = &d.msi {
                parts.push(format!(
                    "MSI {} {} vector(s), {}",
                    if m.enabled { "enabled," } else { "DISABLED," },
                    m.vectors,
                    if m.mask_bits.is_some() {
                        "per-vector masking"
                    } else {
                        "no per-vector masking"
                    }
                ));
            }
            if let Some(p) = &d.config_problem {
                parts.push(p.clone());
            }
            if let Some(b) = &d.hv_bus {
                parts.push(format!("Hyper-V vPCI bus {}", b.vmbus_device));
            }
            let _ = writeln!(
                s,
                "  {} {} ({}): {}",
                d.bdf,
                d.driver.as_deref().unwrap_or("no driver"),
                d.power_state.as_deref().unwrap_or("power state ?"),
                if parts.is_empty() {
                    "no MSI or MSI-X capability".into()
                } else {
                    parts.join("; ")
                }
            );
        }
        let _ = writeln!(s, "\nVectors (genirq | device)");
        let _ = writeln!(
            s,
            "  {:>5} {:<13} {:<5} {:>3} {:<24} {:>10} {:>7} {:<4} {:<7} | {:<6} {:<26} DESTINATION",
            "IRQ",
            "DEVICE",
            "KIND",
            "IDX",
            "HANDLER",
            "COUNT",
            "WINDOW",
            "CPU",
            "ENABLED",
            "MASKED",
            "MESSAGE",
        );
        for v in &self.vectors {
            let g = &v.genirq;
            let d = &v.device_state;
            let dest = match (d.destination, d.destination_cpu) {
                (Some(Destination::Apic { apic_id, vector }), Some(c)) => {
                    format!("apic {apic_id} = cpu{c}, vector {vector:#x}")
                }
                (Some(Destination::Apic { apic_id, vector }), None) => {
                    format!("apic {apic_id} (no online CPU), vector {vector:#x}")
                }
                (Some(Destination::Remapped), _) => "remapped (IOMMU)".into(),
                (Some(Destination::Logical), _) => "logical".into(),
                (Some(Destination::NotApic), _) => "not an APIC message".into(),
                (None, _) => d.unknown.clone().unwrap_or_else(|| "?".into()),
            };
            let _ = writeln!(
                s,
                "  {:>5} {:<13} {:<5} {:>3} {:<24} {:>10} {:>7} {:<4} {:<7} | {:<6} {:<26} {}{}",
                v.irq,
                v.device,
                v.kind,
                v.index.map_or_else(|| "?".into(), |i| i.to_string()),
                g.actions.as_deref().unwrap_or("-"),
                g.count.map_or_else(|| "?".into(), |c| c.to_string()),
                g.count_in_window
                    .map_or_else(|| "-".into(), |c| format!("+{c}")),
                g.effective_cpus
                    .as_deref()
                    .map_or_else(|| "?".into(), cpus_text),
                if g.enabled { "yes" } else { "no" },
                yn(d.masked),
                d.message.map_or_else(|| "-".into(), |m| m.to_string()),
                dest,
                if v.findings > 0 { "  <- finding" } else { "" }
            );
        }
        let _ = writeln!(s, "\nFindings");
        if self.findings.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "WARNING",
            };
            let _ = writeln!(
                s,
                "  {sev} {} {} — {} ({}{}): {}",
                f.rule,
                f.rule.title(),
                f.irq.map_or_else(
                    || format!("irqs {}", cpus_text(&f.irqs)),
                    |i| format!("irq {i}")
                ),
                f.device,
                f.driver
                    .as_deref()
                    .map_or_else(String::new, |d| format!(", {d}")),
                f.cause
            );
            for e in &f.evidence {
                let _ = writeln!(s, "    {}: {}", e.source, e.detail);
            }
            let _ = writeln!(s, "    -> {}", f.meaning);
        }
        if !self.not_evaluated.is_empty() {
            let _ = writeln!(s, "\nNot evaluated");
            // Grouped, or five devices behind the same missing file make fifteen lines.
            let mut per_device: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
            for n in &self.not_evaluated {
                per_device
                    .entry((n.reason.as_str(), n.device.as_deref().unwrap_or("-")))
                    .or_default()
                    .push(n.rule.to_string());
            }
            let mut grouped: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
            for ((reason, dev), rules) in per_device {
                grouped
                    .entry((reason, rules.join(", ")))
                    .or_default()
                    .push(dev);
            }
            for ((reason, rules), devs) in grouped {
                let _ = writeln!(s, "  {rules} for {}: {reason}", devs.join(", "));
            }
        }
        if !self.unreadable.is_empty() {
            let _ = writeln!(s, "\nCould not read");
            for u in &self.unreadable {
                let _ = writeln!(s, "  {}: {} — {}", u.what, u.why, u.cost);
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes");
            for n in &self.notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        let _ = writeln!(s, "\n{}", self.summary.verdict);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Snapshot {
        let path = format!(
            "{}/../tests/fixtures/check/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Snapshot::from_json(&text).unwrap_or_else(|e| panic!("{path}: {e:#}"))
    }

    fn rules(r: &CheckReport) -> Vec<(CheckRule, Severity, Vec<u32>)> {
        r.findings
            .iter()
            .map(|f| (f.rule, f.severity, f.irqs.clone()))
            .collect()
    }

    #[test]
    fn the_captured_host_decodes_every_msix_capability_and_says_why_no_table() {
        let r = analyse(&fixture("host-virtio-6.18.json"));
        assert_eq!(r.unusable, None);
        // No table was read: "nothing found" would be said of devices nobody looked at.
        assert_eq!(r.exit_code_for(FailOn::Error), 2, "{}", r.to_text());
        assert_eq!(r.unchecked_devices.len(), 5);
        assert!(
            r.summary.verdict.contains("were not checked"),
            "{}",
            r.summary.verdict
        );
        assert_eq!(r.summary.devices, 5);
        assert_eq!(r.summary.vectors, 16);
        let d = r.devices.iter().find(|d| d.bdf == "0000:00:03.0").unwrap();
        let x = d.msix.unwrap();
        assert_eq!(
            (x.at, x.table_size, x.table_bar, x.table_offset),
            (0x98, 3, 0, 0x8000)
        );
        assert!(x.enabled && !x.function_mask);
        assert!(
            d.msix_table
                .as_deref()
                .unwrap()
                .contains("no sysfs resourceN")
        );
        // What was not read is not guessed: C1 and C2 are not evaluated, with the reason.
        for rule in [CheckRule::C1, CheckRule::C2] {
            assert!(r.not_evaluated.iter().any(|n| n.rule == rule
                && n.device.as_deref() == Some("0000:00:03.0")
                && n.reason.contains("resourceN")));
        }
        let v38 = r.vectors.iter().find(|v| v.irq == 38).unwrap();
        assert_eq!(v38.index, Some(1));
        assert_eq!(v38.genirq.actions.as_deref(), Some("virtio2-input.0"));
        assert_eq!(v38.genirq.effective_cpus, Some(vec![1]));
        assert!(v38.genirq.enabled);
        assert_eq!(v38.device_state.masked, None);
        assert!(r.notes.iter().any(|n| n.contains("debugfs is not mounted")));
    }

    /// Debian 6.12 in the vm-test guest after hv_stub's buggy hibernation, booted without
    /// iomem=relaxed: the e1000e's BAR is hv_stub's, so CONFIG_IO_STRICT_DEVMEM refuses the
    /// table mapping. The dead vectors cannot be seen there, and the report must say so for
    /// that device while it still reads every virtio and pcieport table.
    #[test]
    fn a_claimed_bar_under_strict_iomem_leaves_c1_not_evaluated_for_that_device_only() {
        let r = analyse(&fixture("e1000e-6.12-hibernate-buggy-strict.json"));
        assert_eq!(r.unusable, None);
        assert_eq!(rules(&r), vec![], "{}", r.to_text());
        // The dead device was not looked at: not "nothing found" (exit 0) but exit 2, naming it.
        assert_eq!(r.unchecked_devices, vec!["0000:02:00.0".to_string()]);
        assert_eq!(r.exit_code_for(FailOn::Error), 2);
        assert!(
            r.summary.verdict.contains("iomem=relaxed"),
            "{}",
            r.summary.verdict
        );
        assert_eq!((r.summary.devices, r.summary.vectors), (8, 17));
        let d = r.devices.iter().find(|d| d.bdf == "0000:02:00.0").unwrap();
        assert_eq!(d.driver.as_deref(), Some("hv_stub"));
        let x = d.msix.unwrap();
        assert_eq!((x.table_size, x.table_bar, x.table_offset), (5, 3, 0));
        assert!(x.enabled && !x.function_mask);
        assert!(d.msix_table.as_deref().unwrap().contains("os error 22"));
        for rule in [CheckRule::C1, CheckRule::C2] {
            assert!(
                r.not_evaluated
                    .iter()
                    .any(|n| n.rule == rule && n.device.as_deref() == Some("0000:02:00.0")),
                "{rule} for the e1000e"
            );
        }
        for irq in 37..=40 {
            let v = r.vectors.iter().find(|v| v.irq == irq).unwrap();
            assert_eq!(v.device_state.masked, None, "irq {irq}");
            assert!(v.genirq.enabled, "irq {irq}");
        }
        // Every other table was read: unmasked, sent to the CPU genirq targets.
        let others: Vec<&VectorCheck> = r
            .vectors
            .iter()
            .filter(|v| v.device != "0000:02:00.0")
            .collect();
        assert_eq!(others.len(), 13);
        for v in others {
            assert_eq!(v.device_state.masked, Some(false), "irq {}", v.irq);
            assert_eq!(
                v.device_state.destination_cpu,
                v.genirq.effective_cpus.as_ref().map(|c| c[0]),
                "irq {}",
                v.irq
            );
        }
    }

    /// The same guest booted with iomem=relaxed (as vm-test boots it), after hv_stub's buggy
    /// hibernation: the e1000e's table read through resource3 holds the test vectors (irqs
    /// 38, 39) masked, with the message the emulated host no longer maps (APIC id 0xF0),
    /// while genirq has their handlers installed. C1 on exactly those two; the control (37)
    /// and the plain vector (40) are clean. A masked message is not in use: no C2 on top.
    #[test]
    fn the_real_e1000e_after_the_buggy_hibernation_is_c1_on_exactly_the_test_vectors() {
        let r = analyse(&fixture("e1000e-6.12-hibernate-buggy.json"));
        assert_eq!(
            rules(&r),
            vec![
                (CheckRule::C1, Severity::Error, vec![38]),
                (CheckRule::C1, Severity::Error, vec![39]),
            ],
            "{}",
            r.to_text()
        );
        assert_eq!(r.exit_code_for(FailOn::Error), 1);
        let d = r.devices.iter().find(|d| d.bdf == "0000:02:00.0").unwrap();
        assert_eq!(d.msix_table.as_deref(), Some("read"));
        let x = d.msix.unwrap();
        assert_eq!((x.table_size, x.table_bar, x.table_offset), (5, 3, 0));
        for (irq, index, masked) in [(37, 0, false), (38, 1, true), (39, 2, true), (40, 3, false)] {
            let v = r.vectors.iter().find(|v| v.irq == irq).unwrap();
            assert_eq!(v.index, Some(index), "irq {irq}");
            assert_eq!(v.device_state.masked, Some(masked), "irq {irq}");
            assert_eq!(v.findings, usize::from(masked), "irq {irq}");
        }
        let v38 = r.vectors.iter().find(|v| v.irq == 38).unwrap();
        assert!(matches!(
            v38.device_state.destination,
            Some(Destination::Apic { apic_id: 0xf0, .. })
        ));
        assert_eq!(v38.device_state.destination_cpu, None);
        let v37 = r.vectors.iter().find(|v| v.irq == 37).unwrap();
        assert_eq!(v37.device_state.destination_cpu, Some(0));
        assert!(
            r.findings[0]
                .evidence
                .iter()
                .any(|e| e.source == "MSI-X table entry 1" && e.detail.contains("mask bit set"))
        );
    }

    /// After the fixed driver's hibernation (`msitrace verify` around it, as vm-test runs it):
    /// every e1000e entry unmasked and sent to the CPU genirq targets; nothing to find.
    #[test]
    fn the_real_e1000e_after_the_fixed_hibernation_gives_nothing() {
        let r = analyse(&fixture("e1000e-6.12-hibernate-fixed.json"));
        assert_eq!(rules(&r), vec![], "{}", r.to_text());
        assert_eq!(r.exit_code_for(FailOn::Error), 0);
        for irq in 37..=40 {
            let v = r.vectors.iter().find(|v| v.irq == irq).unwrap();
            assert_eq!(v.device, "0000:02:00.0");
            assert_eq!(v.device_state.masked, Some(false), "irq {irq}");
            assert_eq!(
                v.device_state.destination_cpu,
                v.genirq.effective_cpus.as_ref().map(|c| c[0]),
                "irq {irq}"
            );
        }
    }

    #[test]
    fn a_table_that_matches_genirq_gives_nothing() {
        let r = analyse(&fixture("table-virtio-6.18.json"));
        assert_eq!(rules(&r), vec![], "{}", r.to_text());
        let v38 = r.vectors.iter().find(|v| v.irq == 38).unwrap();
        assert_eq!(v38.device_state.masked, Some(false));
        assert_eq!(
            v38.device_state.destination,
            Some(Destination::Apic {
                apic_id: 1,
                vector: 0x22
            })
        );
        assert_eq!(v38.device_state.destination_cpu, Some(1));
    }

    #[test]
    fn an_entry_masked_while_genirq_has_it_enabled_is_c1_on_exactly_that_vector() {
        let r = analyse(&fixture("masked-entry.json"));
        assert_eq!(rules(&r), vec![(CheckRule::C1, Severity::Error, vec![38])]);
        assert_eq!(r.exit_code_for(FailOn::Error), 1);
        let f = &r.findings[0];
        assert_eq!(f.device, "0000:00:03.0");
        assert!(
            f.evidence
                .iter()
                .any(|e| e.source == "MSI-X table entry 1" && e.detail.contains("mask bit set"))
        );
        assert!(
            f.evidence
                .iter()
                .any(|e| e.detail.contains("virtio2-input.0"))
        );
        // A masked vector's message is not in use: no C2 on top.
        assert!(r.to_text().contains("ERROR C1"));
    }

    #[test]
    fn a_destination_that_is_no_cpu_or_not_genirqs_is_c2() {
        let r = analyse(&fixture("bad-destination.json"));
        assert_eq!(
            rules(&r),
            vec![
                (CheckRule::C2, Severity::Error, vec![38]),
                (CheckRule::C2, Severity::Error, vec![39])
            ],
            "{}",
            r.to_text()
        );
        assert!(
            r.findings[0]
                .cause
                .contains("is CPU 0, genirq targets CPU 1")
        );
        assert!(r.findings[1].cause.contains("APIC id 5 is no CPU's"));
    }

    #[test]
    fn the_function_mask_with_vectors_in_use_is_c3_over_the_whole_device() {
        let r = analyse(&fixture("function-mask.json"));
        assert_eq!(
            rules(&r),
            vec![(CheckRule::C3, Severity::Error, vec![37, 38, 39])]
        );
        assert_eq!(r.findings[0].irq, None);
        assert!(
            r.findings[0]
                .evidence
                .iter()
                .any(|e| e.detail.contains("Function Mask true"))
        );
    }

    #[test]
    fn without_root_nothing_of_the_devices_is_known_and_the_report_is_unusable() {
        let s = fixture("nonroot-virtio-6.18.json");
        assert!(!s.privileged);
        let r = analyse(&s);
        assert_eq!(r.exit_code_for(FailOn::Error), 2);
        let why = r.unusable.as_deref().unwrap();
        assert!(
            why.contains("64 bytes") && why.contains("sudo msitrace check"),
            "{why}"
        );
        assert!(r.unreadable.iter().any(|u| u.what.ends_with("/config")));
        // genirq's side is still shown.
        assert_eq!(r.summary.vectors, 16);
    }

    #[test]
    fn a_busy_vector_silent_while_its_sibling_fires_is_a_c4_warning_only() {
        let mut s = fixture("host-virtio-6.18.json");
        // IRQ 36 (virtio1-req.0) keeps firing in the capture; freeze it and let 35 fire.
        let later = s.proc_interrupts.clone().unwrap();
        let later = later
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("35:") {
                    l.replacen("          1", "          9", 1)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        s.proc_interrupts_later = Some(later);
        let r = analyse(&s);
        assert_eq!(
            rules(&r),
            vec![(CheckRule::C4, Severity::Warning, vec![36])],
            "{}",
            r.to_text()
        );
        // The warning counts under --fail-on warning; without it, the unread tables make 2.
        assert_eq!(r.exit_code_for(FailOn::Error), 2);
        assert_eq!(r.exit_code_for(FailOn::Warning), 1);
        // At a rate that expects under 5 interrupts in the window, silence is no signal.
        s.uptime_secs = Some(1e9);
        assert_eq!(rules(&analyse(&s)), vec![]);
        s.proc_interrupts_later = None;
        let r = analyse(&s);
        assert!(r.not_evaluated.iter().any(|n| n.rule == CheckRule::C4));
    }

    #[test]
    fn a_hyper_v_device_is_noted_and_its_opaque_message_not_decoded() {
        let mut s = fixture("bad-destination.json");
        for d in &mut s.devices {
            d.hv_bus = Some(super::super::snapshot::HvBusSnapshot {
                vmbus_device: "7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060".into(),
                driver: Some("hv_pci".into()),
                channel_state: Some("3".into()),
            });
        }
        let r = analyse(&s);
        assert_eq!(rules(&r), vec![]);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("Hyper-V vPCI bus 7a7b5c3e")
                    && n.contains("driver hv_pci")
                    && n.contains("cannot be checked from inside the guest"))
        );
    }

    #[test]
    fn a_newer_snapshot_format_is_refused_with_what_to_do() {
        let err = Snapshot::from_json(r#"{"format": 99}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("use a newer msitrace"), "{err}");
        assert!(Snapshot::from_json("[]").is_err());
    }
}

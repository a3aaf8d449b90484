//! The initial state of every MSI/MSI-X vector, read at start from /proc/interrupts and
//! /sys/bus/pci/devices/*/msi_irqs, stored in the trace header so that a replay starts from
//! the same state as the live run and vectors without events are still shown.
//!
//! Reading is split in two: [`read_seed`] walks the files, the `parse_*` functions turn their
//! text into values and are tested on captured text.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// CLOCK_MONOTONIC ns when the seed was read.
    pub taken_ns: u64,
    pub online_cpus: Vec<u32>,
    #[serde(deserialize_with = "at_most_max_vectors")]
    pub vectors: Vec<SeedVector>,
}

/// More vectors than any machine has: Linux numbers IRQs below a few tens of thousands even
/// on large hosts. A header read from a file is refused past this, while it is parsed: a few
/// bytes of JSON per vector would otherwise become hundreds of bytes of memory each (and
/// kilobytes in the engine), which is how a 49 MiB header took 700 MB to replay.
pub const MAX_SEED_VECTORS: usize = 65_536;

fn at_most_max_vectors<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SeedVector>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<SeedVector>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_SEED_VECTORS} vectors")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element()? {
                if out.len() == MAX_SEED_VECTORS {
                    return Err(serde::de::Error::custom(format!(
                        "the seed lists more than {MAX_SEED_VECTORS} vectors, more than any machine has"
                    )));
                }
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedVector {
    pub irq: u32,
    /// PCI device (BDF) from /sys/bus/pci/devices/*/msi_irqs.
    pub device: Option<String>,
    pub driver: Option<String>,
    /// "MSI" or "MSI-X", from msi_irqs/<irq> (or the /proc/interrupts chip name).
    pub kind: Option<String>,
    /// The /proc/interrupts chip and action columns, e.g. "PCI-MSIX-0000:00:02.0" and "eth0-rx-0".
    pub chip: Option<String>,
    pub actions: Option<String>,
    /// Handler count summed over CPUs.
    pub count: u64,
    /// CPUs with a non-zero count (where it has fired).
    pub cpus_fired: Vec<u32>,
    /// /proc/irq/<irq>/effective_affinity_list, when readable.
    pub effective_cpus: Option<Vec<u32>>,
    /// MSI/MSI-X index, from the hwirq column of /proc/interrupts.
    #[serde(default)]
    pub msi_index: Option<u32>,
    /// The VMBus device (pci-hyperv bus) the PCI device sits under, when it does.
    #[serde(default)]
    pub hv_bus: Option<String>,
    /// genirq's state and the x86 vector from /sys/kernel/debug/irq/irqs/<irq>, on kernels
    /// built with GENERIC_IRQ_DEBUGFS (Debian's are not).
    #[serde(default)]
    pub debugfs: Option<IrqDebugfs>,
}

/// What the irq debugfs file of one IRQ says (kernel/irq/debugfs.c).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqDebugfs {
    pub activated: bool,
    pub masked: bool,
    pub disabled: bool,
    pub started: bool,
    pub managed: bool,
    pub managed_shutdown: bool,
    /// The x86 vector domain's `Vector:` and `Target:` lines.
    pub vector: Option<u32>,
    pub target_cpu: Option<u32>,
}

/// Parse /sys/kernel/debug/irq/irqs/<irq>: the `dstate` flag names (IRQD_*) listed under it
/// and the vector domain's `Vector:`/`Target:` lines.
pub fn parse_irq_debugfs(text: &str) -> IrqDebugfs {
    let mut d = IrqDebugfs::default();
    for line in text.lines() {
        let t = line.trim();
        match t {
            "IRQD_ACTIVATED" => d.activated = true,
            "IRQD_IRQ_MASKED" => d.masked = true,
            "IRQD_IRQ_DISABLED" => d.disabled = true,
            "IRQD_IRQ_STARTED" => d.started = true,
            "IRQD_AFFINITY_MANAGED" => d.managed = true,
            "IRQD_MANAGED_SHUTDOWN" => d.managed_shutdown = true,
            _ => {}
        }
        if let Some((key, val)) = t.split_once(':') {
            let val = val.trim().parse::<u32>().ok();
            match key.trim() {
                "Vector" => d.vector = val,
                "Target" => d.target_cpu = val,
                _ => {}
            }
        }
    }
    d
}

/// One IRQ line of /proc/interrupts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcIrq {
    pub irq: u32,
    /// Per-CPU counts, paired with the CPU number of their column.
    pub per_cpu: Vec<(u32, u64)>,
    pub chip: Option<String>,
    pub hwirq: Option<u64>,
    pub actions: Option<String>,
}

/// Parse /proc/interrupts: the header names the CPU columns (online CPUs only, so numbers can
/// skip), numbered lines are IRQs; the named rows (NMI, LOC, …) are not vectors and are left out.
pub fn parse_proc_interrupts(text: &str) -> Vec<ProcIrq> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus: Vec<u32> = header
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU").and_then(|n| n.parse().ok()))
        .collect();
    let mut out = Vec::new();
    for line in lines {
        let Some((head, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = head.trim().parse::<u32>() else {
            continue;
        };
        let mut toks = rest.split_whitespace().peekable();
        let mut per_cpu = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            match toks.peek().and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => {
                    per_cpu.push((cpu, n));
                    toks.next();
                }
                None => break,
            }
        }
        // The chip name may contain spaces (pci-hyperv's "Hyper-V PCIe MSI"): it runs up to
        // the `<hwirq>-<handler>` column (e.g. `512000-edge`), which only IRQs with a domain
        // have; without one, the chip is the first word.
        let rest: Vec<&str> = toks.collect();
        let is_hwirq = |t: &&str| {
            t.split_once('-')
                .is_some_and(|(n, h)| !h.is_empty() && n.parse::<u64>().is_ok())
        };
        let (chip, hwirq, actions_from) = match rest.iter().position(is_hwirq) {
            Some(i) if i > 0 => (
                Some(rest[..i].join(" ")),
                rest[i].split_once('-').and_then(|(n, _)| n.parse().ok()),
                i + 1,
            ),
            _ => (rest.first().map(|c| c.to_string()), None, 1),
        };
        let actions_from = rest.iter().skip(actions_from).copied();
        let actions: Vec<&str> = actions_from.collect();
        let actions = (!actions.is_empty()).then(|| actions.join(" "));
        out.push(ProcIrq {
            irq,
            per_cpu,
            chip,
            hwirq,
            actions,
        });
    }
    out
}

/// Parse a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(text: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a
                    .parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?;
                let b: u32 = b
                    .parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?;
                anyhow::ensure!(a <= b, "bad CPU range {part:?} in {text:?}");
                out.extend(a..=b);
            }
            None => out.push(
                part.parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?,
            ),
        }
    }
    Ok(out)
}

/// The MSI index from the hwirq column. Per-device MSI domains (chip `PCI-MSIX-<bdf>`,
/// `PCI-MSI-<bdf>`, since ~6.2) number hwirqs by index; the older global PCI-MSI domain packs
/// `index | dev_id << 11 | domain << 27` (pci_msi_domain_calc_hwirq).
pub fn msi_index_from_hwirq(chip: &str, hwirq: u64) -> Option<u32> {
    let per_device = chip
        .rsplit_once('-')
        .is_some_and(|(_, tail)| tail.contains(':'));
    if per_device {
        u32::try_from(hwirq).ok()
    } else if chip.contains("PCI-MSI") {
        Some((hwirq & 0x7ff) as u32)
    } else {
        None
    }
}

/// Find the VMBus device a PCI device sits under: `ancestors` are the directories of its
/// canonical sysfs path from the device upwards, each with the name of its `subsystem` link.
pub fn vmbus_ancestor<'a>(
    ancestors: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<String> {
    ancestors
        .into_iter()
        .find(|(_, subsystem)| *subsystem == Some("vmbus"))
        .map(|(name, _)| name.to_string())
}

/// What sysfs, procfs and debugfs say per MSI IRQ and per PCI device.
#[derive(Clone, Debug, Default)]
pub struct SysFacts {
    /// Each IRQ listed in some msi_irqs directory → (BDF, "msi"/"msix").
    pub devices: BTreeMap<u32, (String, String)>,
    /// Per BDF: the bound driver and the VMBus device above it.
    pub drivers: BTreeMap<String, String>,
    pub hv_buses: BTreeMap<String, String>,
    /// Per IRQ: effective affinity and the irq debugfs state.
    pub effective: BTreeMap<u32, Vec<u32>>,
    pub debugfs: BTreeMap<u32, IrqDebugfs>,
}

/// Put /proc/interrupts and the per-device facts together.
pub fn build_seed(
    taken_ns: u64,
    online_cpus: Vec<u32>,
    proc_irqs: &[ProcIrq],
    f: &SysFacts,
) -> Seed {
    let SysFacts {
        devices,
        drivers,
        hv_buses,
        effective,
        debugfs,
    } = f;
    let by_irq: BTreeMap<u32, &ProcIrq> = proc_irqs.iter().map(|p| (p.irq, p)).collect();
    let mut vectors = Vec::new();
    for (irq, (bdf, kind)) in devices {
        let p = by_irq.get(irq);
        let chip = p.and_then(|p| p.chip.clone());
        let msi_index = match (&chip, p.and_then(|p| p.hwirq)) {
            (Some(c), Some(h)) => msi_index_from_hwirq(c, h),
            _ => None,
        };
        vectors.push(SeedVector {
            irq: *irq,
            device: Some(bdf.clone()),
            driver: drivers.get(bdf).cloned(),
            kind: Some(kind.clone()),
            chip,
            actions: p.and_then(|p| p.actions.clone()),
            count: p.map_or(0, |p| p.per_cpu.iter().map(|(_, n)| n).sum()),
            cpus_fired: p.map_or_else(Vec::new, |p| {
                p.per_cpu
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(c, _)| *c)
                    .collect()
            }),
            effective_cpus: effective.get(irq).cloned(),
            msi_index,
            hv_bus: hv_buses.get(bdf).cloned(),
            debugfs: debugfs.get(irq).cloned(),
        });
    }
    Seed {
        taken_ns,
        online_cpus,
        vectors,
    }
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Read the initial state of the running system. Only /proc/interrupts and the online CPU list
/// are required; a device or IRQ file that cannot be read leaves its field empty.
pub fn read_seed() -> anyhow::Result<Seed> {
    let taken_ns = monotonic_ns();
    let interrupts = fs::read_to_string("/proc/interrupts")
        .context("cannot read /proc/interrupts (is /proc mounted?)")?;
    let online = fs::read_to_string("/sys/devices/system/cpu/online")
        .context("cannot read /sys/devices/system/cpu/online (is /sys mounted?)")?;
    let online_cpus = parse_cpu_list(&online)?;
    let proc_irqs = parse_proc_interrupts(&interrupts);

    let mut f = SysFacts::default();
    if let Ok(entries) = fs::read_dir("/sys/bus/pci/devices") {
        for entry in entries.flatten() {
            let bdf = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let Ok(irqs) = fs::read_dir(dir.join("msi_irqs")) else {
                continue;
            };
            for irq in irqs.flatten() {
                let Ok(n) = irq.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let kind = fs::read_to_string(irq.path())
                    .map(|k| k.trim().to_string())
                    .unwrap_or_default();
                f.devices.insert(n, (bdf.clone(), kind));
            }
            if let Some(d) = link_name(&dir.join("driver")) {
                f.drivers.insert(bdf.clone(), d);
            }
            if let Ok(canon) = fs::canonicalize(&dir) {
                let ancestors: Vec<(String, Option<String>)> = canon
                    .ancestors()
                    .filter_map(|a| {
                        let name = a.file_name()?.to_string_lossy().into_owned();
                        Some((name, link_name(&a.join("subsystem"))))
                    })
                    .collect();
                if let Some(bus) =
                    vmbus_ancestor(ancestors.iter().map(|(n, s)| (n.as_str(), s.as_deref())))
                {
                    f.hv_buses.insert(bdf.clone(), bus);
                }
            }
        }
    }
    for irq in f.devices.keys() {
        if let Ok(t) = fs::read_to_string(format!("/proc/irq/{irq}/effective_affinity_list"))
            && let Ok(cpus) = parse_cpu_list(&t)
        {
            f.effective.insert(*irq, cpus);
        }
        if let Ok(t) = fs::read_to_string(format!("/sys/kernel/debug/irq/irqs/{irq}")) {
            f.debugfs.insert(*irq, parse_irq_debugfs(&t));
        }
    }
    Ok(build_seed(taken_ns, online_cpus, &proc_irqs, &f))
}

#[cfg(test)]
mod tests {

    #[test]
    fn chip_names_with_spaces_run_up_to_the_hwirq_column() {
        let text = "           CPU0       CPU1\n \
 24:          5          0  Hyper-V PCIe MSI 1073741824-edge      nvidia\n \
  9:          0          0   IO-APIC    9-fasteoi   acpi\n \
NMI:          0          0   Non-maskable interrupts\n";
        let v = parse_proc_interrupts(text);
        assert_eq!(v[0].chip.as_deref(), Some("Hyper-V PCIe MSI"));
        assert_eq!(v[0].hwirq, Some(1073741824));
        assert_eq!(v[0].actions.as_deref(), Some("nvidia"));
        assert_eq!(v[1].chip.as_deref(), Some("IO-APIC"));
        assert_eq!(v[1].hwirq, Some(9));
    }

    use super::*;

    /// Captured on a 6.18 guest (virtio devices, per-device MSI-X domains).
    const PROC_INTERRUPTS_6_18: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 26:          0          9  IO-APIC   4-edge      ttyS0
 28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
 31:          0        266 PCI-MSIX-0000:00:01.0   3-edge      virtio0-stats
 39:       8993          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 44:          0          0 PCI-MSIX-0000:00:04.0   4-edge
NMI:          0          0   Non-maskable interrupts
LOC:     104149     110957   Local timer interrupts
ERR:          0
";

    /// Shape of an older kernel with the global IR-PCI-MSI domain and a sparse CPU list.
    const PROC_INTERRUPTS_OLD: &str = "           CPU0       CPU2
 120:       5000         12  IR-PCI-MSI 512000-edge      nvme0q0, nvme0q1
 121:          0          0  IR-PCI-MSI 512001-edge      nvme0q2
";

    #[test]
    fn parses_proc_interrupts_of_a_per_device_domain_kernel() {
        let irqs = parse_proc_interrupts(PROC_INTERRUPTS_6_18);
        assert_eq!(irqs.len(), 6);
        let i31 = irqs.iter().find(|i| i.irq == 31).unwrap();
        assert_eq!(i31.per_cpu, vec![(0, 0), (1, 266)]);
        assert_eq!(i31.chip.as_deref(), Some("PCI-MSIX-0000:00:01.0"));
        assert_eq!(i31.hwirq, Some(3));
        assert_eq!(i31.actions.as_deref(), Some("virtio0-stats"));
        let i44 = irqs.iter().find(|i| i.irq == 44).unwrap();
        assert_eq!(i44.actions, None);
        assert_eq!(msi_index_from_hwirq("PCI-MSIX-0000:00:01.0", 3), Some(3));
        assert_eq!(msi_index_from_hwirq("IO-APIC", 4), None);
    }

    #[test]
    fn parses_the_global_msi_domain_and_sparse_cpus() {
        let irqs = parse_proc_interrupts(PROC_INTERRUPTS_OLD);
        assert_eq!(irqs[0].per_cpu, vec![(0, 5000), (2, 12)]);
        assert_eq!(irqs[0].hwirq, Some(512000));
        assert_eq!(irqs[0].actions.as_deref(), Some("nvme0q0, nvme0q1"));
        assert_eq!(msi_index_from_hwirq("IR-PCI-MSI", 512001), Some(1));
    }

    #[test]
    fn parses_cpu_lists_and_rejects_garbage() {
        assert_eq!(
            parse_cpu_list("0-3,6,8-9\n").unwrap(),
            vec![0, 1, 2, 3, 6, 8, 9]
        );
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("0-x").is_err());
        assert!(parse_cpu_list("3-1").is_err());
    }

    #[test]
    fn finds_the_vmbus_device_above_a_pci_device() {
        let path = [
            ("6a2b:00:02.0", Some("pci")),
            ("pci6a2b:00", None),
            ("7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060", Some("vmbus")),
            ("VMBUS:00", Some("acpi")),
        ];
        assert_eq!(
            vmbus_ancestor(path).as_deref(),
            Some("7a7b5c3e-6a2b-4b9a-9a4f-1d2e3f405060")
        );
        assert_eq!(vmbus_ancestor([("0000:00:02.0", Some("pci"))]), None);
    }

    #[test]
    fn builds_seed_vectors_from_the_parts() {
        let irqs = parse_proc_interrupts(PROC_INTERRUPTS_6_18);
        let facts = SysFacts {
            devices: BTreeMap::from([
                (31, ("0000:00:01.0".to_string(), "msix".to_string())),
                (39, ("0000:00:03.0".to_string(), "msix".to_string())),
            ]),
            drivers: BTreeMap::from([("0000:00:01.0".to_string(), "virtio-pci".to_string())]),
            hv_buses: BTreeMap::new(),
            effective: BTreeMap::from([(31, vec![1])]),
            debugfs: BTreeMap::from([(39, parse_irq_debugfs(IRQ_DEBUGFS))]),
        };
        let seed = build_seed(7, vec![0, 1], &irqs, &facts);
        assert_eq!(seed.vectors.len(), 2);
        let v = &seed.vectors[0];
        assert_eq!(v.irq, 31);
        assert_eq!(v.count, 266);
        assert_eq!(v.cpus_fired, vec![1]);
        assert_eq!(v.msi_index, Some(3));
        assert_eq!(v.driver.as_deref(), Some("virtio-pci"));
        assert_eq!(v.effective_cpus, Some(vec![1]));
        assert_eq!(seed.vectors[1].driver, None);
        assert_eq!(seed.vectors[1].debugfs.as_ref().unwrap().vector, Some(34));
    }

    /// The layout kernel/irq/debugfs.c prints for an MSI-X vector (abridged).
    const IRQ_DEBUGFS: &str = "handler:  handle_edge_irq
device:   0000:00:03.0
status:   0x00004100
istate:   0x00000000
ddepth:   0
wdepth:   0
dstate:   0x33409200
            IRQD_ACTIVATED
            IRQD_IRQ_STARTED
            IRQD_IRQ_MASKED
            IRQD_SINGLE_TARGET
            IRQD_AFFINITY_MANAGED
            IRQD_CAN_RESERVE
node:     0
affinity: 1
effectiv: 1
domain:  PCI-MSIX-0000:00:03.0-12
 hwirq:   0x2
 chip:    PCI-MSIX-0000:00:03.0
  flags:   0x430
 parent:
    domain:  VECTOR
     hwirq:   0x27
     chip:    APIC
      flags:   0x0
     Vector:    34
     Target:     1
     move_in_progress: 0
     is_managed:       1
";

    #[test]
    fn parses_the_irq_debugfs_state() {
        let d = parse_irq_debugfs(IRQ_DEBUGFS);
        assert!(d.activated && d.masked && d.started && d.managed);
        assert!(!d.disabled && !d.managed_shutdown);
        assert_eq!((d.vector, d.target_cpu), (Some(34), Some(1)));
        assert_eq!(parse_irq_debugfs(""), IrqDebugfs::default());
    }

    #[test]
    fn reads_the_seed_of_this_machine() {
        if !Path::new("/proc/interrupts").exists() {
            eprintln!("skipped: no /proc/interrupts here");
            return;
        }
        let seed = read_seed().expect("read_seed on a Linux machine");
        assert!(!seed.online_cpus.is_empty());
        for v in &seed.vectors {
            assert!(v.device.is_some());
        }
    }
}

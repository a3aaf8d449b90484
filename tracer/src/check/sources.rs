//! Read the machine into a [`Snapshot`]: procfs, sysfs, irq debugfs, each device's config
//! space, and its MSI-X table through the BAR's sysfs `resourceN` file, mapped read-only.
//! Nothing here writes to a device or to a kernel file. What cannot be read is kept in the
//! snapshot with the kernel's reason and what it costs, never fatal here: the analysis
//! decides what is left to check.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::device;
use super::snapshot::{
    DebugfsAccess, DeviceSnapshot, HvBusSnapshot, IrqSnapshot, MsixTableRead, SNAPSHOT_FORMAT,
    Snapshot, Unreadable,
};

const PCI_DEVICES: &str = "/sys/bus/pci/devices";
const IRQ_DEBUGFS: &str = "/sys/kernel/debug/irq/irqs";

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Only these PCI functions (BDFs as sysfs names them); empty = every one with vectors.
    pub devices: Vec<String>,
    /// Time between the two readings of /proc/interrupts; zero takes one.
    pub window: Duration,
}

/// `00:03.0` → `0000:00:03.0`, as sysfs names devices in PCI domain 0.
pub fn normalise_bdf(bdf: &str) -> String {
    let bdf = bdf.trim().to_ascii_lowercase();
    if bdf.matches(':').count() == 1 {
        format!("0000:{bdf}")
    } else {
        bdf
    }
}

fn read_text(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map(|t| t.trim_end().to_string())
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!("{e} (needs root)"),
        _ => e.to_string(),
    }
}

/// Logical CPU → APIC id from /proc/cpuinfo (x86 prints `apicid` per processor; other
/// architectures print none and the map stays empty).
pub fn parse_cpuinfo_apic_ids(text: &str) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let mut cpu = None;
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim().parse::<u32>().ok();
        match key.trim() {
            "processor" => cpu = val,
            "apicid" => {
                if let (Some(c), Some(a)) = (cpu, val) {
                    out.insert(c, a);
                }
            }
            _ => {}
        }
    }
    out
}

struct Reader {
    snap: Snapshot,
}

impl Reader {
    fn lost(&mut self, what: impl Into<String>, why: impl Into<String>, cost: impl Into<String>) {
        self.snap.unreadable.push(Unreadable {
            what: what.into(),
            why: why.into(),
            cost: cost.into(),
        });
    }

    fn text(&mut self, path: &Path, cost: &str) -> Option<String> {
        match read_text(path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.lost(path.display().to_string(), why(&e), cost);
                None
            }
        }
    }
}

/// Read everything `check` looks at. Fails only when a device asked for with `--device`
/// does not exist, since that is a mistake in the command line, not a fact about the machine.
pub fn read_snapshot(opts: &ReadOptions) -> anyhow::Result<Snapshot> {
    let mut r = Reader {
        snap: Snapshot {
            format: SNAPSHOT_FORMAT,
            arch: std::env::consts::ARCH.to_string(),
            // SAFETY: geteuid has no preconditions.
            privileged: unsafe { libc::geteuid() } == 0,
            ..Snapshot::default()
        },
    };
    r.snap.kernel_release = read_text(Path::new("/proc/sys/kernel/osrelease")).unwrap_or_default();
    r.snap.hypervisor_type = read_text(Path::new("/sys/hypervisor/type")).ok();

    let wanted: Vec<String> = opts.devices.iter().map(|d| normalise_bdf(d)).collect();
    for bdf in &wanted {
        anyhow::ensure!(
            Path::new(PCI_DEVICES).join(bdf).exists(),
            "no PCI device {bdf} in {PCI_DEVICES} (list them with `lspci -D`)"
        );
    }

    r.snap.proc_interrupts = r.text(
        Path::new("/proc/interrupts"),
        "no handler counts, chips or actions: nothing can be said about any vector",
    );
    r.snap.uptime_secs = read_text(Path::new("/proc/uptime"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok());
    r.snap.online_cpus = r.text(
        Path::new("/sys/devices/system/cpu/online"),
        "destinations cannot be checked against the online CPUs",
    );
    match fs::read_to_string("/proc/cpuinfo") {
        Ok(t) => r.snap.apic_ids = parse_cpuinfo_apic_ids(&t),
        Err(e) => r.lost(
            "/proc/cpuinfo",
            why(&e),
            "APIC ids unknown: message destinations cannot be read as CPUs",
        ),
    }

    let mut bdfs: Vec<String> = match fs::read_dir(PCI_DEVICES) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            r.lost(PCI_DEVICES, why(&e), "no PCI device can be read");
            Vec::new()
        }
    };
    bdfs.sort();
    for bdf in bdfs {
        let selected = if wanted.is_empty() {
            true
        } else {
            wanted.contains(&bdf)
        };
        if selected && let Some(dev) = read_device(&mut r, &bdf, !wanted.is_empty()) {
            r.snap.devices.push(dev);
        }
    }

    r.snap.irq_debugfs = debugfs_access();
    let irqs: Vec<u32> = r
        .snap
        .devices
        .iter()
        .flat_map(|d| d.msi_irqs.keys().copied())
        .collect();
    for irq in irqs {
        let snap = read_irq(&mut r, irq);
        r.snap.irqs.insert(irq, snap);
    }

    if !opts.window.is_zero() && r.snap.proc_interrupts.is_some() {
        std::thread::sleep(opts.window);
        r.snap.proc_interrupts_later = read_text(Path::new("/proc/interrupts")).ok();
        r.snap.window_ms = Some(opts.window.as_millis() as u64);
    }
    Ok(r.snap)
}

/// A device with MSI/MSI-X vectors (or one asked for by name, so that the report can say it
/// has none).
fn read_device(r: &mut Reader, bdf: &str, asked: bool) -> Option<DeviceSnapshot> {
    let dir = Path::new(PCI_DEVICES).join(bdf);
    let mut msi_irqs = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(dir.join("msi_irqs")) {
        for e in entries.flatten() {
            if let Ok(irq) = e.file_name().to_string_lossy().parse::<u32>() {
                let kind = read_text(&e.path()).unwrap_or_default();
                msi_irqs.insert(irq, kind);
            }
        }
    }
    if msi_irqs.is_empty() && !asked {
        return None;
    }
    let mut dev = DeviceSnapshot {
        bdf: bdf.to_string(),
        driver: link_name(&dir.join("driver")),
        power_state: read_text(&dir.join("power_state")).ok(),
        msi_irqs,
        hv_bus: hv_bus(&dir),
        ..DeviceSnapshot::default()
    };
    let config_path = dir.join("config");
    match fs::read(&config_path) {
        Ok(bytes) => {
            if bytes.len() <= device::UNPRIVILEGED_CONFIG_LEN {
                r.lost(
                    config_path.display().to_string(),
                    format!("only {} bytes readable: the kernel gives the rest to CAP_SYS_ADMIN (root) only", bytes.len()),
                    "the MSI/MSI-X capabilities are past them: the device's masks, messages and enable bits are unknown",
                );
            }
            dev.config = Some(bytes);
        }
        Err(e) => r.lost(
            config_path.display().to_string(),
            why(&e),
            "the device's MSI/MSI-X registers cannot be located: its masks and messages are unknown",
        ),
    }
    if dev.msi_irqs.is_empty() {
        return Some(dev);
    }
    let msix = dev
        .config
        .as_deref()
        .and_then(|c| device::capabilities(c).ok())
        .and_then(|c| c.msix);
    if let Some(cap) = msix {
        dev.msix_table = Some(read_msix_table(r, &dir, &dev, &cap));
    }
    Some(dev)
}

fn hv_bus(dir: &Path) -> Option<HvBusSnapshot> {
    let canon = fs::canonicalize(dir).ok()?;
    let ancestors: Vec<(String, Option<String>, PathBuf)> = canon
        .ancestors()
        .filter_map(|a| {
            let name = a.file_name()?.to_string_lossy().into_owned();
            Some((name, link_name(&a.join("subsystem")), a.to_path_buf()))
        })
        .collect();
    let name =
        crate::seed::vmbus_ancestor(ancestors.iter().map(|(n, s, _)| (n.as_str(), s.as_deref())))?;
    let path = &ancestors.iter().find(|(n, _, _)| *n == name)?.2;
    Some(HvBusSnapshot {
        driver: link_name(&path.join("driver")),
        channel_state: read_text(&path.join("state")).ok(),
        vmbus_device: name,
    })
}

/// The table, read from `resource<BIR>` mapped PROT_READ. Reading the table has no side
/// effect (the Pending Bit Array is not touched at all). A device outside D0 is not read:
/// its MMIO answers all ones, which would look like every vector masked.
fn read_msix_table(
    r: &mut Reader,
    dir: &Path,
    dev: &DeviceSnapshot,
    cap: &device::MsixCap,
) -> MsixTableRead {
    let mut out = MsixTableRead {
        bar: cap.table_bar,
        offset: u64::from(cap.table_offset),
        bytes: None,
    };
    let cost = "the per-vector mask bits and messages of this device are unknown";
    if let Some(state) = dev.power_state.as_deref().filter(|s| *s != "D0") {
        r.lost(
            format!("{}: MSI-X table", dev.bdf),
            format!("device is in {state}, not D0: its registers would read as all ones"),
            cost,
        );
        return out;
    }
    let path = dir.join(format!("resource{}", cap.table_bar));
    let len = usize::from(cap.table_size) * 16;
    match map_and_read(&path, u64::from(cap.table_offset), len) {
        Ok(bytes) => out.bytes = Some(bytes),
        Err(e) => r.lost(path.display().to_string(), bar_error(&e), cost),
    }
    out
}

fn bar_error(e: &io::Error) -> String {
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .filter(|l| l.contains("[integrity]") || l.contains("[confidentiality]"));
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::NotFound, _) => {
            "this kernel exposes no BAR file for the device (no sysfs resourceN here)".into()
        }
        (io::ErrorKind::PermissionDenied, _) if lockdown.is_some() => format!(
            "{e}: kernel lockdown ({}) forbids mapping PCI BARs",
            lockdown.unwrap_or_default().trim()
        ),
        (io::ErrorKind::PermissionDenied, _) => format!("{e} (needs root)"),
        (_, Some(libc::EINVAL)) => einval_why(
            e,
            fs::read_to_string("/proc/cmdline")
                .ok()
                .is_some_and(|c| c.split_whitespace().any(|w| w == "iomem=relaxed")),
        ),
        _ => e.to_string(),
    }
}

/// Why `mmap` of a BAR file says EINVAL. The kernel refuses it when the BAR's first page is
/// claimed by a driver (busy) and strict iomem checks are on: CONFIG_IO_STRICT_DEVMEM, which
/// Debian's and most distributions' kernels set, makes every BAR a bound driver requested
/// unmappable — the usual case for the device `check` is asked about. `iomem=relaxed` lifts
/// that, leaving only a region its driver requested exclusively.
fn einval_why(e: &io::Error, relaxed: bool) -> String {
    if relaxed {
        format!("{e}: the kernel refuses to map this BAR: its driver claimed it exclusively")
    } else {
        format!(
            "{e}: the kernel refuses to map a BAR its driver has claimed (CONFIG_IO_STRICT_DEVMEM, the default of Debian's kernels); boot with iomem=relaxed on the kernel command line to let check read it"
        )
    }
}

/// Map `[offset, offset + len)` of a BAR file read-only and copy it out 32 bits at a time:
/// the MSI-X table takes DWORD or QWORD reads only, so no byte-wise memcpy on MMIO.
fn map_and_read(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    let size = file.metadata()?.len();
    if offset.saturating_add(len as u64) > size {
        return Err(io::Error::other(format!(
            "the table ({len} bytes at {offset:#x}) runs past the BAR ({size:#x} bytes)"
        )));
    }
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    };
    let start = offset & !(page - 1);
    let map_len = (offset - start) as usize + len;
    // SAFETY: a fresh read-only shared mapping of a file we opened; checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = (offset - start) as usize;
    let mut bytes = Vec::with_capacity(len);
    for word in 0..len / 4 {
        // SAFETY: inside the mapping (base + len <= map_len), 4-byte aligned since both the
        // table offset (low 3 bits are the BIR) and the page are.
        let v =
            unsafe { std::ptr::read_volatile(ptr.cast::<u8>().add(base + word * 4).cast::<u32>()) };
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(ptr, map_len) };
    Ok(bytes)
}

fn debugfs_access() -> DebugfsAccess {
    match fs::read_dir(IRQ_DEBUGFS) {
        Ok(_) => DebugfsAccess::Readable,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            DebugfsAccess::Unreadable(format!("{IRQ_DEBUGFS}: {e} (needs root)"))
        }
        Err(_) => {
            let mounted = fs::read_to_string("/proc/mounts").is_ok_and(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some("/sys/kernel/debug"))
            });
            DebugfsAccess::Absent(if mounted {
                "debugfs is mounted but has no irq/ directory: this kernel is built without CONFIG_GENERIC_IRQ_DEBUGFS".into()
            } else {
                "debugfs is not mounted at /sys/kernel/debug (mount -t debugfs none /sys/kernel/debug)".into()
            })
        }
    }
}

fn read_irq(r: &mut Reader, irq: u32) -> IrqSnapshot {
    let sys = PathBuf::from(format!("/sys/kernel/irq/{irq}"));
    let proc_dir = PathBuf::from(format!("/proc/irq/{irq}"));
    let opt = |p: PathBuf| read_text(&p).ok();
    let snap = IrqSnapshot {
        chip_name: opt(sys.join("chip_name")),
        hwirq: opt(sys.join("hwirq")),
        kind: opt(sys.join("type")),
        actions: opt(sys.join("actions")),
        per_cpu_count: opt(sys.join("per_cpu_count")),
        effective_affinity_list: None,
        smp_affinity_list: opt(proc_dir.join("smp_affinity_list")),
        debugfs: opt(PathBuf::from(format!("{IRQ_DEBUGFS}/{irq}"))),
    };
    let effective = r.text(
        &proc_dir.join("effective_affinity_list"),
        "the CPU genirq targets is unknown: the message's destination cannot be compared with it",
    );
    IrqSnapshot {
        effective_affinity_list: effective,
        ..snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_bar_mapping_names_the_way_out() {
        let e = io::Error::from_raw_os_error(libc::EINVAL);
        // As on Debian's 6.12 in the vm-test guest, hv_stub holding the e1000e's BARs.
        assert!(einval_why(&e, false).contains("boot with iomem=relaxed"));
        assert!(!einval_why(&e, true).contains("iomem=relaxed"));
    }

    #[test]
    fn maps_cpus_to_apic_ids_from_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\napicid\t\t: 0\ninitial apicid\t: 0\n\n\
                    processor\t: 1\napicid\t\t: 6\ninitial apicid\t: 6\n";
        assert_eq!(
            parse_cpuinfo_apic_ids(text),
            BTreeMap::from([(0, 0), (1, 6)])
        );
        assert!(parse_cpuinfo_apic_ids("processor : 0\nBogoMIPS : 50\n").is_empty());
    }

    #[test]
    fn completes_short_bdfs_with_domain_zero() {
        assert_eq!(normalise_bdf("00:03.0"), "0000:00:03.0");
        assert_eq!(normalise_bdf("6A2B:00:02.0"), "6a2b:00:02.0");
    }
}

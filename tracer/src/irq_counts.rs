//! Handler counts per IRQ, from one of two sources. By default the kernel's own counters
//! (`kstat_irqs`, which it keeps whatever msitrace does), read from
//! /sys/kernel/irq/N/per_cpu_count: nothing runs on the per-interrupt path. With
//! `--irq-counts bpf`, the `irq:irq_handler_entry` program's: an array indexed by IRQ number
//! that userspace maps into its memory, plus a per-CPU hash for the rare IRQ numbered past it.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use aya::maps::{Map, MapData, PerCpuHashMap};

/// Where the handler counts come from (`--irq-counts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IrqCountMode {
    /// The kernel's counters, read once a second (and at each PM transition): no program on
    /// the per-interrupt path.
    #[default]
    Kernel,
    /// A program on `irq:irq_handler_entry` (107-277 ns per interrupt) counting by IRQ
    /// number: its count goes on across a descriptor freed and allocated again, where the
    /// kernel's restarts at 0, and it works on a kernel without /sys/kernel/irq
    /// (CONFIG_SPARSE_IRQ off).
    Bpf,
}

impl IrqCountMode {
    pub fn name(self) -> &'static str {
        match self {
            IrqCountMode::Kernel => "kernel",
            IrqCountMode::Bpf => "bpf",
        }
    }
}

pub const SYS_KERNEL_IRQ: &str = "/sys/kernel/irq";

/// The kernel's counters of every IRQ: /sys/kernel/irq/N/per_cpu_count lists every possible
/// CPU, where /proc/interrupts lists the online ones only, so a CPU going offline (at every
/// suspend) cannot make a count go down, nor its return make one jump. That exactness costs
/// about twice as much per IRQ: measured on a 2-CPU 6.18 host, 61 us for one read of
/// /proc/interrupts (19 IRQ rows plus the arch rows) against 6.9 us per per_cpu_count file. A
/// read only of tracked IRQs would need the engine's list and would miss a vector's count from
/// before it was first seen.
pub struct KernelCounts {
    dir: std::path::PathBuf,
}

impl KernelCounts {
    pub fn new() -> Result<KernelCounts> {
        KernelCounts::at(SYS_KERNEL_IRQ)
    }

    pub fn at(dir: impl Into<std::path::PathBuf>) -> Result<KernelCounts> {
        let dir = dir.into();
        if !dir.is_dir() {
            bail!(
                "{} is missing (kernel without CONFIG_SPARSE_IRQ): run with --irq-counts bpf",
                dir.display()
            );
        }
        Ok(KernelCounts { dir })
    }

    /// Count of every IRQ that fired since its descriptor was allocated (IRQs at 0 left out,
    /// as the BPF source leaves out IRQs that never fired). An IRQ whose file vanished
    /// between listing and reading was freed: left out too.
    pub fn read(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Some(irq) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(e.path().join("per_cpu_count")) else {
                continue;
            };
            let n = parse_per_cpu_count(&text);
            if n > 0 {
                out.insert(irq, n);
            }
        }
        out
    }
}

/// `per_cpu_count` is one comma-separated count per possible CPU.
pub fn parse_per_cpu_count(text: &str) -> u64 {
    text.trim()
        .split(',')
        .filter_map(|c| c.trim().parse::<u64>().ok())
        .sum()
}

/// The source a collector reads its samples from.
pub enum IrqCountSource {
    Kernel(KernelCounts),
    // Boxed: the maps' handles are ten times the size of the kernel source's path.
    Bpf(Box<IrqCounters>),
}

impl IrqCountSource {
    pub fn read(&self) -> BTreeMap<u32, u64> {
        match self {
            IrqCountSource::Kernel(k) => k.read(),
            IrqCountSource::Bpf(b) => b.read(),
        }
    }

    pub fn mode(&self) -> IrqCountMode {
        match self {
            IrqCountSource::Kernel(_) => IrqCountMode::Kernel,
            IrqCountSource::Bpf(_) => IrqCountMode::Bpf,
        }
    }
}

pub struct IrqCounters {
    slots: NonNull<AtomicU64>,
    len: usize,
    mapped_bytes: usize,
    // Owned so the map outlives the mapping.
    _array: MapData,
    spill: PerCpuHashMap<MapData, u32, u64>,
}

// SAFETY: the mapping is only read, through atomics, and lives as long as the value.
unsafe impl Send for IrqCounters {}
unsafe impl Sync for IrqCounters {}

impl IrqCounters {
    /// From the object's `IRQ_COUNTS` (an mmapable array of u64) and `IRQ_SPILL` maps.
    pub fn new(array: Map, spill: Map) -> Result<IrqCounters> {
        let Map::Array(array) = array else {
            bail!("IRQ_COUNTS is not an array map: the eBPF object does not match this build");
        };
        let info = array.info().context("cannot read IRQ_COUNTS's map info")?;
        if info.value_size() != 8 {
            bail!(
                "IRQ_COUNTS holds {}-byte values, not u64",
                info.value_size()
            );
        }
        let len = info.max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mapped_bytes = (len * 8).div_ceil(page) * page;
        // SAFETY: a shared read-only mapping of the map's fd, of the size the kernel gives an
        // mmapable array (its values, page-rounded); the fd stays open while it is mapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                array.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .context("cannot map IRQ_COUNTS into memory (needs a kernel >= 5.5)");
        }
        let slots = NonNull::new(p.cast::<AtomicU64>()).context("mmap returned NULL")?;
        let spill = PerCpuHashMap::try_from(spill).context("IRQ_SPILL is not a per-CPU hash")?;
        Ok(IrqCounters {
            slots,
            len,
            mapped_bytes,
            _array: array,
            spill,
        })
    }

    /// Cumulative count of every IRQ that fired since the programs were attached.
    pub fn read(&self) -> BTreeMap<u32, u64> {
        // SAFETY: `len` u64 slots are mapped, aligned to a page. The kernel writes them
        // behind our back, so they are read as atomics (an aligned load, never torn).
        let slots = unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.len) };
        let mut counts: BTreeMap<u32, u64> = slots
            .iter()
            .enumerate()
            .filter_map(|(irq, c)| {
                let n = c.load(Ordering::Relaxed);
                (n != 0).then_some((irq as u32, n))
            })
            .collect();
        for (irq, per_cpu) in self.spill.iter().filter_map(|item| item.ok()) {
            *counts.entry(irq).or_default() += per_cpu.iter().sum::<u64>();
        }
        counts
    }
}

impl Drop for IrqCounters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.slots.as_ptr().cast(), self.mapped_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_count_sums_every_possible_cpu() {
        assert_eq!(parse_per_cpu_count("0,5,0,12\n"), 17);
        assert_eq!(parse_per_cpu_count("0\n"), 0);
        assert_eq!(parse_per_cpu_count(""), 0);
    }

    #[test]
    fn kernel_counts_read_a_sysfs_tree_and_leave_out_idle_irqs() {
        let dir = std::env::temp_dir().join(format!("msitrace-irq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (irq, text) in [("24", "1,0\n"), ("25", "0,0\n"), ("130", "7,9\n")] {
            std::fs::create_dir_all(dir.join(irq)).unwrap();
            std::fs::write(dir.join(irq).join("per_cpu_count"), text).unwrap();
        }
        std::fs::create_dir_all(dir.join("not-an-irq")).unwrap();
        let counts = KernelCounts::at(&dir).unwrap().read();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![(24, 1), (130, 16)]
        );
    }

    #[test]
    fn a_kernel_without_the_sysfs_tree_is_told_to_use_bpf() {
        let e = KernelCounts::at("/nonexistent/irq")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--irq-counts bpf"), "{e}");
    }

    #[test]
    #[ignore = "root-only: reads the running kernel's /sys/kernel/irq"]
    fn kernel_counts_match_proc_interrupts() {
        let k = KernelCounts::new().unwrap().read();
        let text = std::fs::read_to_string("/proc/interrupts").unwrap();
        // /proc/interrupts shows online CPUs only: with every CPU online both must agree, up
        // to what fired between the two reads (only ever more in the second).
        let proc: BTreeMap<u32, u64> = crate::seed::parse_proc_interrupts(&text)
            .into_iter()
            .map(|p| (p.irq, p.per_cpu.iter().map(|(_, n)| n).sum()))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(!k.is_empty());
        for (irq, n) in &k {
            let p = proc.get(irq).copied().unwrap_or(0);
            assert!(
                p >= *n,
                "irq {irq}: per_cpu_count {n}, /proc/interrupts after it {p}"
            );
        }
    }
}

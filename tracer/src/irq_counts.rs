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
/// /proc/interrupts (19 IRQ rows plus the arch rows) against 6.9 us per per_cpu_count file
/// opened, read and closed. A read only of tracked IRQs would need the engine's list and would
/// miss a vector's count from before it was first seen.
///
/// The idle daemon's whole budget is 0.2 ms of CPU a second, so the files stay open and each
/// sample is one `pread` at offset 0 per IRQ (kernfs renders the attribute again at offset 0),
/// instead of open, statx, two reads and close. The directory is listed again every
/// [`RELIST_EVERY`] samples, when a read fails (the descriptor was freed: kernfs answers
/// ENODEV on a removed node, even when the number was handed out again), and whenever the
/// caller asks: the samples the rules rest on (a PM transition's start, a resume's end) ask, so
/// an IRQ allocated since the last listing is missed only by the periodic samples in between.
pub struct KernelCounts {
    dir: std::path::PathBuf,
    open: BTreeMap<u32, std::fs::File>,
    /// IRQs past [`MAX_OPEN`]: opened at each read, as before.
    unopened: Vec<u32>,
    samples_since_listing: u32,
    buf: Vec<u8>,
}

/// Samples between two listings of /sys/kernel/irq when nothing asks for one.
pub const RELIST_EVERY: u32 = 10;

/// Files kept open: a service's soft RLIMIT_NOFILE is 1024 by default, and a host with
/// thousands of IRQs must not take them all.
const MAX_OPEN: usize = 256;

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
        Ok(KernelCounts {
            dir,
            open: BTreeMap::new(),
            unopened: Vec::new(),
            // Never listed: the first read lists.
            samples_since_listing: RELIST_EVERY,
            buf: vec![0; 256],
        })
    }

    fn list(&mut self) {
        self.samples_since_listing = 0;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            self.open.clear();
            self.unopened.clear();
            return;
        };
        let mut irqs: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .collect();
        irqs.sort_unstable();
        let mut open = BTreeMap::new();
        self.unopened.clear();
        for irq in irqs {
            if let Some(f) = self.open.remove(&irq) {
                open.insert(irq, f);
            } else if open.len() < MAX_OPEN {
                if let Ok(f) = std::fs::File::open(self.per_cpu_count(irq)) {
                    open.insert(irq, f);
                }
            } else {
                self.unopened.push(irq);
            }
        }
        self.open = open;
    }

    fn per_cpu_count(&self, irq: u32) -> std::path::PathBuf {
        self.dir.join(irq.to_string()).join("per_cpu_count")
    }

    /// The whole attribute at offset 0, the buffer grown for a host with many CPUs.
    fn read_at_0(buf: &mut Vec<u8>, f: &std::fs::File) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        loop {
            let n = f.read_at(buf, 0)?;
            if n < buf.len() {
                return Ok(std::str::from_utf8(&buf[..n]).map_or(0, parse_per_cpu_count));
            }
            buf.resize(buf.len() * 2, 0);
        }
    }

    /// Count of every IRQ that fired since its descriptor was allocated (IRQs at 0 left out,
    /// as the BPF source leaves out IRQs that never fired). An IRQ whose file vanished was
    /// freed: left out too. `relist`: list the directory first, so that no IRQ allocated
    /// since the last listing is missed.
    pub fn read(&mut self, relist: bool) -> BTreeMap<u32, u64> {
        if relist || self.samples_since_listing >= RELIST_EVERY {
            self.list();
        }
        self.samples_since_listing += 1;
        let mut out = BTreeMap::new();
        let mut freed = Vec::new();
        for (irq, f) in &self.open {
            match Self::read_at_0(&mut self.buf, f) {
                Ok(n) if n > 0 => {
                    out.insert(*irq, n);
                }
                Ok(_) => {}
                Err(_) => freed.push(*irq),
            }
        }
        if !freed.is_empty() {
            // The stale file goes, so the listing opens the number's new descriptor, if any.
            for irq in &freed {
                self.open.remove(irq);
            }
            if !relist {
                return self.read(true);
            }
        }
        for irq in &self.unopened {
            let Ok(f) = std::fs::File::open(self.per_cpu_count(*irq)) else {
                continue;
            };
            if let Ok(n) = Self::read_at_0(&mut self.buf, &f)
                && n > 0
            {
                out.insert(*irq, n);
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
    /// `relist`: see [`KernelCounts::read`]; the BPF source sees every IRQ anyway.
    pub fn read(&mut self, relist: bool) -> BTreeMap<u32, u64> {
        match self {
            IrqCountSource::Kernel(k) => k.read(relist),
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
        let mut k = KernelCounts::at(&dir).unwrap();
        let counts = k.read(false);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![(24, 1), (130, 16)]
        );
        // The files stay open between samples: a count rewritten in place is read again.
        std::fs::write(dir.join("24").join("per_cpu_count"), "3,4\n").unwrap();
        // An IRQ allocated since the listing shows at the next listing, not before.
        std::fs::create_dir_all(dir.join("31")).unwrap();
        std::fs::write(dir.join("31").join("per_cpu_count"), "2,0\n").unwrap();
        assert_eq!(
            k.read(false).into_iter().collect::<Vec<_>>(),
            vec![(24, 7), (130, 16)]
        );
        assert_eq!(
            k.read(true).into_iter().collect::<Vec<_>>(),
            vec![(24, 7), (31, 2), (130, 16)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_per_cpu_count_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("msitrace-irq-long-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("24")).unwrap();
        // 1024 possible CPUs: far past the first buffer.
        let text = vec!["1"; 1024].join(",") + "\n";
        std::fs::write(dir.join("24").join("per_cpu_count"), text).unwrap();
        let counts = KernelCounts::at(&dir).unwrap().read(false);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(counts.get(&24), Some(&1024));
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
        let mut kc = KernelCounts::new().unwrap();
        let first = kc.read(true);
        // The files kept open read again at offset 0 (kernfs renders the attribute anew).
        let k = kc.read(false);
        for (irq, n) in &first {
            let again = k.get(irq).copied().unwrap_or(0);
            assert!(again >= *n, "irq {irq}: {n} then {again}");
        }
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

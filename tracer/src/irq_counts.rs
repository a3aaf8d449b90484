//! The kernel's handler counts per IRQ, as `irq:irq_handler_entry` keeps them: an array
//! indexed by IRQ number that userspace maps into its memory (read every second without a
//! system call per IRQ), plus a per-CPU hash for the rare IRQ numbered past the array.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use aya::maps::{Map, MapData, PerCpuHashMap};

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

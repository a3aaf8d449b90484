//! msitrace's eBPF programs: one per `tracer_common::ProbeId`, named by `ProbeId::program()`.
//!
//! No struct layout is compiled in. Rust eBPF has no CO-RE field relocations (aya#349), so
//! userspace resolves every offset from the running kernel's BTF and writes it into the
//! `LAYOUT` global before load; a field this kernel lacks is never read and the record's flag
//! for it stays clear. Because `LAYOUT` sits in a frozen read-only map, the verifier sees its
//! values as constants: the read paths of absent fields are pruned, present ones are verified.
//!
//! Records are reserved in the ring buffer and filled in place, so the 512-byte stack holds
//! only scalars. Every hit is counted in `HITS`, every record that did not fit in `LOST`; the
//! handler counter's hits are its per-IRQ counts.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod emit;
mod kprobes;
mod read;
mod tracepoints;
mod vector;

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{DEFAULT_RING_BYTES, IRQ_COUNT_ENTRIES, IRQ_SPILL_ENTRIES, Layout, NUM_PROBES};

#[unsafe(no_mangle)]
static LAYOUT: Layout = Layout::ABSENT;

/// Userspace may resize it (`set_max_entries`) for the burst of a suspend.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map]
static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_PROBES, 0);

#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_PROBES, 0);

/// Handler counts indexed by IRQ: the one hook that fires on every device interrupt, so its
/// cost is an array slot rather than a hash lookup. Mmapable, so userspace reads every count
/// each second without a system call per IRQ.
#[map]
static IRQ_COUNTS: Array<u64> = Array::with_max_entries(IRQ_COUNT_ENTRIES, BPF_F_MMAPABLE);

/// Per IRQ, the `struct device` whose name the last named vector record carried
/// (`vector::cached_device_name`). IRQs past the array are named in every record.
#[map]
static NAMED: Array<u64> = Array::with_max_entries(IRQ_COUNT_ENTRIES, 0);

/// The IRQs numbered past `IRQ_COUNTS` (machines with tens of thousands of CPUs' worth of
/// vectors), counted per CPU by hash.
#[map]
static IRQ_SPILL: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(IRQ_SPILL_ENTRIES, 0);

/// One entry per task currently inside a hooked function (plus the open restore windows), so
/// this bounds concurrency, not history. Preallocated: kernels before 5.18 refuse other hash
/// maps in kprobe programs.
const STASH_ENTRIES: u32 = 10240;

/// What an entry probe leaves for its return probe (and the restore window), per task.
#[map]
static ARGS: HashMap<kprobes::StashKey, kprobes::Stash> =
    HashMap::with_max_entries(STASH_ENTRIES, 0);

/// The irq_chip callbacks' stash: a slot per entry probe and CPU (`kprobes::stash_locked`).
#[map]
static LOCKED_ARGS: PerCpuArray<kprobes::LockedStash> =
    PerCpuArray::with_max_entries(NUM_PROBES, 0);

/// Stack page → the `hv_compose_msi_msg` in flight whose frame covers it (two pages per
/// compose, removed at its return), so that `hv_pci_compose_compl` finds the compose its
/// context belongs to whatever task runs it. Bounds concurrent composes, not history.
const COMPOSING_ENTRIES: u32 = 2048;

#[map]
static COMPOSING: HashMap<u64, kprobes::Composing> =
    HashMap::with_max_entries(COMPOSING_ENTRIES, 0);

/// Per CPU: the pid_tgid of the task inside `irq_migrate_all_off_this_cpu`, 0 = none. A
/// task id rather than a flag, so a missed return probe cannot mark later, unrelated events.
#[map]
static MIGRATING: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// GPL: bpf_probe_read_kernel(_str) and bpf_ktime_get_ns are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

// A panic path that survives optimisation makes the verifier reject the program (an endless
// loop), so a panic shows up when the object is loaded, never at run time.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The programs only mean something for the BPF target; this lets the crate build (and be
// linted) for the host as part of the workspace.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

//! The record every streaming program writes: hit and loss counting, the ring-buffer
//! reservation filled in place, and the header common to all probes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    maps::{PerCpuArray, ring_buf::RingBufEntry},
};
use tracer_common::{NO_INDEX, ProbeId, RAW_EVENT_SIZE, RawEvent, flags};

const _: () = assert!(RAW_EVENT_SIZE.is_multiple_of(8) && core::mem::align_of::<RawEvent>() == 8);

use crate::{EVENTS, HITS, LOST, MIGRATING};

#[inline(always)]
fn bump(counters: &PerCpuArray<u64>, probe: ProbeId) {
    if let Some(p) = counters.get_ptr_mut(probe as u32) {
        // SAFETY: a per-CPU slot, only touched by programs running on this CPU.
        unsafe { *p += 1 };
    }
}

/// Count one firing of `probe`; every program calls this first.
#[inline(always)]
pub fn hit(probe: ProbeId) {
    bump(&HITS, probe);
}

/// Count one firing of `probe` that could not be recorded.
#[inline(always)]
pub fn lost(probe: ProbeId) {
    bump(&LOST, probe);
}

/// Whether the current task on this CPU is inside `irq_migrate_all_off_this_cpu`.
#[inline(always)]
pub fn in_migration(pid_tgid: u64) -> bool {
    MIGRATING
        .get(0)
        .is_some_and(|&owner| owner != 0 && owner == pid_tgid)
}

/// A reserved ring-buffer record; it must reach [`Record::submit`] (the verifier checks).
pub struct Record(RingBufEntry<RawEvent>);

impl Record {
    #[inline(always)]
    pub fn ev(&mut self) -> &mut RawEvent {
        // SAFETY: `reserve` zeroed the whole record, and all-zero is a valid RawEvent.
        unsafe { &mut *self.0.as_mut_ptr() }
    }

    #[inline(always)]
    pub fn submit(self) {
        self.0.submit(0);
    }
}

/// Reserve a record for `probe` with its header filled in. `None` when the ring buffer is
/// full (counted in `LOST`). The tracer's own process is not filtered out: probes that fire
/// in interrupt context see whichever task they interrupted, so that would drop real events.
#[inline(always)]
pub fn reserve(probe: ProbeId) -> Option<Record> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        bump(&LOST, probe);
        return None;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points at a reserved record of exactly size_of::<RawEvent>() bytes; it is
    // zeroed before any field is written. The helpers have no preconditions.
    unsafe {
        // Word by word and volatile: `write_bytes` becomes a call to the BPF target's memset, a
        // byte loop of some 550 instructions for this record.
        let words = p.cast::<u64>();
        for i in 0..RAW_EVENT_SIZE / 8 {
            words.add(i).write_volatile(0);
        }
        (*p).ts_ns = bpf_ktime_get_ns();
        (*p).probe = probe as u16;
        (*p).cpu = bpf_get_smp_processor_id();
        (*p).tgid = tgid;
        (*p).msi_index = NO_INDEX;
        if in_migration(pid_tgid) {
            (*p).flags = flags::IN_MIGRATION;
        }
    }
    Some(Record(entry))
}

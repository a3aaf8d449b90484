//! A QEMU TCG plugin for vm-test's stream step: the guest instructions each eBPF program runs,
//! helpers included, counted on the vCPU that runs it.
//!
//! The step compares msitrace's programs with bpftrace's. The kernel's bpf_stats time them by
//! the guest's clock, which under `-icount` counts the instructions of both vCPUs (they share
//! one host thread): when the vCPUs switch inside a program, the other vCPU's slice lands in
//! it. This plugin counts per vCPU instead, from the program's first instruction to the return
//! that leaves it, which is the span bpf_stats times.
//!
//! The vCPU is read from the guest (its kernel GS base), not taken from QEMU's callback
//! argument: without MTTCG, which `-icount` rules out, QEMU gives a block's callbacks the index
//! of the vCPU that translated it, and the vCPUs share blocks. Taking that index, an earlier
//! version lost the helpers' blocks translated on the other vCPU, by amounts that changed with
//! the phase (which vCPU happened to translate a helper first).
//!
//! - A program's entry is recognised by the x86-64 JIT's prologue (below), so nothing needs to
//!   be known before the programs load. The host maps each entry address to its program with
//!   the guest's /proc/kallsyms.
//! - The return is the `ret` executed with the stack pointer the entry had: the program's own.
//! - The guest marks each phase of the step through hv_stub's debugfs `mark` (a `movabs` of
//!   [`MARK_MAGIC`] with the phase's number in `rdi`); counts are written per phase, so that
//!   programs loaded at the same address in two phases are told apart.
//!
//! Output, one line per entry address and phase: `mark=N addr=0x… runs=R insns=I median=M
//! common=I:R,… code=C code_median=CM code_common=…` (M: the median run's instructions; common:
//! the most frequent counts and their runs; code: the same for the instructions in the module
//! area, the program's own code, the rest being its helpers'), and per phase `mark=N
//! unmatched=U entries=E rets=R`: U entries whose return was never seen (a frame dropped).

mod count;
mod qemu;

pub use count::{Count, Frames, Table, is_mark, is_prog_entry, is_ret};

/// hv_stub's `mark` executes `movabs $MARK_MAGIC, %rax` with the mark in `rdi`.
pub const MARK_MAGIC: u64 = 0x4b52_414d_5453_4e49;

//! The kprobe and kretprobe programs: the Hyper-V chip callbacks, the PCI core's MSI restore
//! and writes, the CPU-offline migration (or its fallback window), and the hv_pci bus.
//!
//! A return probe cannot see its function's arguments, so each entry probe stashes what its
//! return probe needs in `ARGS`, keyed by task and probe. `pci_restore_msi_state`'s stash
//! doubles as the restore window that marks `__pci_write_msi_msg` events `IN_RESTORE`.
//!
//! `hv_pci_compose_compl` (the host's reply to a compose request) is told which compose it
//! answers by the address of its context, not by the task it runs in: the context is
//! `hv_compose_msi_msg`'s on-stack `struct compose_comp_ctxt`, and the reply may be processed
//! by whichever task or CPU runs the channel callback (the channel tasklet before the compose
//! disables it, or another compose's polling loop, which calls hv_pci_onchannelcallback for
//! every pending packet). Each compose in flight registers the two stack pages just below its
//! entry stack pointer in `COMPOSING`; the reply's context lies in one of them.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{ProbeId, RawEvent, flags};

use crate::{
    ARGS, COMPOSING, LOCKED_ARGS, MIGRATING,
    emit::{hit, reserve},
    read::{self, layout},
    vector,
};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct StashKey {
    pub pid_tgid: u64,
    /// The entry probe that wrote the stash.
    pub probe: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Stash {
    /// The function's object: irq_data, pci_dev or hv_device.
    pub obj: u64,
    /// A second argument when the return probe needs one (the msi_msg, `force`).
    pub arg: u64,
    /// hv_compose_msi_msg: the stack pointer at entry (its `COMPOSING` pages), else 0.
    pub sp: u64,
}

impl Stash {
    /// No entry: every stashed object is a kernel pointer, never 0.
    const NONE: Stash = Stash {
        obj: 0,
        arg: 0,
        sp: 0,
    };
}

/// What an irq_chip callback's entry probe leaves for its return probe ([`stash_locked`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LockedStash {
    pub pid_tgid: u64,
    pub obj: u64,
    pub arg: u64,
}

/// A `hv_compose_msi_msg` in flight, found by the stack page its reply's context lies in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Composing {
    pub pid_tgid: u64,
    pub irq_data: u64,
    /// The stack pointer at the compose's entry: its frame, and the context, lie below it.
    pub sp: u64,
}

/// How far below the compose's entry stack pointer its `struct compose_comp_ctxt` may lie: the
/// frame holds the context (56 bytes), the request packet and a few scalars, some hundred
/// bytes. One page, so two page keys cover it; kernel stacks of different tasks are separated
/// by at least a guard page, so a context never lies within a page below another task's
/// stack pointer.
const COMPOSE_FRAME_MAX: u64 = 4096;
const PAGE_SHIFT: u64 = 12;

#[inline(always)]
fn key(entry: ProbeId) -> StashKey {
    StashKey {
        pid_tgid: bpf_get_current_pid_tgid(),
        probe: entry as u64,
    }
}

/// A full map only costs the return probe its context (`NO_ENTRY`), so the error is dropped.
#[inline(always)]
fn stash(entry: ProbeId, obj: u64, arg: u64) {
    let _ = ARGS.insert(key(entry), Stash { obj, arg, sp: 0 }, 0);
}

/// The stash of `entry`, removed; an all-zero one when there is none (every stashed object is
/// a kernel pointer, never 0). Not an `Option`: the value outlives helper calls, so LLVM spills
/// it and hoists the reload above the "found" test, and with `None` leaving the payload unset
/// that reload reads a stack slot never written, which 5.10's verifier rejects (`invalid read
/// from stack R10 off=-24`, on every return probe with a stash). A zero written on the other
/// path is a value the test itself reads, so it cannot be dropped.
#[inline(always)]
fn take(entry: ProbeId) -> Stash {
    let k = key(entry);
    // SAFETY: the value is copied out at once; only this task writes this key.
    let s = unsafe { ARGS.get(k) }.copied().unwrap_or(Stash::NONE);
    if s.obj != 0 {
        let _ = ARGS.remove(k);
    }
    s
}

/// [`stash`] for the irq_chip callbacks (`hv_irq_mask`, `hv_irq_unmask`,
/// `irq_do_set_affinity`), in a per-CPU slot instead of the hash: genirq calls them under the
/// IRQ descriptor's raw spinlock with interrupts off, so between entry and return nothing else
/// runs on this CPU and the task cannot move, and a slot costs a few instructions where a hash
/// insert, lookup and delete cost a thousand (measured in the guests under instruction
/// counting). The slot names its task: a return that finds another task's entry (a caller
/// outside genirq that could be preempted) reports `NO_ENTRY` rather than a wrong vector.
#[inline(always)]
fn stash_locked(entry: ProbeId, pid_tgid: u64, obj: u64, arg: u64) {
    if let Some(slot) = LOCKED_ARGS.get_ptr_mut(entry as u32) {
        // SAFETY: a per-CPU slot, and nothing else runs on this CPU until the return probe.
        unsafe { *slot = LockedStash { pid_tgid, obj, arg } };
    }
}

/// The slot [`stash_locked`] filled, emptied; all zero when it holds no entry of this task
/// (not an `Option`, for the reason given at [`take`]).
#[inline(always)]
fn take_locked(entry: ProbeId) -> Stash {
    let Some(slot) = LOCKED_ARGS.get_ptr_mut(entry as u32) else {
        return Stash::NONE;
    };
    // SAFETY: as in `stash_locked`.
    let s = unsafe { *slot };
    if s.obj == 0 || s.pid_tgid != bpf_get_current_pid_tgid() {
        return Stash::NONE;
    }
    // SAFETY: as in `stash_locked`.
    unsafe { (*slot).obj = 0 };
    Stash {
        obj: s.obj,
        arg: s.arg,
        sp: 0,
    }
}

#[inline(always)]
fn in_restore() -> bool {
    ARGS.get_ptr(key(ProbeId::RestoreMsiEnter)).is_some()
}

/// `int` return value, sign-extended (the upper half of the register is undefined).
#[inline(always)]
fn ret_code(ctx: &RetProbeContext) -> u64 {
    i64::from(ctx.ret::<u64>() as i32) as u64
}

#[inline(always)]
fn vector_event(probe: ProbeId, d: u64) {
    if let Some(mut rec) = reserve(probe) {
        vector::from_irq_data(rec.ev(), d, true);
        rec.submit();
    }
}

/// Return probe of a callback taking `struct irq_data *`: the vector's state after the call.
#[inline(always)]
fn vector_exit(probe: ProbeId, entry: ProbeId) {
    let s = take_locked(entry);
    if let Some(mut rec) = reserve(probe) {
        if s.obj != 0 {
            vector::from_irq_data(rec.ev(), s.obj, true);
        } else {
            rec.ev().flags |= flags::NO_ENTRY;
        }
        rec.submit();
    }
}

fn try_irq_data_enter(ctx: &ProbeContext, probe: ProbeId) -> Result<u32, u32> {
    hit(probe);
    let d: u64 = ctx.arg(0).ok_or(1u32)?;
    stash_locked(probe, bpf_get_current_pid_tgid(), d, 0);
    vector_event(probe, d);
    Ok(0)
}

fn try_irq_data_exit(probe: ProbeId, entry: ProbeId) -> Result<u32, u32> {
    hit(probe);
    vector_exit(probe, entry);
    Ok(0)
}

#[kprobe]
pub fn hv_compose_enter(ctx: ProbeContext) -> u32 {
    match try_hv_compose_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_hv_compose_enter(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::HvComposeEnter;
    hit(probe);
    let d: u64 = ctx.arg(0).ok_or(1u32)?;
    let msg: u64 = ctx.arg(1).ok_or(1u32)?;
    // The kprobe's registers: the stack pointer at the function's entry (x86-64 pt_regs, the
    // register ABI aya's `arg` reads too, not a kernel struct).
    // SAFETY: `regs` is the program's context; the verifier checks the access.
    let sp: u64 = unsafe { (*ctx.regs).rsp };
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = ARGS.insert(
        key(probe),
        Stash {
            obj: d,
            arg: msg,
            sp,
        },
        0,
    );
    if sp > COMPOSE_FRAME_MAX {
        let owner = Composing {
            pid_tgid,
            irq_data: d,
            sp,
        };
        let page = sp >> PAGE_SHIFT;
        // A full map costs the reply its attribution only (the engine then decides on the
        // returned message, as without the hook).
        let _ = COMPOSING.insert(page, owner, 0);
        let _ = COMPOSING.insert(page - 1, owner, 0);
    }
    vector_event(probe, d);
    Ok(0)
}

/// The compose in flight whose frame holds `context`; all zero when there is none. Not an
/// `Option`, for the reason given at [`take`]: 5.10's verifier refused hv_pci_compose_compl
/// (`invalid read from stack R10 off=-32`) when `None` left the payload unwritten.
#[inline(always)]
fn composing_owner(context: u64) -> Composing {
    let none = Composing {
        pid_tgid: 0,
        irq_data: 0,
        sp: 0,
    };
    // SAFETY: the value is copied out at once.
    let o = unsafe { COMPOSING.get(context >> PAGE_SHIFT) }
        .copied()
        .unwrap_or(none);
    if o.irq_data != 0 && context < o.sp && o.sp - context <= COMPOSE_FRAME_MAX {
        o
    } else {
        none
    }
}

#[kretprobe]
pub fn hv_compose_exit(ctx: RetProbeContext) -> u32 {
    match try_hv_compose_exit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_hv_compose_exit(_ctx: &RetProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::HvComposeExit;
    hit(probe);
    let s = take(ProbeId::HvComposeEnter);
    if s.sp > COMPOSE_FRAME_MAX {
        let page = s.sp >> PAGE_SHIFT;
        let _ = COMPOSING.remove(page);
        let _ = COMPOSING.remove(page - 1);
    }
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if s.obj != 0 {
        vector::from_irq_data(ev, s.obj, false);
        vector::msg(ev, s.arg);
    } else {
        ev.flags |= flags::NO_ENTRY;
    }
    rec.submit();
    Ok(0)
}

/// `hv_pci_compose_compl(void *context, struct pci_response *resp, int resp_packet_size)`:
/// the host's reply to a compose request. `a[2]` is `resp->status` (pci-hyperv fails the
/// compose when it is negative); the IRQ is the compose's whose frame holds `context`.
#[kprobe]
pub fn hv_compose_compl(ctx: ProbeContext) -> u32 {
    match try_hv_compose_compl(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_hv_compose_compl(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::HvComposeCompl;
    hit(probe);
    let context: u64 = ctx.arg(0).ok_or(1u32)?;
    let resp: u64 = ctx.arg(1).ok_or(1u32)?;
    // `int` in a register: only the low half is defined.
    let size = i64::from(ctx.arg::<u64>(2).ok_or(1u32)? as i32) as u64;
    let owner = composing_owner(context);
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    ev.a[0] = context;
    ev.a[1] = size;
    if let Some(status) = read::kernel(resp, layout!(pci_response_status)) {
        ev.a[2] = i64::from(status as i32) as u64;
        ev.flags |= flags::A2_VALID;
    }
    let irq = if owner.irq_data != 0 {
        ev.a[3] = owner.pid_tgid;
        read::kernel(owner.irq_data, layout!(irq_data_irq))
    } else {
        None
    };
    match irq {
        Some(irq) => ev.irq = irq as u32,
        None => ev.flags |= flags::NO_ENTRY,
    }
    rec.submit();
    Ok(0)
}

#[kprobe]
pub fn hv_unmask_enter(ctx: ProbeContext) -> u32 {
    match try_irq_data_enter(&ctx, ProbeId::HvUnmaskEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kretprobe]
pub fn hv_unmask_exit(_ctx: RetProbeContext) -> u32 {
    match try_irq_data_exit(ProbeId::HvUnmaskExit, ProbeId::HvUnmaskEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn hv_mask_enter(ctx: ProbeContext) -> u32 {
    match try_irq_data_enter(&ctx, ProbeId::HvMaskEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kretprobe]
pub fn hv_mask_exit(_ctx: RetProbeContext) -> u32 {
    match try_irq_data_exit(ProbeId::HvMaskExit, ProbeId::HvMaskEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn pci_msi_mask(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciMsiMask) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn pci_msi_unmask(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciMsiUnmask) {
        Ok(r) | Err(r) => r,
    }
}

/// The per-device MSI domains' mask callbacks (drivers/pci/msi/irqdomain.c, 6.2 and later):
/// what genirq calls for an ordinary device's vector where `pci_msi_(un)mask_irq` serve only
/// legacy-domain chips.
#[kprobe]
pub fn pci_irq_mask_msi(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciIrqMaskMsi) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn pci_irq_unmask_msi(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciIrqUnmaskMsi) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn pci_irq_mask_msix(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciIrqMaskMsix) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn pci_irq_unmask_msix(ctx: ProbeContext) -> u32 {
    match try_pci_msi(&ctx, ProbeId::PciIrqUnmaskMsix) {
        Ok(r) | Err(r) => r,
    }
}

fn try_pci_msi(ctx: &ProbeContext, probe: ProbeId) -> Result<u32, u32> {
    hit(probe);
    let d: u64 = ctx.arg(0).ok_or(1u32)?;
    vector_event(probe, d);
    Ok(0)
}

/// `migrate_one_irq(struct irq_desc *)`; inlined on many kernels (then the window below).
#[kprobe]
pub fn migrate_one_irq(ctx: ProbeContext) -> u32 {
    match try_migrate_one_irq(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_migrate_one_irq(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::MigrateOneIrq;
    hit(probe);
    let desc: u64 = ctx.arg(0).ok_or(1u32)?;
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    ev.a[0] = desc;
    if let Some(d) = read::member_addr(desc, layout!(irq_desc_irq_data))
        && let Some(irq) = read::kernel(d, layout!(irq_data_irq))
    {
        ev.irq = irq as u32;
    }
    rec.submit();
    Ok(0)
}

/// Opens the migration window: the dying CPU moves its vectors away, in the stopper thread
/// with interrupts off, so nothing else runs on this CPU until the return probe.
#[kprobe]
pub fn migrate_all_off_enter(_ctx: ProbeContext) -> u32 {
    match try_migrate_all_off(ProbeId::MigrateAllOffEnter, true) {
        Ok(r) | Err(r) => r,
    }
}

#[kretprobe]
pub fn migrate_all_off_exit(_ctx: RetProbeContext) -> u32 {
    match try_migrate_all_off(ProbeId::MigrateAllOffExit, false) {
        Ok(r) | Err(r) => r,
    }
}

fn try_migrate_all_off(probe: ProbeId, open: bool) -> Result<u32, u32> {
    hit(probe);
    let slot = MIGRATING.get_ptr_mut(0).ok_or(1u32)?;
    if open {
        // SAFETY: a per-CPU slot, only touched by programs running on this CPU.
        unsafe { *slot = bpf_get_current_pid_tgid() };
    }
    // Both ends carry IN_MIGRATION: the window is closed only after the exit record.
    if let Some(rec) = reserve(probe) {
        rec.submit();
    }
    if !open {
        // SAFETY: as above.
        unsafe { *slot = 0 };
    }
    Ok(0)
}

/// `irq_do_set_affinity(struct irq_data *, const struct cpumask *, bool force)`.
#[kprobe]
pub fn set_affinity_enter(ctx: ProbeContext) -> u32 {
    match try_set_affinity_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_set_affinity_enter(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::SetAffinityEnter;
    hit(probe);
    let d: u64 = ctx.arg(0).ok_or(1u32)?;
    // `bool` in a register: only the low byte is defined.
    let force = u64::from(ctx.arg::<u64>(2).ok_or(1u32)? as u8 != 0);
    stash_locked(probe, bpf_get_current_pid_tgid(), d, force);
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if let Some(irq) = read::kernel(d, layout!(irq_data_irq)) {
        ev.irq = irq as u32;
    }
    ev.a[0] = force;
    rec.submit();
    Ok(0)
}

#[kretprobe]
pub fn set_affinity_exit(ctx: RetProbeContext) -> u32 {
    match try_set_affinity_exit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_set_affinity_exit(ctx: &RetProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::SetAffinityExit;
    hit(probe);
    let s = take_locked(ProbeId::SetAffinityEnter);
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    ev.a[1] = ret_code(ctx);
    if s.obj != 0 {
        if let Some(irq) = read::kernel(s.obj, layout!(irq_data_irq)) {
            ev.irq = irq as u32;
        }
        ev.a[0] = s.arg;
    } else {
        ev.flags |= flags::NO_ENTRY;
    }
    rec.submit();
    Ok(0)
}

/// A `struct pci_dev *`: its BDF, MSI/MSI-X enable bits (`a[1]`) and power state (`a[2]`).
#[inline(always)]
fn pci_dev(ev: &mut RawEvent, pdev: u64) {
    ev.a[0] = pdev;
    if let Some(dev) = read::member_addr(pdev, layout!(pci_dev_dev)) {
        vector::device_name(ev, dev);
    }
    let mut enabled = 0;
    if let Some(msi) = read::kernel(pdev, layout!(pci_dev_msi_enabled)) {
        enabled |= 4 | u64::from(msi != 0);
    }
    if let Some(msix) = read::kernel(pdev, layout!(pci_dev_msix_enabled)) {
        enabled |= 8 | (u64::from(msix != 0) << 1);
    }
    ev.a[1] = enabled;
    if let Some(state) = read::kernel(pdev, layout!(pci_dev_current_state)) {
        ev.a[2] = state & 0xffff_ffff;
        ev.flags |= flags::A2_VALID;
    }
}

/// `pci_restore_msi_state(struct pci_dev *)`; its stash is this task's restore window.
#[kprobe]
pub fn restore_msi_enter(ctx: ProbeContext) -> u32 {
    match try_restore_msi_enter(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_restore_msi_enter(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::RestoreMsiEnter;
    hit(probe);
    let pdev: u64 = ctx.arg(0).ok_or(1u32)?;
    stash(probe, pdev, 0);
    let mut rec = reserve(probe).ok_or(0u32)?;
    pci_dev(rec.ev(), pdev);
    rec.submit();
    Ok(0)
}

#[kretprobe]
pub fn restore_msi_exit(_ctx: RetProbeContext) -> u32 {
    match try_restore_msi_exit() {
        Ok(r) | Err(r) => r,
    }
}

fn try_restore_msi_exit() -> Result<u32, u32> {
    let probe = ProbeId::RestoreMsiExit;
    hit(probe);
    let s = take(ProbeId::RestoreMsiEnter);
    let mut rec = reserve(probe).ok_or(0u32)?;
    if s.obj != 0 {
        pci_dev(rec.ev(), s.obj);
    } else {
        rec.ev().flags |= flags::NO_ENTRY;
    }
    rec.submit();
    Ok(0)
}

/// `__pci_write_msi_msg(struct msi_desc *, struct msi_msg *)`: the message going to the
/// device by MMIO (or only to the cache when the device is not in D0).
#[kprobe]
pub fn write_msi_msg(ctx: ProbeContext) -> u32 {
    match try_write_msi_msg(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_write_msi_msg(ctx: &ProbeContext) -> Result<u32, u32> {
    let probe = ProbeId::WriteMsiMsg;
    hit(probe);
    let desc: u64 = ctx.arg(0).ok_or(1u32)?;
    let msg: u64 = ctx.arg(1).ok_or(1u32)?;
    let restoring = in_restore();
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if restoring {
        ev.flags |= flags::IN_RESTORE;
    }
    let dev = vector::from_msi_desc(ev, desc, true);
    vector::msg(ev, msg);
    // container_of(desc->dev, struct pci_dev, dev)
    let pdev_dev = layout!(pci_dev_dev);
    if pdev_dev.present != 0
        && dev != 0
        && let Some(state) = read::kernel(
            dev.wrapping_sub(u64::from(pdev_dev.off)),
            layout!(pci_dev_current_state),
        )
    {
        ev.a[2] = state & 0xffff_ffff;
        ev.flags |= flags::A2_VALID;
    }
    rec.submit();
    Ok(0)
}

/// A `struct hv_device *`: its name and the state of the hv_pcibus_device hanging off it
/// (`dev_get_drvdata(&hdev->device)`).
#[inline(always)]
fn hv_bus(ev: &mut RawEvent, hdev: u64) {
    ev.a[0] = hdev;
    let Some(dev) = read::member_addr(hdev, layout!(hv_device_device)) else {
        return;
    };
    vector::device_name(ev, dev);
    if let Some(hbus) = read::kernel(dev, layout!(device_driver_data))
        && let Some(state) = read::kernel(hbus, layout!(hv_pcibus_state))
    {
        ev.a[2] = state & 0xffff_ffff;
        ev.flags |= flags::A2_VALID;
    }
}

fn try_hv_pci_enter(ctx: &ProbeContext, probe: ProbeId) -> Result<u32, u32> {
    hit(probe);
    let hdev: u64 = ctx.arg(0).ok_or(1u32)?;
    stash(probe, hdev, 0);
    let mut rec = reserve(probe).ok_or(0u32)?;
    hv_bus(rec.ev(), hdev);
    rec.submit();
    Ok(0)
}

fn try_hv_pci_exit(ctx: &RetProbeContext, probe: ProbeId, entry: ProbeId) -> Result<u32, u32> {
    hit(probe);
    let s = take(entry);
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if s.obj != 0 {
        hv_bus(ev, s.obj);
    } else {
        ev.flags |= flags::NO_ENTRY;
    }
    ev.a[1] = ret_code(ctx);
    rec.submit();
    Ok(0)
}

#[kprobe]
pub fn hv_pci_suspend_enter(ctx: ProbeContext) -> u32 {
    match try_hv_pci_enter(&ctx, ProbeId::HvPciSuspendEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kretprobe]
pub fn hv_pci_suspend_exit(ctx: RetProbeContext) -> u32 {
    match try_hv_pci_exit(&ctx, ProbeId::HvPciSuspendExit, ProbeId::HvPciSuspendEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kprobe]
pub fn hv_pci_resume_enter(ctx: ProbeContext) -> u32 {
    match try_hv_pci_enter(&ctx, ProbeId::HvPciResumeEnter) {
        Ok(r) | Err(r) => r,
    }
}

#[kretprobe]
pub fn hv_pci_resume_exit(ctx: RetProbeContext) -> u32 {
    match try_hv_pci_exit(&ctx, ProbeId::HvPciResumeExit, ProbeId::HvPciResumeEnter) {
        Ok(r) | Err(r) => r,
    }
}

//! The tracepoint programs: power phases and PM callbacks and the x86 vector allocator
//! (classic tracepoints: field offsets are those of the `trace_event_raw_*` records, from BTF;
//! a record whose identifying field is absent is not emitted), and the per-IRQ handler
//! counter (a raw tracepoint, reading the `TP_PROTO` arguments).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{Field, ProbeId, Span, flags};

use crate::{
    IRQ_COUNTS, IRQ_SPILL,
    emit::{hit, lost, reserve},
    read::{self, layout},
};

#[tracepoint]
pub fn suspend_resume(ctx: TracePointContext) -> u32 {
    match try_suspend_resume(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_suspend_resume(ctx: &TracePointContext) -> Result<u32, u32> {
    let probe = ProbeId::SuspendResume;
    hit(probe);
    let action = layout!(tp_suspend_resume_action);
    if action.present == 0 {
        return Err(1);
    }
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if read::tp_str(ctx, action, &mut ev.name) {
        ev.flags |= flags::NAME_VALID;
    }
    ev.a[0] = read::tp(ctx, layout!(tp_suspend_resume_val)).unwrap_or(0);
    ev.a[1] = read::tp(ctx, layout!(tp_suspend_resume_start)).unwrap_or(0);
    rec.submit();
    Ok(0)
}

#[tracepoint]
pub fn device_pm_start(ctx: TracePointContext) -> u32 {
    match try_device_pm_start(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_device_pm_start(ctx: &TracePointContext) -> Result<u32, u32> {
    let probe = ProbeId::DevicePmStart;
    hit(probe);
    let device = layout!(tp_pm_start_device);
    if device.present == 0 {
        return Err(1);
    }
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if read::tp_str(ctx, device, &mut ev.name) {
        ev.flags |= flags::NAME_VALID;
    }
    read::tp_str(ctx, layout!(tp_pm_start_driver), &mut ev.name2);
    read::tp_str(ctx, layout!(tp_pm_start_pm_ops), &mut ev.name3);
    ev.a[0] = read::tp(ctx, layout!(tp_pm_start_event)).unwrap_or(0);
    rec.submit();
    Ok(0)
}

#[tracepoint]
pub fn device_pm_end(ctx: TracePointContext) -> u32 {
    match try_device_pm_end(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_device_pm_end(ctx: &TracePointContext) -> Result<u32, u32> {
    let probe = ProbeId::DevicePmEnd;
    hit(probe);
    let device = layout!(tp_pm_end_device);
    if device.present == 0 {
        return Err(1);
    }
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    if read::tp_str(ctx, device, &mut ev.name) {
        ev.flags |= flags::NAME_VALID;
    }
    read::tp_str(ctx, layout!(tp_pm_end_driver), &mut ev.name2);
    ev.a[0] = read::tp(ctx, layout!(tp_pm_end_error)).unwrap_or(0);
    rec.submit();
    Ok(0)
}

/// A record of `irq` (`field(0)`) plus up to four integer fields (`field(1..=4)`) into
/// `a[0..4]` (absent fields read 0), all fetched by one read of the trace record.
#[inline(always)]
fn irq_and_fields(
    ctx: &TracePointContext,
    probe: ProbeId,
    span: impl Fn() -> Span,
    field: impl Fn(usize) -> Field,
) -> Result<u32, u32> {
    hit(probe);
    let mut b = read::Block::<_, 4>::new(ctx.as_ptr() as u64, span);
    b.fetch();
    let irq = b.get(field(0)).ok_or(1u32)?;
    let mut rec = reserve(probe).ok_or(0u32)?;
    let ev = rec.ev();
    ev.irq = irq as u32;
    // Spelt out, not a loop: a field picked by a loop index is a stack read at an offset the
    // verifier does not know, and the field's offset into the block then becomes unknown too.
    ev.a[0] = b.get(field(1)).unwrap_or(0);
    ev.a[1] = b.get(field(2)).unwrap_or(0);
    ev.a[2] = b.get(field(3)).unwrap_or(0);
    ev.a[3] = b.get(field(4)).unwrap_or(0);
    rec.submit();
    Ok(0)
}

#[inline(always)]
fn vector_mod(ctx: &TracePointContext, probe: ProbeId) -> Result<u32, u32> {
    irq_and_fields(
        ctx,
        probe,
        || layout!(span_tp_vector_mod),
        |i| match i {
            0 => layout!(tp_vector_mod_irq),
            1 => layout!(tp_vector_mod_vector),
            2 => layout!(tp_vector_mod_cpu),
            3 => layout!(tp_vector_mod_prev_vector),
            4 => layout!(tp_vector_mod_prev_cpu),
            _ => Field::ABSENT,
        },
    )
}

#[tracepoint]
pub fn vector_update(ctx: TracePointContext) -> u32 {
    match vector_mod(&ctx, ProbeId::VectorUpdate) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn vector_clear(ctx: TracePointContext) -> u32 {
    match vector_mod(&ctx, ProbeId::VectorClear) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn vector_config(ctx: TracePointContext) -> u32 {
    let r = irq_and_fields(
        &ctx,
        ProbeId::VectorConfig,
        || layout!(span_tp_vector_config),
        |i| match i {
            0 => layout!(tp_vector_config_irq),
            1 => layout!(tp_vector_config_vector),
            2 => layout!(tp_vector_config_cpu),
            3 => layout!(tp_vector_config_apicdest),
            _ => Field::ABSENT,
        },
    );
    match r {
        Ok(r) | Err(r) => r,
    }
}

/// `vector_activate` and `vector_deactivate` share the `vector_activate` record.
#[inline(always)]
fn vector_activation(ctx: &TracePointContext, probe: ProbeId) -> Result<u32, u32> {
    irq_and_fields(
        ctx,
        probe,
        || layout!(span_tp_vector_activate),
        |i| match i {
            0 => layout!(tp_vector_activate_irq),
            1 => layout!(tp_vector_activate_is_managed),
            2 => layout!(tp_vector_activate_can_reserve),
            3 => layout!(tp_vector_activate_reserve),
            _ => Field::ABSENT,
        },
    )
}

#[tracepoint]
pub fn vector_activate(ctx: TracePointContext) -> u32 {
    match vector_activation(&ctx, ProbeId::VectorActivate) {
        Ok(r) | Err(r) => r,
    }
}

#[tracepoint]
pub fn vector_deactivate(ctx: TracePointContext) -> u32 {
    match vector_activation(&ctx, ProbeId::VectorDeactivate) {
        Ok(r) | Err(r) => r,
    }
}

/// Liveness only: a count per IRQ that userspace samples; never streamed. A raw tracepoint:
/// it runs on every device interrupt, and the classic form fills a trace record first.
#[raw_tracepoint(tracepoint = "irq_handler_entry")]
pub fn irq_handler_entry(ctx: RawTracePointContext) -> u32 {
    match try_irq_handler_entry(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_irq_handler_entry(ctx: &RawTracePointContext) -> Result<u32, u32> {
    // No `hit`: the counts are this probe's hits (userspace sums them), which saves a map
    // update on the hottest hook; a run that counts nowhere is counted in LOST.
    // The verifier takes context reads only at an immediate offset, so the argument's
    // position is written here; userspace attaches only where BTF says `irq` comes first.
    if layout!(tp_irq_handler_entry_irq).present == 0 {
        return Err(1);
    }
    let irq = ctx.arg::<u64>(0) as u32;
    if let Some(count) = IRQ_COUNTS.get_ptr_mut(irq) {
        // SAFETY: an aligned array slot that lives as long as the map. The slot is shared by
        // all CPUs but needs no atomic add (which the BPF target lacks in core): genirq never
        // runs one IRQ's handlers on two CPUs at once (IRQD_IRQ_INPROGRESS; a second edge is
        // replayed by the first CPU), but per-CPU IRQs, which are not MSI vectors.
        unsafe { count.write_volatile(count.read_volatile() + 1) };
        return Ok(0);
    }
    for _ in 0..2 {
        if let Some(count) = IRQ_SPILL.get_ptr_mut(irq) {
            // SAFETY: a per-CPU value, only touched by programs running on this CPU.
            unsafe { *count += 1 };
            return Ok(0);
        }
        // NOEXIST: if a nested handler created the entry meanwhile, the second pass counts.
        if IRQ_SPILL.insert(irq, 1u64, u64::from(BPF_NOEXIST)).is_ok() {
            return Ok(0);
        }
    }
    lost(ProbeId::IrqHandlerEntry);
    Err(1)
}

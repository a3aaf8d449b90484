//! Reads driven by the `LAYOUT` global: integer and bitfield members of kernel structs,
//! kernel strings, and the fields of classic tracepoint records.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
};
use tracer_common::Field;

/// One member of the `LAYOUT` global. The volatile read keeps the compiler from folding in
/// the compiled-in `Layout::ABSENT`, which the loader replaces before load.
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: `LAYOUT` is an immutable static; the read is volatile only to stop folding.
        unsafe { core::ptr::read_volatile(&raw const $crate::LAYOUT.$field) }
    };
}
pub(crate) use layout;

/// Shift and mask a bitfield out of its storage unit; plain fields pass through.
#[inline(always)]
fn bits(raw: u64, f: Field) -> Option<u64> {
    if f.bit_len == 0 {
        return Some(raw);
    }
    if f.bit_off >= 64 {
        return None;
    }
    let v = raw >> f.bit_off;
    Some(if f.bit_len >= 64 {
        v
    } else {
        v & ((1u64 << f.bit_len) - 1)
    })
}

/// The address of an embedded member (`&base->member`), when the layout has it.
#[inline(always)]
pub fn member_addr(base: u64, f: Field) -> Option<u64> {
    (f.present != 0 && base != 0).then(|| base.wrapping_add(u64::from(f.off)))
}

/// An integer, pointer or bitfield member of the kernel object at `base`.
#[inline(always)]
pub fn kernel(base: u64, f: Field) -> Option<u64> {
    let p = member_addr(base, f)?;
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    let raw = unsafe {
        match f.size {
            1 => u64::from(bpf_probe_read_kernel(p as *const u8).ok()?),
            2 => u64::from(bpf_probe_read_kernel(p as *const u16).ok()?),
            4 => u64::from(bpf_probe_read_kernel(p as *const u32).ok()?),
            8 => bpf_probe_read_kernel(p as *const u64).ok()?,
            _ => return None,
        }
    };
    bits(raw, f)
}

/// A NUL-terminated kernel string, truncated to `dst`.
#[inline(always)]
pub fn kernel_str(src: u64, dst: &mut [u8]) -> bool {
    if src == 0 {
        return false;
    }
    // SAFETY: the helper checks the source address and writes at most `dst.len()` bytes.
    unsafe { bpf_probe_read_kernel_str_bytes(src as *const u8, dst).is_ok() }
}

/// An integer field of a tracepoint record (offsets count from the record's start, the
/// common header included).
#[inline(always)]
pub fn tp(ctx: &TracePointContext, f: Field) -> Option<u64> {
    if f.present == 0 {
        return None;
    }
    let off = f.off as usize;
    // SAFETY: read_at goes through bpf_probe_read_kernel, which checks the address.
    let raw = unsafe {
        match f.size {
            1 => u64::from(ctx.read_at::<u8>(off).ok()?),
            2 => u64::from(ctx.read_at::<u16>(off).ok()?),
            4 => u64::from(ctx.read_at::<u32>(off).ok()?),
            8 => ctx.read_at::<u64>(off).ok()?,
            _ => return None,
        }
    };
    bits(raw, f)
}

/// A string field of a tracepoint record. Two encodings exist and the field's size tells
/// them apart: `__data_loc char[]` (4 bytes: offset from the record's start in the low 16
/// bits, length in the high 16) and a plain `const char *` (8 bytes; power:suspend_resume
/// keeps a pointer to a static string).
#[inline(always)]
pub fn tp_str(ctx: &TracePointContext, f: Field, dst: &mut [u8]) -> bool {
    let Some(v) = tp(ctx, f) else {
        return false;
    };
    let src = match f.size {
        4 => (ctx.as_ptr() as u64).wrapping_add(v & 0xffff),
        8 => v,
        _ => return false,
    };
    kernel_str(src, dst)
}

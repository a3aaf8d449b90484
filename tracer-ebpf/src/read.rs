//! Reads driven by the `LAYOUT` global: integer and bitfield members of kernel structs,
//! kernel strings, and the fields of classic tracepoint records.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
};
use core::mem::MaybeUninit;

use tracer_common::{Field, Span};

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

/// The fields a record takes from one object, fetched by one `bpf_probe_read_kernel` of
/// their [`Span`] (worked out by userspace from BTF) into a stack buffer of `W` words. A
/// layout without a span reads each field on its own, as [`kernel`] does.
///
/// The span is loaded from `LAYOUT` again at every access rather than kept in the struct: a
/// load from the frozen global is a constant to the verifier, so each access is at a fixed
/// stack offset and the checks below are decided (and pruned) at load time. A span kept on the
/// stack could be spilled as 32-bit halves, whose value verifiers before 5.14 forget, and
/// 5.10 refuses a stack read at an offset it does not know.
pub struct Block<S: Fn() -> Span, const W: usize> {
    base: u64,
    span: S,
    fetched: bool,
    /// Left uninitialised: zeroing it would be a call to the BPF target's memset, a byte loop
    /// that cost more than the reads it replaces. Only bytes the fetch wrote are read.
    buf: MaybeUninit<[u64; W]>,
}

impl<S: Fn() -> Span, const W: usize> Block<S, W> {
    #[inline(always)]
    fn whole(span: Span) -> bool {
        span.len != 0 && span.len as usize <= W * 8
    }

    /// An empty block; [`Block::fetch`] fills it. Two steps so that the block is built where
    /// it stays: returned from a function that filled it, it was copied word by word (LLVM
    /// cannot drop the copy of a buffer whose address went to a helper), some 20 to 36
    /// instructions a block.
    #[inline(always)]
    pub fn new(base: u64, span: S) -> Self {
        Block {
            base,
            span,
            fetched: false,
            buf: MaybeUninit::uninit(),
        }
    }

    #[inline(always)]
    pub fn fetch(&mut self) {
        let s = (self.span)();
        if self.base != 0 && Self::whole(s) {
            let len = (s.len as usize).min(W * 8);
            // SAFETY: `len` is at most the buffer's size; the helper checks the source address.
            let dst =
                unsafe { core::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), len) };
            let src = self.base.wrapping_add(u64::from(s.off)) as *const u8;
            // A failed fetch leaves every field unknown: they all lie in the one object.
            self.fetched = unsafe { bpf_probe_read_kernel_buf(src, dst) }.is_ok();
        }
    }

    /// Field `f` of the object, as [`kernel`] would read it.
    ///
    /// The arithmetic is in 64 bits: the verifier decides the checks (the layout is constant
    /// to it) but leaves the instructions that compute them, and 32-bit arithmetic added a
    /// pair of shifts for every value it zero-extended.
    #[inline(always)]
    pub fn get(&self, f: Field) -> Option<u64> {
        if f.present == 0 || self.base == 0 {
            return None;
        }
        let s = (self.span)();
        let (off, size) = (u64::from(f.off), u64::from(f.size));
        let (span_off, span_len) = (u64::from(s.off), u64::from(s.len));
        let rel = off.wrapping_sub(span_off);
        // Userspace builds spans to hold their fields aligned; a field outside (or a layout
        // from elsewhere) is read on its own. The first two tests are `Block::whole` written
        // out: calling it here makes LLVM emit 511 more instructions across the object.
        if span_len == 0
            || span_len > (W * 8) as u64
            || off < span_off
            || rel >= span_len
            || span_len - rel < size
            || rel & size.wrapping_sub(1) != 0
        {
            return kernel(self.base, f);
        }
        if !self.fetched {
            return None;
        }
        let p = self.buf.as_ptr().cast::<u8>();
        // SAFETY: `rel + size <= len <= W * 8`, bytes the fetch wrote, and `rel` is a multiple
        // of `size`.
        let raw = unsafe {
            let p = p.add(rel as usize);
            match size {
                1 => u64::from(*p),
                2 => u64::from(*p.cast::<u16>()),
                4 => u64::from(*p.cast::<u32>()),
                8 => *p.cast::<u64>(),
                _ => return kernel(self.base, f),
            }
        };
        bits(raw, f)
    }
}

/// `let $name`: a fetched [`Block`] of the object at `$base`, `$words` words, covering
/// `LAYOUT.$span`.
macro_rules! block {
    ($name:ident = $base:expr, $words:literal, $span:ident) => {
        let mut $name =
            $crate::read::Block::<_, $words>::new($base, || $crate::read::layout!($span));
        $name.fetch();
    };
}
pub(crate) use block;

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

//! What the plugin decides, without QEMU: which instructions are a program's entry, a return
//! or a mark, and the frames and counts per vCPU.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::MARK_MAGIC;

const ENDBR64: &[u8] = &[0xf3, 0x0f, 0x1e, 0xfa];
const NOP5: &[u8] = &[0x0f, 0x1f, 0x44, 0x00, 0x00];
const NOP2: &[u8] = &[0x66, 0x90];
const NOP3: &[u8] = &[0x0f, 0x1f, 0x00];
const XOR_EAX: &[u8] = &[0x31, 0xc0];
const XOR_RAX: &[u8] = &[0x48, 0x31, 0xc0];
const PUSH_RBP_MOV_RBP_RSP: &[u8] = &[0x55, 0x48, 0x89, 0xe5];

/// The x86-64 BPF JIT's prologue (emit_prologue): `endbr64` when the kernel has IBT, then the
/// 5-byte nop a trampoline may patch and the tail-call slot, in either order (a tail-call fix
/// upstream swapped them), then the frame. The slot is a 2- or 3-byte nop,
/// or `xor eax, eax` / `xor rax, rax` where tail calls are reachable. A kernel function under
/// ftrace starts with the same 5-byte nop but goes straight to its frame.
pub fn is_prog_entry(code: &[u8]) -> bool {
    let code = code.strip_prefix(ENDBR64).unwrap_or(code);
    let strip_slot = |c: &'_ [u8]| -> Option<usize> {
        [NOP2, NOP3, XOR_EAX, XOR_RAX]
            .into_iter()
            .find(|s| c.starts_with(s))
            .map(<[u8]>::len)
    };
    let nop_first = code
        .strip_prefix(NOP5)
        .and_then(|c| Some(&c[strip_slot(c)?..]));
    let slot_first = strip_slot(code).and_then(|n| code[n..].strip_prefix(NOP5));
    nop_first
        .or(slot_first)
        .is_some_and(|c| c.starts_with(PUSH_RBP_MOV_RBP_RSP))
}

/// A near return, `ret` or `ret imm16`, behind any prefixes (the kernel's return thunk and
/// `rep ret` both end in one).
pub fn is_ret(insn: &[u8]) -> bool {
    let op = insn.iter().find(|b| {
        !matches!(
            b,
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x3e | 0x26 | 0x36 | 0x64 | 0x65 | 0x40..=0x4f
        )
    });
    matches!(op, Some(0xc3 | 0xc2))
}

/// `movabs $MARK_MAGIC, %rax`.
pub fn is_mark(insn: &[u8]) -> bool {
    insn.len() == 10 && insn[..2] == [0x48, 0xb8] && insn[2..] == MARK_MAGIC.to_le_bytes()
}

struct Frame {
    addr: u64,
    sp: u64,
    start: Count,
}

/// A vCPU's kernel instructions so far: all of them, and those in the module area (the JIT's
/// code: within a program's run, its own instructions; the rest are its helpers').
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Count {
    pub all: u64,
    pub code: u64,
}

/// A vCPU's open programs, innermost last. More than [`Frames::MAX`] open means returns were
/// missed; the oldest is dropped and counted.
#[derive(Default)]
pub struct Frames {
    open: Vec<Frame>,
}

impl Frames {
    pub const MAX: usize = 16;

    /// A program at `addr` starts, the stack pointer at its return address, with `count`
    /// instructions run by this vCPU before its first.
    pub fn enter(&mut self, addr: u64, sp: u64, count: Count, table: &mut Table) {
        table.entries += 1;
        if self.open.len() == Self::MAX {
            self.open.remove(0);
            table.unmatched += 1;
        }
        self.open.push(Frame {
            addr,
            sp,
            start: count,
        });
    }

    /// A `ret` with the stack pointer `sp`, after `count` instructions of this vCPU (the ret
    /// included). It leaves the program whose entry had that stack pointer, and any opened
    /// above it, whose returns were missed.
    pub fn ret(&mut self, sp: u64, count: Count, table: &mut Table) {
        table.rets += 1;
        let Some(i) = self.open.iter().rposition(|f| f.sp == sp) else {
            return;
        };
        table.unmatched += (self.open.len() - i - 1) as u64;
        let f = &self.open[i];
        let insns = count.all.saturating_sub(f.start.all);
        let code = count.code.saturating_sub(f.start.code);
        let e = table.by_addr.entry(f.addr).or_default();
        e.runs += 1;
        e.insns += insns;
        e.code += code;
        *e.by_count.entry(insns).or_default() += 1;
        *e.code_by_count.entry(code).or_default() += 1;
        self.open.truncate(i);
    }

    pub fn depth(&self) -> usize {
        self.open.len()
    }
}

/// One program's runs: their instructions in all, and how many runs counted how many (a
/// program takes few paths; the runs an interrupt, a lock wait or a missed return lengthened
/// are the outliers).
#[derive(Default)]
struct Runs {
    runs: u64,
    insns: u64,
    by_count: BTreeMap<u64, u64>,
    /// The same for the program's own code, without its helpers.
    code: u64,
    code_by_count: BTreeMap<u64, u64>,
}

fn median(by_count: &BTreeMap<u64, u64>, runs: u64) -> u64 {
    let mut left = runs / 2;
    for (&insns, &n) in by_count {
        if left < n {
            return insns;
        }
        left -= n;
    }
    0
}

/// The most frequent counts, most runs first, as `insns:runs` pairs: a program's paths show
/// as exact repeats, what lengthened a run as the spread around them.
fn common(by_count: &BTreeMap<u64, u64>, n: usize) -> String {
    let mut v: Vec<(u64, u64)> = by_count.iter().map(|(&i, &r)| (i, r)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .take(n)
        .map(|(i, r)| format!("{i}:{r}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs and instructions per entry address, for one mark.
#[derive(Default)]
pub struct Table {
    by_addr: BTreeMap<u64, Runs>,
    unmatched: u64,
    /// Entries seen, and returns looked at while a program was open.
    entries: u64,
    rets: u64,
}

impl Table {
    /// The lines for mark `mark`, and an empty table.
    pub fn take_lines(&mut self, mark: u64) -> String {
        let mut out = String::new();
        for (addr, r) in &self.by_addr {
            let _ = writeln!(
                out,
                "mark={mark} addr={addr:#x} runs={} insns={} median={} common={} code={} code_median={} code_common={}",
                r.runs,
                r.insns,
                median(&r.by_count, r.runs),
                common(&r.by_count, 8),
                r.code,
                median(&r.code_by_count, r.runs),
                common(&r.code_by_count, 4)
            );
        }
        let _ = writeln!(
            out,
            "mark={mark} unmatched={} entries={} rets={}",
            self.unmatched, self.entries, self.rets
        );
        *self = Table::default();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count whose instructions were half the program's own code.
    fn c(all: u64) -> Count {
        Count { all, code: all / 2 }
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn the_jit_prologue_is_an_entry_and_a_traced_function_is_not() {
        let push = PUSH_RBP_MOV_RBP_RSP;
        assert!(is_prog_entry(&cat(&[ENDBR64, NOP5, NOP2, push, &[0x48]])));
        assert!(is_prog_entry(&cat(&[NOP5, XOR_RAX, push])));
        assert!(is_prog_entry(&cat(&[NOP5, NOP2, push])));
        assert!(is_prog_entry(&cat(&[ENDBR64, NOP5, NOP3, push])));
        // After the swap, the slot comes first.
        assert!(is_prog_entry(&cat(&[ENDBR64, XOR_RAX, NOP5, push])));
        assert!(is_prog_entry(&cat(&[NOP3, NOP5, push])));
        assert!(!is_prog_entry(&cat(&[NOP3, push])));
        // A kernel function: endbr64, the ftrace nop, then its frame.
        assert!(!is_prog_entry(&cat(&[ENDBR64, NOP5, push])));
        // Cut short (icount may end a block after an instruction or two).
        assert!(!is_prog_entry(&cat(&[ENDBR64, NOP5])));
        assert!(!is_prog_entry(&[]));
    }

    #[test]
    fn returns_and_marks_are_recognised() {
        assert!(is_ret(&[0xc3]));
        assert!(is_ret(&[0xf3, 0xc3]));
        assert!(is_ret(&[0x2e, 0xc2, 0x08, 0x00]));
        assert!(!is_ret(&[0xcb]));
        assert!(!is_ret(&[0xe8, 0, 0, 0, 0]));
        assert!(!is_ret(&[]));
        let mut m = vec![0x48, 0xb8];
        m.extend(MARK_MAGIC.to_le_bytes());
        assert!(is_mark(&m));
        m[9] ^= 1;
        assert!(!is_mark(&m));
    }

    #[test]
    fn a_program_counts_from_its_entry_to_its_own_return() {
        let mut t = Table::default();
        let mut f = Frames::default();
        f.enter(0xa000, 0x1000, c(100), &mut t);
        // A helper's return, deeper in the stack: not the program's.
        f.ret(0x0fe0, c(150), &mut t);
        assert_eq!(f.depth(), 1);
        f.ret(0x1000, c(180), &mut t);
        assert_eq!(f.depth(), 0);
        // A return with no program open changes nothing.
        f.ret(0x1000, c(190), &mut t);
        f.enter(0xa000, 0x2000, c(500), &mut t);
        f.ret(0x2000, c(520), &mut t);
        assert_eq!(
            t.take_lines(3),
            "mark=3 addr=0xa000 runs=2 insns=100 median=80 common=20:1,80:1 code=50 code_median=40 code_common=10:1,40:1\nmark=3 unmatched=0 entries=2 rets=4\n"
        );
        assert_eq!(t.take_lines(4), "mark=4 unmatched=0 entries=0 rets=0\n");
    }

    #[test]
    fn the_median_run_leaves_out_the_lengthened_ones() {
        let mut t = Table::default();
        let mut f = Frames::default();
        let mut at = 0;
        for len in [50, 50, 900_000, 52, 50] {
            f.enter(0xa000, 0x1000, c(at), &mut t);
            at += len;
            f.ret(0x1000, c(at), &mut t);
        }
        assert_eq!(
            t.take_lines(2),
            "mark=2 addr=0xa000 runs=5 insns=900202 median=50 common=50:3,52:1,900000:1 code=450101 code_median=25 code_common=25:3,26:1,450000:1\nmark=2 unmatched=0 entries=5 rets=5\n"
        );
    }

    #[test]
    fn a_missed_return_is_counted_not_charged() {
        let mut t = Table::default();
        let mut f = Frames::default();
        f.enter(0xa000, 0x1000, c(0), &mut t);
        f.enter(0xb000, 0x0f00, c(10), &mut t);
        // The outer program returns: the inner one's return was missed.
        f.ret(0x1000, c(40), &mut t);
        assert_eq!(f.depth(), 0);
        for i in 0..Frames::MAX as u64 + 2 {
            f.enter(0xc000, 0x100 * i, c(i), &mut t);
        }
        assert_eq!(f.depth(), Frames::MAX);
        assert_eq!(
            t.take_lines(1),
            "mark=1 addr=0xa000 runs=1 insns=40 median=40 common=40:1 code=20 code_median=20 code_common=20:1\nmark=1 unmatched=3 entries=20 rets=1\n"
        );
    }
}

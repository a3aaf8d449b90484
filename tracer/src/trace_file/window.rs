//! The reader's view of a file: a sliding window of its bytes, each read from the disk once,
//! with the CRC32 of the file up to every [`CKPT`]-th byte, so that the checksum of any span
//! inside the window costs a few hundred bytes of hashing and two multiplications instead of
//! a pass over the span.
//!
//! This is what keeps reading linear in the file's size. After damage, the reader tries every
//! 0xC7 byte as a chunk start, and each candidate claims a payload of up to 16 MiB: hashing
//! each claim made a crafted 2 MiB file take seconds (and 20 MiB, minutes). Here a claim is
//! checked from two stored prefixes: `crc(a..b) = crc(o..b) ^ crc(o..a)·x^(8(b-a)) mod P`
//! (what zlib's `crc32_combine` rests on), and the window never drops a byte a later
//! candidate may still need, nor reads one twice.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use super::{MAX_CHUNK_PAYLOAD, TraceFileError};

/// Bytes between two stored prefix checksums: checking a span hashes at most twice this.
const CKPT: usize = 256;
/// The smallest read from the disk.
const READ_BLOCK: usize = 64 << 10;
/// The window forgets what lies behind the reading position once it is this far behind: a
/// bound on memory (a chunk's worth plus this) that still moves few bytes per byte read.
const DROP_STEP: u64 = 4 << 20;

pub(super) struct Window {
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// `ckpt[i]`: CRC32 of the file from where this window began to `start + i * CKPT`.
    /// Always `buf.len() / CKPT + 1` entries.
    ckpt: Vec<u32>,
    /// Bytes read from the disk so far: the reader's work, which tests and the fuzzer bound.
    pub(super) bytes_read: u64,
}

impl Window {
    pub(super) fn new() -> Window {
        Window {
            start: 0,
            buf: Vec::new(),
            ckpt: vec![0],
            bytes_read: 0,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Make the window hold `[from, to)` of `file` (`to` within the file): nothing before
    /// `from` is needed again, so up to there may be forgotten.
    pub(super) fn hold(
        &mut self,
        file: &File,
        path: &Path,
        from: u64,
        to: u64,
        file_len: u64,
    ) -> Result<(), TraceFileError> {
        debug_assert!(from <= to && to <= file_len);
        if from < self.start || from > self.end() {
            // Not contiguous with what is held (another file, or a jump ahead): start over;
            // the checksum of nothing is 0.
            self.start = from;
            self.buf.clear();
            self.ckpt.clear();
            self.ckpt.push(0);
        } else if from - self.start >= DROP_STEP {
            let blocks = ((from - self.start) / CKPT as u64) as usize;
            self.buf.drain(..blocks * CKPT);
            self.ckpt.drain(..blocks);
            self.start += (blocks * CKPT) as u64;
        }
        while self.end() < to {
            let at = self.end();
            let n = (to - at).max(READ_BLOCK as u64).min(file_len - at) as usize;
            let old = self.buf.len();
            self.buf.resize(old + n, 0);
            file.read_exact_at(&mut self.buf[old..], at).map_err(|e| {
                self.buf.truncate(old);
                TraceFileError::Read {
                    path: path.to_path_buf(),
                    offset: at,
                    source: e,
                }
            })?;
            self.bytes_read += n as u64;
            // Every byte is hashed here once, in CKPT-sized steps from the last checkpoint.
            while (self.ckpt.len()) * CKPT <= self.buf.len() {
                let i = self.ckpt.len() - 1;
                let mut h = crc32fast::Hasher::new_with_initial(self.ckpt[i]);
                h.update(&self.buf[i * CKPT..(i + 1) * CKPT]);
                self.ckpt.push(h.finalize());
            }
        }
        Ok(())
    }

    /// The bytes `[from, to)`, which [`Window::hold`] made present.
    pub(super) fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.start) as usize..(to - self.start) as usize]
    }

    /// CRC32 of the file from where the window began up to `at`.
    fn prefix(&self, at: u64) -> u32 {
        let off = (at - self.start) as usize;
        let i = off / CKPT;
        let mut h = crc32fast::Hasher::new_with_initial(self.ckpt[i]);
        h.update(&self.buf[i * CKPT..off]);
        h.finalize()
    }

    /// CRC32 of the bytes `[from, to)`, held, at most [`MAX_CHUNK_PAYLOAD`] of them.
    pub(super) fn crc(&self, from: u64, to: u64) -> u32 {
        self.prefix(to) ^ shift(self.prefix(from), (to - from) as usize)
    }
}

/// The CRC-32 polynomial, reflected (bit 31 is x^0).
const POLY: u32 = 0xedb8_8320;

/// a(x)·b(x) mod P(x), reflected.
fn multiply(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    for i in 0..32 {
        p ^= b & ((a >> (31 - i)) & 1).wrapping_neg();
        b = (b >> 1) ^ ((b & 1).wrapping_neg() & POLY);
    }
    p
}

/// `x^(8n) mod P` for every n up to [`MAX_CHUNK_PAYLOAD`], as two tables of 4097 entries
/// (n = hi·4096 + lo): 32 KiB, built once, so that a shift is two multiplications.
struct Powers {
    lo: Vec<u32>,
    hi: Vec<u32>,
}

const SPLIT: usize = 4096;

fn powers() -> &'static Powers {
    static POWERS: OnceLock<Powers> = OnceLock::new();
    POWERS.get_or_init(|| {
        const ONE: u32 = 1 << 31;
        const X8: u32 = 1 << 23;
        let mut lo = Vec::with_capacity(SPLIT + 1);
        lo.push(ONE);
        for i in 0..SPLIT {
            lo.push(multiply(lo[i], X8));
        }
        let step = lo[SPLIT];
        let mut hi = Vec::with_capacity(MAX_CHUNK_PAYLOAD / SPLIT + 1);
        hi.push(ONE);
        for i in 0..MAX_CHUNK_PAYLOAD / SPLIT {
            hi.push(multiply(hi[i], step));
        }
        Powers { lo, hi }
    })
}

/// A CRC state as if `n` zero bytes followed (`n` ≤ [`MAX_CHUNK_PAYLOAD`]).
fn shift(crc: u32, n: usize) -> u32 {
    let p = powers();
    multiply(multiply(p.hi[n / SPLIT], p.lo[n % SPLIT]), crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_of_any_span_matches_hashing_it() {
        let path = std::env::temp_dir().join(format!("msitrace-window-{}", std::process::id()));
        // Not a multiple of anything the window uses, and not all zeros.
        let data: Vec<u8> = (0..300_001u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let len = data.len() as u64;
        let mut w = Window::new();
        w.hold(&file, &path, 7, len, len).unwrap();
        for (a, b) in [
            (7, 8),
            (7, 7 + 256),
            (100, 100),
            (255, 70_000),
            (1_000, len),
            (65_536, 65_537 + 4_096),
            (123_457, 299_999),
        ] {
            assert_eq!(
                w.crc(a, b),
                crc32fast::hash(&data[a as usize..b as usize]),
                "{a}..{b}"
            );
        }
        assert_eq!(w.bytes(10, 14), &data[10..14]);
        assert_eq!(w.bytes_read, len - 7);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn shifting_by_the_largest_chunk_matches_appending_zeros() {
        let zeros = vec![0u8; MAX_CHUNK_PAYLOAD];
        let c = crc32fast::hash(b"msitrace");
        let mut h = crc32fast::Hasher::new_with_initial(c);
        h.update(&zeros);
        // crc(A ++ Z) = shift(crc(A), |Z|) ^ crc(Z)
        assert_eq!(
            shift(c, MAX_CHUNK_PAYLOAD) ^ crc32fast::hash(&zeros),
            h.finalize()
        );
    }
}

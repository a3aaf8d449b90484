//! Chunk payloads: events as compact postcard records with per-chunk string and integer tables
//! and delta-encoded timestamps, so that each chunk decodes on its own.
//!
//! A payload is a run of [`DiskRecord`]s. `Str` and `Val` define the next entry of the chunk's
//! string or integer table; events refer to entries by 1-based number (0 = none). Device names,
//! drivers, PM phases, hwirqs, `chip_data` pointers and MSI addresses repeat across the events
//! of a suspend, so a reference costs one byte where the value would cost up to 32. Each event's
//! timestamp is stored as the (zigzag, wrapping) difference to the previous one in the chunk,
//! the first against 0: events from several CPUs may arrive slightly out of order.
//!
//! The types here are the on-disk format: their variant order and fields change only with a
//! new format version (appending an `EventKind` variant at the end of [`DiskKind`] is the one
//! compatible change: older readers then report that record as undecodable).

use std::collections::HashMap;

use compact_str::CompactString;
#[cfg(test)]
use serde::Deserialize;
use serde::Serialize;
use tracer_common::ProbeId;

use super::{CHUNK_TAG, FRAME_LEN, Record};
use crate::event::{Event, EventKind, MsiMsg, VectorSnap};

/// String reference: 0 = none, n = the chunk's n-th `Str`.
type StrRef = u32;
/// Integer reference: 0 = none, n = the chunk's n-th `Val`.
type ValRef = u32;

// Deserialize in tests only: postcard's own decoder is the reference [`Wire`] is checked against.
#[derive(Serialize)]
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
enum DiskRecord<'a> {
    Event(DiskEvent),
    Str(&'a str),
    Val(u64),
    /// JSON text: postcard cannot carry a `serde_json::Value` (it is not self-describing).
    Trailer(&'a str),
}

#[derive(Serialize)]
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
struct DiskEvent {
    /// `ts_ns` minus the previous event's in this chunk, wrapping.
    dts: i64,
    cpu: u32,
    tgid: u32,
    kind: DiskKind,
}

/// A [`VectorSnap`] with its optional booleans packed into `bits` (see [`snap_bits`]).
#[derive(Serialize)]
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
struct DiskSnap {
    irq: u32,
    hwirq: ValRef,
    device: StrRef,
    /// 0 = none, else index + 1 (u64 so that `Some(u32::MAX)` still fits).
    msi_index: u64,
    bits: u32,
    chip_data: ValRef,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
struct DiskMsg {
    address_lo: ValRef,
    address_hi: u32,
    data: u32,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
enum DiskKind {
    ComposeEnter(DiskSnap),
    ComposeExit {
        v: DiskSnap,
        msg: Option<DiskMsg>,
    },
    UnmaskEnter(DiskSnap),
    UnmaskExit(DiskSnap),
    MaskEnter(DiskSnap),
    MaskExit(DiskSnap),
    PciMsiMask(DiskSnap),
    PciMsiUnmask(DiskSnap),
    MigrateOneIrq {
        irq: u32,
    },
    MigrateAllOffEnter,
    MigrateAllOffExit,
    SetAffinityEnter {
        irq: u32,
        in_migration: bool,
    },
    SetAffinityExit {
        irq: u32,
        ret: i32,
        in_migration: bool,
    },
    RestoreEnter {
        device: StrRef,
        msi_enabled: Option<bool>,
        msix_enabled: Option<bool>,
        power_state: Option<u32>,
    },
    RestoreExit {
        device: StrRef,
    },
    WriteMsiMsg {
        v: DiskSnap,
        msg: DiskMsg,
        in_restore: bool,
        power_state: Option<u32>,
    },
    HvPciSuspendEnter {
        bus: StrRef,
        state: Option<u32>,
    },
    HvPciSuspendExit {
        bus: StrRef,
        ret: i32,
        state: Option<u32>,
    },
    HvPciResumeEnter {
        bus: StrRef,
        state: Option<u32>,
    },
    HvPciResumeExit {
        bus: StrRef,
        ret: i32,
        state: Option<u32>,
    },
    SuspendResume {
        action: StrRef,
        val: u32,
        start: bool,
    },
    DevicePmStart {
        device: StrRef,
        driver: StrRef,
        pm_ops: StrRef,
        event: u32,
    },
    DevicePmEnd {
        device: StrRef,
        driver: StrRef,
        error: i32,
    },
    VectorUpdate {
        irq: u32,
        vector: u32,
        cpu: u32,
        prev_vector: u32,
        prev_cpu: u32,
    },
    VectorClear {
        irq: u32,
        vector: u32,
        cpu: u32,
        prev_vector: u32,
        prev_cpu: u32,
    },
    VectorConfig {
        irq: u32,
        vector: u32,
        cpu: u32,
        apicdest: u32,
    },
    VectorActivate {
        irq: u32,
        managed: bool,
        can_reserve: bool,
        reserve: bool,
    },
    VectorDeactivate {
        irq: u32,
        managed: bool,
        can_reserve: bool,
        reserve: bool,
    },
    Lost {
        /// The `ProbeId` number, which never changes (tracer-common guarantees it).
        probe: u16,
        count: u64,
    },
    IrqCounts {
        counts: Vec<(u32, u64)>,
    },
    Gap {
        reason: StrRef,
    },
    // Appended after the first files were written (older readers report them undecodable).
    PciIrqMask {
        v: DiskSnap,
        msix: bool,
    },
    PciIrqUnmask {
        v: DiskSnap,
        msix: bool,
    },
    ComposeCompl {
        irq: Option<u32>,
        status: Option<i32>,
        resp_size: i32,
    },
    ReturnWithoutEntry {
        probe: u16,
    },
    Notice {
        text: StrRef,
    },
}

/// Two bits per optional boolean (known, value), then `in_migration`.
const SNAP_MSIX: u32 = 0;
const SNAP_CACHE_MASKED: u32 = 2;
const SNAP_IRQD_MASKED: u32 = 4;
const SNAP_IRQD_DISABLED: u32 = 6;
const SNAP_MANAGED: u32 = 8;
const SNAP_MANAGED_SHUTDOWN: u32 = 10;
const SNAP_IN_MIGRATION: u32 = 1 << 12;
const SNAP_ALL_BITS: u32 = (1 << 13) - 1;

fn put_bool(bits: &mut u32, at: u32, b: Option<bool>) {
    if let Some(b) = b {
        *bits |= 1 << at;
        if b {
            *bits |= 1 << (at + 1);
        }
    }
}

/// The optional boolean at `at`; [`check_bools`] has rejected values without their valid bit.
#[inline]
fn get_bool(bits: u32, at: u32) -> Option<bool> {
    (bits & (1 << at) != 0).then_some(bits & (1 << (at + 1)) != 0)
}

/// The valid bits of the six optional booleans (the even bits below [`SNAP_IN_MIGRATION`]).
const SNAP_KNOWN_BITS: u32 = 0x555;

/// One test for all six pairs, so that a snapshot's booleans decode without a branch each.
#[inline]
fn check_bools(bits: u32) -> Result<(), String> {
    if (bits >> 1) & SNAP_KNOWN_BITS & !bits != 0 {
        return Err(value_without_valid_bit(bits));
    }
    Ok(())
}

#[cold]
fn value_without_valid_bit(bits: u32) -> String {
    format!("snapshot bits {bits:#x}: a value without its valid bit")
}

fn snap_bits(v: &VectorSnap) -> u32 {
    let mut bits = 0;
    put_bool(&mut bits, SNAP_MSIX, v.msix);
    put_bool(&mut bits, SNAP_CACHE_MASKED, v.cache_masked);
    put_bool(&mut bits, SNAP_IRQD_MASKED, v.irqd_masked);
    put_bool(&mut bits, SNAP_IRQD_DISABLED, v.irqd_disabled);
    put_bool(&mut bits, SNAP_MANAGED, v.managed);
    put_bool(&mut bits, SNAP_MANAGED_SHUTDOWN, v.managed_shutdown);
    if v.in_migration {
        bits |= SNAP_IN_MIGRATION;
    }
    bits
}

/// Builds one chunk: the frame is reserved at the front of the buffer and filled in by
/// [`ChunkEncoder::take_chunk`], so a chunk goes to disk in one write without a copy.
pub(super) struct ChunkEncoder {
    buf: Vec<u8>,
    strings: HashMap<String, StrRef>,
    values: HashMap<u64, ValRef>,
    prev_ts: u64,
    events: u64,
}

type EncodeResult<T> = Result<T, postcard::Error>;

impl ChunkEncoder {
    pub(super) fn new() -> ChunkEncoder {
        ChunkEncoder {
            buf: vec![0; FRAME_LEN],
            strings: HashMap::new(),
            values: HashMap::new(),
            prev_ts: 0,
            events: 0,
        }
    }

    pub(super) fn payload_len(&self) -> usize {
        self.buf.len() - FRAME_LEN
    }

    pub(super) fn is_empty(&self) -> bool {
        self.payload_len() == 0
    }

    /// Events in the pending chunk.
    pub(super) fn events(&self) -> u64 {
        self.events
    }

    pub(super) fn push_event(&mut self, ev: &Event) -> EncodeResult<()> {
        // The tables may grow while the kind is built; on error the chunk keeps only complete
        // definitions, which a reader accepts.
        let kind = self.kind(&ev.kind)?;
        let dts = ev.ts_ns.wrapping_sub(self.prev_ts) as i64;
        self.emit(&DiskRecord::Event(DiskEvent {
            dts,
            cpu: ev.cpu,
            tgid: ev.tgid,
            kind,
        }))?;
        self.prev_ts = ev.ts_ns;
        self.events += 1;
        Ok(())
    }

    pub(super) fn push_trailer(&mut self, json: &str) -> EncodeResult<()> {
        self.emit(&DiskRecord::Trailer(json))
    }

    /// The framed chunk, ready to write; the encoder starts a new, empty chunk.
    pub(super) fn take_chunk(&mut self) -> Vec<u8> {
        let mut chunk = std::mem::replace(&mut self.buf, vec![0; FRAME_LEN]);
        self.strings.clear();
        self.values.clear();
        self.prev_ts = 0;
        self.events = 0;
        let (frame, payload) = chunk.split_at_mut(FRAME_LEN);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        frame[0] = CHUNK_TAG;
        frame[1..5].copy_from_slice(&len.to_le_bytes());
        frame[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        chunk
    }

    fn emit(&mut self, rec: &DiskRecord<'_>) -> EncodeResult<()> {
        let start = self.buf.len();
        if let Err(e) = postcard::to_io(rec, &mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    fn str(&mut self, s: &str) -> EncodeResult<StrRef> {
        if let Some(&n) = self.strings.get(s) {
            return Ok(n);
        }
        self.emit(&DiskRecord::Str(s))?;
        let n = self.strings.len() as StrRef + 1;
        self.strings.insert(s.to_owned(), n);
        Ok(n)
    }

    fn opt_str(&mut self, s: Option<&str>) -> EncodeResult<StrRef> {
        s.map_or(Ok(0), |s| self.str(s))
    }

    fn val(&mut self, v: u64) -> EncodeResult<ValRef> {
        if let Some(&n) = self.values.get(&v) {
            return Ok(n);
        }
        self.emit(&DiskRecord::Val(v))?;
        let n = self.values.len() as ValRef + 1;
        self.values.insert(v, n);
        Ok(n)
    }

    fn snap(&mut self, v: &VectorSnap) -> EncodeResult<DiskSnap> {
        Ok(DiskSnap {
            irq: v.irq,
            hwirq: self.val(v.hwirq)?,
            device: self.opt_str(v.device.as_deref())?,
            msi_index: v.msi_index.map_or(0, |i| u64::from(i) + 1),
            bits: snap_bits(v),
            chip_data: match v.chip_data {
                Some(c) => self.val(c)?,
                None => 0,
            },
        })
    }

    fn msg(&mut self, m: &MsiMsg) -> EncodeResult<DiskMsg> {
        Ok(DiskMsg {
            address_lo: self.val(u64::from(m.address_lo))?,
            address_hi: m.address_hi,
            data: m.data,
        })
    }

    fn kind(&mut self, k: &EventKind) -> EncodeResult<DiskKind> {
        use DiskKind as D;
        use EventKind as E;
        Ok(match k {
            E::ComposeEnter(v) => D::ComposeEnter(self.snap(v)?),
            E::ComposeExit { v, msg } => D::ComposeExit {
                v: self.snap(v)?,
                msg: match msg {
                    Some(m) => Some(self.msg(m)?),
                    None => None,
                },
            },
            E::UnmaskEnter(v) => D::UnmaskEnter(self.snap(v)?),
            E::UnmaskExit(v) => D::UnmaskExit(self.snap(v)?),
            E::MaskEnter(v) => D::MaskEnter(self.snap(v)?),
            E::MaskExit(v) => D::MaskExit(self.snap(v)?),
            E::PciMsiMask(v) => D::PciMsiMask(self.snap(v)?),
            E::PciMsiUnmask(v) => D::PciMsiUnmask(self.snap(v)?),
            E::MigrateOneIrq { irq } => D::MigrateOneIrq { irq: *irq },
            E::MigrateAllOffEnter => D::MigrateAllOffEnter,
            E::MigrateAllOffExit => D::MigrateAllOffExit,
            E::SetAffinityEnter { irq, in_migration } => D::SetAffinityEnter {
                irq: *irq,
                in_migration: *in_migration,
            },
            E::SetAffinityExit {
                irq,
                ret,
                in_migration,
            } => D::SetAffinityExit {
                irq: *irq,
                ret: *ret,
                in_migration: *in_migration,
            },
            E::RestoreEnter {
                device,
                msi_enabled,
                msix_enabled,
                power_state,
            } => D::RestoreEnter {
                device: self.str(device)?,
                msi_enabled: *msi_enabled,
                msix_enabled: *msix_enabled,
                power_state: *power_state,
            },
            E::RestoreExit { device } => D::RestoreExit {
                device: self.str(device)?,
            },
            E::WriteMsiMsg {
                v,
                msg,
                in_restore,
                power_state,
            } => D::WriteMsiMsg {
                v: self.snap(v)?,
                msg: self.msg(msg)?,
                in_restore: *in_restore,
                power_state: *power_state,
            },
            E::HvPciSuspendEnter { bus, state } => D::HvPciSuspendEnter {
                bus: self.opt_str(bus.as_deref())?,
                state: *state,
            },
            E::HvPciSuspendExit { bus, ret, state } => D::HvPciSuspendExit {
                bus: self.opt_str(bus.as_deref())?,
                ret: *ret,
                state: *state,
            },
            E::HvPciResumeEnter { bus, state } => D::HvPciResumeEnter {
                bus: self.opt_str(bus.as_deref())?,
                state: *state,
            },
            E::HvPciResumeExit { bus, ret, state } => D::HvPciResumeExit {
                bus: self.opt_str(bus.as_deref())?,
                ret: *ret,
                state: *state,
            },
            E::SuspendResume { action, val, start } => D::SuspendResume {
                action: self.str(action)?,
                val: *val,
                start: *start,
            },
            E::DevicePmStart {
                device,
                driver,
                pm_ops,
                event,
            } => D::DevicePmStart {
                device: self.str(device)?,
                driver: self.str(driver)?,
                pm_ops: self.str(pm_ops)?,
                event: *event,
            },
            E::DevicePmEnd {
                device,
                driver,
                error,
            } => D::DevicePmEnd {
                device: self.str(device)?,
                driver: self.str(driver)?,
                error: *error,
            },
            E::VectorUpdate {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            } => D::VectorUpdate {
                irq: *irq,
                vector: *vector,
                cpu: *cpu,
                prev_vector: *prev_vector,
                prev_cpu: *prev_cpu,
            },
            E::VectorClear {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            } => D::VectorClear {
                irq: *irq,
                vector: *vector,
                cpu: *cpu,
                prev_vector: *prev_vector,
                prev_cpu: *prev_cpu,
            },
            E::VectorConfig {
                irq,
                vector,
                cpu,
                apicdest,
            } => D::VectorConfig {
                irq: *irq,
                vector: *vector,
                cpu: *cpu,
                apicdest: *apicdest,
            },
            E::VectorActivate {
                irq,
                managed,
                can_reserve,
                reserve,
            } => D::VectorActivate {
                irq: *irq,
                managed: *managed,
                can_reserve: *can_reserve,
                reserve: *reserve,
            },
            E::VectorDeactivate {
                irq,
                managed,
                can_reserve,
                reserve,
            } => D::VectorDeactivate {
                irq: *irq,
                managed: *managed,
                can_reserve: *can_reserve,
                reserve: *reserve,
            },
            E::Lost { probe, count } => D::Lost {
                probe: *probe as u16,
                count: *count,
            },
            E::IrqCounts { counts } => D::IrqCounts {
                counts: counts.clone(),
            },
            E::Gap { reason } => D::Gap {
                reason: self.str(reason)?,
            },
            E::PciIrqMask { v, msix } => D::PciIrqMask {
                v: self.snap(v)?,
                msix: *msix,
            },
            E::PciIrqUnmask { v, msix } => D::PciIrqUnmask {
                v: self.snap(v)?,
                msix: *msix,
            },
            E::ComposeCompl {
                irq,
                status,
                resp_size,
            } => D::ComposeCompl {
                irq: *irq,
                status: *status,
                resp_size: *resp_size,
            },
            E::ReturnWithoutEntry { probe } => D::ReturnWithoutEntry {
                probe: *probe as u16,
            },
            E::Notice { text } => D::Notice {
                text: self.str(text)?,
            },
        })
    }
}

/// Reads the postcard encoding of [`DiskRecord`] by hand: through serde (a visitor per field)
/// decoding took a fifth of a replay's time, while the format is fixed and small (varints,
/// one-byte flags and option tags, length-prefixed strings). Its failures say what the tests'
/// `undecodable` says for postcard's, and the tests check that both agree on any bytes.
struct Wire<'a> {
    rest: &'a [u8],
}

type WireResult<T> = Result<T, &'static str>;

const CUT: &str = "the chunk ends inside a record";
const BAD_VARINT: &str = "a number is longer than its type allows";
const BAD_BOOL: &str = "a flag is neither 0 nor 1";
const BAD_UTF8: &str = "a string is not valid UTF-8";
const BAD_OPTION: &str = "an optional field has an invalid tag";
const UNKNOWN: &str = "a record kind or field value this version does not know";

impl<'a> Wire<'a> {
    #[inline]
    fn byte(&mut self) -> WireResult<u8> {
        let (&b, rest) = self.rest.split_first().ok_or(CUT)?;
        self.rest = rest;
        Ok(b)
    }

    /// A varint of at most `max_bytes`, whose last byte may hold at most `last_max` (the bits
    /// the type has left): postcard rejects longer encodings, so this does too.
    #[inline(always)]
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> WireResult<u64> {
        // Nearly every field is a small number or a table reference: one byte, sometimes two
        // (IRQ numbers, snapshot bits). Every caller allows at least three bytes, so neither
        // short form reaches the check on the last byte.
        debug_assert!(max_bytes >= 3);
        match *self.rest {
            [b0, ref rest @ ..] if b0 < 0x80 => {
                self.rest = rest;
                Ok(u64::from(b0))
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.rest = rest;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.long_varint(max_bytes, last_max),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self, max_bytes: u32, last_max: u8) -> WireResult<u64> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_bytes - 1 && b > last_max {
                    return Err(BAD_VARINT);
                }
                return Ok(out);
            }
        }
        Err(BAD_VARINT)
    }

    #[inline]
    fn u16(&mut self) -> WireResult<u16> {
        Ok(self.varint(3, 0b11)? as u16)
    }

    #[inline]
    fn u32(&mut self) -> WireResult<u32> {
        Ok(self.varint(5, 0b1111)? as u32)
    }

    #[inline]
    fn u64(&mut self) -> WireResult<u64> {
        self.varint(10, 0b1)
    }

    #[inline]
    fn i32(&mut self) -> WireResult<i32> {
        let n = self.u32()?;
        Ok(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    #[inline]
    fn i64(&mut self) -> WireResult<i64> {
        let n = self.u64()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline]
    fn bool(&mut self) -> WireResult<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(BAD_BOOL),
        }
    }

    #[inline]
    fn option<T>(&mut self, f: impl FnOnce(&mut Self) -> WireResult<T>) -> WireResult<Option<T>> {
        match self.byte()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(BAD_OPTION),
        }
    }

    fn str(&mut self) -> WireResult<&'a str> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| CUT)?;
        if len > self.rest.len() {
            return Err(CUT);
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(bytes).map_err(|_| BAD_UTF8)
    }

    fn record(&mut self) -> WireResult<DiskRecord<'a>> {
        Ok(match self.u32()? {
            0 => DiskRecord::Event(DiskEvent {
                dts: self.i64()?,
                cpu: self.u32()?,
                tgid: self.u32()?,
                kind: self.kind()?,
            }),
            1 => DiskRecord::Str(self.str()?),
            2 => DiskRecord::Val(self.u64()?),
            3 => DiskRecord::Trailer(self.str()?),
            _ => return Err(UNKNOWN),
        })
    }

    #[inline]
    fn snap(&mut self) -> WireResult<DiskSnap> {
        Ok(DiskSnap {
            irq: self.u32()?,
            hwirq: self.u32()?,
            device: self.u32()?,
            msi_index: self.u64()?,
            bits: self.u32()?,
            chip_data: self.u32()?,
        })
    }

    #[inline]
    fn msg(&mut self) -> WireResult<DiskMsg> {
        Ok(DiskMsg {
            address_lo: self.u32()?,
            address_hi: self.u32()?,
            data: self.u32()?,
        })
    }

    /// The variant numbers are [`DiskKind`]'s declaration order, as serde numbers them.
    fn kind(&mut self) -> WireResult<DiskKind> {
        use DiskKind as D;
        Ok(match self.u32()? {
            0 => D::ComposeEnter(self.snap()?),
            1 => D::ComposeExit {
                v: self.snap()?,
                msg: self.option(Self::msg)?,
            },
            2 => D::UnmaskEnter(self.snap()?),
            3 => D::UnmaskExit(self.snap()?),
            4 => D::MaskEnter(self.snap()?),
            5 => D::MaskExit(self.snap()?),
            6 => D::PciMsiMask(self.snap()?),
            7 => D::PciMsiUnmask(self.snap()?),
            8 => D::MigrateOneIrq { irq: self.u32()? },
            9 => D::MigrateAllOffEnter,
            10 => D::MigrateAllOffExit,
            11 => D::SetAffinityEnter {
                irq: self.u32()?,
                in_migration: self.bool()?,
            },
            12 => D::SetAffinityExit {
                irq: self.u32()?,
                ret: self.i32()?,
                in_migration: self.bool()?,
            },
            13 => D::RestoreEnter {
                device: self.u32()?,
                msi_enabled: self.option(Self::bool)?,
                msix_enabled: self.option(Self::bool)?,
                power_state: self.option(Self::u32)?,
            },
            14 => D::RestoreExit {
                device: self.u32()?,
            },
            15 => D::WriteMsiMsg {
                v: self.snap()?,
                msg: self.msg()?,
                in_restore: self.bool()?,
                power_state: self.option(Self::u32)?,
            },
            16 => D::HvPciSuspendEnter {
                bus: self.u32()?,
                state: self.option(Self::u32)?,
            },
            17 => D::HvPciSuspendExit {
                bus: self.u32()?,
                ret: self.i32()?,
                state: self.option(Self::u32)?,
            },
            18 => D::HvPciResumeEnter {
                bus: self.u32()?,
                state: self.option(Self::u32)?,
            },
            19 => D::HvPciResumeExit {
                bus: self.u32()?,
                ret: self.i32()?,
                state: self.option(Self::u32)?,
            },
            20 => D::SuspendResume {
                action: self.u32()?,
                val: self.u32()?,
                start: self.bool()?,
            },
            21 => D::DevicePmStart {
                device: self.u32()?,
                driver: self.u32()?,
                pm_ops: self.u32()?,
                event: self.u32()?,
            },
            22 => D::DevicePmEnd {
                device: self.u32()?,
                driver: self.u32()?,
                error: self.i32()?,
            },
            23 => D::VectorUpdate {
                irq: self.u32()?,
                vector: self.u32()?,
                cpu: self.u32()?,
                prev_vector: self.u32()?,
                prev_cpu: self.u32()?,
            },
            24 => D::VectorClear {
                irq: self.u32()?,
                vector: self.u32()?,
                cpu: self.u32()?,
                prev_vector: self.u32()?,
                prev_cpu: self.u32()?,
            },
            25 => D::VectorConfig {
                irq: self.u32()?,
                vector: self.u32()?,
                cpu: self.u32()?,
                apicdest: self.u32()?,
            },
            26 => D::VectorActivate {
                irq: self.u32()?,
                managed: self.bool()?,
                can_reserve: self.bool()?,
                reserve: self.bool()?,
            },
            27 => D::VectorDeactivate {
                irq: self.u32()?,
                managed: self.bool()?,
                can_reserve: self.bool()?,
                reserve: self.bool()?,
            },
            28 => D::Lost {
                probe: self.u16()?,
                count: self.u64()?,
            },
            29 => {
                let n = self.u64()?;
                // Each pair takes at least two bytes: what is left bounds the allocation,
                // whatever length a damaged record claims.
                let mut counts = Vec::with_capacity((n as usize).min(self.rest.len() / 2));
                for _ in 0..n {
                    counts.push((self.u32()?, self.u64()?));
                }
                D::IrqCounts { counts }
            }
            30 => D::Gap {
                reason: self.u32()?,
            },
            31 => D::PciIrqMask {
                v: self.snap()?,
                msix: self.bool()?,
            },
            32 => D::PciIrqUnmask {
                v: self.snap()?,
                msix: self.bool()?,
            },
            33 => D::ComposeCompl {
                irq: self.option(Self::u32)?,
                status: self.option(Self::i32)?,
                resp_size: self.i32()?,
            },
            34 => D::ReturnWithoutEntry { probe: self.u16()? },
            35 => D::Notice { text: self.u32()? },
            _ => return Err(UNKNOWN),
        })
    }
}

/// Why one record of a chunk does not decode.
#[derive(Debug)]
pub(super) struct RecordError {
    /// Number of the record in its chunk (definitions included), from 0.
    pub index: usize,
    pub detail: String,
}

/// Reads the records of one chunk payload, in order. It owns its copy of the payload so that
/// the reader can hand out one record at a time: decoding a whole chunk ahead into a queue
/// moved every event through memory twice more (a tenth of a replay's profile).
pub(super) struct ChunkDecoder {
    payload: Vec<u8>,
    /// Offset of the next record in `payload`.
    at: usize,
    index: usize,
    /// Where each `Str` lies in `payload` (validated UTF-8 when it was read).
    strings: Vec<(u32, u32)>,
    /// `strings` as the names of [`VectorSnap::device`], made on first use. Never longer than
    /// `strings`. Inline names cost no allocation, but checking a name's UTF-8 again for every
    /// event cost a replay a tenth more instructions than cloning it from here.
    shared: Vec<Option<CompactString>>,
    values: Vec<u64>,
    prev_ts: u64,
}

impl ChunkDecoder {
    pub(super) fn new(payload: Vec<u8>) -> ChunkDecoder {
        ChunkDecoder {
            payload,
            at: 0,
            index: 0,
            strings: Vec::new(),
            shared: Vec::new(),
            values: Vec::new(),
            prev_ts: 0,
        }
    }

    /// Whether the first payload byte can start a record: a cheap filter for resync candidates.
    pub(super) fn plausible_start(payload: &[u8]) -> bool {
        payload.first().is_some_and(|&b| b < 4)
    }

    fn fail(&mut self, detail: String) -> Option<Result<Record, RecordError>> {
        self.at = self.payload.len();
        Some(Err(RecordError {
            index: self.index,
            detail,
        }))
    }

    fn s(&self, n: StrRef) -> Result<String, String> {
        self.os(n)?
            .ok_or_else(|| "required string is missing".to_string())
    }

    fn os(&self, n: StrRef) -> Result<Option<String>, String> {
        if n == 0 {
            return Ok(None);
        }
        self.string(n).map(|s| Some(s.to_owned()))
    }

    fn string(&self, n: StrRef) -> Result<&str, String> {
        let &(start, end) = self
            .strings
            .get(n as usize - 1)
            .ok_or_else(|| format!("string #{n} is not defined in this chunk"))?;
        // Checked when its record was read; checked again rather than trusted without a check,
        // at the cost of one pass over a name the first time an event uses it.
        std::str::from_utf8(&self.payload[start as usize..end as usize])
            .map_err(|_| "a string is not valid UTF-8".to_string())
    }

    fn shared(&mut self, n: StrRef) -> Result<Option<CompactString>, String> {
        if n == 0 {
            return Ok(None);
        }
        let i = n as usize - 1;
        if let Some(Some(name)) = self.shared.get(i) {
            return Ok(Some(name.clone()));
        }
        let name = CompactString::from(self.string(n)?);
        if self.shared.len() <= i {
            self.shared.resize(i + 1, None);
        }
        self.shared[i] = Some(name.clone());
        Ok(Some(name))
    }

    fn v(&self, n: ValRef) -> Result<u64, String> {
        self.ov(n)?
            .ok_or_else(|| "required integer is missing".to_string())
    }

    fn ov(&self, n: ValRef) -> Result<Option<u64>, String> {
        if n == 0 {
            return Ok(None);
        }
        self.values
            .get(n as usize - 1)
            .copied()
            .map(Some)
            .ok_or_else(|| format!("integer #{n} is not defined in this chunk"))
    }

    fn snap(&mut self, d: &DiskSnap) -> Result<VectorSnap, String> {
        if d.bits & !SNAP_ALL_BITS != 0 {
            return Err(format!("unknown snapshot bits {:#x}", d.bits));
        }
        let msi_index = match d.msi_index {
            0 => None,
            n => Some(
                u32::try_from(n - 1).map_err(|_| format!("MSI index {} out of range", n - 1))?,
            ),
        };
        // In the order the fields were always checked, so a damaged record keeps its message.
        let hwirq = self.v(d.hwirq)?;
        let device = self.shared(d.device)?;
        check_bools(d.bits)?;
        Ok(VectorSnap {
            irq: d.irq,
            hwirq,
            device,
            msi_index,
            msix: get_bool(d.bits, SNAP_MSIX),
            cache_masked: get_bool(d.bits, SNAP_CACHE_MASKED),
            irqd_masked: get_bool(d.bits, SNAP_IRQD_MASKED),
            irqd_disabled: get_bool(d.bits, SNAP_IRQD_DISABLED),
            managed: get_bool(d.bits, SNAP_MANAGED),
            managed_shutdown: get_bool(d.bits, SNAP_MANAGED_SHUTDOWN),
            chip_data: self.ov(d.chip_data)?,
            in_migration: d.bits & SNAP_IN_MIGRATION != 0,
        })
    }

    fn msg(&self, d: &DiskMsg) -> Result<MsiMsg, String> {
        let lo = self.v(d.address_lo)?;
        Ok(MsiMsg {
            address_lo: u32::try_from(lo)
                .map_err(|_| format!("MSI address {lo:#x} wider than 32 bits"))?,
            address_hi: d.address_hi,
            data: d.data,
        })
    }

    fn kind(&mut self, k: DiskKind) -> Result<EventKind, String> {
        use DiskKind as D;
        use EventKind as E;
        Ok(match k {
            D::ComposeEnter(v) => E::ComposeEnter(self.snap(&v)?),
            D::ComposeExit { v, msg } => E::ComposeExit {
                v: self.snap(&v)?,
                msg: msg.map(|m| self.msg(&m)).transpose()?,
            },
            D::UnmaskEnter(v) => E::UnmaskEnter(self.snap(&v)?),
            D::UnmaskExit(v) => E::UnmaskExit(self.snap(&v)?),
            D::MaskEnter(v) => E::MaskEnter(self.snap(&v)?),
            D::MaskExit(v) => E::MaskExit(self.snap(&v)?),
            D::PciMsiMask(v) => E::PciMsiMask(self.snap(&v)?),
            D::PciMsiUnmask(v) => E::PciMsiUnmask(self.snap(&v)?),
            D::MigrateOneIrq { irq } => E::MigrateOneIrq { irq },
            D::MigrateAllOffEnter => E::MigrateAllOffEnter,
            D::MigrateAllOffExit => E::MigrateAllOffExit,
            D::SetAffinityEnter { irq, in_migration } => E::SetAffinityEnter { irq, in_migration },
            D::SetAffinityExit {
                irq,
                ret,
                in_migration,
            } => E::SetAffinityExit {
                irq,
                ret,
                in_migration,
            },
            D::RestoreEnter {
                device,
                msi_enabled,
                msix_enabled,
                power_state,
            } => E::RestoreEnter {
                device: self.s(device)?,
                msi_enabled,
                msix_enabled,
                power_state,
            },
            D::RestoreExit { device } => E::RestoreExit {
                device: self.s(device)?,
            },
            D::WriteMsiMsg {
                v,
                msg,
                in_restore,
                power_state,
            } => E::WriteMsiMsg {
                v: self.snap(&v)?,
                msg: self.msg(&msg)?,
                in_restore,
                power_state,
            },
            D::HvPciSuspendEnter { bus, state } => E::HvPciSuspendEnter {
                bus: self.os(bus)?,
                state,
            },
            D::HvPciSuspendExit { bus, ret, state } => E::HvPciSuspendExit {
                bus: self.os(bus)?,
                ret,
                state,
            },
            D::HvPciResumeEnter { bus, state } => E::HvPciResumeEnter {
                bus: self.os(bus)?,
                state,
            },
            D::HvPciResumeExit { bus, ret, state } => E::HvPciResumeExit {
                bus: self.os(bus)?,
                ret,
                state,
            },
            D::SuspendResume { action, val, start } => E::SuspendResume {
                action: self.s(action)?,
                val,
                start,
            },
            D::DevicePmStart {
                device,
                driver,
                pm_ops,
                event,
            } => E::DevicePmStart {
                device: self.s(device)?,
                driver: self.s(driver)?,
                pm_ops: self.s(pm_ops)?,
                event,
            },
            D::DevicePmEnd {
                device,
                driver,
                error,
            } => E::DevicePmEnd {
                device: self.s(device)?,
                driver: self.s(driver)?,
                error,
            },
            D::VectorUpdate {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            } => E::VectorUpdate {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            },
            D::VectorClear {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            } => E::VectorClear {
                irq,
                vector,
                cpu,
                prev_vector,
                prev_cpu,
            },
            D::VectorConfig {
                irq,
                vector,
                cpu,
                apicdest,
            } => E::VectorConfig {
                irq,
                vector,
                cpu,
                apicdest,
            },
            D::VectorActivate {
                irq,
                managed,
                can_reserve,
                reserve,
            } => E::VectorActivate {
                irq,
                managed,
                can_reserve,
                reserve,
            },
            D::VectorDeactivate {
                irq,
                managed,
                can_reserve,
                reserve,
            } => E::VectorDeactivate {
                irq,
                managed,
                can_reserve,
                reserve,
            },
            D::Lost { probe, count } => E::Lost {
                probe: ProbeId::from_u16(probe)
                    .ok_or_else(|| format!("unknown probe id {probe}"))?,
                count,
            },
            D::IrqCounts { counts } => E::IrqCounts { counts },
            D::Gap { reason } => E::Gap {
                reason: self.s(reason)?,
            },
            D::PciIrqMask { v, msix } => E::PciIrqMask {
                v: self.snap(&v)?,
                msix,
            },
            D::PciIrqUnmask { v, msix } => E::PciIrqUnmask {
                v: self.snap(&v)?,
                msix,
            },
            D::ComposeCompl {
                irq,
                status,
                resp_size,
            } => E::ComposeCompl {
                irq,
                status,
                resp_size,
            },
            D::ReturnWithoutEntry { probe } => E::ReturnWithoutEntry {
                probe: ProbeId::from_u16(probe)
                    .ok_or_else(|| format!("unknown probe id {probe}"))?,
            },
            D::Notice { text } => E::Notice {
                text: self.s(text)?,
            },
        })
    }
}

impl ChunkDecoder {
    /// The next record when it is an event of the kinds nearly every trace is made of,
    /// decoded straight from the bytes: through [`DiskKind`] and a `Result` per step, each
    /// event was moved through memory five times (a quarter of the decoder's instructions).
    /// `None` for any other record and for anything wrong with this one: the general path
    /// then reads it again, so a damaged record says what it always said, and an event is the
    /// same by either path (the tests check both on every kind).
    #[inline(always)]
    pub(super) fn common_event(&mut self) -> Option<Event> {
        let (ev, next) = self.common_event_in()?;
        self.at = next;
        self.prev_ts = ev.ts_ns;
        self.index += 1;
        Some(ev)
    }

    #[inline(always)]
    fn common_event_in(&self) -> Option<(Event, usize)> {
        use EventKind as E;
        let payload = &self.payload[..];
        let mut w = Wire {
            rest: payload.get(self.at..)?,
        };
        // The record tag of an event.
        if w.u32().ok()? != 0 {
            return None;
        }
        let dts = w.i64().ok()?;
        let cpu = w.u32().ok()?;
        let tgid = w.u32().ok()?;
        let kind = match w.u32().ok()? {
            0 => E::ComposeEnter(self.common_snap(&mut w)?),
            1 => {
                let v = self.common_snap(&mut w)?;
                let msg = match w.byte().ok()? {
                    0 => None,
                    1 => Some(self.common_msg(&mut w)?),
                    _ => return None,
                };
                E::ComposeExit { v, msg }
            }
            2 => E::UnmaskEnter(self.common_snap(&mut w)?),
            3 => E::UnmaskExit(self.common_snap(&mut w)?),
            4 => E::MaskEnter(self.common_snap(&mut w)?),
            5 => E::MaskExit(self.common_snap(&mut w)?),
            6 => E::PciMsiMask(self.common_snap(&mut w)?),
            7 => E::PciMsiUnmask(self.common_snap(&mut w)?),
            11 => E::SetAffinityEnter {
                irq: w.u32().ok()?,
                in_migration: w.bool().ok()?,
            },
            12 => E::SetAffinityExit {
                irq: w.u32().ok()?,
                ret: w.i32().ok()?,
                in_migration: w.bool().ok()?,
            },
            15 => E::WriteMsiMsg {
                v: self.common_snap(&mut w)?,
                msg: self.common_msg(&mut w)?,
                in_restore: w.bool().ok()?,
                power_state: w.option(Wire::u32).ok()?,
            },
            23 => E::VectorUpdate {
                irq: w.u32().ok()?,
                vector: w.u32().ok()?,
                cpu: w.u32().ok()?,
                prev_vector: w.u32().ok()?,
                prev_cpu: w.u32().ok()?,
            },
            31 => E::PciIrqMask {
                v: self.common_snap(&mut w)?,
                msix: w.bool().ok()?,
            },
            32 => E::PciIrqUnmask {
                v: self.common_snap(&mut w)?,
                msix: w.bool().ok()?,
            },
            33 => E::ComposeCompl {
                irq: w.option(Wire::u32).ok()?,
                status: w.option(Wire::i32).ok()?,
                resp_size: w.i32().ok()?,
            },
            _ => return None,
        };
        let ev = Event {
            ts_ns: self.prev_ts.wrapping_add(dts as u64),
            cpu,
            tgid,
            kind,
        };
        Some((ev, payload.len() - w.rest.len()))
    }

    /// [`ChunkDecoder::snap`] of [`Wire::snap`], or `None` where either fails.
    #[inline(always)]
    fn common_snap(&self, w: &mut Wire<'_>) -> Option<VectorSnap> {
        let irq = w.u32().ok()?;
        let hwirq = self.table_value(w.u32().ok()?)?;
        // A name's first use in the chunk goes by the general path, which makes it shared.
        let device = match w.u32().ok()? {
            0 => None,
            n => Some(self.shared.get((n as usize).checked_sub(1)?)?.clone()?),
        };
        let msi_index = match w.u64().ok()? {
            0 => None,
            n => Some(u32::try_from(n - 1).ok()?),
        };
        let bits = w.u32().ok()?;
        if bits & !SNAP_ALL_BITS != 0 || check_bools(bits).is_err() {
            return None;
        }
        let chip_data = match w.u32().ok()? {
            0 => None,
            n => Some(self.table_value(n)?),
        };
        Some(VectorSnap {
            irq,
            hwirq,
            device,
            msi_index,
            msix: get_bool(bits, SNAP_MSIX),
            cache_masked: get_bool(bits, SNAP_CACHE_MASKED),
            irqd_masked: get_bool(bits, SNAP_IRQD_MASKED),
            irqd_disabled: get_bool(bits, SNAP_IRQD_DISABLED),
            managed: get_bool(bits, SNAP_MANAGED),
            managed_shutdown: get_bool(bits, SNAP_MANAGED_SHUTDOWN),
            chip_data,
            in_migration: bits & SNAP_IN_MIGRATION != 0,
        })
    }

    /// [`ChunkDecoder::msg`] of [`Wire::msg`], or `None` where either fails.
    #[inline(always)]
    fn common_msg(&self, w: &mut Wire<'_>) -> Option<MsiMsg> {
        let lo = self.table_value(w.u32().ok()?)?;
        Some(MsiMsg {
            address_lo: u32::try_from(lo).ok()?,
            address_hi: w.u32().ok()?,
            data: w.u32().ok()?,
        })
    }

    /// Integer `n` of the table; `None` for 0 (none) or one not defined.
    #[inline(always)]
    fn table_value(&self, n: ValRef) -> Option<u64> {
        self.values.get((n as usize).checked_sub(1)?).copied()
    }
}

impl ChunkDecoder {
    /// One record by the general path: a table definition is absorbed (`None`), anything
    /// else is handed out.
    fn general_record(&mut self) -> Option<Result<Record, RecordError>> {
        let mut wire = Wire {
            rest: &self.payload[self.at..],
        };
        let rec = match wire.record() {
            Ok(rec) => rec,
            Err(why) => return self.fail(why.to_string()),
        };
        let next = self.payload.len() - wire.rest.len();
        self.at = next;
        let out = match rec {
            DiskRecord::Str(s) => {
                // A string is the last field of its record: it ends where the next begins.
                // Payloads are at most MAX_CHUNK_PAYLOAD bytes, so offsets fit in a u32.
                self.strings.push(((next - s.len()) as u32, next as u32));
                self.index += 1;
                return None;
            }
            DiskRecord::Val(v) => {
                self.values.push(v);
                self.index += 1;
                return None;
            }
            DiskRecord::Event(e) => self.kind(e.kind).map(|kind| {
                let ts_ns = self.prev_ts.wrapping_add(e.dts as u64);
                self.prev_ts = ts_ns;
                Record::Event(Event {
                    ts_ns,
                    cpu: e.cpu,
                    tgid: e.tgid,
                    kind,
                })
            }),
            DiskRecord::Trailer(t) => serde_json::from_str(t)
                .map(Record::Trailer)
                .map_err(|e| format!("trailer is not JSON: {e}")),
        };
        match out {
            Ok(r) => {
                self.index += 1;
                Some(Ok(r))
            }
            Err(detail) => self.fail(detail),
        }
    }
}

impl Iterator for ChunkDecoder {
    type Item = Result<Record, RecordError>;

    /// The next event or trailer; table definitions are absorbed on the way. After an error
    /// the rest of the payload is dropped: without a length per record there is no next one.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while self.at < self.payload.len() {
            if let Some(ev) = self.common_event() {
                return Some(Ok(Record::Event(ev)));
            }
            if let Some(out) = self.general_record() {
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a postcard error means for a reader of a damaged file: its own texts name serde's
    /// machinery ("Serde Deserialization Error"), not the bytes.
    fn undecodable(e: &postcard::Error) -> &'static str {
        use postcard::Error as P;
        match e {
            P::DeserializeUnexpectedEnd => "the chunk ends inside a record",
            P::DeserializeBadVarint => "a number is longer than its type allows",
            P::DeserializeBadBool => "a flag is neither 0 nor 1",
            P::DeserializeBadChar | P::DeserializeBadUtf8 | P::CollectStrError => {
                "a string is not valid UTF-8"
            }
            P::DeserializeBadOption => "an optional field has an invalid tag",
            P::DeserializeBadEnum => "a record or field kind is unknown",
            _ => "a record kind or field value this version does not know",
        }
    }

    fn snap() -> VectorSnap {
        VectorSnap {
            irq: 42,
            hwirq: 0x1_8003,
            device: Some("0000:00:02.0".into()),
            msi_index: Some(3),
            msix: Some(true),
            cache_masked: Some(false),
            irqd_masked: None,
            irqd_disabled: Some(true),
            managed: Some(false),
            managed_shutdown: None,
            chip_data: Some(0xffff_8880_0123_4000),
            in_migration: true,
        }
    }

    fn decode_all(chunk: &[u8]) -> Vec<Record> {
        ChunkDecoder::new(chunk[FRAME_LEN..].to_vec())
            .collect::<Result<_, _>>()
            .expect("decodes")
    }

    /// One event of every kind, with extreme values where a field has them.
    fn every_kind() -> Vec<EventKind> {
        use EventKind as E;
        let m = MsiMsg {
            address_lo: 0xfee0_1000,
            address_hi: u32::MAX,
            data: 0x4021,
        };
        let mut odd = snap();
        odd.device = None;
        odd.msi_index = Some(u32::MAX);
        odd.chip_data = None;
        vec![
            E::ComposeEnter(snap()),
            E::ComposeExit {
                v: odd.clone(),
                msg: Some(m),
            },
            E::ComposeExit {
                v: snap(),
                msg: None,
            },
            E::UnmaskEnter(snap()),
            E::UnmaskExit(odd.clone()),
            E::MaskEnter(snap()),
            E::MaskExit(snap()),
            E::PciMsiMask(snap()),
            E::PciMsiUnmask(snap()),
            E::MigrateOneIrq { irq: u32::MAX },
            E::MigrateAllOffEnter,
            E::MigrateAllOffExit,
            E::SetAffinityEnter {
                irq: 7,
                in_migration: true,
            },
            E::SetAffinityExit {
                irq: 7,
                ret: i32::MIN,
                in_migration: false,
            },
            E::RestoreEnter {
                device: "0000:00:02.0".into(),
                msi_enabled: Some(false),
                msix_enabled: None,
                power_state: Some(u32::MAX),
            },
            E::RestoreExit {
                device: "0000:00:02.0".into(),
            },
            E::WriteMsiMsg {
                v: snap(),
                msg: m,
                in_restore: true,
                power_state: None,
            },
            E::HvPciSuspendEnter {
                bus: Some("vmbus".into()),
                state: Some(2),
            },
            E::HvPciSuspendExit {
                bus: None,
                ret: -22,
                state: None,
            },
            E::HvPciResumeEnter {
                bus: None,
                state: Some(0),
            },
            E::HvPciResumeExit {
                bus: Some("vmbus".into()),
                ret: i32::MAX,
                state: Some(1),
            },
            E::SuspendResume {
                action: "dpm_suspend".into(),
                val: 2,
                start: true,
            },
            E::DevicePmStart {
                device: "0000:00:02.0".into(),
                driver: "nvme".into(),
                pm_ops: "noirq".into(),
                event: 8,
            },
            E::DevicePmEnd {
                device: "0000:00:02.0".into(),
                driver: "nvme".into(),
                error: -5,
            },
            E::VectorUpdate {
                irq: 1,
                vector: 2,
                cpu: 3,
                prev_vector: 4,
                prev_cpu: u32::MAX,
            },
            E::VectorClear {
                irq: 1,
                vector: 2,
                cpu: 3,
                prev_vector: 4,
                prev_cpu: 5,
            },
            E::VectorConfig {
                irq: 1,
                vector: 2,
                cpu: 3,
                apicdest: 4,
            },
            E::VectorActivate {
                irq: 1,
                managed: true,
                can_reserve: false,
                reserve: true,
            },
            E::VectorDeactivate {
                irq: 1,
                managed: false,
                can_reserve: true,
                reserve: false,
            },
            E::Lost {
                probe: ProbeId::WriteMsiMsg,
                count: u64::MAX,
            },
            E::IrqCounts {
                counts: vec![(1, 0), (u32::MAX, u64::MAX)],
            },
            E::IrqCounts { counts: vec![] },
            E::Gap {
                reason: "ring buffer full".into(),
            },
            E::PciIrqMask {
                v: snap(),
                msix: true,
            },
            E::PciIrqUnmask {
                v: odd,
                msix: false,
            },
            E::ComposeCompl {
                irq: Some(9),
                status: Some(-1_073_741_811),
                resp_size: 36,
            },
            E::ComposeCompl {
                irq: None,
                status: None,
                resp_size: -1,
            },
            E::ReturnWithoutEntry {
                probe: ProbeId::HvMaskExit,
            },
            E::Notice {
                text: "attached".into(),
            },
        ]
    }

    /// What postcard's serde decoder makes of `bytes`: the record and the bytes left, or the
    /// words a reader shows.
    fn by_postcard(bytes: &[u8]) -> Result<(DiskRecord<'_>, usize), &'static str> {
        postcard::take_from_bytes::<DiskRecord<'_>>(bytes)
            .map(|(r, rest)| (r, rest.len()))
            .map_err(|e| undecodable(&e))
    }

    fn by_hand(bytes: &[u8]) -> Result<(DiskRecord<'_>, usize), &'static str> {
        let mut w = Wire { rest: bytes };
        w.record().map(|r| (r, w.rest.len()))
    }

    /// A payload holding every kind of record, as the encoder writes it.
    fn every_record() -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        for (i, kind) in every_kind().into_iter().enumerate() {
            enc.push_event(&Event {
                ts_ns: if i % 2 == 0 {
                    u64::MAX - i as u64
                } else {
                    i as u64
                },
                cpu: i as u32 * 1000,
                tgid: u32::MAX - i as u32,
                kind,
            })
            .unwrap();
        }
        enc.push_trailer(r#"{"divergences":[]}"#).unwrap();
        enc.take_chunk()[FRAME_LEN..].to_vec()
    }

    #[test]
    fn the_one_test_of_the_snapshot_booleans_is_the_test_of_each_pair() {
        for bits in 0..=SNAP_ALL_BITS {
            let each_pair_valid = (0..6).all(|i| bits & (0b11 << (2 * i)) != 0b10 << (2 * i));
            assert_eq!(check_bools(bits).is_ok(), each_pair_valid, "{bits:#x}");
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let kinds = every_kind();
        let mut enc = ChunkEncoder::new();
        for kind in &kinds {
            enc.push_event(&Event {
                ts_ns: 5,
                cpu: 1,
                tgid: 2,
                kind: kind.clone(),
            })
            .unwrap();
        }
        let got: Vec<EventKind> = decode_all(&enc.take_chunk())
            .into_iter()
            .map(|r| match r {
                Record::Event(e) => e.kind,
                Record::Trailer(_) => panic!("no trailer written"),
            })
            .collect();
        assert_eq!(got, kinds);
    }

    #[test]
    fn the_hand_written_decoder_reads_what_postcard_reads() {
        let payload = every_record();
        let mut rest = &payload[..];
        let mut n = 0;
        while !rest.is_empty() {
            let want = by_postcard(rest).expect("postcard decodes the encoder's output");
            assert_eq!(by_hand(rest), Ok((want.0, want.1)), "record {n}");
            rest = &rest[rest.len() - want.1..];
            n += 1;
        }
        assert!(n > every_kind().len(), "only {n} records");
    }

    #[test]
    fn the_hand_written_decoder_fails_where_postcard_fails_and_in_the_same_words() {
        let payload = every_record();
        let mut starts = vec![0];
        let mut rest = &payload[..];
        while let Ok((_, left)) = by_postcard(rest) {
            if left == 0 {
                break;
            }
            starts.push(payload.len() - left);
            rest = &payload[payload.len() - left..];
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let check = |bytes: &[u8]| {
            assert_eq!(by_hand(bytes), by_postcard(bytes), "bytes {bytes:02x?}");
        };
        // Every record cut at every length, and with each byte replaced by a few values that
        // hit the varint, flag, option and tag limits.
        for (i, &at) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(payload.len());
            let rec = &payload[at..end];
            for cut in 0..rec.len() {
                check(&rec[..cut]);
            }
            for pos in 0..rec.len() {
                for b in [0x00, 0x01, 0x02, 0x03, 0x0f, 0x10, 0x24, 0x7f, 0x80, 0xff] {
                    let mut m = rec.to_vec();
                    m[pos] = b;
                    check(&m);
                }
            }
        }
        // Arbitrary bytes, mostly small so that tags and lengths land in range.
        for _ in 0..200_000 {
            let r = random();
            let len = (r % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let x = random();
                    if x % 4 == 0 { x as u8 } else { (x % 40) as u8 }
                })
                .collect();
            check(&bytes);
        }
    }

    /// What the decoder hands out for `payload`, by its two paths: `next` (common events
    /// straight from the bytes) and the general path alone. Errors as their index and words.
    #[allow(clippy::type_complexity)]
    fn by_both_paths(
        payload: &[u8],
    ) -> (
        Vec<Result<Record, (usize, String)>>,
        Vec<Result<Record, (usize, String)>>,
    ) {
        let words = |e: RecordError| (e.index, e.detail);
        let both = ChunkDecoder::new(payload.to_vec())
            .map(|r| r.map_err(words))
            .collect();
        let mut d = ChunkDecoder::new(payload.to_vec());
        let mut general = Vec::new();
        while d.at < d.payload.len() {
            general.extend(d.general_record().map(|r| r.map_err(words)));
        }
        (both, general)
    }

    #[test]
    fn the_common_events_decode_alike_by_either_path_whole_cut_or_damaged() {
        let payload = every_record();
        let check = |bytes: &[u8]| {
            let (both, general) = by_both_paths(bytes);
            assert_eq!(both, general, "bytes {bytes:02x?}");
        };
        check(&payload);
        for cut in 0..payload.len() {
            check(&payload[..cut]);
        }
        for pos in 0..payload.len() {
            for b in [0x00, 0x01, 0x02, 0x03, 0x0f, 0x10, 0x24, 0x7f, 0x80, 0xff] {
                let mut m = payload.clone();
                m[pos] = b;
                check(&m);
            }
        }
        // And the fast path does take the common kinds: the snapshots' nine, the two
        // affinity calls, the message write, the vector update, the two per-device masks and
        // the two host replies of `every_kind`, less the first snapshot naming the device
        // (the general path makes its shared name).
        let mut d = ChunkDecoder::new(payload);
        let mut common = 0;
        while d.at < d.payload.len() {
            match d.common_event() {
                Some(_) => common += 1,
                None => {
                    d.general_record();
                }
            }
        }
        assert_eq!(common, 16, "events by the fast path");
    }

    #[test]
    fn a_chunk_round_trips_and_interns_repeated_values() {
        let mut enc = ChunkEncoder::new();
        let evs: Vec<Event> = (0..3)
            .map(|i| Event {
                ts_ns: 1_000_000_000 + i * 1500,
                cpu: 1,
                tgid: 77,
                kind: EventKind::ComposeEnter(snap()),
            })
            .collect();
        for e in &evs {
            enc.push_event(e).unwrap();
        }
        let first = enc.payload_len();
        assert_eq!(enc.events(), 3);
        let chunk = enc.take_chunk();
        assert!(enc.is_empty());
        let got = decode_all(&chunk);
        assert_eq!(got, evs.into_iter().map(Record::Event).collect::<Vec<_>>());
        // The 2nd and 3rd events reuse the tables: record and kind tags, dts (2), cpu, pid,
        // irq, hwirq ref, device ref, index, bits (2: in_migration is bit 12), chip_data ref.
        let mut one = ChunkEncoder::new();
        one.push_event(&Event {
            ts_ns: 1_000_000_000,
            cpu: 1,
            tgid: 77,
            kind: EventKind::ComposeEnter(snap()),
        })
        .unwrap();
        let repeat = (first - one.payload_len()) / 2;
        assert_eq!(repeat, 13, "bytes of a repeated snapshot event");
    }

    #[test]
    fn timestamps_going_backwards_and_extremes_survive() {
        let mut enc = ChunkEncoder::new();
        let ts = [u64::MAX, 5, 0, u64::MAX / 2 + 7, 3];
        for t in ts {
            enc.push_event(&Event {
                ts_ns: t,
                cpu: u32::MAX,
                tgid: 0,
                kind: EventKind::MigrateAllOffEnter,
            })
            .unwrap();
        }
        let got: Vec<u64> = decode_all(&enc.take_chunk())
            .into_iter()
            .map(|r| match r {
                Record::Event(e) => e.ts_ns,
                Record::Trailer(_) => panic!("no trailer written"),
            })
            .collect();
        assert_eq!(got, ts);
    }

    #[test]
    fn undefined_references_and_unknown_bits_are_errors_not_panics() {
        let mut buf = Vec::new();
        let bad = DiskRecord::Event(DiskEvent {
            dts: 1,
            cpu: 0,
            tgid: 0,
            kind: DiskKind::Gap { reason: 9 },
        });
        postcard::to_io(&bad, &mut buf).unwrap();
        let mut dec = ChunkDecoder::new(buf);
        let err = dec.next().unwrap().unwrap_err();
        assert!(err.detail.contains("string #9"), "{}", err.detail);
        assert!(dec.next().is_none());

        let mut buf = Vec::new();
        postcard::to_io(&DiskRecord::Val(1), &mut buf).unwrap();
        let bad = DiskRecord::Event(DiskEvent {
            dts: 1,
            cpu: 0,
            tgid: 0,
            kind: DiskKind::MaskEnter(DiskSnap {
                irq: 1,
                hwirq: 1,
                device: 0,
                msi_index: 0,
                bits: 1 << 20,
                chip_data: 0,
            }),
        });
        postcard::to_io(&bad, &mut buf).unwrap();
        let err = ChunkDecoder::new(buf).next().unwrap().unwrap_err();
        assert_eq!(err.index, 1);
        assert!(
            err.detail.contains("unknown snapshot bits"),
            "{}",
            err.detail
        );
    }

    #[test]
    fn the_frame_carries_length_and_checksum() {
        let mut enc = ChunkEncoder::new();
        enc.push_trailer(r#"{"ok":true}"#).unwrap();
        let chunk = enc.take_chunk();
        assert_eq!(chunk[0], CHUNK_TAG);
        let len = u32::from_le_bytes(chunk[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, chunk.len() - FRAME_LEN);
        let crc = u32::from_le_bytes(chunk[5..9].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&chunk[FRAME_LEN..]));
        assert!(ChunkDecoder::plausible_start(&chunk[FRAME_LEN..]));
        assert_eq!(
            decode_all(&chunk),
            vec![Record::Trailer(serde_json::json!({"ok": true}))]
        );
    }
}

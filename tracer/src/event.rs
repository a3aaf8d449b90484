//! The typed event every consumer sees: decoded from a ring-buffer [`RawEvent`], read back
//! from a trace file, or built by hand in a scenario test. The state engine takes nothing else,
//! which is what makes every live behaviour replayable.

use std::collections::HashMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use tracer_common::{NAME_LEN, NO_INDEX, ProbeId, RawEvent, flags};

/// An MSI message as the kernel holds it. On Hyper-V it is the host's opaque handle: never
/// decode it as an APIC id and vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsiMsg {
    pub address_lo: u32,
    pub address_hi: u32,
    pub data: u32,
}

impl MsiMsg {
    /// pci-hyperv leaves the message zeroed when the host refused to compose it.
    pub fn is_zero(&self) -> bool {
        self.address_lo == 0 && self.address_hi == 0 && self.data == 0
    }

    /// The destination APIC id and vector of an x86 MSI message in compatibility format:
    /// address `0xFEExxxxx` with the destination in bits 19:12 and the vector in data bits
    /// 7:0 (Intel SDM vol. 3, 11.11; arch/x86/include/asm/msi.h). `None` for any other shape,
    /// where the bits do not mean that: another architecture, a zeroed (shut down) message,
    /// interrupt remapping's remappable format (address bit 4: the rest is a table index), and
    /// destinations beyond 8 bits (x2APIC through address_hi or the extended-destination bits
    /// 11:5). A Hyper-V message has the same shape but is the host's handle: the caller must
    /// not ask for it.
    pub fn x86_destination(&self) -> Option<(u32, u32)> {
        let lo = self.address_lo;
        let compat = lo & 0xfff0_0000 == 0xfee0_0000
            && lo & (1 << 4) == 0
            && lo & 0x0fe0 == 0
            && self.address_hi == 0;
        compat.then_some(((lo >> 12) & 0xff, self.data & 0xff))
    }

    fn from_raw(addr: u64, data: u64) -> MsiMsg {
        MsiMsg {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data: data as u32,
        }
    }
}

impl std::fmt::Display for MsiMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:08x}:{:08x}/{:08x}",
            self.address_hi, self.address_lo, self.data
        )
    }
}

/// What a probe saw of one vector: its identity and the state bits it could read. Every
/// field the kernel did not give us (absent in BTF, failed read) is `None`, never a guess.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorSnap {
    pub irq: u32,
    pub hwirq: u64,
    /// PCI device (BDF) owning the vector, from `msi_desc->dev`. Held inline (up to 24
    /// bytes; a BDF is 12): nearly every event carries one, and a heap allocation or a shared
    /// count's atomic traffic per event cost a replay a fifth of its time.
    pub device: Option<CompactString>,
    pub msi_index: Option<u32>,
    pub msix: Option<bool>,
    /// The msi_desc mask cache: what the PCI core believes is in the device's mask bit.
    pub cache_masked: Option<bool>,
    /// genirq's view (IRQD_IRQ_MASKED, IRQD_IRQ_DISABLED).
    pub irqd_masked: Option<bool>,
    pub irqd_disabled: Option<bool>,
    pub managed: Option<bool>,
    pub managed_shutdown: Option<bool>,
    /// Hyper-V `chip_data`: the host's interrupt-remapping handle, 0 = none.
    pub chip_data: Option<u64>,
    /// Seen inside the CPU-offline migration window on this CPU.
    pub in_migration: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    ComposeEnter(VectorSnap),
    /// `msg` is `None` when it could not be read; a zeroed message is a failed compose.
    ComposeExit {
        v: VectorSnap,
        msg: Option<MsiMsg>,
    },
    UnmaskEnter(VectorSnap),
    UnmaskExit(VectorSnap),
    MaskEnter(VectorSnap),
    MaskExit(VectorSnap),
    PciMsiMask(VectorSnap),
    PciMsiUnmask(VectorSnap),
    MigrateOneIrq {
        irq: u32,
    },
    /// The CPU in [`Event::cpu`] is going offline and moves its vectors away.
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
        device: String,
        msi_enabled: Option<bool>,
        msix_enabled: Option<bool>,
        power_state: Option<u32>,
    },
    RestoreExit {
        device: String,
    },
    /// `__pci_write_msi_msg`: the message written to the device by MMIO.
    WriteMsiMsg {
        v: VectorSnap,
        msg: MsiMsg,
        in_restore: bool,
        power_state: Option<u32>,
    },
    HvPciSuspendEnter {
        bus: Option<String>,
        state: Option<u32>,
    },
    HvPciSuspendExit {
        bus: Option<String>,
        ret: i32,
        state: Option<u32>,
    },
    HvPciResumeEnter {
        bus: Option<String>,
        state: Option<u32>,
    },
    HvPciResumeExit {
        bus: Option<String>,
        ret: i32,
        state: Option<u32>,
    },
    /// `power:suspend_resume`: `action` such as `dpm_suspend_noirq`, `CPU_OFF` (val = cpu).
    SuspendResume {
        action: String,
        val: u32,
        start: bool,
    },
    DevicePmStart {
        device: String,
        driver: String,
        pm_ops: String,
        event: u32,
    },
    DevicePmEnd {
        device: String,
        driver: String,
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
    /// `irq_vectors:vector_activate` / `vector_deactivate`: a vector allocated (started) or
    /// released (shut down); managed vectors are shut down with their last CPU.
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
    /// Userspace: events a probe could not write to the ring buffer since the last report.
    Lost {
        probe: ProbeId,
        count: u64,
    },
    /// Userspace: cumulative `irq:irq_handler_entry` counts per IRQ, sampled from the map.
    IrqCounts {
        counts: Vec<(u32, u64)>,
    },
    /// Userspace: the tracer was not running or not reading between these two instants
    /// (frozen for a suspend, or stopped); events may still arrive from the ring buffer.
    Gap {
        reason: String,
    },
    /// `pci_irq_mask_msi` / `pci_irq_mask_msix` (per-device MSI domains, 6.2 and later), on
    /// entry: the device-level mask is about to be set. `msix` names the function.
    PciIrqMask {
        v: VectorSnap,
        msix: bool,
    },
    /// `pci_irq_unmask_msi` / `pci_irq_unmask_msix`, on entry.
    PciIrqUnmask {
        v: VectorSnap,
        msix: bool,
    },
    /// `hv_pci_compose_compl`: the host answered a compose request. `irq` is the vector of
    /// the in-flight `hv_compose_msi_msg` the reply belongs to (`None`: no compose in flight
    /// owned its context, so it is unattributed); `status` is `resp->status` (negative: the
    /// host refused), `None` when it could not be read.
    ComposeCompl {
        irq: Option<u32>,
        status: Option<i32>,
        resp_size: i32,
    },
    /// A return probe that fired without its entry's stash (`NO_ENTRY`: the entry was missed,
    /// or the tracer attached in the middle of the call): which object it returned for is
    /// unknown, so it says nothing about any vector, device or bus.
    ReturnWithoutEntry {
        probe: ProbeId,
    },
    /// Something the recorder itself did or met (a module's hooks attached, silent return
    /// probes re-attached), in the file at the moment it happened so a replay shows it too.
    Notice {
        text: String,
    },
}

/// One event with its time (CLOCK_MONOTONIC ns), CPU and task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ns: u64,
    pub cpu: u32,
    /// The process (thread group) the CPU was running, as user space calls a pid; in an
    /// interrupt, whichever process it interrupted. 0 for the recorder's own records.
    pub tgid: u32,
    pub kind: EventKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("unknown probe id {0}")]
    UnknownProbe(u16),
    #[error("probe {0:?} is counted in a map and never streamed")]
    NotStreamed(ProbeId),
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn bit(f: u16, b: u16, valid: u16) -> Option<bool> {
    (f & valid != 0).then_some(f & b != 0)
}

/// The device names the programs send once per IRQ (tracer-ebpf's
/// `vector::cached_device_name`): a vector record whose name is flagged valid but empty
/// names the device of its IRQ's last named record. Records are resolved in ring order, in
/// which a named record precedes those that rely on it, and before anything else sees them,
/// so the file and every front-end get whole names.
#[derive(Default)]
pub struct NameCache {
    names: HashMap<u32, [u8; NAME_LEN]>,
}

impl NameCache {
    pub fn resolve(&mut self, raw: &mut RawEvent) {
        if raw.flags & flags::NAME_VALID == 0 || !is_vector_record(raw.probe) {
            return;
        }
        if raw.name[0] != 0 {
            self.names.insert(raw.irq, raw.name);
            return;
        }
        match self.names.get(&raw.irq) {
            Some(name) => raw.name = *name,
            // Cannot happen with one ring read from its start; say unknown rather than "".
            None => raw.flags &= !flags::NAME_VALID,
        }
    }
}

/// The probes whose records name a vector's device through `vector::from_msi_desc`, the
/// only ones the programs may send an empty name for.
fn is_vector_record(probe: u16) -> bool {
    ProbeId::from_u16(probe).is_some_and(|p| {
        matches!(
            p,
            ProbeId::HvComposeEnter
                | ProbeId::HvComposeExit
                | ProbeId::HvUnmaskEnter
                | ProbeId::HvUnmaskExit
                | ProbeId::HvMaskEnter
                | ProbeId::HvMaskExit
                | ProbeId::WriteMsiMsg
                | ProbeId::PciMsiMask
                | ProbeId::PciMsiUnmask
                | ProbeId::PciIrqMaskMsi
                | ProbeId::PciIrqUnmaskMsi
                | ProbeId::PciIrqMaskMsix
                | ProbeId::PciIrqUnmaskMsix
        )
    })
}

impl Event {
    /// Decode one ring-buffer record. The bytes come from the kernel and may be of another
    /// build's layout: check the size and never trust the probe id.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        Self::decode_named(bytes, &mut NameCache::default())
    }

    /// [`Event::decode`] of the ring's records in order, their device names resolved.
    pub fn decode_named(bytes: &[u8], names: &mut NameCache) -> Result<Event, DecodeError> {
        if bytes.len() != std::mem::size_of::<RawEvent>() {
            return Err(DecodeError::Size(
                bytes.len(),
                std::mem::size_of::<RawEvent>(),
            ));
        }
        // SAFETY: the length matches and RawEvent is plain data valid for every bit pattern;
        // read_unaligned because the ring buffer gives 8-byte alignment only by convention.
        let mut raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        names.resolve(&mut raw);
        Self::from_raw(&raw)
    }

    pub fn from_raw(raw: &RawEvent) -> Result<Event, DecodeError> {
        let probe = ProbeId::from_u16(raw.probe).ok_or(DecodeError::UnknownProbe(raw.probe))?;
        let f = raw.flags;
        let name = (f & flags::NAME_VALID != 0).then(|| cstr(&raw.name));
        let a2 = (f & flags::A2_VALID != 0).then_some(raw.a[2] as u32);
        let snap = || VectorSnap {
            irq: raw.irq,
            hwirq: raw.hwirq,
            device: name.as_deref().map(CompactString::from),
            msi_index: (raw.msi_index != NO_INDEX).then_some(raw.msi_index),
            msix: bit(f, flags::MSIX, flags::MSIX_VALID),
            cache_masked: bit(f, flags::MASKED, flags::MASK_VALID),
            irqd_masked: bit(f, flags::IRQD_MASKED, flags::IRQD_VALID),
            irqd_disabled: bit(f, flags::IRQD_DISABLED, flags::IRQD_VALID),
            managed: bit(f, flags::MANAGED, flags::IRQD_VALID),
            managed_shutdown: bit(f, flags::MANAGED_SHUTDOWN, flags::IRQD_VALID),
            chip_data: (f & flags::CHIP_DATA_VALID != 0).then_some(raw.a[3]),
            in_migration: f & flags::IN_MIGRATION != 0,
        };
        let msg = || MsiMsg::from_raw(raw.a[0], raw.a[1]);
        // Only the return probes with a stash set NO_ENTRY; their object fields are zero then,
        // and decoding them would invent an IRQ 0, bus or device (hv_pci_compose_compl uses the
        // flag for an unattributed reply, which it decodes itself).
        if f & flags::NO_ENTRY != 0
            && matches!(
                probe,
                ProbeId::HvComposeExit
                    | ProbeId::HvUnmaskExit
                    | ProbeId::HvMaskExit
                    | ProbeId::SetAffinityExit
                    | ProbeId::RestoreMsiExit
                    | ProbeId::HvPciSuspendExit
                    | ProbeId::HvPciResumeExit
            )
        {
            return Ok(Event {
                ts_ns: raw.ts_ns,
                cpu: raw.cpu,
                tgid: raw.tgid,
                kind: EventKind::ReturnWithoutEntry { probe },
            });
        }
        let kind = match probe {
            ProbeId::HvComposeEnter => EventKind::ComposeEnter(snap()),
            ProbeId::HvComposeExit => EventKind::ComposeExit {
                v: snap(),
                msg: (f & flags::MSG_VALID != 0).then(msg),
            },
            ProbeId::HvUnmaskEnter => EventKind::UnmaskEnter(snap()),
            ProbeId::HvUnmaskExit => EventKind::UnmaskExit(snap()),
            ProbeId::HvMaskEnter => EventKind::MaskEnter(snap()),
            ProbeId::HvMaskExit => EventKind::MaskExit(snap()),
            ProbeId::PciMsiMask => EventKind::PciMsiMask(snap()),
            ProbeId::PciMsiUnmask => EventKind::PciMsiUnmask(snap()),
            ProbeId::MigrateOneIrq => EventKind::MigrateOneIrq { irq: raw.irq },
            ProbeId::MigrateAllOffEnter => EventKind::MigrateAllOffEnter,
            ProbeId::MigrateAllOffExit => EventKind::MigrateAllOffExit,
            ProbeId::SetAffinityEnter => EventKind::SetAffinityEnter {
                irq: raw.irq,
                in_migration: f & flags::IN_MIGRATION != 0,
            },
            ProbeId::SetAffinityExit => EventKind::SetAffinityExit {
                irq: raw.irq,
                ret: raw.a[1] as i32,
                in_migration: f & flags::IN_MIGRATION != 0,
            },
            ProbeId::RestoreMsiEnter => EventKind::RestoreEnter {
                device: name.unwrap_or_default(),
                msi_enabled: bit(raw.a[1] as u16, 1, 4),
                msix_enabled: bit(raw.a[1] as u16, 2, 8),
                power_state: a2,
            },
            ProbeId::RestoreMsiExit => EventKind::RestoreExit {
                device: name.unwrap_or_default(),
            },
            ProbeId::WriteMsiMsg => EventKind::WriteMsiMsg {
                v: snap(),
                msg: msg(),
                in_restore: f & flags::IN_RESTORE != 0,
                power_state: a2,
            },
            ProbeId::HvPciSuspendEnter => EventKind::HvPciSuspendEnter {
                bus: name,
                state: a2,
            },
            ProbeId::HvPciSuspendExit => EventKind::HvPciSuspendExit {
                bus: name,
                ret: raw.a[1] as i32,
                state: a2,
            },
            ProbeId::HvPciResumeEnter => EventKind::HvPciResumeEnter {
                bus: name,
                state: a2,
            },
            ProbeId::HvPciResumeExit => EventKind::HvPciResumeExit {
                bus: name,
                ret: raw.a[1] as i32,
                state: a2,
            },
            ProbeId::SuspendResume => EventKind::SuspendResume {
                action: name.unwrap_or_default(),
                val: raw.a[0] as u32,
                start: raw.a[1] != 0,
            },
            ProbeId::DevicePmStart => EventKind::DevicePmStart {
                device: name.unwrap_or_default(),
                driver: cstr(&raw.name2),
                pm_ops: cstr(&raw.name3),
                event: raw.a[0] as u32,
            },
            ProbeId::DevicePmEnd => EventKind::DevicePmEnd {
                device: name.unwrap_or_default(),
                driver: cstr(&raw.name2),
                error: raw.a[0] as i32,
            },
            ProbeId::VectorUpdate => EventKind::VectorUpdate {
                irq: raw.irq,
                vector: raw.a[0] as u32,
                cpu: raw.a[1] as u32,
                prev_vector: raw.a[2] as u32,
                prev_cpu: raw.a[3] as u32,
            },
            ProbeId::VectorClear => EventKind::VectorClear {
                irq: raw.irq,
                vector: raw.a[0] as u32,
                cpu: raw.a[1] as u32,
                prev_vector: raw.a[2] as u32,
                prev_cpu: raw.a[3] as u32,
            },
            ProbeId::VectorConfig => EventKind::VectorConfig {
                irq: raw.irq,
                vector: raw.a[0] as u32,
                cpu: raw.a[1] as u32,
                apicdest: raw.a[2] as u32,
            },
            ProbeId::VectorActivate => EventKind::VectorActivate {
                irq: raw.irq,
                managed: raw.a[0] != 0,
                can_reserve: raw.a[1] != 0,
                reserve: raw.a[2] != 0,
            },
            ProbeId::VectorDeactivate => EventKind::VectorDeactivate {
                irq: raw.irq,
                managed: raw.a[0] != 0,
                can_reserve: raw.a[1] != 0,
                reserve: raw.a[2] != 0,
            },
            ProbeId::PciIrqMaskMsi => EventKind::PciIrqMask {
                v: snap(),
                msix: false,
            },
            ProbeId::PciIrqUnmaskMsi => EventKind::PciIrqUnmask {
                v: snap(),
                msix: false,
            },
            ProbeId::PciIrqMaskMsix => EventKind::PciIrqMask {
                v: snap(),
                msix: true,
            },
            ProbeId::PciIrqUnmaskMsix => EventKind::PciIrqUnmask {
                v: snap(),
                msix: true,
            },
            ProbeId::HvComposeCompl => EventKind::ComposeCompl {
                irq: (f & flags::NO_ENTRY == 0).then_some(raw.irq),
                status: a2.map(|s| s as i32),
                resp_size: raw.a[1] as i32,
            },
            ProbeId::IrqHandlerEntry => return Err(DecodeError::NotStreamed(probe)),
        };
        Ok(Event {
            ts_ns: raw.ts_ns,
            cpu: raw.cpu,
            tgid: raw.tgid,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(raw: &RawEvent) -> &[u8] {
        // SAFETY: RawEvent is plain data.
        unsafe {
            std::slice::from_raw_parts((raw as *const RawEvent).cast(), size_of::<RawEvent>())
        }
    }

    fn device(ev: &Event) -> Option<&str> {
        match &ev.kind {
            EventKind::PciMsiMask(v) | EventKind::PciMsiUnmask(v) => v.device.as_deref(),
            k => panic!("unexpected {k:?}"),
        }
    }

    #[test]
    fn a_name_sent_once_per_irq_is_filled_in_from_the_ring_order() {
        let rec = |probe: ProbeId, irq: u32, name: &[u8]| {
            let mut raw = RawEvent::ZERO;
            raw.probe = probe as u16;
            raw.irq = irq;
            raw.flags = flags::NAME_VALID;
            raw.name[..name.len()].copy_from_slice(name);
            raw
        };
        let mut names = NameCache::default();
        let mut decode = |raw: RawEvent| Event::decode_named(bytes(&raw), &mut names).unwrap();
        // An empty name before any named record of its IRQ is unknown, not "".
        assert_eq!(device(&decode(rec(ProbeId::PciMsiMask, 40, b""))), None);
        assert_eq!(
            device(&decode(rec(ProbeId::PciMsiMask, 40, b"0000:02:00.0"))),
            Some("0000:02:00.0")
        );
        assert_eq!(
            device(&decode(rec(ProbeId::PciMsiUnmask, 40, b""))),
            Some("0000:02:00.0")
        );
        // Another IRQ, another device; and a name that changes with the device.
        assert_eq!(device(&decode(rec(ProbeId::PciMsiMask, 41, b""))), None);
        decode(rec(ProbeId::PciMsiMask, 40, b"0000:03:00.0"));
        assert_eq!(
            device(&decode(rec(ProbeId::PciMsiMask, 40, b""))),
            Some("0000:03:00.0")
        );
        // A record that names a PCI device, not a vector's, neither feeds nor reads the cache.
        let mut restore = rec(ProbeId::RestoreMsiEnter, 40, b"");
        names.resolve(&mut restore);
        assert_eq!(restore.flags & flags::NAME_VALID, flags::NAME_VALID);
        assert_eq!(restore.name[0], 0);
    }

    #[test]
    fn decodes_a_compose_exit_with_its_message() {
        let mut raw = RawEvent::ZERO;
        raw.probe = ProbeId::HvComposeExit as u16;
        raw.irq = 42;
        raw.flags = flags::MSG_VALID | flags::CHIP_DATA_VALID | flags::NAME_VALID;
        raw.a = [0x0000_0001_fee0_1000, 0x4021, 0, 0xffff_8880_0000_1000];
        raw.name[..12].copy_from_slice(b"0000:00:02.0");
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts((&raw as *const RawEvent).cast(), size_of::<RawEvent>())
        };
        let ev = Event::decode(bytes).unwrap();
        let EventKind::ComposeExit { v, msg } = ev.kind else {
            panic!("wrong kind {:?}", ev.kind)
        };
        assert_eq!(v.irq, 42);
        assert_eq!(v.device.as_deref(), Some("0000:00:02.0"));
        assert_eq!(v.chip_data, Some(0xffff_8880_0000_1000));
        assert_eq!(v.cache_masked, None);
        assert_eq!(
            msg,
            Some(MsiMsg {
                address_lo: 0xfee0_1000,
                address_hi: 1,
                data: 0x4021
            })
        );
    }

    #[test]
    fn decodes_only_compatibility_format_x86_messages() {
        let msg = |address_hi, address_lo, data| MsiMsg {
            address_lo,
            address_hi,
            data,
        };
        assert_eq!(
            msg(0, 0xfee0_1000, 0x4029).x86_destination(),
            Some((1, 0x29))
        );
        assert_eq!(msg(0, 0xfee0_0000, 0x2b).x86_destination(), Some((0, 0x2b)));
        // Remappable format (interrupt remapping): bits 19:5 index a table.
        assert_eq!(msg(0, 0xfee0_0010, 0).x86_destination(), None);
        // x2APIC destinations above 255.
        assert_eq!(msg(0, 0xfee0_0020, 0x29).x86_destination(), None);
        assert_eq!(msg(1, 0xfee0_0000, 0x29).x86_destination(), None);
        // Not an x86 MSI address (ARM GIC ITS doorbell), and a shut-down message.
        assert_eq!(msg(0, 0x0804_0040, 3).x86_destination(), None);
        assert_eq!(msg(0, 0, 0).x86_destination(), None);
    }

    #[test]
    fn decodes_a_compose_reply_and_the_per_device_unmask() {
        let mut raw = RawEvent::ZERO;
        raw.probe = ProbeId::HvComposeCompl as u16;
        raw.irq = 42;
        raw.flags = flags::A2_VALID;
        raw.a = [0xffff_c900_0001_3e80, 36, (-1073741811i64) as u64, 7];
        let ev = Event::from_raw(&raw).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::ComposeCompl {
                irq: Some(42),
                status: Some(-1073741811),
                resp_size: 36
            }
        );
        raw.flags = flags::NO_ENTRY;
        let ev = Event::from_raw(&raw).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::ComposeCompl {
                irq: None,
                status: None,
                resp_size: 36
            }
        );
        let mut raw = RawEvent::ZERO;
        raw.probe = ProbeId::PciIrqUnmaskMsix as u16;
        raw.irq = 48;
        let ev = Event::from_raw(&raw).unwrap();
        assert!(matches!(
            ev.kind,
            EventKind::PciIrqUnmask { ref v, msix: true } if v.irq == 48
        ));
    }

    #[test]
    fn a_return_without_its_entry_names_no_vector_device_or_bus() {
        for probe in [
            ProbeId::HvUnmaskExit,
            ProbeId::HvComposeExit,
            ProbeId::RestoreMsiExit,
            ProbeId::SetAffinityExit,
            ProbeId::HvPciResumeExit,
        ] {
            let mut raw = RawEvent::ZERO;
            raw.probe = probe as u16;
            raw.flags = flags::NO_ENTRY;
            let ev = Event::from_raw(&raw).unwrap();
            assert_eq!(
                ev.kind,
                EventKind::ReturnWithoutEntry { probe },
                "{probe:?}"
            );
        }
    }

    #[test]
    fn rejects_wrong_size_and_unknown_probe() {
        assert!(matches!(
            Event::decode(&[0u8; 8]),
            Err(DecodeError::Size(8, _))
        ));
        let mut raw = RawEvent::ZERO;
        raw.probe = 999;
        assert_eq!(Event::from_raw(&raw), Err(DecodeError::UnknownProbe(999)));
    }
}

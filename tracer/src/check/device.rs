//! What the device holds, decoded from its config space and MSI-X table bytes (PCI Local Bus
//! 3.0 §6.8): the MSI and MSI-X capabilities, each table entry, and an x86 message's
//! destination. Pure functions over bytes, so captured devices can be decoded in tests.

use serde::Serialize;

const CAP_PTR: usize = 0x34;
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u16 = 1 << 4;
const CAP_ID_MSI: u8 = 0x05;
const CAP_ID_MSIX: u8 = 0x11;
/// Bytes of config space a process without CAP_SYS_ADMIN gets: the header, no capabilities.
pub const UNPRIVILEGED_CONFIG_LEN: usize = 64;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The MSI-X capability: where the table is and the function-level bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsixCap {
    /// Offset of the capability in config space.
    pub at: u16,
    pub enabled: bool,
    pub function_mask: bool,
    pub table_size: u16,
    pub table_bar: u8,
    pub table_offset: u32,
}

/// The MSI capability: one message, shared by up to 32 vectors (data | index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsiCap {
    pub at: u16,
    pub enabled: bool,
    /// Vectors enabled: 1 << Multiple Message Enable.
    pub vectors: u32,
    pub is_64bit: bool,
    pub address: u64,
    pub data: u16,
    /// Per-vector mask bits, when the function supports masking.
    pub mask_bits: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub msi: Option<MsiCap>,
    pub msix: Option<MsixCap>,
}

/// Why the capabilities could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigProblem {
    /// Only the header was readable (not root).
    Truncated(usize),
    /// Every byte 0xff: the device is gone or powered off.
    AllOnes,
    /// A capability pointer out of range or a loop.
    BadList(String),
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigProblem::Truncated(n) => write!(
                f,
                "only {n} bytes of config space readable: the capabilities are past them (reading them needs root, CAP_SYS_ADMIN)"
            ),
            ConfigProblem::AllOnes => write!(
                f,
                "config space reads as all ones: the device is powered off or gone"
            ),
            ConfigProblem::BadList(why) => write!(f, "capability list is damaged: {why}"),
        }
    }
}

/// Walk the standard capability list for MSI and MSI-X.
pub fn capabilities(config: &[u8]) -> Result<Capabilities, ConfigProblem> {
    if config.len() >= 4 && config[..4].iter().all(|b| *b == 0xff) {
        return Err(ConfigProblem::AllOnes);
    }
    let status = u16_at(config, STATUS).ok_or(ConfigProblem::Truncated(config.len()))?;
    let mut caps = Capabilities::default();
    if status & STATUS_CAP_LIST == 0 {
        return Ok(caps);
    }
    let mut at = usize::from(
        *config
            .get(CAP_PTR)
            .ok_or(ConfigProblem::Truncated(config.len()))?,
    ) & !3;
    // 48 capabilities fit in 256 bytes; more means a loop.
    for _ in 0..48 {
        if at == 0 {
            return Ok(caps);
        }
        if !(0x40..=0xfc).contains(&at) {
            return Err(ConfigProblem::BadList(format!("pointer {at:#x}")));
        }
        if at + 2 > config.len() {
            return Err(ConfigProblem::Truncated(config.len()));
        }
        match config[at] {
            CAP_ID_MSIX => caps.msix = Some(msix_cap(config, at)?),
            CAP_ID_MSI => caps.msi = Some(msi_cap(config, at)?),
            _ => {}
        }
        at = usize::from(config[at + 1]) & !3;
    }
    Err(ConfigProblem::BadList(
        "more than 48 capabilities (a loop)".into(),
    ))
}

fn msix_cap(c: &[u8], at: usize) -> Result<MsixCap, ConfigProblem> {
    let short = || ConfigProblem::Truncated(c.len());
    let ctrl = u16_at(c, at + 2).ok_or_else(short)?;
    let table = u32_at(c, at + 4).ok_or_else(short)?;
    Ok(MsixCap {
        at: at as u16,
        enabled: ctrl & (1 << 15) != 0,
        function_mask: ctrl & (1 << 14) != 0,
        table_size: (ctrl & 0x7ff) + 1,
        table_bar: (table & 7) as u8,
        table_offset: table & !7,
    })
}

fn msi_cap(c: &[u8], at: usize) -> Result<MsiCap, ConfigProblem> {
    let short = || ConfigProblem::Truncated(c.len());
    let ctrl = u16_at(c, at + 2).ok_or_else(short)?;
    let is_64bit = ctrl & (1 << 7) != 0;
    let maskable = ctrl & (1 << 8) != 0;
    let lo = u32_at(c, at + 4).ok_or_else(short)?;
    let (hi, data_at) = if is_64bit {
        (u32_at(c, at + 8).ok_or_else(short)?, at + 12)
    } else {
        (0, at + 8)
    };
    let data = u16_at(c, data_at).ok_or_else(short)?;
    // The mask register is dword-aligned after the data word.
    let mask_bits = if maskable {
        Some(u32_at(c, data_at + 4).ok_or_else(short)?)
    } else {
        None
    };
    Ok(MsiCap {
        at: at as u16,
        enabled: ctrl & 1 != 0,
        vectors: 1 << ((ctrl >> 4) & 7).min(5),
        is_64bit,
        address: u64::from(hi) << 32 | u64::from(lo),
        data,
        mask_bits,
    })
}

/// One MSI-X table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MsixEntry {
    pub address: u64,
    pub data: u32,
    /// Vector Control bit 0.
    pub masked: bool,
}

/// Entry `index` of a table read from the BAR, or None when the bytes do not reach it.
pub fn msix_entry(table: &[u8], index: u32) -> Option<MsixEntry> {
    let at = usize::try_from(index).ok()?.checked_mul(16)?;
    let lo = u32_at(table, at)?;
    let hi = u32_at(table, at + 4)?;
    let data = u32_at(table, at + 8)?;
    let ctrl = u32_at(table, at + 12)?;
    Some(MsixEntry {
        address: u64::from(hi) << 32 | u64::from(lo),
        data,
        masked: ctrl & 1 != 0,
    })
}

/// True when every entry read back as all ones: what a device outside D0, or one that fell
/// off the bus, returns for MMIO. Its mask bits then mean nothing.
pub fn table_all_ones(table: &[u8]) -> bool {
    !table.is_empty() && table.iter().all(|b| *b == 0xff)
}

/// Where an x86 message sends its interrupt, as far as the message itself tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// Physical destination mode: the APIC id the interrupt goes to, and the vector.
    Apic { apic_id: u32, vector: u8 },
    /// Address bit 4: remappable format. The message holds an interrupt-remapping table
    /// index, the destination is in the IOMMU's table and cannot be read from here.
    Remapped,
    /// Address bit 2: logical destination mode; the id is a logical APIC id or cluster,
    /// not a CPU.
    Logical,
    /// Not in the 0xFEE0_0000 interrupt window: not an x86 local-APIC message (or a
    /// hypervisor's handle).
    NotApic,
}

/// Decode an x86 MSI message (Intel SDM vol. 3 §11.11). Destination = address bits 19:12;
/// when a hypervisor offers the extended destination id (KVM's and Hyper-V's
/// `x2apic ext dest id`), address bits 11:5 carry APIC id bits 14:8, and VT-d's
/// compatibility format puts bits 31:8 in the high address word. Those bits are zero
/// otherwise, so reading them always is safe for the ids this check compares with.
/// (`MsiMsg::x86_destination` is the trace's stricter reading, which gives up on them.)
pub fn x86_destination(address: u64, data: u32) -> Destination {
    let lo = address as u32;
    let hi = (address >> 32) as u32;
    if lo & 0xfff0_0000 != 0xfee0_0000 {
        return Destination::NotApic;
    }
    if lo & (1 << 4) != 0 {
        return Destination::Remapped;
    }
    if lo & (1 << 2) != 0 {
        return Destination::Logical;
    }
    let low8 = (lo >> 12) & 0xff;
    let ext = (lo >> 5) & 0x7f;
    Destination::Apic {
        apic_id: (hi & 0xffff_ff00) | ext << 8 | low8,
        vector: (data & 0xff) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(caps: &[(usize, &[u8])], first: u8) -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[STATUS] = 0x10;
        c[CAP_PTR] = first;
        for (at, bytes) in caps {
            c[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        c
    }

    #[test]
    fn finds_msix_through_a_chain_of_capabilities() {
        // Vendor caps at 0x40 and 0x50, MSI-X at 0x98 (the layout of a virtio-pci device).
        let c = config_with(
            &[
                (0x40, &[0x09, 0x50]),
                (0x50, &[0x09, 0x98]),
                (0x98, &[0x11, 0x00, 0x02, 0xc0, 0x00, 0x80, 0x00, 0x00]),
            ],
            0x40,
        );
        let caps = capabilities(&c).unwrap();
        let x = caps.msix.unwrap();
        assert_eq!((x.at, x.table_size, x.table_bar), (0x98, 3, 0));
        assert_eq!(x.table_offset, 0x8000);
        assert!(x.enabled && x.function_mask);
        assert_eq!(caps.msi, None);
    }

    #[test]
    fn decodes_msi_with_64_bit_address_and_mask_bits() {
        let c = config_with(
            &[(
                0x50,
                &[
                    0x05, 0x00, 0xa1,
                    0x01, // ctrl: enable, MME=2 (4 vectors), 64-bit, maskable
                    0x00, 0x30, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00, // address
                    0x41, 0x00, 0x00, 0x00, // data 0x41
                    0x02, 0x00, 0x00, 0x00, // vector 1 masked
                ],
            )],
            0x50,
        );
        let m = capabilities(&c).unwrap().msi.unwrap();
        assert!(m.enabled && m.is_64bit);
        assert_eq!(
            (m.vectors, m.address, m.data, m.mask_bits),
            (4, 0xfee0_3000, 0x41, Some(2))
        );
    }

    #[test]
    fn says_why_the_capabilities_cannot_be_read() {
        let mut c = config_with(&[(0x98, &[0x11, 0x00, 0x02, 0x80])], 0x98);
        c.truncate(UNPRIVILEGED_CONFIG_LEN);
        assert_eq!(capabilities(&c), Err(ConfigProblem::Truncated(64)));
        assert_eq!(capabilities(&[0xff; 256]), Err(ConfigProblem::AllOnes));
        let looped = config_with(&[(0x40, &[0x09, 0x40])], 0x40);
        assert!(matches!(
            capabilities(&looped),
            Err(ConfigProblem::BadList(_))
        ));
    }

    #[test]
    fn reads_table_entries_and_their_mask_bit() {
        let mut t = vec![0u8; 32];
        t[16..20].copy_from_slice(&0xfee0_1000u32.to_le_bytes());
        t[24..28].copy_from_slice(&0x22u32.to_le_bytes());
        t[28] = 1;
        let e = msix_entry(&t, 1).unwrap();
        assert_eq!((e.address, e.data, e.masked), (0xfee0_1000, 0x22, true));
        assert!(!msix_entry(&t, 0).unwrap().masked);
        assert_eq!(msix_entry(&t, 2), None);
        assert!(table_all_ones(&[0xff; 32]) && !table_all_ones(&t));
    }

    #[test]
    fn decodes_the_x86_destination_and_refuses_what_it_cannot_read() {
        assert_eq!(
            x86_destination(0xfee0_1000, 0x4022),
            Destination::Apic {
                apic_id: 1,
                vector: 0x22
            }
        );
        // Extended destination id: APIC id 0x1_02 = bits 11:5 = 1, bits 19:12 = 2.
        assert_eq!(
            x86_destination(0xfee0_2020, 0x30),
            Destination::Apic {
                apic_id: 0x102,
                vector: 0x30
            }
        );
        assert_eq!(x86_destination(0xfee0_0018, 0), Destination::Remapped);
        assert_eq!(x86_destination(0xfee0_1004, 0), Destination::Logical);
        assert_eq!(x86_destination(0x1234_5678, 0), Destination::NotApic);
    }
}

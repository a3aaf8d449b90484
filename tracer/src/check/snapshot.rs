//! What `check` read from the machine, kept as the kernel printed it (texts trimmed, bytes as
//! read) so that the analysis can be run again anywhere on a saved copy: a bug report carries
//! the snapshot, and the tests run the analysis on snapshots captured from real machines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The snapshot format. A reader refuses a newer one instead of guessing.
pub const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub format: u32,
    pub kernel_release: String,
    /// `std::env::consts::ARCH` of the machine read: the message is decoded as x86's only there.
    pub arch: String,
    /// /sys/hypervisor/type (`xen` where Xen shows itself): Xen's MSI messages carry a
    /// pirq, not an APIC id.
    #[serde(default)]
    pub hypervisor_type: Option<String>,
    /// Whether the reader had root's view (effective uid 0): config space past its first 64
    /// bytes and the BAR files need it.
    pub privileged: bool,
    /// /proc/interrupts, and a second reading `window_ms` later when one was taken: the
    /// counters that moved in between tell a live vector from a silent one.
    pub proc_interrupts: Option<String>,
    pub proc_interrupts_later: Option<String>,
    pub window_ms: Option<u64>,
    /// /proc/uptime's first field (seconds since boot, sleep included): with a count since
    /// boot, the rate a vector usually fires at.
    pub uptime_secs: Option<f64>,
    /// /sys/devices/system/cpu/online.
    pub online_cpus: Option<String>,
    /// Logical CPU → APIC id, from /proc/cpuinfo's `processor` and `apicid` lines.
    pub apic_ids: BTreeMap<u32, u32>,
    /// Whether /sys/kernel/debug/irq/irqs could be listed, and why not.
    pub irq_debugfs: DebugfsAccess,
    pub devices: Vec<DeviceSnapshot>,
    pub irqs: BTreeMap<u32, IrqSnapshot>,
    /// Everything that could not be read: what, why, and what the analysis loses.
    pub unreadable: Vec<Unreadable>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebugfsAccess {
    Readable,
    /// /sys/kernel/debug has no `irq` directory: debugfs is not mounted, or the kernel is
    /// built without GENERIC_IRQ_DEBUGFS (Debian's are not); the string says which was seen.
    Absent(String),
    /// It exists but cannot be read (not root, or lockdown).
    Unreadable(String),
    #[default]
    NotRead,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file or the object, e.g. `/sys/bus/pci/devices/0000:00:03.0/config`.
    pub what: String,
    /// The kernel's error or what was seen instead.
    pub why: String,
    /// What the analysis cannot do without it.
    pub cost: String,
}

/// One PCI function that has MSI or MSI-X vectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    pub bdf: String,
    pub driver: Option<String>,
    /// /sys/bus/pci/devices/<bdf>/power_state (`D0`, `D3hot`, …): outside D0 the device's
    /// registers read as all ones and say nothing about its masks.
    pub power_state: Option<String>,
    /// IRQ → `msi` / `msix`, from msi_irqs/.
    pub msi_irqs: BTreeMap<u32, String>,
    /// Config space as read: 64 bytes only without CAP_SYS_ADMIN, where the capability list
    /// is cut off.
    #[serde(default, with = "hex_bytes")]
    pub config: Option<Vec<u8>>,
    /// The MSI-X table, read from the BAR the capability names.
    pub msix_table: Option<MsixTableRead>,
    /// The Hyper-V vPCI bus above the device, when there is one.
    pub hv_bus: Option<HvBusSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixTableRead {
    pub bar: u8,
    /// Offset of the table in the BAR.
    pub offset: u64,
    /// `entries` × 16 bytes, read as 32-bit words (the only access width the table allows
    /// besides 64 bits), stored little-endian as the device holds them.
    #[serde(default, with = "hex_bytes")]
    pub bytes: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HvBusSnapshot {
    /// The VMBus device (its instance GUID) the PCI device hangs under.
    pub vmbus_device: String,
    /// Its driver, `hv_pci` for pci-hyperv.
    pub driver: Option<String>,
    /// /sys/bus/vmbus/devices/<guid>/state: the VMBus channel's state, where the kernel shows it.
    pub channel_state: Option<String>,
}

/// What genirq says about one IRQ, file by file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqSnapshot {
    /// /sys/kernel/irq/<irq>/{chip_name,hwirq,type,actions,per_cpu_count}.
    pub chip_name: Option<String>,
    pub hwirq: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub actions: Option<String>,
    pub per_cpu_count: Option<String>,
    /// /proc/irq/<irq>/effective_affinity_list and smp_affinity_list.
    pub effective_affinity_list: Option<String>,
    pub smp_affinity_list: Option<String>,
    /// /sys/kernel/debug/irq/irqs/<irq>.
    pub debugfs: Option<String>,
}

/// Bytes as one lowercase hex string: a captured config space stays readable and a test can
/// edit a bit by hand.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        // Whitespace is allowed so that a hand-edited fixture can group bytes.
        let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        digits
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not a hex byte"))
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

impl Snapshot {
    /// Read a snapshot saved by `check --save`.
    pub fn from_json(text: &str) -> anyhow::Result<Snapshot> {
        let snap: Snapshot = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("not a msitrace check snapshot: {e}"))?;
        anyhow::ensure!(
            snap.format != 0,
            "not a msitrace check snapshot: no format number (write one with `msitrace check --save FILE`)"
        );
        anyhow::ensure!(
            snap.format <= SNAPSHOT_FORMAT,
            "snapshot format {} is newer than this msitrace reads ({SNAPSHOT_FORMAT}): use a newer msitrace",
            snap.format
        );
        Ok(snap)
    }
}

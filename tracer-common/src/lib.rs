//! The event ABI shared by the eBPF programs and userspace: the fixed-size record every
//! program writes to the ring buffer, the probe ids that index the hit/loss counters, and the
//! kernel layout (field offsets and "field exists" flags) that userspace resolves from BTF and
//! hands to the programs as a global before load.
//!
//! This is the only place where the record layout is defined. Userspace decodes [`RawEvent`]
//! into its own typed `Event` (tracer/src/event.rs); nothing else reads the raw bytes.
#![no_std]

/// Every probe program, in a fixed order. The value indexes the per-CPU `HITS` and `LOST`
/// arrays and is the `probe` field of each record, so it must never be renumbered: a trace
/// file written by an older build still decodes. Append new probes at the end.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub enum ProbeId {
    HvComposeEnter = 0,
    HvComposeExit = 1,
    HvUnmaskEnter = 2,
    HvUnmaskExit = 3,
    HvMaskEnter = 4,
    HvMaskExit = 5,
    MigrateOneIrq = 6,
    MigrateAllOffEnter = 7,
    MigrateAllOffExit = 8,
    SetAffinityEnter = 9,
    SetAffinityExit = 10,
    RestoreMsiEnter = 11,
    RestoreMsiExit = 12,
    WriteMsiMsg = 13,
    PciMsiMask = 14,
    PciMsiUnmask = 15,
    HvPciSuspendEnter = 16,
    HvPciSuspendExit = 17,
    HvPciResumeEnter = 18,
    HvPciResumeExit = 19,
    SuspendResume = 20,
    DevicePmStart = 21,
    DevicePmEnd = 22,
    VectorUpdate = 23,
    VectorConfig = 24,
    VectorClear = 25,
    IrqHandlerEntry = 26,
    VectorActivate = 27,
    VectorDeactivate = 28,
    PciIrqMaskMsi = 29,
    PciIrqUnmaskMsi = 30,
    PciIrqMaskMsix = 31,
    PciIrqUnmaskMsix = 32,
    HvComposeCompl = 33,
}

pub const NUM_PROBES: u32 = 34;

impl ProbeId {
    pub const ALL: [ProbeId; NUM_PROBES as usize] = [
        ProbeId::HvComposeEnter,
        ProbeId::HvComposeExit,
        ProbeId::HvUnmaskEnter,
        ProbeId::HvUnmaskExit,
        ProbeId::HvMaskEnter,
        ProbeId::HvMaskExit,
        ProbeId::MigrateOneIrq,
        ProbeId::MigrateAllOffEnter,
        ProbeId::MigrateAllOffExit,
        ProbeId::SetAffinityEnter,
        ProbeId::SetAffinityExit,
        ProbeId::RestoreMsiEnter,
        ProbeId::RestoreMsiExit,
        ProbeId::WriteMsiMsg,
        ProbeId::PciMsiMask,
        ProbeId::PciMsiUnmask,
        ProbeId::HvPciSuspendEnter,
        ProbeId::HvPciSuspendExit,
        ProbeId::HvPciResumeEnter,
        ProbeId::HvPciResumeExit,
        ProbeId::SuspendResume,
        ProbeId::DevicePmStart,
        ProbeId::DevicePmEnd,
        ProbeId::VectorUpdate,
        ProbeId::VectorConfig,
        ProbeId::VectorClear,
        ProbeId::IrqHandlerEntry,
        ProbeId::VectorActivate,
        ProbeId::VectorDeactivate,
        ProbeId::PciIrqMaskMsi,
        ProbeId::PciIrqUnmaskMsi,
        ProbeId::PciIrqMaskMsix,
        ProbeId::PciIrqUnmaskMsix,
        ProbeId::HvComposeCompl,
    ];

    pub fn from_u16(v: u16) -> Option<ProbeId> {
        Self::ALL.get(v as usize).copied()
    }

    /// The program's name in the eBPF object (the function name of the program).
    pub const fn program(self) -> &'static str {
        match self {
            ProbeId::HvComposeEnter => "hv_compose_enter",
            ProbeId::HvComposeExit => "hv_compose_exit",
            ProbeId::HvUnmaskEnter => "hv_unmask_enter",
            ProbeId::HvUnmaskExit => "hv_unmask_exit",
            ProbeId::HvMaskEnter => "hv_mask_enter",
            ProbeId::HvMaskExit => "hv_mask_exit",
            ProbeId::MigrateOneIrq => "migrate_one_irq",
            ProbeId::MigrateAllOffEnter => "migrate_all_off_enter",
            ProbeId::MigrateAllOffExit => "migrate_all_off_exit",
            ProbeId::SetAffinityEnter => "set_affinity_enter",
            ProbeId::SetAffinityExit => "set_affinity_exit",
            ProbeId::RestoreMsiEnter => "restore_msi_enter",
            ProbeId::RestoreMsiExit => "restore_msi_exit",
            ProbeId::WriteMsiMsg => "write_msi_msg",
            ProbeId::PciMsiMask => "pci_msi_mask",
            ProbeId::PciMsiUnmask => "pci_msi_unmask",
            ProbeId::HvPciSuspendEnter => "hv_pci_suspend_enter",
            ProbeId::HvPciSuspendExit => "hv_pci_suspend_exit",
            ProbeId::HvPciResumeEnter => "hv_pci_resume_enter",
            ProbeId::HvPciResumeExit => "hv_pci_resume_exit",
            ProbeId::SuspendResume => "suspend_resume",
            ProbeId::DevicePmStart => "device_pm_start",
            ProbeId::DevicePmEnd => "device_pm_end",
            ProbeId::VectorUpdate => "vector_update",
            ProbeId::VectorConfig => "vector_config",
            ProbeId::VectorClear => "vector_clear",
            ProbeId::IrqHandlerEntry => "irq_handler_entry",
            ProbeId::VectorActivate => "vector_activate",
            ProbeId::VectorDeactivate => "vector_deactivate",
            ProbeId::PciIrqMaskMsi => "pci_irq_mask_msi",
            ProbeId::PciIrqUnmaskMsi => "pci_irq_unmask_msi",
            ProbeId::PciIrqMaskMsix => "pci_irq_mask_msix",
            ProbeId::PciIrqUnmaskMsix => "pci_irq_unmask_msix",
            ProbeId::HvComposeCompl => "hv_compose_compl",
        }
    }
}

/// `RawEvent::flags` bits.
pub mod flags {
    /// The vector is MSI-X (else MSI); valid with `MSIX_VALID`.
    pub const MSIX: u16 = 1 << 0;
    pub const MSIX_VALID: u16 = 1 << 1;
    /// The msi_desc mask cache says the vector is masked; valid with `MASK_VALID`.
    pub const MASKED: u16 = 1 << 2;
    pub const MASK_VALID: u16 = 1 << 3;
    /// genirq's IRQD_IRQ_MASKED / IRQD_IRQ_DISABLED; valid with `IRQD_VALID`.
    pub const IRQD_MASKED: u16 = 1 << 4;
    pub const IRQD_DISABLED: u16 = 1 << 5;
    pub const IRQD_VALID: u16 = 1 << 6;
    /// IRQD_AFFINITY_MANAGED / IRQD_MANAGED_SHUTDOWN (valid with `IRQD_VALID`).
    pub const MANAGED: u16 = 1 << 7;
    pub const MANAGED_SHUTDOWN: u16 = 1 << 8;
    /// `a[3]` holds the Hyper-V `chip_data` (the host's IRTE handle); valid read.
    pub const CHIP_DATA_VALID: u16 = 1 << 9;
    /// Inside a `pci_restore_msi_state` window of the same task.
    pub const IN_RESTORE: u16 = 1 << 10;
    /// Inside an `irq_migrate_all_off_this_cpu` window on this CPU (CPU going offline).
    pub const IN_MIGRATION: u16 = 1 << 11;
    /// The message in `a[0]`/`a[1]` was read successfully.
    pub const MSG_VALID: u16 = 1 << 12;
    /// `name` holds the device (BDF or bus device name).
    pub const NAME_VALID: u16 = 1 << 13;
    /// The field in `a[2]` (power state, bus state, …) was read successfully.
    pub const A2_VALID: u16 = 1 << 14;
    /// Return probe that could not find its entry (the stash was full or the entry was lost).
    pub const NO_ENTRY: u16 = 1 << 15;
}

pub const NAME_LEN: usize = 32;
pub const NAME2_LEN: usize = 16;
pub const NO_INDEX: u32 = u32::MAX;

/// One event, as written to the ring buffer. Fixed size so that the ring's capacity in
/// events is known (userspace sizes it for the burst of a suspend, when it is frozen).
///
/// Meaning of the generic fields per probe (`-` = unused, 0):
///
/// | probe | irq / hwirq / msi_index / mask | a[0] | a[1] | a[2] | a[3] | name | name2 |
/// |---|---|---|---|---|---|---|---|
/// | HvCompose* / HvUnmask* / HvMask* / PciMsi* / PciIrq* | the vector | chip ptr | domain ptr | - | chip_data | BDF | - |
/// | HvComposeExit | the vector | composed msg address (hi<<32 \| lo) | msg data | - | chip_data | BDF | - |
/// | HvComposeCompl | the vector of the in-flight compose that owns the context (`NO_ENTRY`: none found) | context ptr | resp_packet_size (i32) | host status (i32, `A2_VALID`) | composing task's pid_tgid | - | - |
/// | MigrateOneIrq | irq | irq_desc ptr | - | - | - | - | - |
/// | MigrateAllOff* | - (the dying CPU is `cpu`) | - | - | - | - | - | - |
/// | SetAffinityEnter/Exit | irq | force | return code (i32, exit) | - | - | - | - |
/// | RestoreMsi* | - | pci_dev ptr | bit 0 MSI enabled, bit 1 MSI-X enabled, bits 2/3 their validity | power state | - | BDF | - |
/// | WriteMsiMsg | the vector | msg address (hi<<32 \| lo) | msg data | power state | - | BDF | - |
/// | HvPci* | - | hv_device ptr | return code (i32, exit) | bus state | - | device | - |
/// | SuspendResume | - | val | start (0/1) | - | - | action | - |
/// | DevicePmStart | - | event | - | - | - | device | driver |
/// | DevicePmEnd | - | error (i32) | - | - | - | device | driver |
/// | VectorUpdate/Clear | irq | vector | cpu | prev_vector | prev_cpu | - | - |
/// | VectorConfig | irq | vector | cpu | apicdest | - | - | - |
/// | VectorActivate/Deactivate | irq | is_managed | can_reserve | reserve | - | - | - |
///
/// `name3` carries `pm_ops` for DevicePmStart.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawEvent {
    /// bpf_ktime_get_ns (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub probe: u16,
    pub flags: u16,
    pub cpu: u32,
    /// `bpf_get_current_pid_tgid() >> 32`: the process, not the thread.
    pub tgid: u32,
    pub irq: u32,
    pub hwirq: u64,
    pub msi_index: u32,
    pub a: [u64; 4],
    pub name: [u8; NAME_LEN],
    pub name2: [u8; NAME2_LEN],
    pub name3: [u8; NAME2_LEN],
}

impl RawEvent {
    pub const ZERO: RawEvent = RawEvent {
        ts_ns: 0,
        probe: 0,
        flags: 0,
        cpu: 0,
        tgid: 0,
        irq: 0,
        hwirq: 0,
        msi_index: NO_INDEX,
        a: [0; 4],
        name: [0; NAME_LEN],
        name2: [0; NAME2_LEN],
        name3: [0; NAME2_LEN],
    };
}

pub const RAW_EVENT_SIZE: usize = core::mem::size_of::<RawEvent>();

/// Where to find one field, relative to the start of its containing object, as resolved from
/// BTF. `present == 0` means the field does not exist on this kernel and nothing that needs it
/// may be read. Bitfields are read as `size` bytes at `off`, then shifted right by `bit_off`
/// and masked to `bit_len` bits (`bit_len == 0` means "not a bitfield").
///
/// Aligned to its 8 bytes: the programs copy fields through the stack, which the verifier
/// only lets them do at aligned offsets, and LLVM moves a field as one 8-byte word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Field {
    pub off: u32,
    pub size: u8,
    pub bit_off: u8,
    pub bit_len: u8,
    pub present: u8,
}

impl Field {
    /// The initial value compiled into the object: absent, but non-zero so that the global
    /// lands in .rodata where the loader can override it.
    pub const ABSENT: Field = Field {
        off: 0xffff_ffff,
        size: 0,
        bit_off: 0,
        bit_len: 0,
        present: 0,
    };

    pub const fn at(off: u32, size: u8) -> Field {
        Field {
            off,
            size,
            bit_off: 0,
            bit_len: 0,
            present: 1,
        }
    }

    /// [`Field::ABSENT`] as a function (serde's `default` takes a path).
    pub const fn absent() -> Field {
        Field::ABSENT
    }

    pub const fn is_present(&self) -> bool {
        self.present != 0
    }
}

/// The bytes of one object that hold the fields a record takes from it, fetched by one
/// `bpf_probe_read_kernel` instead of one call per field: helper calls are most of a
/// streaming program's cost. `off` is 8-aligned; `len == 0` means the fields are read one by
/// one (none present, or spread wider than [`SPAN_MAX`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Span {
    pub off: u32,
    pub len: u32,
}

/// The largest [`Span`]: the programs' buffer for it sits on their 512-byte stack.
pub const SPAN_MAX: u32 = 128;

impl Span {
    pub const NONE: Span = Span { off: 0, len: 0 };

    /// [`Span::NONE`] as a function (serde's `default` takes a path).
    pub const fn none() -> Span {
        Span::NONE
    }

    /// The span covering every present field of `fields`, if it fits in [`SPAN_MAX`] and
    /// every field is aligned to its size within it (the programs read their copy on the
    /// stack, where the verifier takes aligned accesses only).
    pub fn covering(fields: &[Field]) -> Span {
        let present = || fields.iter().filter(|f| f.is_present());
        let Some(lo) = present().map(|f| f.off).min() else {
            return Span::NONE;
        };
        let lo = lo & !7;
        let hi = present()
            .map(|f| u64::from(f.off) + u64::from(f.size))
            .max()
            .unwrap_or(0);
        let aligned = present()
            .all(|f| matches!(f.size, 1 | 2 | 4 | 8) && (f.off - lo) % u32::from(f.size) == 0);
        match u32::try_from(hi - u64::from(lo)) {
            Ok(len) if len > 0 && len <= SPAN_MAX && aligned => Span { off: lo, len },
            _ => Span::NONE,
        }
    }
}

/// The kernel layout the programs need, one [`Field`] per struct member they read and the
/// values of the genirq state bits. Resolved from the running kernel's BTF (vmlinux, plus
/// module BTF for Hyper-V types) by userspace, and written into the `LAYOUT` global of the
/// eBPF object before load. Field names read `<struct>_<member path>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Layout {
    // struct irq_data
    pub irq_data_irq: Field,
    pub irq_data_hwirq: Field,
    pub irq_data_common: Field,
    pub irq_data_chip: Field,
    pub irq_data_domain: Field,
    pub irq_data_chip_data: Field,
    // struct irq_common_data
    pub irq_common_state: Field,
    pub irq_common_msi_desc: Field,
    // struct irq_desc
    pub irq_desc_irq_data: Field,
    // struct msi_desc
    pub msi_desc_irq: Field,
    pub msi_desc_dev: Field,
    pub msi_desc_msi_index: Field,
    pub msi_desc_msi_mask: Field,
    pub msi_desc_msix_ctrl: Field,
    pub msi_desc_is_msix: Field,
    // struct msi_msg
    pub msi_msg_address_lo: Field,
    pub msi_msg_address_hi: Field,
    pub msi_msg_data: Field,
    // struct device: `kobj.name` is a `const char *`.
    pub device_kobj_name: Field,
    pub device_driver_data: Field,
    // struct pci_dev
    pub pci_dev_dev: Field,
    pub pci_dev_current_state: Field,
    pub pci_dev_msi_enabled: Field,
    pub pci_dev_msix_enabled: Field,
    // Hyper-V (module BTF): struct hv_device, struct hv_pcibus_device
    pub hv_device_device: Field,
    pub hv_pcibus_state: Field,
    // Hyper-V (module BTF): struct pci_response, the host's reply to a request. Appended to
    // the Hyper-V group after the first trace files were written: a header without it reads
    // as absent.
    #[cfg_attr(feature = "user", serde(default = "Field::absent"))]
    pub pci_response_status: Field,
    // tracepoint records (struct trace_event_raw_*); strings are __data_loc u32 fields, except
    // suspend_resume's `action`, a plain `const char *` on every kernel checked (5.10 to 6.18)
    pub tp_suspend_resume_action: Field,
    pub tp_suspend_resume_val: Field,
    pub tp_suspend_resume_start: Field,
    pub tp_pm_start_device: Field,
    pub tp_pm_start_driver: Field,
    pub tp_pm_start_pm_ops: Field,
    pub tp_pm_start_event: Field,
    pub tp_pm_end_device: Field,
    pub tp_pm_end_driver: Field,
    pub tp_pm_end_error: Field,
    pub tp_vector_mod_irq: Field,
    pub tp_vector_mod_vector: Field,
    pub tp_vector_mod_cpu: Field,
    pub tp_vector_mod_prev_vector: Field,
    pub tp_vector_mod_prev_cpu: Field,
    pub tp_vector_config_irq: Field,
    pub tp_vector_config_vector: Field,
    pub tp_vector_config_cpu: Field,
    pub tp_vector_config_apicdest: Field,
    pub tp_vector_activate_irq: Field,
    pub tp_vector_activate_is_managed: Field,
    pub tp_vector_activate_can_reserve: Field,
    pub tp_vector_activate_reserve: Field,
    pub tp_irq_handler_entry_irq: Field,
    // enum irqd_bits values (bit masks in irq_common_data.state_use_accessors); 0 = unknown
    pub irqd_irq_masked: u32,
    pub irqd_irq_disabled: u32,
    pub irqd_affinity_managed: u32,
    pub irqd_managed_shutdown: u32,
    // What one read of each object covers ([`Layout::with_spans`]). Only the programs use
    // them: trace files written before they existed read as none.
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_irq_data: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_irq_common: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_msi_desc: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_msi_msg: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_tp_vector_mod: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_tp_vector_config: Span,
    #[cfg_attr(feature = "user", serde(default = "Span::none"))]
    pub span_tp_vector_activate: Span,
}

impl Layout {
    pub const ABSENT: Layout = Layout {
        irq_data_irq: Field::ABSENT,
        irq_data_hwirq: Field::ABSENT,
        irq_data_common: Field::ABSENT,
        irq_data_chip: Field::ABSENT,
        irq_data_domain: Field::ABSENT,
        irq_data_chip_data: Field::ABSENT,
        irq_common_state: Field::ABSENT,
        irq_common_msi_desc: Field::ABSENT,
        irq_desc_irq_data: Field::ABSENT,
        msi_desc_irq: Field::ABSENT,
        msi_desc_dev: Field::ABSENT,
        msi_desc_msi_index: Field::ABSENT,
        msi_desc_msi_mask: Field::ABSENT,
        msi_desc_msix_ctrl: Field::ABSENT,
        msi_desc_is_msix: Field::ABSENT,
        msi_msg_address_lo: Field::ABSENT,
        msi_msg_address_hi: Field::ABSENT,
        msi_msg_data: Field::ABSENT,
        device_kobj_name: Field::ABSENT,
        device_driver_data: Field::ABSENT,
        pci_dev_dev: Field::ABSENT,
        pci_dev_current_state: Field::ABSENT,
        pci_dev_msi_enabled: Field::ABSENT,
        pci_dev_msix_enabled: Field::ABSENT,
        hv_device_device: Field::ABSENT,
        hv_pcibus_state: Field::ABSENT,
        pci_response_status: Field::ABSENT,
        tp_suspend_resume_action: Field::ABSENT,
        tp_suspend_resume_val: Field::ABSENT,
        tp_suspend_resume_start: Field::ABSENT,
        tp_pm_start_device: Field::ABSENT,
        tp_pm_start_driver: Field::ABSENT,
        tp_pm_start_pm_ops: Field::ABSENT,
        tp_pm_start_event: Field::ABSENT,
        tp_pm_end_device: Field::ABSENT,
        tp_pm_end_driver: Field::ABSENT,
        tp_pm_end_error: Field::ABSENT,
        tp_vector_mod_irq: Field::ABSENT,
        tp_vector_mod_vector: Field::ABSENT,
        tp_vector_mod_cpu: Field::ABSENT,
        tp_vector_mod_prev_vector: Field::ABSENT,
        tp_vector_mod_prev_cpu: Field::ABSENT,
        tp_vector_config_irq: Field::ABSENT,
        tp_vector_config_vector: Field::ABSENT,
        tp_vector_config_cpu: Field::ABSENT,
        tp_vector_config_apicdest: Field::ABSENT,
        tp_vector_activate_irq: Field::ABSENT,
        tp_vector_activate_is_managed: Field::ABSENT,
        tp_vector_activate_can_reserve: Field::ABSENT,
        tp_vector_activate_reserve: Field::ABSENT,
        tp_irq_handler_entry_irq: Field::ABSENT,
        irqd_irq_masked: 0xffff_ffff,
        irqd_irq_disabled: 0xffff_ffff,
        irqd_affinity_managed: 0xffff_ffff,
        irqd_managed_shutdown: 0xffff_ffff,
        span_irq_data: Span::NONE,
        span_irq_common: Span::NONE,
        span_msi_desc: Span::NONE,
        span_msi_msg: Span::NONE,
        span_tp_vector_mod: Span::NONE,
        span_tp_vector_config: Span::NONE,
        span_tp_vector_activate: Span::NONE,
    };

    /// The objects the programs fetch in one read: a name, the span, and the fields it must
    /// cover (padded with absent ones). [`Layout::with_spans`] works the spans out from it.
    pub fn span_groups(&self) -> [(&'static str, Span, [Field; 6]); 7] {
        const NO: Field = Field::ABSENT;
        [
            (
                "irq_data",
                self.span_irq_data,
                [
                    self.irq_data_irq,
                    self.irq_data_hwirq,
                    self.irq_data_common,
                    self.irq_data_chip,
                    self.irq_data_domain,
                    self.irq_data_chip_data,
                ],
            ),
            (
                "irq_common_data",
                self.span_irq_common,
                [
                    self.irq_common_state,
                    self.irq_common_msi_desc,
                    NO,
                    NO,
                    NO,
                    NO,
                ],
            ),
            (
                "msi_desc",
                self.span_msi_desc,
                [
                    self.msi_desc_irq,
                    self.msi_desc_dev,
                    self.msi_desc_msi_index,
                    self.msi_desc_msi_mask,
                    self.msi_desc_msix_ctrl,
                    self.msi_desc_is_msix,
                ],
            ),
            (
                "msi_msg",
                self.span_msi_msg,
                [
                    self.msi_msg_address_lo,
                    self.msi_msg_address_hi,
                    self.msi_msg_data,
                    NO,
                    NO,
                    NO,
                ],
            ),
            (
                "vector_mod record",
                self.span_tp_vector_mod,
                [
                    self.tp_vector_mod_irq,
                    self.tp_vector_mod_vector,
                    self.tp_vector_mod_cpu,
                    self.tp_vector_mod_prev_vector,
                    self.tp_vector_mod_prev_cpu,
                    NO,
                ],
            ),
            (
                "vector_config record",
                self.span_tp_vector_config,
                [
                    self.tp_vector_config_irq,
                    self.tp_vector_config_vector,
                    self.tp_vector_config_cpu,
                    self.tp_vector_config_apicdest,
                    NO,
                    NO,
                ],
            ),
            (
                "vector_activate record",
                self.span_tp_vector_activate,
                [
                    self.tp_vector_activate_irq,
                    self.tp_vector_activate_is_managed,
                    self.tp_vector_activate_can_reserve,
                    self.tp_vector_activate_reserve,
                    NO,
                    NO,
                ],
            ),
        ]
    }

    /// The layout with its spans worked out from its fields: each covers exactly the fields
    /// the programs take from that object in one read.
    pub fn with_spans(mut self) -> Layout {
        [
            self.span_irq_data,
            self.span_irq_common,
            self.span_msi_desc,
            self.span_msi_msg,
            self.span_tp_vector_mod,
            self.span_tp_vector_config,
            self.span_tp_vector_activate,
        ] = self
            .span_groups()
            .map(|(_, _, fields)| Span::covering(&fields));
        self
    }
}

/// Names of the maps and globals in the eBPF object.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const HITS: &str = "HITS";
    pub const LOST: &str = "LOST";
    pub const IRQ_COUNTS: &str = "IRQ_COUNTS";
    pub const IRQ_SPILL: &str = "IRQ_SPILL";
    pub const LAYOUT: &str = "LAYOUT";
}

/// Default ring buffer size: 16 MiB holds about 110,000 records, the burst of a suspend
/// cycle on a guest with thousands of vectors while userspace is frozen.
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;
/// Slots of the handler-count array, one per IRQ number below it (64 KiB, scanned every
/// second). IRQ numbers stay below `nr_irqs`, which x86 sizes from the CPUs and IOAPIC pins
/// at boot and which stays far below this on guests of this size; IRQs past it spill into a
/// hash.
pub const IRQ_COUNT_ENTRIES: u32 = 8192;
/// Entries of the per-CPU hash that counts IRQs numbered past the array.
pub const IRQ_SPILL_ENTRIES: u32 = 8192;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data, no padding-dependent invariants, every bit pattern valid.
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::Layout {}
}

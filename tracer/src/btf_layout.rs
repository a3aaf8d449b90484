//! Resolves, from the running kernel's BTF, every struct offset the eBPF programs read: the
//! `tracer_common::Layout` global, plus a report saying which member path resolved on this
//! kernel, from which BTF (vmlinux or a module's split BTF), and why a member is absent.
//!
//! The programs compile in no offsets (Rust eBPF has no CO-RE field relocations), so this is
//! the only place that knows the kernel's struct layouts. Each `Layout` member has a list of
//! candidate paths, newest kernel first; the first that resolves wins. A path is
//! `struct.member.member…`: it steps into embedded structs, looks through anonymous structs and
//! unions (as C does), and sees through typedef/const/volatile. Offsets are in bytes from the
//! start of the outermost struct. Bitfields give the byte holding their first bit in `off`,
//! the bit within it in `bit_off`, their width in `bit_len`, and the bytes to read (1, 2, 4 or
//! 8, little endian) in `size`. Embedded structs (`pci_dev.dev`) are used for their address
//! only: their `size` is 0.
//!
//! A member no candidate resolves is absent (`present == 0`) with the reason in its report;
//! the programs then never read it. Nothing here fails because a kernel lacks a member: only
//! missing or unreadable BTF is an error.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::btf::{Btf, Kind, Member, Type};
use serde::{Deserialize, Serialize};
use tracer_common::{Field, Layout};

/// Where the kernel exposes its BTF: `vmlinux` and one split BTF file per loaded module.
pub const SYS_BTF_DIR: &str = "/sys/kernel/btf";

/// Modules whose BTF holds the Hyper-V types (`struct hv_device`, `struct hv_pcibus_device`)
/// when they are not built in.
pub const HYPERV_MODULES: [&str; 2] = ["hv_vmbus", "pci_hyperv"];

/// How one `Layout` member was resolved, or why it was not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldReport {
    /// The `Layout` member, e.g. `msi_desc_msix_ctrl`.
    pub name: String,
    /// The candidate that resolved, e.g. `msi_desc.pci.msix_ctrl` (for an enumerator, its
    /// name, e.g. `IRQD_IRQ_MASKED`).
    pub path: Option<String>,
    pub present: bool,
    /// Why the member is absent: each candidate tried and what stopped it.
    pub reason: Option<String>,
    /// The BTF it came from: `vmlinux` or a module name.
    pub source: Option<String>,
}

/// The layout handed to the eBPF programs, and how each of its members was found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResolvedLayout {
    pub layout: Layout,
    /// One report per `Layout` member, in declaration order.
    pub fields: Vec<FieldReport>,
    /// The BTF objects consulted: `vmlinux`, then the modules given.
    pub sources: Vec<String>,
    /// Enumerators of `enum hv_pcibus_state` (name, value) as this kernel numbers them, to
    /// name the raw value read through `hv_pcibus_state`; empty when pci_hyperv's BTF is
    /// not available.
    #[serde(default)]
    pub hv_pcibus_states: Vec<(String, u64)>,
    /// What the rules' gates decide on: members and functions of this kernel ([`BtfFact`]).
    #[serde(default)]
    pub facts: Vec<BtfFact>,
}

impl ResolvedLayout {
    /// Members this kernel does not have (with their reason).
    pub fn missing(&self) -> impl Iterator<Item = &FieldReport> {
        self.fields.iter().filter(|f| !f.present)
    }

    /// Whether the `Layout` member `name` (e.g. `pci_dev_msi_enabled`) resolved.
    pub fn is_present(&self, name: &str) -> bool {
        self.report(name).is_some_and(|f| f.present)
    }

    /// The report of the `Layout` member `name`.
    pub fn report(&self, name: &str) -> Option<&FieldReport> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether the fact `name` (e.g. [`HV_STATE_LOCK`]) holds on this kernel.
    pub fn fact(&self, name: &str) -> FactState {
        fact_state(&self.facts, name)
    }

    /// The name of a raw `hv_pcibus_state` value, when pci_hyperv's BTF says it.
    pub fn hv_pcibus_state_name(&self, value: u64) -> Option<&str> {
        self.hv_pcibus_states
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| n.as_str())
    }
}

/// The state of the fact `name` among `facts`; unknown when it is not listed (a trace file
/// written before msitrace kept facts).
pub fn fact_state(facts: &[BtfFact], name: &str) -> FactState {
    facts
        .iter()
        .find(|f| f.name == name)
        .map_or(FactState::Unknown, |f| f.state)
}

/// Whether the kernel has a struct member or a function, as its BTF shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactState {
    Present,
    /// The BTF that would hold it was read and it is not there.
    Absent,
    /// No BTF consulted holds the struct (or the module's functions): a module not loaded when
    /// msitrace started, a kernel without module BTF, or a trace recorded before msitrace kept
    /// facts.
    Unknown,
}

/// A fact about the kernel that no eBPF program reads but a rule's gate decides on: whether a
/// member or a function exists. Distribution kernels backport, so a version number says less
/// than what the BTF of the running kernel and its modules shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BtfFact {
    /// `struct.member` (e.g. `hv_pcibus_device.state_lock`) or `function()`.
    pub name: String,
    pub state: FactState,
    /// The BTF it came from (`vmlinux` or a module name), when present or absent.
    pub source: Option<String>,
    /// Why it is absent or unknown.
    pub reason: Option<String>,
}

/// `hv_pcibus_device.state_lock`: the per-bus mutex of the series that also brought
/// hv_irq_unmask's early return for a vector without a remapping entry (2738d5ab7929,
/// upstream 6.4, backported to 6.1 stable with it). H5's gate.
pub const HV_STATE_LOCK: &str = "hv_pcibus_device.state_lock";
/// `hv_pci_restore_msi_msg()`: the per-function re-compose 915cff7f38c5 added to pci-hyperv.
/// Kept in the trace header for the reader (which driver was traced); no gate uses it.
pub const HV_RESTORE_MSI_MSG: &str = "hv_pci_restore_msi_msg()";

/// `hv_pcie_init_dev_msi_info()`: pci-hyperv as a per-device MSI parent domain (upstream 6.17,
/// "PCI: hv: Switch to msi_create_parent_irq_domain()"). From that series on, hv_irq_unmask no
/// longer calls pci_msi_unmask_irq: the unmask goes through the device's own domain. H4's gate.
pub const HV_MSI_PARENT: &str = "hv_pcie_init_dev_msi_info()";

enum FactKind {
    Member,
    Function,
}

struct FactSpec {
    name: &'static str,
    kind: FactKind,
    /// Modules whose BTF may hold it when vmlinux does not.
    modules: &'static [&'static str],
}

static FACTS: &[FactSpec] = &[
    FactSpec {
        name: HV_STATE_LOCK,
        kind: FactKind::Member,
        modules: &["pci_hyperv"],
    },
    FactSpec {
        name: HV_RESTORE_MSI_MSG,
        kind: FactKind::Function,
        modules: &["pci_hyperv"],
    },
    FactSpec {
        name: HV_MSI_PARENT,
        kind: FactKind::Function,
        modules: &["pci_hyperv"],
    },
];

fn resolve_fact(spec: &FactSpec, sources: &[Source]) -> BtfFact {
    let fact = |state, source: Option<&str>, reason: Option<String>| BtfFact {
        name: spec.name.to_string(),
        state,
        source: source.map(str::to_string),
        reason,
    };
    let given: Vec<&str> = sources.iter().map(|s| s.name).collect();
    let missing_modules: Vec<&str> = spec
        .modules
        .iter()
        .copied()
        .filter(|m| !given.contains(m))
        .collect();
    let not_given = || {
        if missing_modules.is_empty() {
            String::new()
        } else {
            format!(
                "; no BTF for module {} (not loaded, or no CONFIG_DEBUG_INFO_BTF_MODULES)",
                missing_modules.join(", ")
            )
        }
    };
    match spec.kind {
        FactKind::Member => {
            let (root, path) = spec.name.split_once('.').unwrap_or((spec.name, ""));
            let members: Vec<&str> = path.split('.').filter(|m| !m.is_empty()).collect();
            let mut why = None;
            for source in sources {
                for st in composites_named(source.btf, root) {
                    match walk(source.btf, st, root, &members) {
                        Ok(_) => return fact(FactState::Present, Some(source.name), None),
                        Err(e) => why = Some((source.name, e)),
                    }
                }
            }
            match why {
                // The struct is there without the member: the kernel does not have it.
                Some((source, e)) => fact(FactState::Absent, Some(source), Some(e)),
                None => fact(
                    FactState::Unknown,
                    None,
                    Some(format!(
                        "no struct {root} in the BTF of {}{}",
                        given.join(", "),
                        not_given()
                    )),
                ),
            }
        }
        FactKind::Function => {
            let func = spec.name.trim_end_matches("()");
            for source in sources {
                let found = source
                    .btf
                    .types_by_name(func)
                    .iter()
                    .any(|t| t.kind == Kind::Func);
                if found {
                    return fact(FactState::Present, Some(source.name), None);
                }
            }
            // A function missing from BTF may also have been inlined: only absent when every
            // BTF that could hold it was read.
            if missing_modules.is_empty() {
                fact(
                    FactState::Absent,
                    None,
                    Some(format!(
                        "no function {func} in the BTF of {}",
                        given.join(", ")
                    )),
                )
            } else {
                fact(
                    FactState::Unknown,
                    None,
                    Some(format!(
                        "no function {func} in the BTF of {}{}",
                        given.join(", "),
                        not_given()
                    )),
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "this kernel has no BTF ({} is missing): msitrace needs CONFIG_DEBUG_INFO_BTF=y",
        .0.display()
    )]
    NoBtf(PathBuf),
    #[error("cannot read BTF file {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },
    #[error(
        "{} is not usable BTF ({reason}): give raw BTF as in /sys/kernel/btf/, and module BTF \
         of the same kernel build as vmlinux",
        path.display()
    )]
    Parse { path: PathBuf, reason: String },
}

/// What a member must be for the programs to read it the way they do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// An integer, enum or bool of 1, 2, 4 or 8 bytes, or a bitfield.
    Int,
    /// A pointer.
    Ptr,
    /// A tracepoint string: `__data_loc` (a u32) or a plain `const char *`.
    Str,
    /// An embedded struct or union, used for its address only.
    Embedded,
    /// An integer argument of a raw tracepoint, `btf_trace_<name>.<n>`: the n-th argument of
    /// the tracepoint's `TP_PROTO`, from the `btf_trace_<name>` typedef the kernel keeps for
    /// each tracepoint (5.5 and later). `off` is the argument's byte offset in
    /// `bpf_raw_tracepoint_args` (8 per argument).
    TpArg,
}

struct FieldSpec {
    name: &'static str,
    /// Newest layout first.
    candidates: &'static [&'static str],
    want: Want,
    /// Modules whose BTF may hold the root struct when it is not in vmlinux.
    modules: &'static [&'static str],
    slot: fn(&mut Layout) -> &mut Field,
}

struct EnumSpec {
    name: &'static str,
    enumerator: &'static str,
    slot: fn(&mut Layout) -> &mut u32,
}

/// The table below, one line per `Layout` member:
/// `member: Want ["candidate", …] [in ["module", …]];`
macro_rules! field_specs {
    ($($member:ident: $want:ident [$($path:literal),+] $(in [$($module:literal),+])?;)*) => {
        &[$(FieldSpec {
            name: stringify!($member),
            candidates: &[$($path),+],
            want: Want::$want,
            modules: &[$($($module),+)?],
            slot: |l: &mut Layout| &mut l.$member,
        },)*]
    };
}

macro_rules! enumerator {
    ($member:ident, $enumerator:literal) => {
        EnumSpec {
            name: stringify!($member),
            enumerator: $enumerator,
            slot: |l: &mut Layout| &mut l.$member,
        }
    };
}

/// Every `Field` of `Layout`, in declaration order, with its candidate paths.
static FIELDS: &[FieldSpec] = field_specs! {
    irq_data_irq: Int ["irq_data.irq"];
    irq_data_hwirq: Int ["irq_data.hwirq"];
    irq_data_common: Ptr ["irq_data.common"];
    irq_data_chip: Ptr ["irq_data.chip"];
    irq_data_domain: Ptr ["irq_data.domain"];
    irq_data_chip_data: Ptr ["irq_data.chip_data"];
    irq_common_state: Int ["irq_common_data.state_use_accessors"];
    irq_common_msi_desc: Ptr ["irq_common_data.msi_desc"];
    irq_desc_irq_data: Embedded ["irq_desc.irq_data"];
    msi_desc_irq: Int ["msi_desc.irq"];
    msi_desc_dev: Ptr ["msi_desc.dev"];
    // ≥5.17 msi_index; before, MSI-X entries carried their table index in msi_attrib.
    msi_desc_msi_index: Int ["msi_desc.msi_index", "msi_desc.msi_attrib.entry_nr"];
    // The mask cache: ≥5.17 under `pci.` (6.1: a plain member; 6.12: in an anonymous union),
    // 5.15–5.16 a union at the top reached through anonymous members, ≤5.14 one `masked`
    // word that held the MSI mask bits or the MSI-X vector control word, whichever the
    // entry was.
    msi_desc_msi_mask: Int ["msi_desc.pci.msi_mask", "msi_desc.msi_mask", "msi_desc.masked"];
    msi_desc_msix_ctrl: Int ["msi_desc.pci.msix_ctrl", "msi_desc.msix_ctrl", "msi_desc.masked"];
    msi_desc_is_msix: Int ["msi_desc.pci.msi_attrib.is_msix", "msi_desc.msi_attrib.is_msix"];
    // Inside anonymous unions with the arch_msi_msg_* views since 5.11.
    msi_msg_address_lo: Int ["msi_msg.address_lo"];
    msi_msg_address_hi: Int ["msi_msg.address_hi"];
    msi_msg_data: Int ["msi_msg.data"];
    device_kobj_name: Ptr ["device.kobj.name"];
    device_driver_data: Ptr ["device.driver_data"];
    pci_dev_dev: Embedded ["pci_dev.dev"];
    pci_dev_current_state: Int ["pci_dev.current_state"];
    pci_dev_msi_enabled: Int ["pci_dev.msi_enabled"];
    pci_dev_msix_enabled: Int ["pci_dev.msix_enabled"];
    // Both modules' BTF carry struct hv_device (pci_hyperv uses it too); vmlinux does when
    // hv_vmbus is built in.
    hv_device_device: Embedded ["hv_device.device"] in ["hv_vmbus", "pci_hyperv"];
    hv_pcibus_state: Int ["hv_pcibus_device.state"] in ["pci_hyperv"];
    // The host's status in its reply to a request (hv_pci_compose_compl reads it).
    pci_response_status: Int ["pci_response.status"] in ["pci_hyperv"];
    // power:suspend_resume keeps `action` as a pointer to a static string (5.10 to 6.18), not
    // as __data_loc; the programs tell the two encodings apart by the size.
    tp_suspend_resume_action: Str ["trace_event_raw_suspend_resume.action"];
    tp_suspend_resume_val: Int ["trace_event_raw_suspend_resume.val"];
    tp_suspend_resume_start: Int ["trace_event_raw_suspend_resume.start"];
    tp_pm_start_device: Str ["trace_event_raw_device_pm_callback_start.__data_loc_device"];
    tp_pm_start_driver: Str ["trace_event_raw_device_pm_callback_start.__data_loc_driver"];
    tp_pm_start_pm_ops: Str ["trace_event_raw_device_pm_callback_start.__data_loc_pm_ops"];
    tp_pm_start_event: Int ["trace_event_raw_device_pm_callback_start.event"];
    tp_pm_end_device: Str ["trace_event_raw_device_pm_callback_end.__data_loc_device"];
    tp_pm_end_driver: Str ["trace_event_raw_device_pm_callback_end.__data_loc_driver"];
    tp_pm_end_error: Int ["trace_event_raw_device_pm_callback_end.error"];
    // vector_update and vector_clear share the vector_mod class.
    tp_vector_mod_irq: Int ["trace_event_raw_vector_mod.irq"];
    tp_vector_mod_vector: Int ["trace_event_raw_vector_mod.vector"];
    tp_vector_mod_cpu: Int ["trace_event_raw_vector_mod.cpu"];
    tp_vector_mod_prev_vector: Int ["trace_event_raw_vector_mod.prev_vector"];
    tp_vector_mod_prev_cpu: Int ["trace_event_raw_vector_mod.prev_cpu"];
    tp_vector_config_irq: Int ["trace_event_raw_vector_config.irq"];
    tp_vector_config_vector: Int ["trace_event_raw_vector_config.vector"];
    tp_vector_config_cpu: Int ["trace_event_raw_vector_config.cpu"];
    tp_vector_config_apicdest: Int ["trace_event_raw_vector_config.apicdest"];
    // vector_activate and vector_deactivate share the vector_activate class.
    tp_vector_activate_irq: Int ["trace_event_raw_vector_activate.irq"];
    tp_vector_activate_is_managed: Int ["trace_event_raw_vector_activate.is_managed"];
    tp_vector_activate_can_reserve: Int ["trace_event_raw_vector_activate.can_reserve"];
    tp_vector_activate_reserve: Int ["trace_event_raw_vector_activate.reserve"];
    // A raw tracepoint: the handler counter runs on every device interrupt, and the raw
    // form skips the trace record the classic one fills before each run.
    tp_irq_handler_entry_irq: TpArg ["btf_trace_irq_handler_entry.0"];
};

/// The genirq state bits, enumerators of an anonymous enum in include/linux/irq.h: they can
/// only be found by scanning vmlinux's enums.
static ENUMERATORS: &[EnumSpec] = &[
    enumerator!(irqd_irq_masked, "IRQD_IRQ_MASKED"),
    enumerator!(irqd_irq_disabled, "IRQD_IRQ_DISABLED"),
    enumerator!(irqd_affinity_managed, "IRQD_AFFINITY_MANAGED"),
    enumerator!(irqd_managed_shutdown, "IRQD_MANAGED_SHUTDOWN"),
];

/// The names of every `Layout` member this resolver fills, in declaration order.
pub fn member_names() -> impl Iterator<Item = &'static str> {
    FIELDS
        .iter()
        .map(|f| f.name)
        .chain(ENUMERATORS.iter().map(|e| e.name))
}

/// Resolve the layout from parsed BTF: `vmlinux` and the split BTF of modules (parsed with
/// `vmlinux` as their base), named as in /sys/kernel/btf (`pci_hyperv`, `hv_vmbus`).
pub fn resolve(vmlinux: &Btf, modules: &[(&str, &Btf)]) -> ResolvedLayout {
    let mut sources = vec![Source {
        name: "vmlinux",
        btf: vmlinux,
    }];
    sources.extend(modules.iter().map(|&(name, btf)| Source { name, btf }));
    let ptr_size = pointer_size(vmlinux);

    let mut layout = Layout::ABSENT;
    let mut fields = Vec::with_capacity(FIELDS.len() + ENUMERATORS.len());
    for spec in FIELDS {
        let (field, report) = resolve_field(spec, &sources, ptr_size);
        *(spec.slot)(&mut layout) = field;
        fields.push(report);
    }

    let values = find_enumerators(vmlinux, ENUMERATORS.iter().map(|e| e.enumerator));
    for (spec, value) in ENUMERATORS.iter().zip(values) {
        // Layout's bit masks are u32 (irq_common_data.state_use_accessors is an unsigned int).
        let value = value.and_then(|v| u32::try_from(v).ok());
        *(spec.slot)(&mut layout) = value.unwrap_or(0);
        fields.push(FieldReport {
            name: spec.name.to_string(),
            path: value.map(|_| spec.enumerator.to_string()),
            present: value.is_some(),
            reason: value
                .is_none()
                .then(|| format!("no enumerator {} in vmlinux BTF", spec.enumerator)),
            source: value.map(|_| "vmlinux".to_string()),
        });
    }

    let hv_pcibus_states = sources
        .iter()
        .find_map(|s| named_enum(s.btf, "hv_pcibus_state"))
        .unwrap_or_default();

    let facts = FACTS.iter().map(|f| resolve_fact(f, &sources)).collect();

    ResolvedLayout {
        layout: layout.with_spans(),
        fields,
        sources: sources.iter().map(|s| s.name.to_string()).collect(),
        hv_pcibus_states,
        facts,
    }
}

/// Resolve the layout from BTF files: raw vmlinux BTF and module split BTF built against it.
pub fn resolve_files(
    vmlinux: &Path,
    modules: &[(&str, &Path)],
) -> Result<ResolvedLayout, LayoutError> {
    let base = parse(vmlinux, &read(vmlinux)?, None)?;
    let mut parsed = Vec::with_capacity(modules.len());
    for &(name, path) in modules {
        parsed.push((name, parse(path, &read(path)?, Some(&base))?));
    }
    let refs: Vec<(&str, &Btf)> = parsed.iter().map(|(n, b)| (*n, b)).collect();
    Ok(resolve(&base, &refs))
}

/// Resolve the layout of the running kernel: /sys/kernel/btf/vmlinux, plus the split BTF of
/// `hv_vmbus` and `pci_hyperv` when those modules are loaded.
/// `MSITRACE_BTF_DIR` replaces /sys/kernel/btf: for a kernel whose BTF was extracted elsewhere,
/// and for the tests of a kernel without BTF.
pub fn resolve_running() -> Result<ResolvedLayout, LayoutError> {
    let dir = btf_dir();
    let vmlinux_path = dir.join("vmlinux");
    let bytes = match fs::read(&vmlinux_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LayoutError::NoBtf(vmlinux_path));
        }
        Err(err) => {
            return Err(LayoutError::Read {
                path: vmlinux_path,
                err,
            });
        }
    };
    let base = parse(&vmlinux_path, &bytes, None)?;
    let mut parsed = Vec::new();
    for name in HYPERV_MODULES {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => parsed.push((name, parse(&path, &bytes, Some(&base))?)),
            // Not loaded (or unloaded since): its fields are reported absent, not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(LayoutError::Read { path, err }),
        }
    }
    let refs: Vec<(&str, &Btf)> = parsed.iter().map(|(n, b)| (*n, b)).collect();
    Ok(resolve(&base, &refs))
}

/// /sys/kernel/btf, or what `MSITRACE_BTF_DIR` names instead.
pub fn btf_dir() -> PathBuf {
    std::env::var_os("MSITRACE_BTF_DIR").map_or_else(|| PathBuf::from(SYS_BTF_DIR), PathBuf::from)
}

/// The functions a kernel's BTF describes: the symbol table of last resort when neither
/// /proc/kallsyms nor tracefs can be read.
#[derive(Debug, Default)]
pub struct BtfFunctions {
    /// (function, module); `None` for vmlinux.
    pub functions: Vec<(String, Option<String>)>,
    /// Module BTF files that could not be used, each with why.
    pub unreadable: Vec<String>,
}

/// The function names of `dir/vmlinux` and of every module BTF in `dir` for which `loaded`
/// says yes. Only vmlinux BTF is required; a bad module file is noted and skipped, since its
/// functions are merely reported absent then.
pub fn function_names(
    dir: &Path,
    loaded: impl Fn(&str) -> bool,
) -> Result<BtfFunctions, LayoutError> {
    let vmlinux_path = dir.join("vmlinux");
    let bytes = match fs::read(&vmlinux_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LayoutError::NoBtf(vmlinux_path));
        }
        Err(err) => {
            return Err(LayoutError::Read {
                path: vmlinux_path,
                err,
            });
        }
    };
    let base = parse(&vmlinux_path, &bytes, None)?;
    let mut out = BtfFunctions::default();
    collect_functions(&base, None, &mut out.functions);
    let entries = fs::read_dir(dir).map_err(|err| LayoutError::Read {
        path: dir.to_path_buf(),
        err,
    })?;
    let mut modules: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name != "vmlinux" && loaded(name))
        .collect();
    modules.sort();
    for module in modules {
        let path = dir.join(&module);
        match read(&path).and_then(|bytes| parse(&path, &bytes, Some(&base))) {
            Ok(btf) => {
                collect_functions(&btf, Some(&module), &mut out.functions);
            }
            Err(e) => out.unreadable.push(e.to_string()),
        }
    }
    Ok(out)
}

/// Push the name of every FUNC of `btf`'s own (for a module, its split part's).
fn collect_functions(btf: &Btf, module: Option<&str>, out: &mut Vec<(String, Option<String>)>) {
    for t in btf.ids().filter_map(|id| btf.ty(id).ok()) {
        if t.kind == Kind::Func
            && let Ok(name) = t.name()
            && !name.is_empty()
        {
            out.push((name.to_string(), module.map(str::to_string)));
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LayoutError> {
    fs::read(path).map_err(|err| LayoutError::Read {
        path: path.to_path_buf(),
        err,
    })
}

fn parse(path: &Path, bytes: &[u8], base: Option<&Btf>) -> Result<Btf, LayoutError> {
    match base {
        None => Btf::from_bytes(bytes),
        Some(base) => Btf::from_split_bytes(bytes, base),
    }
    .map_err(|reason| LayoutError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

struct Source<'a> {
    name: &'a str,
    btf: &'a Btf,
}

/// A resolved member: its bit offset from the start of the root struct, its width when it
/// is a bitfield, and its type with typedefs and qualifiers stripped.
struct Resolved<'a> {
    bit_off: u64,
    bitfield: Option<u32>,
    ty: Type<'a>,
}

fn resolve_field(spec: &FieldSpec, sources: &[Source], ptr_size: u32) -> (Field, FieldReport) {
    let mut failures = Vec::new();
    for path in spec.candidates {
        match resolve_candidate(path, spec.want, sources, ptr_size) {
            Ok((field, source)) => {
                let report = FieldReport {
                    name: spec.name.to_string(),
                    path: Some(path.to_string()),
                    present: true,
                    reason: None,
                    source: Some(source.to_string()),
                };
                return (field, report);
            }
            Err(why) => failures.push(format!("{path}: {why}")),
        }
    }
    let given: Vec<&str> = sources.iter().map(|s| s.name).collect();
    let not_given: Vec<&str> = spec
        .modules
        .iter()
        .copied()
        .filter(|m| !given.contains(m))
        .collect();
    let mut reason = failures.join("; ");
    if !not_given.is_empty() {
        reason.push_str(&format!(
            "; no BTF for module {} (not loaded?)",
            not_given.join(", ")
        ));
    }
    let report = FieldReport {
        name: spec.name.to_string(),
        path: None,
        present: false,
        reason: Some(reason),
        source: None,
    };
    (Field::ABSENT, report)
}

/// Resolve one candidate path in the first source that has its root struct and the path.
fn resolve_candidate<'a>(
    path: &str,
    want: Want,
    sources: &'a [Source],
    ptr_size: u32,
) -> Result<(Field, &'a str), String> {
    if want == Want::TpArg {
        return resolve_tp_arg(path, sources);
    }
    let mut parts = path.split('.');
    let root = parts.next().unwrap_or_default();
    let members: Vec<&str> = parts.collect();
    let mut last_err = None;
    for source in sources {
        for root_struct in composites_named(source.btf, root) {
            match walk(source.btf, root_struct, root, &members)
                .and_then(|r| to_field(&r, want, ptr_size))
            {
                Ok(field) => return Ok((field, source.name)),
                Err(e) => last_err = Some(e),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| {
        let names: Vec<&str> = sources.iter().map(|s| s.name).collect();
        format!("no struct {root} in the BTF of {}", names.join(", "))
    }))
}

/// `btf_trace_<tp>.<n>`: the n-th `TP_PROTO` argument of a tracepoint, which must be an
/// integer. The typedef is a pointer to a prototype whose first parameter is the probe's
/// `void *__data`; prototype parameters carry no names, so the argument is taken by position.
fn resolve_tp_arg<'a>(path: &str, sources: &'a [Source]) -> Result<(Field, &'a str), String> {
    let (root, n) = path
        .split_once('.')
        .and_then(|(r, n)| Some((r, n.parse::<usize>().ok()?)))
        .ok_or_else(|| format!("`{path}` is not btf_trace_<tracepoint>.<argument index>"))?;
    let source = sources
        .iter()
        .find(|s| !s.btf.types_by_name(root).is_empty())
        .ok_or_else(|| {
            format!("no typedef {root} in the BTF (the tracepoint is absent, or the kernel predates 5.5)")
        })?;
    let btf = source.btf;
    let params = btf
        .types_by_name(root)
        .into_iter()
        .find_map(|t| {
            if t.kind != Kind::Typedef {
                return None;
            }
            let p = btf.ty(t.type_id()).ok().filter(|p| p.kind == Kind::Ptr)?;
            let f = btf.ty(p.type_id()).ok()?;
            (f.kind == Kind::FuncProto).then(|| f.params())
        })
        .ok_or_else(|| format!("{root} is not a typedef of a function pointer"))?;
    let id = *params.get(n + 1).ok_or_else(|| {
        format!(
            "{root} takes {} argument(s), not {}",
            params.len().saturating_sub(1),
            n + 1
        )
    })?;
    let arg = strip(btf, id)?;
    let size = match arg.kind {
        Kind::Int | Kind::Enum => arg.size(),
        other => {
            return Err(format!(
                "argument {n} of {root} is {}, expected an integer",
                other.name()
            ));
        }
    };
    if ![1, 2, 4, 8].contains(&size) {
        return Err(format!("argument {n} of {root} is {size} bytes"));
    }
    let field = Field {
        off: byte_off(n as u64 * 8)?,
        size: size as u8,
        bit_off: 0,
        bit_len: 0,
        present: 1,
    };
    Ok((field, source.name))
}

/// Structs and unions named `name` that have a body (not forward declarations).
fn composites_named<'a>(btf: &'a Btf, name: &str) -> Vec<Type<'a>> {
    btf.types_by_name(name)
        .into_iter()
        .filter(|t| matches!(t.kind, Kind::Struct | Kind::Union) && t.members().next().is_some())
        .collect()
}

fn walk<'a>(
    btf: &'a Btf,
    root: Type<'a>,
    root_name: &str,
    members: &[&str],
) -> Result<Resolved<'a>, String> {
    let (last, inner) = members.split_last().ok_or("the path names no member")?;
    let mut container = root;
    let mut container_name = format!("struct {root_name}");
    let mut bit_off = 0u64;
    for (i, name) in inner.iter().enumerate() {
        let (member, rel) = find_member(btf, container, name, 0)?
            .ok_or_else(|| format!("{container_name} has no member `{name}`"))?;
        bit_off += rel;
        container = strip(btf, member.type_id)?;
        if !matches!(container.kind, Kind::Struct | Kind::Union) {
            return Err(format!(
                "`{name}` of {container_name} is a {}, not a struct or union",
                container.kind.name()
            ));
        }
        container_name = format!("`{root_name}.{}`", members[..=i].join("."));
    }
    let (member, rel) = find_member(btf, container, last, 0)?
        .ok_or_else(|| format!("{container_name} has no member `{last}`"))?;
    // Bitfields are taken from the member (kind_flag encoding), which kernel BTF uses for
    // every struct that has them (5.10, 6.1, 6.12 and 6.18 checked), not from the older
    // encoding inside the int type.
    Ok(Resolved {
        bit_off: bit_off + rel,
        bitfield: member.bitfield_size.filter(|&n| n > 0),
        ty: strip(btf, member.type_id)?,
    })
}

/// Anonymous members nest a few levels at most; a deeper chain means a malformed BTF.
const MAX_ANON_DEPTH: usize = 8;

/// Find `name` among the members of `s`, looking through anonymous structs and unions as C
/// does. Returns the member and its bit offset from the start of `s`.
fn find_member(
    btf: &Btf,
    s: Type<'_>,
    name: &str,
    depth: usize,
) -> Result<Option<(Member, u64)>, String> {
    if depth > MAX_ANON_DEPTH {
        return Err("anonymous members nested too deep".to_string());
    }
    for m in s.members() {
        let m_name = btf.str_at(m.name_off)?;
        if m_name == name {
            return Ok(Some((m, u64::from(m.bit_offset))));
        }
        if m_name.is_empty() {
            let inner = strip(btf, m.type_id)?;
            if !matches!(inner.kind, Kind::Struct | Kind::Union) {
                continue;
            }
            if let Some((found, rel)) = find_member(btf, inner, name, depth + 1)? {
                return Ok(Some((found, u64::from(m.bit_offset) + rel)));
            }
        }
    }
    Ok(None)
}

/// Qualifier/typedef chains are short; this bounds a cyclic (malformed) one.
const MAX_TYPE_CHAIN: usize = 32;

/// The type `id` with typedefs, const, volatile, restrict and type tags stripped.
fn strip(btf: &Btf, id: u32) -> Result<Type<'_>, String> {
    let mut ty = btf.ty(id).map_err(|e| format!("type id {id}: {e}"))?;
    for _ in 0..MAX_TYPE_CHAIN {
        match ty.kind {
            Kind::Typedef | Kind::TypeTag | Kind::Const | Kind::Volatile | Kind::Restrict => {
                ty = btf.ty(ty.type_id())?;
            }
            _ => return Ok(ty),
        }
    }
    Err(format!("type id {id}: typedef chain too long"))
}

fn to_field(r: &Resolved, want: Want, ptr_size: u32) -> Result<Field, String> {
    if let Some(len) = r.bitfield {
        if want != Want::Int {
            return Err(format!("found a bitfield, expected {}", want_text(want)));
        }
        let bit_in_byte = r.bit_off % 8;
        let end = bit_in_byte + u64::from(len);
        // The programs read 1, 2, 4 or 8 bytes (little endian), then shift and mask.
        let size = [1u8, 2, 4, 8]
            .into_iter()
            .find(|&s| u64::from(s) * 8 >= end)
            .ok_or_else(|| {
                format!("a {len}-bit bitfield at bit {bit_in_byte} spans more than 8 bytes")
            })?;
        return Ok(Field {
            off: byte_off(r.bit_off / 8)?,
            size,
            bit_off: bit_in_byte as u8,
            bit_len: len as u8,
            present: 1,
        });
    }
    if !r.bit_off.is_multiple_of(8) {
        return Err(format!("not byte aligned (bit offset {})", r.bit_off));
    }
    let size = match (want, r.ty.kind) {
        (Want::Int, Kind::Int | Kind::Enum | Kind::Enum64) => r.ty.size(),
        (Want::Ptr | Want::Str, Kind::Ptr) => ptr_size,
        // __data_loc: offset from the record's start in the low 16 bits, length in the high 16.
        (Want::Str, Kind::Int) if r.ty.size() == 4 => 4,
        (Want::Embedded, Kind::Struct | Kind::Union) => 0,
        (want, kind) => {
            return Err(format!(
                "found {}, expected {}",
                kind.name(),
                want_text(want)
            ));
        }
    };
    if want != Want::Embedded && ![1, 2, 4, 8].contains(&size) {
        return Err(format!(
            "found {size} bytes, the programs read 1, 2, 4 or 8"
        ));
    }
    Ok(Field {
        off: byte_off(r.bit_off / 8)?,
        size: size as u8,
        bit_off: 0,
        bit_len: 0,
        present: 1,
    })
}

fn byte_off(off: u64) -> Result<u32, String> {
    u32::try_from(off).map_err(|_| format!("offset {off} does not fit in 32 bits"))
}

fn want_text(want: Want) -> &'static str {
    match want {
        Want::Int => "an integer",
        Want::Ptr => "a pointer",
        Want::Str => "a __data_loc u32 or a char pointer",
        Want::Embedded => "an embedded struct",
        Want::TpArg => "an integer tracepoint argument",
    }
}

/// BTF has no pointer kind with a size: take it from `long`, as libbpf does.
fn pointer_size(btf: &Btf) -> u32 {
    ["long unsigned int", "long int"]
        .iter()
        .flat_map(|n| btf.types_by_name(n))
        .find(|t| t.kind == Kind::Int)
        .map_or(8, |t| t.size())
}

/// The values of the enumerators `wanted`, found in one pass over the enums of `btf` that
/// stops as soon as all are found. Anonymous enums have no name to look up, so a scan is the
/// only way; it runs once per resolve.
fn find_enumerators<'a>(btf: &Btf, wanted: impl Iterator<Item = &'a str>) -> Vec<Option<u64>> {
    let wanted: Vec<&str> = wanted.collect();
    let mut found: Vec<Option<u64>> = vec![None; wanted.len()];
    for id in btf.ids() {
        if found.iter().all(Option::is_some) {
            break;
        }
        let Ok(ty) = btf.ty(id) else { break };
        for (name, value) in ty.enumerators() {
            if let Ok(name) = name
                && let Some(i) = wanted.iter().position(|w| *w == name)
            {
                found[i].get_or_insert(value);
            }
        }
    }
    found
}

/// The enumerators of the enum type `name`, in declaration order.
fn named_enum(btf: &Btf, name: &str) -> Option<Vec<(String, u64)>> {
    btf.types_by_name(name)
        .into_iter()
        .find(|t| matches!(t.kind, Kind::Enum | Kind::Enum64))
        .map(|t| {
            t.enumerators()
                .filter_map(|(n, v)| Some((n.ok()?.to_string(), v)))
                .collect()
        })
}

#[cfg(test)]
pub(crate) mod tests {
    //! Layouts no Debian kernel in the fixtures has (5.15–5.16's mask cache), and the corner
    //! cases of path resolution, on BTF blobs built here.

    use super::*;

    /// Just enough of a BTF encoder to describe the structs and functions under test
    /// (kernel.rs's symbol tests use it too).
    pub(crate) struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
        /// Where this object's strings start: the base's string length for split BTF.
        str_base: u32,
    }

    /// A struct or union member: name ("" = anonymous), type id, bit offset, bitfield width
    /// (0 = not a bitfield).
    type M<'a> = (&'a str, u32, u32, u32);

    impl BtfBuilder {
        pub(crate) fn new() -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
                str_base: 0,
            }
        }

        /// Split BTF (a module's) over `base`: ids and string offsets go on from the base's.
        pub(crate) fn split_over(base: &BtfBuilder) -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
                next_id: base.next_id,
                str_base: base.str_base + base.strings.len() as u32,
            }
        }

        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.str_base + self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn push(
            &mut self,
            name: &str,
            kind: u32,
            flag: bool,
            vlen: usize,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.name(name);
            let info = (u32::from(flag) << 31) | (kind << 24) | vlen as u32;
            for w in [name, info, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.push(name, 1, false, 0, size, &[size * 8])
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.push("", 2, false, 0, to, &[])
        }

        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.push(name, 8, false, 0, to, &[])
        }

        fn volatile(&mut self, to: u32) -> u32 {
            self.push("", 9, false, 0, to, &[])
        }

        fn constant(&mut self, to: u32) -> u32 {
            self.push("", 10, false, 0, to, &[])
        }

        fn composite(&mut self, union: bool, name: &str, size: u32, members: &[M]) -> u32 {
            let flag = members.iter().any(|m| m.3 > 0);
            let mut extra = Vec::new();
            for &(n, ty, bit, bits) in members {
                extra.extend([self.name(n), ty, if flag { bits << 24 | bit } else { bit }]);
            }
            let kind = if union { 5 } else { 4 };
            self.push(name, kind, flag, members.len(), size, &extra)
        }

        fn structure(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.composite(false, name, size, members)
        }

        fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            self.composite(true, name, size, members)
        }

        fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
            let mut extra = Vec::new();
            for &(n, v) in values {
                extra.extend([self.name(n), v]);
            }
            self.push(name, 6, false, values.len(), 4, &extra)
        }

        fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
            let mut extra = Vec::new();
            for &(n, v) in values {
                extra.extend([self.name(n), v as u32, (v >> 32) as u32]);
            }
            self.push(name, 19, false, values.len(), 8, &extra)
        }

        /// A `void name(void)` function with global linkage.
        pub(crate) fn func(&mut self, name: &str) -> u32 {
            let proto = self.push("", 13, false, 0, 0, &[]);
            self.push(name, 12, false, 1, proto, &[])
        }

        fn finish(&self) -> Btf {
            Btf::from_bytes(&self.bytes()).expect("the test encoder writes valid BTF")
        }

        /// The encoded object, as /sys/kernel/btf has it.
        pub(crate) fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            for w in [24, 0, type_len, type_len, self.strings.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// `struct msi_desc` as 5.15 and 5.16 have it: the mask cache in a union at the top,
    /// reached only through two anonymous levels, next to named alternatives that must not
    /// be looked into (`platform.msi_index`).
    fn kernel_5_15() -> Btf {
        Btf::from_bytes(&kernel_5_15_bytes()).expect("the test encoder writes valid BTF")
    }

    pub(crate) fn kernel_5_15_bytes() -> Vec<u8> {
        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        let u32_ = b.typedef("u32", uint);
        let uchar = b.int("unsigned char", 1);
        let u8_ = b.typedef("u8", uchar);
        let ushort = b.int("short unsigned int", 2);
        let u16_ = b.typedef("u16", ushort);
        b.int("long unsigned int", 8);
        let device = b.structure("device", 8, &[("init_name", uint, 0, 0)]);
        let device_ptr = b.ptr(device);
        let mask = b.union(
            "",
            4,
            &[("msi_mask", u32_, 0, 0), ("msix_ctrl", u32_, 0, 0)],
        );
        let attrib = b.structure(
            "",
            8,
            &[
                ("is_msix", u8_, 0, 1),
                ("multiple", u8_, 1, 3),
                ("multi_cap", u8_, 4, 3),
                ("can_mask", u8_, 7, 1),
                ("is_64", u8_, 8, 1),
                ("entry_nr", u16_, 16, 0),
                ("default_irq", uint, 32, 0),
            ],
        );
        let pci = b.structure("", 12, &[("", mask, 0, 0), ("msi_attrib", attrib, 32, 0)]);
        let platform = b.structure("platform_msi_desc", 4, &[("msi_index", u16_, 0, 0)]);
        let cached = b.union("", 12, &[("", pci, 0, 0), ("platform", platform, 0, 0)]);
        let const_uint = b.constant(uint);
        let cv_uint = b.volatile(const_uint);
        b.structure(
            "msi_desc",
            32,
            &[
                ("irq", cv_uint, 0, 0),
                ("dev", device_ptr, 64, 0),
                ("", cached, 128, 0),
            ],
        );
        b.bytes()
    }

    fn field_of(r: &ResolvedLayout, name: &str) -> (Option<String>, Field) {
        let json = serde_json::to_value(r.layout).expect("Layout serialises");
        let field: Field = serde_json::from_value(json[name].clone()).expect("a Field member");
        let report = r.report(name).expect("a report per member");
        (report.path.clone(), field)
    }

    #[test]
    fn a_struct_without_the_member_makes_the_fact_absent() {
        // pci-hyperv built in, from before the state_lock series: the struct is in vmlinux
        // without the member.
        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        b.structure("hv_pcibus_device", 8, &[("state", uint, 0, 0)]);
        let r = resolve(&b.finish(), &[]);
        assert_eq!(r.fact(HV_STATE_LOCK), FactState::Absent);
        let f = r.facts.iter().find(|f| f.name == HV_STATE_LOCK).unwrap();
        assert_eq!(f.source.as_deref(), Some("vmlinux"));
        assert!(
            f.reason
                .as_deref()
                .is_some_and(|r| r.contains("no member `state_lock`")),
            "{f:?}"
        );
        // Not listed at all (an older trace file): unknown.
        assert_eq!(fact_state(&[], HV_STATE_LOCK), FactState::Unknown);
    }

    #[test]
    fn mask_cache_of_5_15_resolves_through_anonymous_members() {
        let btf = kernel_5_15();
        let r = resolve(&btf, &[]);
        let at = |off, size| Field::at(off, size);
        assert_eq!(
            field_of(&r, "msi_desc_msi_mask"),
            (Some("msi_desc.msi_mask".into()), at(16, 4))
        );
        assert_eq!(
            field_of(&r, "msi_desc_msix_ctrl"),
            (Some("msi_desc.msix_ctrl".into()), at(16, 4))
        );
        let is_msix = Field {
            off: 20,
            size: 1,
            bit_off: 0,
            bit_len: 1,
            present: 1,
        };
        assert_eq!(
            field_of(&r, "msi_desc_is_msix"),
            (Some("msi_desc.msi_attrib.is_msix".into()), is_msix)
        );
        // `platform.msi_index` is in a named member: only the 5.15 fallback may match.
        assert_eq!(
            field_of(&r, "msi_desc_msi_index"),
            (Some("msi_desc.msi_attrib.entry_nr".into()), at(22, 2))
        );
        // const volatile unsigned int
        assert_eq!(
            field_of(&r, "msi_desc_irq"),
            (Some("msi_desc.irq".into()), at(0, 4))
        );
        assert_eq!(
            field_of(&r, "msi_desc_dev"),
            (Some("msi_desc.dev".into()), at(8, 8))
        );
        assert_eq!(
            r.report("msi_desc_dev").and_then(|f| f.source.as_deref()),
            Some("vmlinux")
        );
    }

    #[test]
    fn bitfields_give_the_byte_of_their_first_bit_and_a_readable_size() {
        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        let int = b.int("int", 4);
        let power = b.typedef("pci_power_t", int);
        let c_power = b.constant(power);
        b.structure(
            "pci_dev",
            16,
            &[
                ("current_state", c_power, 0, 0),
                ("msi_enabled", uint, 39, 1),
                // Bits 46..48 straddle bytes 5 and 6: two bytes must be read.
                ("msix_enabled", uint, 46, 3),
            ],
        );
        let r = resolve(&b.finish(), &[]);
        let (_, msi) = field_of(&r, "pci_dev_msi_enabled");
        assert_eq!(
            msi,
            Field {
                off: 4,
                size: 1,
                bit_off: 7,
                bit_len: 1,
                present: 1
            }
        );
        let (_, msix) = field_of(&r, "pci_dev_msix_enabled");
        assert_eq!(
            msix,
            Field {
                off: 5,
                size: 2,
                bit_off: 6,
                bit_len: 3,
                present: 1
            }
        );
        assert_eq!(field_of(&r, "pci_dev_current_state").1, Field::at(0, 4));
    }

    #[test]
    fn missing_members_are_absent_with_every_candidate_explained() {
        let r = resolve(&kernel_5_15(), &[]);
        let tp = r.report("tp_vector_mod_irq").expect("reported");
        assert!(!tp.present);
        assert_eq!(
            tp.reason.as_deref(),
            Some(
                "trace_event_raw_vector_mod.irq: no struct trace_event_raw_vector_mod in the BTF of vmlinux"
            )
        );
        assert_eq!(r.layout.tp_vector_mod_irq, Field::ABSENT);

        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        b.structure("msi_desc", 4, &[("irq", uint, 0, 0)]);
        let r = resolve(&b.finish(), &[]);
        let mask = r.report("msi_desc_msix_ctrl").expect("reported");
        assert!(!mask.present);
        assert_eq!(mask.path, None);
        assert_eq!(
            mask.reason.as_deref(),
            Some(
                "msi_desc.pci.msix_ctrl: struct msi_desc has no member `pci`; \
                 msi_desc.msix_ctrl: struct msi_desc has no member `msix_ctrl`; \
                 msi_desc.masked: struct msi_desc has no member `masked`"
            )
        );
        assert!(r.missing().any(|f| f.name == "msi_desc_msix_ctrl"));
        assert!(r.is_present("msi_desc_irq"));
        assert!(!r.is_present("msi_desc_msix_ctrl"));
        assert!(!r.is_present("no_such_member"));
    }

    #[test]
    fn hyperv_members_name_the_module_whose_btf_is_missing() {
        let r = resolve(&kernel_5_15(), &[]);
        let hv = r.report("hv_pcibus_state").expect("reported");
        assert!(!hv.present);
        assert_eq!(
            hv.reason.as_deref(),
            Some(
                "hv_pcibus_device.state: no struct hv_pcibus_device in the BTF of vmlinux; \
                 no BTF for module pci_hyperv (not loaded?)"
            )
        );
        assert!(r.hv_pcibus_states.is_empty());
    }

    #[test]
    fn a_member_of_the_wrong_kind_is_refused() {
        let mut b = BtfBuilder::new();
        let uint = b.int("unsigned int", 4);
        let kobj = b.structure("kobject", 8, &[("name", uint, 0, 0)]);
        b.structure(
            "device",
            16,
            &[("kobj", kobj, 0, 0), ("driver_data", kobj, 64, 0)],
        );
        b.structure("irq_desc", 8, &[("irq_data", uint, 0, 0)]);
        let r = resolve(&b.finish(), &[]);
        let name = r.report("device_kobj_name").expect("reported");
        assert_eq!(
            name.reason.as_deref(),
            Some("device.kobj.name: found int, expected a pointer")
        );
        let data = r.report("irq_desc_irq_data").expect("reported");
        assert_eq!(
            data.reason.as_deref(),
            Some("irq_desc.irq_data: found int, expected an embedded struct")
        );
        let through = r.report("device_driver_data").expect("reported");
        assert_eq!(
            through.reason.as_deref(),
            Some("device.driver_data: found struct, expected a pointer")
        );
    }

    #[test]
    fn genirq_bits_come_from_enumerators_and_missing_ones_are_zero() {
        let mut b = BtfBuilder::new();
        b.enumeration(
            "",
            &[
                ("IRQD_IRQ_DISABLED", 0x1_0000),
                ("IRQD_IRQ_MASKED", 0x2_0000),
            ],
        );
        b.enum64("", &[("IRQD_AFFINITY_MANAGED", 0x20_0000)]);
        b.enumeration(
            "hv_pcibus_state",
            &[("hv_pcibus_init", 0), ("hv_pcibus_removing", 3)],
        );
        let r = resolve(&b.finish(), &[]);
        assert_eq!(r.layout.irqd_irq_disabled, 0x1_0000);
        assert_eq!(r.layout.irqd_irq_masked, 0x2_0000);
        assert_eq!(r.layout.irqd_affinity_managed, 0x20_0000);
        assert_eq!(r.layout.irqd_managed_shutdown, 0);
        let shutdown = r.report("irqd_managed_shutdown").expect("reported");
        assert!(!shutdown.present);
        assert_eq!(
            shutdown.reason.as_deref(),
            Some("no enumerator IRQD_MANAGED_SHUTDOWN in vmlinux BTF")
        );
        let masked = r.report("irqd_irq_masked").expect("reported");
        assert_eq!(masked.path.as_deref(), Some("IRQD_IRQ_MASKED"));
        assert_eq!(r.hv_pcibus_state_name(3), Some("hv_pcibus_removing"));
        assert_eq!(r.hv_pcibus_state_name(7), None);
    }

    #[test]
    fn every_layout_member_has_exactly_one_report() {
        let json = serde_json::to_value(Layout::ABSENT).expect("Layout serialises");
        let members: Vec<&str> = json
            .as_object()
            .expect("Layout is a struct")
            .keys()
            .map(String::as_str)
            // The spans are worked out from the fields, not resolved from BTF.
            .filter(|k| !k.starts_with("span_"))
            .collect();
        let mut ours: Vec<&str> = member_names().collect();
        let mut theirs = members.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(
            ours, theirs,
            "FIELDS/ENUMERATORS and tracer_common::Layout differ"
        );

        let r = resolve(&kernel_5_15(), &[]);
        let reported: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(reported, member_names().collect::<Vec<_>>());
        for f in &r.fields {
            assert_eq!(f.present, f.path.is_some(), "{}", f.name);
            assert_eq!(f.present, f.reason.is_none(), "{}", f.name);
        }
    }

    #[test]
    fn unreadable_btf_is_a_one_line_error() {
        let dir = std::env::temp_dir().join(format!("msitrace-btf-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let garbage = dir.join("garbage");
        fs::write(&garbage, b"not BTF at all").expect("write");
        let err = resolve_files(&garbage, &[]).expect_err("garbage is not BTF");
        assert!(matches!(err, LayoutError::Parse { .. }), "{err:?}");
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("shorter than a BTF header"), "{text}");

        let missing = dir.join("missing");
        let err = resolve_files(&missing, &[]).expect_err("no file");
        assert!(matches!(err, LayoutError::Read { .. }), "{err:?}");
        fs::remove_dir_all(&dir).expect("clean up");

        assert_eq!(
            LayoutError::NoBtf(PathBuf::from("/sys/kernel/btf/vmlinux")).to_string(),
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): msitrace needs \
             CONFIG_DEBUG_INFO_BTF=y"
        );
    }
}

/// Inputs `cargo xtask fuzz` found, kept as regression tests.
#[cfg(test)]
mod fuzz_regressions {
    fn err(bytes: &[u8]) -> String {
        match super::parse(std::path::Path::new("x"), bytes, None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("parsed"),
        }
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fuzz-corpus/btf_layout");
        // hdr_len 0xff000018 + str_off overflowed btf-rs's u32 sum.
        let bytes = std::fs::read(dir.join("regression-str-off-overflow.btf")).unwrap();
        assert!(
            err(&bytes).contains("header length 4278190104 outside"),
            "{}",
            err(&bytes)
        );
        let mut past = bytes[..24].to_vec();
        past[4..8].copy_from_slice(&24u32.to_le_bytes());
        assert!(err(&past).contains("runs past the end"), "{}", err(&past));
        assert!(err(b"").contains("shorter than a BTF header"));
        assert!(err(&[0u8; 24]).contains("no BTF magic"));
    }

    /// Every byte of a small vmlinux and of a module split over it, set to each of a few
    /// values: msitrace's BTF reader indexes the data it was given, so each corruption must
    /// be an error or a layout, never a panic, and so must everything the resolver reads.
    #[test]
    fn corrupt_bytes_anywhere_are_errors_or_layouts_not_panics() {
        use super::tests::BtfBuilder;
        use crate::btf::Btf;
        let mut b = BtfBuilder::new();
        b.func("hv_irq_unmask");
        let base_bytes = b.bytes();
        let mut m = BtfBuilder::split_over(&b);
        m.func("hv_pci_restore_msi_msg");
        let base = super::tests::kernel_5_15_bytes();
        let module = m.bytes();
        let walk = |btf: &Btf| {
            for id in btf.ids() {
                let Ok(t) = btf.ty(id) else { continue };
                let _ = t.name();
                let _ = t
                    .members()
                    .filter(|m| btf.str_at(m.name_off).is_ok())
                    .count();
                let _ = t.enumerators().count();
                let _ = t.params();
            }
        };
        let mut parsed = 0;
        for (i, v) in (0..base.len()).flat_map(|i| [0u8, 1, 0x7f, 0xff].map(|v| (i, v))) {
            let mut bytes = base.clone();
            bytes[i] = v;
            if let Ok(btf) = Btf::from_bytes(&bytes) {
                walk(&btf);
                let _ = super::resolve(&btf, &[]);
                parsed += 1;
            }
        }
        let vmlinux = Btf::from_bytes(&base_bytes).unwrap();
        for (i, v) in (0..module.len()).flat_map(|i| [0u8, 1, 0x7f, 0xff].map(|v| (i, v))) {
            let mut bytes = module.clone();
            bytes[i] = v;
            if let Ok(btf) = Btf::from_split_bytes(&bytes, &vmlinux) {
                walk(&btf);
                let _ = super::resolve(&vmlinux, &[("pci_hyperv", &btf)]);
            }
        }
        // Most single-byte changes land in offsets, sizes and names, which still parse.
        assert!(parsed > base.len(), "{parsed} of {} parsed", 4 * base.len());
    }
}

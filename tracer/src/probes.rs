//! The probe catalogue and the report of what attached on this kernel.
//!
//! Every hook msitrace knows is listed once in [`CATALOGUE`]: its name, the kernel symbols it
//! may attach to (candidates in order: a function renamed upstream keeps working on both sides
//! of the rename) or its tracepoint, the method, the program in the eBPF object, and the rules that lose their input
//! when it cannot attach. The probe manager (`crate::collector`) walks this list; `probes`, the
//! trace header and the replay report all show the same [`ProbeStatus`] rows.

use serde::{Deserialize, Serialize};
use tracer_common::ProbeId;

use crate::engine::RuleId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Kprobe,
    Kretprobe,
    Tracepoint,
    /// A raw tracepoint (`BPF_RAW_TRACEPOINT_OPEN`): the `TP_PROTO` arguments, no trace record
    /// filled, no tracefs needed.
    RawTracepoint,
    /// A replacement for a hook this kernel does not have (the migration window when
    /// `migrate_one_irq` is inlined).
    Fallback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Attached,
    /// The symbol or tracepoint is not on this kernel (inlined, module not loaded, no arch
    /// support). Expected; said, not an error.
    Absent,
    /// The kernel refuses (kprobes compiled out, no permission).
    Denied,
    /// Present and allowed, but loading or attaching failed.
    Error,
    /// Waiting for a module to load; attaches when it appears.
    Pending,
    /// Not needed: another hook covers it (the fallback window when `migrate_one_irq` exists).
    Unused,
}

/// One hook of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub probe: ProbeId,
    /// Human name shown in `probes`, e.g. `hv_compose_msi_msg:return`: the hook's canonical
    /// name, stable whatever symbol it attaches to (scripts select rows by it).
    pub hook: &'static str,
    /// Kernel symbols to attach to, in order: the first present on the running kernel wins.
    /// Several when a function was renamed (the current name first, then the others). For a
    /// tracepoint, its one `category:name`.
    pub symbols: &'static [&'static str],
    pub method: Method,
    /// Module that provides the symbol when it is not in vmlinux (attach when it appears).
    pub module: Option<&'static str>,
    /// What each rule takes from this hook. The one place that says it: the rules' gates
    /// (`engine::gates`) and the `feeds` that `probes` shows are read from here.
    pub feeds: &'static [Feed],
    /// Part of the migration fallback window, used only when `migrate_one_irq` is absent.
    pub fallback_for: Option<&'static str>,
}

/// How a rule uses a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Input the rule cannot be evaluated without. Hooks that give `rule` the same input
    /// share a `group`: one of the group attached is enough.
    Needs { rule: RuleId, group: u8 },
    /// Evidence the rule uses when it is there (corroboration, a sharper verdict), and does
    /// without when it is not.
    Helps(RuleId),
}

impl Feed {
    pub const fn rule(self) -> RuleId {
        match self {
            Feed::Needs { rule, .. } | Feed::Helps(rule) => rule,
        }
    }
}

const fn n(rule: RuleId, group: u8) -> Feed {
    Feed::Needs { rule, group }
}

const fn h(rule: RuleId) -> Feed {
    Feed::Helps(rule)
}

impl Hook {
    /// The canonical symbol: the first candidate.
    pub const fn symbol(&self) -> &'static str {
        self.symbols[0]
    }

    /// The rules that take something from this hook, needed or not, in rule order.
    pub fn rules(&self) -> Vec<RuleId> {
        let mut rules: Vec<RuleId> = self.feeds.iter().map(|f| f.rule()).collect();
        rules.sort();
        rules.dedup();
        rules
    }
}

/// A rule's needed inputs, grouped: every group must have at least one of its hooks.
pub fn requirements(rule: RuleId) -> Vec<Vec<ProbeId>> {
    let mut groups: Vec<(u8, Vec<ProbeId>)> = Vec::new();
    for hook in CATALOGUE {
        for feed in hook.feeds {
            if let Feed::Needs { rule: r, group } = *feed
                && r == rule
            {
                match groups.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, probes)) => probes.push(hook.probe),
                    None => groups.push((group, vec![hook.probe])),
                }
            }
        }
    }
    groups.sort_by_key(|(g, _)| *g);
    groups.into_iter().map(|(_, probes)| probes).collect()
}

const fn hook(
    probe: ProbeId,
    hook: &'static str,
    symbols: &'static [&'static str],
    method: Method,
    feeds: &'static [Feed],
) -> Hook {
    assert!(!symbols.is_empty(), "a hook needs a symbol");
    Hook {
        probe,
        hook,
        symbols,
        method,
        module: None,
        feeds,
        fallback_for: None,
    }
}

const fn hv(mut h: Hook) -> Hook {
    h.module = Some("pci_hyperv");
    h
}

const fn fallback(mut h: Hook) -> Hook {
    h.fallback_for = Some("migrate_one_irq");
    h
}

use Method::{Kprobe, Kretprobe, RawTracepoint, Tracepoint};
use ProbeId as P;
use RuleId::{G1, G2, G3, G5, H1, H2, H3, H4, H5, H9};

/// hv_compose_msi_msg, and the name a pending upstream series gives it.
const COMPOSE: &[&str] = &["hv_compose_msi_msg", "hv_vmbus_compose_msi_msg"];

// One hook a line: the catalogue is a table and reads as one.
#[rustfmt::skip]
pub const CATALOGUE: &[Hook] = &[
    hv(hook(P::HvComposeEnter, "hv_compose_msi_msg", COMPOSE, Kprobe, &[n(H1, 0), h(H2), h(H3), n(H5, 1)])),
    hv(hook(P::HvComposeExit, "hv_compose_msi_msg:return", COMPOSE, Kretprobe, &[n(H1, 0), n(H2, 0), n(H3, 0), n(H5, 1)])),
    hv(hook(P::HvUnmaskEnter, "hv_irq_unmask", &["hv_irq_unmask"], Kprobe, &[h(H4), n(H5, 0), h(H9)])),
    hv(hook(P::HvUnmaskExit, "hv_irq_unmask:return", &["hv_irq_unmask"], Kretprobe, &[n(H4, 0)])),
    hv(hook(P::HvMaskEnter, "hv_irq_mask", &["hv_irq_mask"], Kprobe, &[h(H4)])),
    hv(hook(P::HvMaskExit, "hv_irq_mask:return", &["hv_irq_mask"], Kretprobe, &[h(H4)])),
    hook(P::MigrateOneIrq, "migrate_one_irq", &["migrate_one_irq"], Kprobe, &[h(G2)]),
    fallback(hook(P::MigrateAllOffEnter, "irq_migrate_all_off_this_cpu", &["irq_migrate_all_off_this_cpu"], Kprobe, &[h(G2), h(H4)])),
    fallback(hook(P::MigrateAllOffExit, "irq_migrate_all_off_this_cpu:return", &["irq_migrate_all_off_this_cpu"], Kretprobe, &[n(G2, 1), n(G3, 2), h(H4)])),
    fallback(hook(P::SetAffinityEnter, "irq_do_set_affinity", &["irq_do_set_affinity"], Kprobe, &[h(G2)])),
    fallback(hook(P::SetAffinityExit, "irq_do_set_affinity:return", &["irq_do_set_affinity"], Kretprobe, &[h(G2)])),
    hook(P::RestoreMsiEnter, "pci_restore_msi_state", &["pci_restore_msi_state"], Kprobe, &[n(H1, 2), n(H2, 2), h(H4)]),
    hook(P::RestoreMsiExit, "pci_restore_msi_state:return", &["pci_restore_msi_state"], Kretprobe, &[h(H1), h(H2), h(H4)]),
    hook(P::WriteMsiMsg, "__pci_write_msi_msg", &["__pci_write_msi_msg"], Kprobe, &[n(H1, 1), n(H2, 1), h(H4), n(G1, 0)]),
    hook(P::PciMsiMask, "pci_msi_mask_irq", &["pci_msi_mask_irq"], Kprobe, &[h(G1)]),
    hook(P::PciMsiUnmask, "pci_msi_unmask_irq", &["pci_msi_unmask_irq"], Kprobe, &[h(G1), h(H4)]),
    hook(P::PciIrqMaskMsi, "pci_irq_mask_msi", &["pci_irq_mask_msi"], Kprobe, &[h(G1)]),
    hook(P::PciIrqUnmaskMsi, "pci_irq_unmask_msi", &["pci_irq_unmask_msi"], Kprobe, &[h(G1)]),
    hook(P::PciIrqMaskMsix, "pci_irq_mask_msix", &["pci_irq_mask_msix"], Kprobe, &[h(G1)]),
    hook(P::PciIrqUnmaskMsix, "pci_irq_unmask_msix", &["pci_irq_unmask_msix"], Kprobe, &[h(G1)]),
    hv(hook(P::HvComposeCompl, "hv_pci_compose_compl", &["hv_pci_compose_compl"], Kprobe, &[h(H1), h(H3)])),
    hv(hook(P::HvPciSuspendEnter, "hv_pci_suspend", &["hv_pci_suspend"], Kprobe, &[h(H9)])),
    hv(hook(P::HvPciSuspendExit, "hv_pci_suspend:return", &["hv_pci_suspend"], Kretprobe, &[n(H9, 0)])),
    hv(hook(P::HvPciResumeEnter, "hv_pci_resume", &["hv_pci_resume"], Kprobe, &[h(H9)])),
    hv(hook(P::HvPciResumeExit, "hv_pci_resume:return", &["hv_pci_resume"], Kretprobe, &[n(H9, 0)])),
    hook(P::SuspendResume, "power:suspend_resume", &["power:suspend_resume"], Tracepoint, &[n(H1, 3), n(H2, 3), h(H4), n(H5, 2), h(H9), n(G1, 1), n(G2, 1), n(G3, 2), n(G5, 1)]),
    hook(P::DevicePmStart, "power:device_pm_callback_start", &["power:device_pm_callback_start"], Tracepoint, &[h(H9)]),
    hook(P::DevicePmEnd, "power:device_pm_callback_end", &["power:device_pm_callback_end"], Tracepoint, &[h(H9)]),
    hook(P::VectorUpdate, "irq_vectors:vector_update", &["irq_vectors:vector_update"], Tracepoint, &[n(G2, 0)]),
    hook(P::VectorConfig, "irq_vectors:vector_config", &["irq_vectors:vector_config"], Tracepoint, &[n(G2, 0)]),
    hook(P::VectorClear, "irq_vectors:vector_clear", &["irq_vectors:vector_clear"], Tracepoint, &[h(G2)]),
    hook(P::VectorActivate, "irq_vectors:vector_activate", &["irq_vectors:vector_activate"], Tracepoint, &[n(G3, 1)]),
    hook(P::VectorDeactivate, "irq_vectors:vector_deactivate", &["irq_vectors:vector_deactivate"], Tracepoint, &[n(G3, 0)]),
    hook(P::IrqHandlerEntry, "irq:irq_handler_entry", &["irq:irq_handler_entry"], RawTracepoint, &[n(G5, 0)]),
];

pub fn hook_of(probe: ProbeId) -> &'static Hook {
    CATALOGUE
        .iter()
        .find(|h| h.probe == probe)
        .expect("every ProbeId is in the catalogue")
}

/// What happened to one hook on this kernel: a row of `msitrace probes`, of the trace
/// header and of the replay report.
/// Hooks attached, of the hooks this kernel uses (the ones left out as `Unused` — the direct
/// `migrate_one_irq` where its fallback window runs — do not count): the one coverage count
/// that `probes`, `dump`, the journal and `record` show.
pub fn coverage(statuses: &[ProbeStatus]) -> (usize, usize) {
    (
        statuses
            .iter()
            .filter(|s| s.status == Status::Attached)
            .count(),
        statuses
            .iter()
            .filter(|s| s.status != Status::Unused)
            .count(),
    )
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// The hook's canonical name ([`Hook::hook`]).
    pub hook: String,
    /// The canonical symbol (the first candidate).
    pub symbol: String,
    /// Every symbol tried, in order; empty in files written before hooks had candidates
    /// (then `symbol` was the only one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    /// The candidate the probe is attached to; `None` when not attached, and in files written
    /// before it was recorded (then an attached probe is on `symbol`).
    #[serde(default)]
    pub attached_symbol: Option<String>,
    pub method: Method,
    pub status: Status,
    /// Why it is not attached (the kernel's own words where it gave any).
    pub reason: Option<String>,
    /// Module the symbol lives in, when not vmlinux.
    pub module: Option<String>,
    /// Rules that lose input because this hook is not attached (empty when attached).
    pub rules_losing_input: Vec<String>,
    pub probe: ProbeId,
    /// The symbol table that said whether a kprobe's symbol exists; `None` for tracepoints
    /// and in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol_source: Option<SymbolSource>,
}

/// The tables function names can be read from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SymbolTable {
    Kallsyms,
    /// tracefs `available_filter_functions`.
    AvailableFilterFunctions,
    /// vmlinux and module BTF (/sys/kernel/btf), with /sys/module for what is loaded.
    Btf,
    /// Nothing could be read: every symbol looks absent.
    None,
}

impl SymbolTable {
    /// How a reason names it: "not in {name}".
    pub fn name(self) -> &'static str {
        match self {
            SymbolTable::Kallsyms => "/proc/kallsyms",
            SymbolTable::AvailableFilterFunctions => "available_filter_functions",
            SymbolTable::Btf => "the kernel's BTF",
            SymbolTable::None => "any symbol table",
        }
    }

    /// What the table cannot tell that /proc/kallsyms can, in words.
    pub fn limits(self) -> Option<&'static str> {
        match self {
            SymbolTable::Kallsyms => None,
            SymbolTable::AvailableFilterFunctions => Some(
                "lists only the functions ftrace can trace: a notrace function shows as absent though a kprobe could attach to it",
            ),
            SymbolTable::Btf => Some(
                "BTF lists functions by prototype, not by address: it shows no compiler-specialised copy (.isra, .constprop), so a hook that only has one reads as plainly absent, and a name in it is no proof of a symbol to probe (it cannot tell a static function the compiler inlined into its callers from one that is present), so such a hook is tried and only its attach error says it is missing",
            ),
            SymbolTable::None => Some(
                "no symbol table could be read, so no kprobe hook is tried and each is reported absent",
            ),
        }
    }
}

/// Where the kprobe symbols came from, what that table cannot tell, and why the better ones
/// were not used: the price of running where /proc/kallsyms is hidden.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolSource {
    pub kind: SymbolTable,
    /// The file or directory read.
    pub path: String,
    /// [`SymbolTable::limits`], kept in the report so a reader of an old file gets the words
    /// of the msitrace that wrote it.
    pub limits: Option<String>,
    /// Each better table and why it could not be used, e.g. `/proc/kallsyms: Permission denied`.
    pub passed_over: Vec<String>,
}

impl SymbolSource {
    pub fn new(kind: SymbolTable, path: impl Into<String>, passed_over: Vec<String>) -> Self {
        SymbolSource {
            kind,
            path: path.into(),
            limits: kind.limits().map(str::to_string),
            passed_over,
        }
    }

    /// One line for a table footer or a journal entry.
    pub fn describe(&self) -> String {
        let mut s = match self.kind {
            SymbolTable::None => "none".to_string(),
            _ => self.path.clone(),
        };
        if !self.passed_over.is_empty() {
            s.push_str(&format!(" (not used: {})", self.passed_over.join("; ")));
        }
        if let Some(l) = &self.limits {
            s.push_str(&format!("; {l}"));
        }
        s
    }
}

/// `schema_version` of `probes --json`, described by docs/schema/probes.schema.json; bumped
/// on the same terms as [`crate::report::SCHEMA_VERSION`].
pub const SCHEMA_VERSION: u32 = 1;

/// What `probes --json` prints: an object rather than the bare array, so that it can say which
/// schema it follows.
#[derive(Serialize)]
pub struct ProbesJson<'a> {
    pub schema_version: u32,
    pub probes: &'a [ProbeStatus],
}

impl<'a> ProbesJson<'a> {
    pub fn new(probes: &'a [ProbeStatus]) -> Self {
        ProbesJson {
            schema_version: SCHEMA_VERSION,
            probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_is_in_the_catalogue_once() {
        for p in ProbeId::ALL {
            assert_eq!(
                CATALOGUE.iter().filter(|h| h.probe == p).count(),
                1,
                "{p:?}"
            );
        }
        assert_eq!(CATALOGUE.len(), ProbeId::ALL.len());
    }

    #[test]
    fn both_compose_hooks_try_the_renamed_symbol_second() {
        for p in [ProbeId::HvComposeEnter, ProbeId::HvComposeExit] {
            assert_eq!(
                hook_of(p).symbols,
                ["hv_compose_msi_msg", "hv_vmbus_compose_msi_msg"]
            );
            assert_eq!(hook_of(p).symbol(), "hv_compose_msi_msg");
        }
    }
}

#[cfg(test)]
mod feed_tests {
    use super::*;

    /// The gates read their inputs from the catalogue: the groups are those the rules were
    /// written against (a hook moved between groups changes a rule's verdict on a kernel).
    #[test]
    fn every_rule_needs_what_it_was_written_against() {
        use ProbeId as P;
        assert_eq!(
            requirements(RuleId::H1),
            vec![
                vec![P::HvComposeEnter, P::HvComposeExit],
                vec![P::WriteMsiMsg],
                vec![P::RestoreMsiEnter],
                vec![P::SuspendResume],
            ]
        );
        assert_eq!(requirements(RuleId::H4), vec![vec![P::HvUnmaskExit]]);
        assert_eq!(
            requirements(RuleId::G2),
            vec![
                vec![P::VectorUpdate, P::VectorConfig],
                vec![P::MigrateAllOffExit, P::SuspendResume],
            ]
        );
        for rule in RuleId::ALL {
            assert!(!requirements(rule).is_empty(), "{rule} needs nothing");
        }
    }

    /// What `probes` shows a hook feeds is what the gates read: a hook the gates need for a
    /// rule always lists it, and a hook that lists a rule is used by it.
    #[test]
    fn feeds_shown_and_gates_agree() {
        for rule in RuleId::ALL {
            for group in requirements(rule) {
                for p in group {
                    assert!(hook_of(p).rules().contains(&rule), "{p:?} {rule}");
                }
            }
        }
        assert_eq!(hook_of(ProbeId::HvMaskEnter).rules(), vec![RuleId::H4]);
        assert!(
            !requirements(RuleId::H4)
                .concat()
                .contains(&ProbeId::HvMaskEnter),
            "hv_irq_mask only corroborates H4"
        );
    }
}

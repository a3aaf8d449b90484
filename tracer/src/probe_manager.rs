//! The probe manager: attaches every hook of the catalogue independently and keeps, for each,
//! a [`ProbeStatus`] that says what happened in the kernel's own words.
//!
//! Policy, in the spirit of retis' collectors: a hook that is absent (not in the kernel's
//! symbol table, module not loaded, inlined), denied (kprobes compiled out) or failing is reported and the others
//! keep running. Hooks of a module (pci_hyperv) wait as `pending` and attach when a rescan
//! finds the module. When `migrate_one_irq` is inlined, its window is rebuilt from
//! `irq_migrate_all_off_this_cpu` and `irq_do_set_affinity` (method `fallback`). A kprobe hook
//! attaches to the first of its candidate symbols the kernel has (a renamed function), and its
//! status says which.

use std::{collections::HashMap, path::PathBuf};

use aya::{
    Ebpf,
    programs::{KProbe, RawTracePoint, TracePoint, kprobe::KProbeLinkId},
};
use tracer_common::ProbeId;

use crate::{
    btf_layout::ResolvedLayout,
    irq_counts::IrqCountMode,
    kernel::{self, KernelSymbols},
    probes::{CATALOGUE, Hook, Method, ProbeStatus, Status, SymbolTable},
};

/// Tracepoint links are only ever dropped with the object; kprobe links are detached and
/// attached again after a resume, so their ids are kept.
enum Link {
    Kprobe(KProbeLinkId),
    Tracepoint,
}

/// Layout fields each program reads; a missing one degrades what the probe reports.
fn fields_read(probe: ProbeId) -> &'static [&'static str] {
    use ProbeId as P;
    const VECTOR: &[&str] = &[
        "irq_data_irq",
        "irq_data_hwirq",
        "irq_data_common",
        "irq_data_chip_data",
        "irq_common_state",
        "irq_common_msi_desc",
        "msi_desc_irq",
        "msi_desc_dev",
        "msi_desc_msi_index",
        "msi_desc_msi_mask",
        "msi_desc_msix_ctrl",
        "msi_desc_is_msix",
        "device_kobj_name",
    ];
    match probe {
        P::HvComposeEnter
        | P::HvUnmaskEnter
        | P::HvUnmaskExit
        | P::HvMaskEnter
        | P::HvMaskExit
        | P::PciMsiMask
        | P::PciMsiUnmask
        | P::PciIrqMaskMsi
        | P::PciIrqUnmaskMsi
        | P::PciIrqMaskMsix
        | P::PciIrqUnmaskMsix => VECTOR,
        P::HvComposeCompl => &["pci_response_status", "irq_data_irq"],
        P::HvComposeExit => &[
            "irq_data_irq",
            "irq_data_chip_data",
            "msi_msg_address_lo",
            "msi_msg_address_hi",
            "msi_msg_data",
        ],
        P::MigrateOneIrq => &["irq_desc_irq_data", "irq_data_irq"],
        P::MigrateAllOffEnter | P::MigrateAllOffExit => &[],
        P::SetAffinityEnter | P::SetAffinityExit => &["irq_data_irq"],
        P::RestoreMsiEnter | P::RestoreMsiExit => &[
            "pci_dev_dev",
            "device_kobj_name",
            "pci_dev_msi_enabled",
            "pci_dev_msix_enabled",
            "pci_dev_current_state",
        ],
        P::WriteMsiMsg => &[
            "msi_desc_irq",
            "msi_desc_dev",
            "msi_desc_msi_index",
            "msi_desc_msi_mask",
            "msi_desc_msix_ctrl",
            "msi_desc_is_msix",
            "msi_msg_address_lo",
            "msi_msg_address_hi",
            "msi_msg_data",
            "pci_dev_dev",
            "pci_dev_current_state",
            "device_kobj_name",
        ],
        P::HvPciSuspendEnter | P::HvPciSuspendExit | P::HvPciResumeEnter | P::HvPciResumeExit => &[
            "hv_device_device",
            "device_driver_data",
            "hv_pcibus_state",
            "device_kobj_name",
        ],
        P::SuspendResume => &[
            "tp_suspend_resume_action",
            "tp_suspend_resume_val",
            "tp_suspend_resume_start",
        ],
        P::DevicePmStart => &[
            "tp_pm_start_device",
            "tp_pm_start_driver",
            "tp_pm_start_pm_ops",
            "tp_pm_start_event",
        ],
        P::DevicePmEnd => &["tp_pm_end_device", "tp_pm_end_driver", "tp_pm_end_error"],
        P::VectorUpdate | P::VectorClear => &[
            "tp_vector_mod_irq",
            "tp_vector_mod_vector",
            "tp_vector_mod_cpu",
            "tp_vector_mod_prev_vector",
            "tp_vector_mod_prev_cpu",
        ],
        P::VectorConfig => &[
            "tp_vector_config_irq",
            "tp_vector_config_vector",
            "tp_vector_config_cpu",
            "tp_vector_config_apicdest",
        ],
        P::VectorActivate | P::VectorDeactivate => &[
            "tp_vector_activate_irq",
            "tp_vector_activate_is_managed",
            "tp_vector_activate_can_reserve",
            "tp_vector_activate_reserve",
        ],
        P::IrqHandlerEntry => &["tp_irq_handler_entry_irq"],
    }
}

/// Attaches the catalogue's hooks to a loaded [`Ebpf`] object and keeps their status.
pub struct ProbeManager {
    statuses: Vec<ProbeStatus>,
    links: HashMap<ProbeId, Link>,
    loaded: HashMap<ProbeId, Result<(), String>>,
    /// Time spent in the kernel's verifier (program loads), all programs together.
    verify_time: std::time::Duration,
    tracefs: Result<PathBuf, String>,
    kprobes_denied: Option<String>,
    missing_fields: Vec<(String, String)>,
    irq_counts: IrqCountMode,
}

impl ProbeManager {
    pub fn new(layout: &ResolvedLayout, irq_counts: IrqCountMode) -> ProbeManager {
        let missing_fields = layout
            .missing()
            .map(|f| {
                (
                    f.name.clone(),
                    f.reason.clone().unwrap_or_else(|| "not in BTF".into()),
                )
            })
            .collect();
        ProbeManager {
            statuses: CATALOGUE.iter().map(initial_status).collect(),
            links: HashMap::new(),
            loaded: HashMap::new(),
            verify_time: std::time::Duration::ZERO,
            tracefs: kernel::ensure_tracefs().map_err(|e| format!("{e:#}")),
            kprobes_denied: kernel::kprobes_unavailable(),
            missing_fields,
            irq_counts,
        }
    }

    pub fn statuses(&self) -> &[ProbeStatus] {
        &self.statuses
    }

    pub fn status(&self, probe: ProbeId) -> &ProbeStatus {
        self.statuses
            .iter()
            .find(|s| s.probe == probe)
            .expect("every probe has a status")
    }

    /// Hooks waiting for a module.
    pub fn has_pending(&self) -> bool {
        self.statuses.iter().any(|s| s.status == Status::Pending)
    }

    /// Try every hook that is not attached yet. Returns the probes whose status changed.
    pub fn attach_all(&mut self, ebpf: &mut Ebpf, symbols: &KernelSymbols) -> Vec<ProbeId> {
        let migrate_direct = self.attach_one(ebpf, symbols, hook_of(ProbeId::MigrateOneIrq));
        let mut changed: Vec<ProbeId> = migrate_direct.into_iter().collect();
        let direct_ok = self.status(ProbeId::MigrateOneIrq).status == Status::Attached;
        for hook in CATALOGUE {
            if hook.probe == ProbeId::MigrateOneIrq {
                continue;
            }
            if hook.probe == ProbeId::IrqHandlerEntry && self.irq_counts == IrqCountMode::Kernel {
                // Its input, handler counts, comes from counters the kernel keeps anyway: the
                // program would cost every interrupt of the machine for nothing.
                changed.extend(self.set(
                    hook.probe,
                    Status::Unused,
                    Some(format!(
                        "handler counts come from the kernel's counters ({}/N/per_cpu_count); --irq-counts bpf attaches this program",
                        crate::irq_counts::SYS_KERNEL_IRQ
                    )),
                    None,
                ));
                continue;
            }
            if hook.fallback_for.is_some() && direct_ok {
                let s = self.status_mut(hook.probe);
                if s.status != Status::Unused {
                    s.status = Status::Unused;
                    s.reason = Some("migrate_one_irq is attached directly".into());
                    changed.push(hook.probe);
                }
                continue;
            }
            changed.extend(self.attach_one(ebpf, symbols, hook));
        }
        if !direct_ok {
            self.explain_migration_fallback();
        }
        self.update_rules_losing_input();
        changed
    }

    /// Detach and attach again every attached kprobe: kretprobes have been seen to go silent
    /// after suspend/resume on some kernels (aya#932, kernel bugzilla 218775).
    pub fn reattach_kprobes(&mut self, ebpf: &mut Ebpf, symbols: &KernelSymbols) -> Vec<ProbeId> {
        let attached: Vec<ProbeId> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l, Link::Kprobe(_)))
            .map(|(p, _)| *p)
            .collect();
        for probe in &attached {
            if let (Some(Link::Kprobe(id)), Some(prog)) =
                (self.links.remove(probe), ebpf.program_mut(probe.program()))
                && let Ok(kp) = <&mut KProbe>::try_from(prog)
            {
                let _ = kp.detach(id);
            }
            self.status_mut(*probe).status = Status::Pending;
        }
        for probe in &attached {
            self.attach_one(ebpf, symbols, hook_of(*probe));
        }
        self.update_rules_losing_input();
        attached
    }

    fn status_mut(&mut self, probe: ProbeId) -> &mut ProbeStatus {
        self.statuses
            .iter_mut()
            .find(|s| s.probe == probe)
            .expect("every probe has a status")
    }

    fn set(
        &mut self,
        probe: ProbeId,
        status: Status,
        reason: Option<String>,
        module: Option<String>,
    ) -> Option<ProbeId> {
        let attached = (status == Status::Attached).then(|| hook_of(probe).symbol());
        self.set_on(probe, status, reason, module, attached)
    }

    /// [`Self::set`], naming the symbol the probe is attached to.
    fn set_on(
        &mut self,
        probe: ProbeId,
        status: Status,
        reason: Option<String>,
        module: Option<String>,
        attached: Option<&str>,
    ) -> Option<ProbeId> {
        let s = self.status_mut(probe);
        let attached = attached.map(str::to_string);
        let changed = s.status != status || s.reason != reason || s.attached_symbol != attached;
        s.status = status;
        s.reason = reason;
        s.attached_symbol = attached;
        if module.is_some() {
            s.module = module;
        }
        changed.then_some(probe)
    }

    fn attach_one(
        &mut self,
        ebpf: &mut Ebpf,
        symbols: &KernelSymbols,
        hook: &Hook,
    ) -> Option<ProbeId> {
        if self.links.contains_key(&hook.probe) {
            return None;
        }
        match hook.method {
            Method::Tracepoint => self.attach_tracepoint(ebpf, hook),
            Method::RawTracepoint => self.attach_raw_tracepoint(ebpf, hook),
            _ => {
                self.status_mut(hook.probe).symbol_source = Some(symbols.source().clone());
                self.attach_kprobe(ebpf, symbols, hook)
            }
        }
    }

    fn load(&mut self, ebpf: &mut Ebpf, probe: ProbeId) -> Result<(), String> {
        if let Some(r) = self.loaded.get(&probe) {
            return r.clone();
        }
        let name = probe.program();
        let started = std::time::Instant::now();
        let r = match ebpf.program_mut(name) {
            None => Err(format!(
                "program {name} is not in the eBPF object (build mismatch)"
            )),
            Some(aya::programs::Program::KProbe(p)) => p.load().map_err(|e| verifier_summary(&e)),
            Some(aya::programs::Program::TracePoint(p)) => {
                p.load().map_err(|e| verifier_summary(&e))
            }
            Some(aya::programs::Program::RawTracePoint(p)) => {
                p.load().map_err(|e| verifier_summary(&e))
            }
            Some(_) => Err(format!(
                "program {name} has an unexpected type (build mismatch)"
            )),
        };
        self.verify_time += started.elapsed();
        self.loaded.insert(probe, r.clone());
        r
    }

    /// Programs loaded so far (verified or refused), and the time the verifier took for them.
    pub fn verified(&self) -> (usize, std::time::Duration) {
        (self.loaded.len(), self.verify_time)
    }

    /// The probe's program, loaded (once) and typed, or why it cannot be.
    fn program<'e, T>(&mut self, ebpf: &'e mut Ebpf, probe: ProbeId) -> Result<&'e mut T, String>
    where
        &'e mut T: TryFrom<&'e mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.load(ebpf, probe)
            .map_err(|e| format!("the verifier refused the program: {e}"))?;
        let prog = ebpf
            .program_mut(probe.program())
            .ok_or("program missing from the object (build mismatch)")?;
        prog.try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())
    }

    fn attach_kprobe(
        &mut self,
        ebpf: &mut Ebpf,
        symbols: &KernelSymbols,
        hook: &Hook,
    ) -> Option<ProbeId> {
        let present = present_candidates(hook, symbols);
        let table = symbols.source().kind;
        if present.is_empty() {
            let why = absent_reason(hook, symbols);
            // A kernel without kprobes denies the hook whatever the symbol: say both.
            if let Some(denied) = &self.kprobes_denied {
                return self.set(
                    hook.probe,
                    Status::Denied,
                    Some(format!("{denied}; besides, {why}")),
                    None,
                );
            }
            let status = if hook.module.is_some() {
                Status::Pending
            } else {
                Status::Absent
            };
            return self.set(hook.probe, status, Some(why), None);
        }
        let module_of = |sym: &str| symbols.get(sym).and_then(|s| s.module.clone());
        let kp: &mut KProbe = match self.program(ebpf, hook.probe) {
            Ok(p) => p,
            Err(e) => return self.set(hook.probe, Status::Error, Some(e), module_of(present[0])),
        };
        // BTF names a static function even where the compiler inlined it everywhere; the
        // kernel's "no such symbol" is then the absence kallsyms would have shown, and the
        // next candidate is tried.
        let mut not_probeable = Vec::new();
        for sym in present {
            let module = module_of(sym);
            // A name both vmlinux and a module define: a plain-name kprobe lands on vmlinux's,
            // so the module's is named `MODULE:SYMBOL` (the kernel's kprobe lookup takes that
            // form). Seen on Debian's 7.x, where pci-hyperv is built in and a driver module
            // of the same functions is the one that runs.
            let shadowed = symbols.get(sym).is_some_and(|s| s.in_vmlinux);
            let target = match (&module, shadowed) {
                (Some(m), true) => format!("{m}:{sym}"),
                _ => sym.to_string(),
            };
            match kp.attach(&target, 0) {
                Ok(id) => {
                    self.links.insert(hook.probe, Link::Kprobe(id));
                    let mut reason = self.degraded_reason(hook.probe);
                    if shadowed && let Some(m) = &module {
                        let note = format!(
                            "{sym} is in vmlinux too; {m}'s copy is the one probed ({target})"
                        );
                        reason = Some(match reason {
                            Some(r) => format!("{r}; {note}"),
                            None => note,
                        });
                    }
                    return self.set_on(hook.probe, Status::Attached, reason, module, Some(sym));
                }
                Err(e) => {
                    let text = error_chain(&e);
                    if self.kprobes_denied.is_some() || text.contains("Operation not permitted") {
                        return self.set(hook.probe, Status::Denied, Some(text), module);
                    }
                    if table == SymbolTable::Btf && text.contains("No such file or directory") {
                        not_probeable.push(format!(
                            "{sym} is in the kernel's BTF but the kernel has no such symbol to probe (inlined or specialised on this kernel): {text}"
                        ));
                        continue;
                    }
                    return self.set(hook.probe, Status::Error, Some(text), module);
                }
            }
        }
        let mut why = not_probeable.join("; ");
        let unlisted: Vec<&str> = hook
            .symbols
            .iter()
            .copied()
            .filter(|c| !symbols.get(c).is_some_and(|s| s.exact))
            .collect();
        if !unlisted.is_empty() {
            why.push_str(&format!(
                "; {} not in {}",
                unlisted.join(", "),
                table.name()
            ));
        }
        let status = if hook.module.is_some() {
            Status::Pending
        } else {
            Status::Absent
        };
        self.set(hook.probe, status, Some(why), None)
    }

    fn attach_tracepoint(&mut self, ebpf: &mut Ebpf, hook: &Hook) -> Option<ProbeId> {
        let (category, name) = hook
            .symbol()
            .split_once(':')
            .expect("catalogue tracepoints are category:name");
        let tracefs = match &self.tracefs {
            Ok(p) => p.clone(),
            Err(e) => return self.set(hook.probe, Status::Error, Some(e.clone()), None),
        };
        if !kernel::tracepoint_exists(&tracefs, category, name) {
            let why = format!(
                "tracepoint {category}:{name} is not on this kernel ({} is missing)",
                tracefs.join("events").join(category).join(name).display()
            );
            return self.set(hook.probe, Status::Absent, Some(why), None);
        }
        if let Some((field, why)) = self.essential_field_missing(hook.probe) {
            let why = format!("its record layout is unknown on this kernel: {field}: {why}");
            return self.set(hook.probe, Status::Error, Some(why), None);
        }
        let tp: &mut TracePoint = match self.program(ebpf, hook.probe) {
            Ok(p) => p,
            Err(e) => return self.set(hook.probe, Status::Error, Some(e), None),
        };
        match tp.attach(category, name) {
            Ok(_) => {
                self.links.insert(hook.probe, Link::Tracepoint);
                let reason = self.degraded_reason(hook.probe);
                self.set(hook.probe, Status::Attached, reason, None)
            }
            Err(e) => self.set(hook.probe, Status::Error, Some(error_chain(&e)), None),
        }
    }

    /// A raw tracepoint needs no tracefs; its argument, found in BTF's `btf_trace_<name>`
    /// prototype, is also the proof that the tracepoint exists.
    fn attach_raw_tracepoint(&mut self, ebpf: &mut Ebpf, hook: &Hook) -> Option<ProbeId> {
        let name = hook
            .symbol()
            .split_once(':')
            .map_or(hook.symbol(), |(_, name)| name);
        if let Some((arg, why)) = self.essential_field_missing(hook.probe) {
            let why = format!("raw tracepoint {name}: its argument {arg} is not in BTF: {why}");
            return self.set(hook.probe, Status::Absent, Some(why), None);
        }
        let tp: &mut RawTracePoint = match self.program(ebpf, hook.probe) {
            Ok(p) => p,
            Err(e) => return self.set(hook.probe, Status::Error, Some(e), None),
        };
        match tp.attach(name) {
            Ok(_) => {
                self.links.insert(hook.probe, Link::Tracepoint);
                self.set(hook.probe, Status::Attached, None, None)
            }
            Err(e) => self.set(hook.probe, Status::Error, Some(error_chain(&e)), None),
        }
    }

    /// The first field a tracepoint program reads, when this kernel lacks it (and why): the
    /// program would read garbage, so the hook is refused.
    fn essential_field_missing(&self, probe: ProbeId) -> Option<(&str, &str)> {
        let first = fields_read(probe).first()?;
        self.missing_fields
            .iter()
            .find(|(n, _)| n == first)
            .map(|(n, r)| (n.as_str(), r.as_str()))
    }

    fn degraded_reason(&self, probe: ProbeId) -> Option<String> {
        let missing: Vec<&str> = fields_read(probe)
            .iter()
            .filter(|f| self.missing_fields.iter().any(|(n, _)| n == *f))
            .copied()
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "attached, but these fields are not on this kernel and are not reported: {}",
                missing.join(", ")
            )
        })
    }

    fn explain_migration_fallback(&mut self) {
        let fallback_attached = CATALOGUE
            .iter()
            .filter(|h| h.fallback_for.is_some())
            .all(|h| self.status(h.probe).status == Status::Attached);
        let s = self.status_mut(ProbeId::MigrateOneIrq);
        if s.status != Status::Attached && fallback_attached {
            let why = s.reason.clone().unwrap_or_default();
            s.reason = Some(format!(
                "{why}; replaced by its fallback window (irq_migrate_all_off_this_cpu + irq_do_set_affinity)"
            ));
        }
    }

    fn update_rules_losing_input(&mut self) {
        let missing = self.missing_fields.clone();
        for s in &mut self.statuses {
            let hook = hook_of(s.probe);
            let degraded = fields_read(s.probe)
                .iter()
                .any(|f| missing.iter().any(|(n, _)| n == f));
            let lost = match s.status {
                Status::Attached => degraded,
                Status::Unused => false,
                // The direct hook is covered when its fallback window runs.
                _ if hook.probe == ProbeId::MigrateOneIrq => CATALOGUE
                    .iter()
                    .filter(|h| h.fallback_for.is_some())
                    .any(|h| !self.links.contains_key(&h.probe)),
                _ => true,
            };
            s.rules_losing_input = if lost {
                hook.rules().iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            };
        }
    }
}

fn hook_of(probe: ProbeId) -> &'static Hook {
    crate::probes::hook_of(probe)
}

fn initial_status(hook: &Hook) -> ProbeStatus {
    ProbeStatus {
        hook: hook.hook.to_string(),
        symbol: hook.symbol().to_string(),
        candidates: hook.symbols.iter().map(|c| c.to_string()).collect(),
        attached_symbol: None,
        method: if hook.fallback_for.is_some() {
            Method::Fallback
        } else {
            hook.method
        },
        status: Status::Pending,
        reason: None,
        module: hook.module.map(str::to_string),
        rules_losing_input: hook.rules().iter().map(ToString::to_string).collect(),
        probe: hook.probe,
        symbol_source: None,
    }
}

/// The hook's candidates the table lists by their plain name, in the hook's order: what to try
/// attaching to, first present first.
fn present_candidates(hook: &Hook, symbols: &KernelSymbols) -> Vec<&'static str> {
    hook.symbols
        .iter()
        .copied()
        .filter(|c| symbols.get(c).is_some_and(|s| s.exact))
        .collect()
}

/// Why no candidate of `hook` is in the table, naming each candidate tried.
fn absent_reason(hook: &Hook, symbols: &KernelSymbols) -> String {
    let table = symbols.source().kind.name();
    let subject = match hook.symbols {
        [one] => format!("{one} is not in {table}"),
        many => format!(
            "none of {} (tried in this order) is in {table}",
            many.join(", ")
        ),
    };
    let copies: Vec<&str> = hook
        .symbols
        .iter()
        .filter_map(|c| symbols.get(c))
        .filter(|s| !s.exact)
        .flat_map(|s| s.variants.iter().map(String::as_str))
        .collect();
    if !copies.is_empty() {
        return format!(
            "{subject}, only compiler-specialised copies ({}) whose arguments are not the prototype's",
            copies.join(", ")
        );
    }
    match hook.module {
        Some(m) if symbols.has_module(m) => {
            format!("{subject}, though module {m} is loaded (renamed or removed on this kernel?)")
        }
        Some(m) => format!("{subject}: module {m} is not loaded; attaches when it appears"),
        None if matches!(
            hook.probe,
            ProbeId::PciIrqMaskMsi
                | ProbeId::PciIrqUnmaskMsi
                | ProbeId::PciIrqMaskMsix
                | ProbeId::PciIrqUnmaskMsix
        ) =>
        {
            format!(
                "{subject} on this kernel (it comes with the per-device MSI domains of 6.2 and later; without them pci_msi_mask_irq/pci_msi_unmask_irq carry every device's mask)"
            )
        }
        None if hook.probe == ProbeId::MigrateOneIrq => {
            format!("{subject} (inlined into irq_migrate_all_off_this_cpu on this kernel)")
        }
        None => format!("{subject} on this kernel"),
    }
}

/// The error and its sources on one line: aya's top-level messages alone ("`kprobe` error")
/// hide the kernel's reason.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    // aya quotes paths in backticks; the kernel's own wording reads better without them.
    parts
        .join(": ")
        .replace(" (os error 2)", "")
        .replace('`', "")
}

/// The verifier's log is long; its last lines before the statistics footer say why.
fn verifier_summary(e: &aya::programs::ProgramError) -> String {
    summarise_verifier_log(&format!("{e:#}"))
}

/// The log ends with statistics ("verification time …", "processed N insns …", "stack depth
/// …"); the line that says why comes before them (seen on 5.10: `invalid read from stack R10
/// off=-24 size=8`, hidden behind a three-line footer).
fn summarise_verifier_log(full: &str) -> String {
    const FOOTER: &[&str] = &[
        "verification time",
        "processed ",
        "stack depth",
        "max_states_per_insn",
        "peak_states",
        "mark_read",
    ];
    let lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !FOOTER.iter().any(|f| l.starts_with(f)))
        .collect();
    let tail = lines.len().saturating_sub(2);
    lines[tail..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: SymbolTable, text: &str) -> KernelSymbols {
        KernelSymbols::parse(kind, text)
    }

    #[test]
    fn the_verifier_summary_keeps_the_reason_not_the_statistics() {
        // The tail of 5.10's log for pci_restore_msi_state:return.
        let log = "load program: permission denied: verifier log:
; if in_migration(pid_tgid) {
37: (79) r1 = *(u64 *)(r10 -24)
invalid read from stack R10 off=-24 size=8
verification time 1234 usec
stack depth 48
processed 1775 insns (limit 1000000) max_states_per_insn 2 total_states 120 peak_states 120 mark_read 9
";
        let s = summarise_verifier_log(log);
        assert!(
            s.contains("invalid read from stack R10 off=-24 size=8"),
            "{s}"
        );
        assert!(!s.contains("processed"), "{s}");
    }

    #[test]
    fn absent_reasons_name_the_table_that_was_read() {
        let unmask = hook_of(ProbeId::HvUnmaskEnter);
        assert_eq!(
            absent_reason(unmask, &table(SymbolTable::AvailableFilterFunctions, "")),
            "hv_irq_unmask is not in available_filter_functions: module pci_hyperv is not loaded; attaches when it appears"
        );
        let migrate = hook_of(ProbeId::MigrateOneIrq);
        assert_eq!(
            absent_reason(migrate, &table(SymbolTable::Btf, "")),
            "migrate_one_irq is not in the kernel's BTF (inlined into irq_migrate_all_off_this_cpu on this kernel)"
        );
        let copies = table(
            SymbolTable::Kallsyms,
            "ffffffff81000000 t pci_msi_unmask_irq.isra.0\n",
        );
        let why = absent_reason(hook_of(ProbeId::PciMsiUnmask), &copies);
        assert!(
            why.starts_with(
                "pci_msi_unmask_irq is not in /proc/kallsyms, only compiler-specialised copies (pci_msi_unmask_irq.isra.0)"
            ),
            "{why}"
        );
    }

    #[test]
    fn the_first_candidate_present_is_chosen() {
        let compose = hook_of(ProbeId::HvComposeEnter);
        let renamed = table(
            SymbolTable::Kallsyms,
            "ffffffffc0a01000 t hv_vmbus_compose_msi_msg\t[pci_hyperv]\n\
             ffffffffc0a02000 t hv_irq_unmask\t[pci_hyperv]\n",
        );
        assert_eq!(
            present_candidates(compose, &renamed),
            ["hv_vmbus_compose_msi_msg"]
        );
        let both = table(
            SymbolTable::AvailableFilterFunctions,
            "hv_vmbus_compose_msi_msg [pci_hyperv]\nhv_compose_msi_msg [pci_hyperv]\n",
        );
        assert_eq!(
            present_candidates(compose, &both),
            ["hv_compose_msi_msg", "hv_vmbus_compose_msi_msg"]
        );
        // A compiler-specialised copy is not the function: the next candidate is taken.
        let copy = table(
            SymbolTable::Kallsyms,
            "ffffffffc0a01000 t hv_compose_msi_msg.constprop.0\t[pci_hyperv]\n\
             ffffffffc0a03000 t hv_vmbus_compose_msi_msg\t[pci_hyperv]\n",
        );
        assert_eq!(
            present_candidates(compose, &copy),
            ["hv_vmbus_compose_msi_msg"]
        );
    }

    #[test]
    fn an_absent_hook_names_every_candidate_it_tried() {
        let compose = hook_of(ProbeId::HvComposeExit);
        assert_eq!(
            absent_reason(compose, &table(SymbolTable::Kallsyms, "")),
            "none of hv_compose_msi_msg, hv_vmbus_compose_msi_msg (tried in this order) is in /proc/kallsyms: module pci_hyperv is not loaded; attaches when it appears"
        );
        let loaded = table(
            SymbolTable::Kallsyms,
            "ffffffffc0a02000 t hv_irq_unmask\t[pci_hyperv]\n",
        );
        let why = absent_reason(compose, &loaded);
        assert!(
            why.starts_with(
                "none of hv_compose_msi_msg, hv_vmbus_compose_msi_msg (tried in this order) is in /proc/kallsyms, though module pci_hyperv is loaded"
            ),
            "{why}"
        );
    }
}

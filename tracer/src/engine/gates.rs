//! Kernel and probe gates: which rules have their input on this kernel. A rule whose input
//! is missing is reported as "not evaluated: <why>", never skipped in silence or guessed.
//!
//! Kernel gates decide on what the kernel's BTF shows (the facts the layout resolver keeps in
//! the trace header), not on its version number: distribution kernels backport (H5's early
//! return, upstream 6.4, is in Debian 6.1 with the `state_lock` series). A version number
//! decides only where no BTF fact tells, and the reason then says so.

use serde::Serialize;
use tracer_common::{NUM_PROBES, ProbeId};

use super::divergence::RuleId;
use crate::btf_layout::{BtfFact, FactState, HV_MSI_PARENT, HV_STATE_LOCK, fact_state};
use crate::probes::{ProbeStatus, Status, hook_of};

/// `major.minor.patch` of a kernel release such as `6.12.117+deb12-amd64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut nums = release.split(['.', '-', '+', '_', ' ']).map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        });
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A rule, or part of one, that could not be evaluated, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotEvaluated {
    pub rule: RuleId,
    /// The part of the rule concerned, when not all of it.
    pub part: Option<String>,
    /// The resume epoch concerned, when the reason is about one epoch.
    pub epoch: Option<u32>,
    pub reason: String,
}

/// What the engine knows about the probes and the kernel, fixed at start.
#[derive(Clone, Debug)]
pub struct Gates {
    pub release: String,
    pub version: Option<KernelVersion>,
    status: [Option<ProbeStatus>; NUM_PROBES as usize],
    has_probe_list: bool,
    facts: Vec<BtfFact>,
    /// [`Gates::kernel_gate`] of each rule in [`RuleId::ALL`]'s order. Release and facts are
    /// fixed at start, and H4's gate is asked at every unmask return: working it out (and
    /// formatting its reason) each time took a tenth of a replay's engine instructions.
    kernel_gates: [Option<String>; RuleId::ALL.len()],
}

impl Gates {
    /// `facts`: what the kernel's BTF showed when recording began (empty for a trace file
    /// written before msitrace kept them: every fact is then unknown).
    pub fn new(release: &str, probes: &[ProbeStatus], facts: &[BtfFact]) -> Gates {
        let mut status: [Option<ProbeStatus>; NUM_PROBES as usize] = std::array::from_fn(|_| None);
        for p in probes {
            status[p.probe as usize] = Some(p.clone());
        }
        let mut gates = Gates {
            release: release.to_string(),
            version: KernelVersion::parse(release),
            status,
            has_probe_list: !probes.is_empty(),
            facts: facts.to_vec(),
            kernel_gates: std::array::from_fn(|_| None),
        };
        gates.kernel_gates = RuleId::ALL.map(|rule| gates.work_out_kernel_gate(rule));
        gates
    }

    /// Attached per the trace header, or events of it were seen (a module that loaded later).
    pub fn available(&self, p: ProbeId, seen: &[u64; NUM_PROBES as usize]) -> bool {
        seen[p as usize] > 0
            || self.status[p as usize]
                .as_ref()
                .is_some_and(|s| s.status == Status::Attached)
    }

    /// Why a probe is not there, in the words a user reads in `msitrace probes`.
    pub fn why_missing(&self, p: ProbeId) -> String {
        let hook = hook_of(p);
        let Some(s) = &self.status[p as usize] else {
            return format!("{} is not in the trace's probe list", hook.hook);
        };
        let module = s.module.as_deref().or(hook.module);
        let reason = s
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        match s.status {
            // Files before candidates had only `symbol`.
            Status::Absent if s.candidates.len() > 1 => format!(
                "none of {} is on this kernel{reason}",
                s.candidates.join(", ")
            ),
            Status::Absent => match module {
                Some(m) => format!("{} is not on this kernel ({m} not loaded)", s.symbol),
                None => format!("{} is not on this kernel{reason}", s.symbol),
            },
            Status::Pending => format!(
                "{} was waiting for {} to load, which it never did",
                s.symbol,
                module.unwrap_or("its module")
            ),
            Status::Denied => format!("{} was refused by the kernel{reason}", s.hook),
            Status::Error => format!("{} failed to attach{reason}", s.hook),
            Status::Unused => format!("{} was not used{reason}", s.hook),
            Status::Attached => format!("{} is attached", s.hook),
        }
    }

    /// Rules (and parts) that cannot be evaluated from the probes and the kernel.
    pub fn static_not_evaluated(&self, seen: &[u64; NUM_PROBES as usize]) -> Vec<NotEvaluated> {
        let mut out = Vec::new();
        for rule in RuleId::ALL {
            if !self.has_probe_list {
                out.push(NotEvaluated {
                    rule,
                    part: None,
                    epoch: None,
                    reason: "the trace has no probe list, so what attached is unknown".into(),
                });
                continue;
            }
            if let Some(reason) = self.missing_input(rule, seen) {
                out.push(NotEvaluated {
                    rule,
                    part: None,
                    epoch: None,
                    reason,
                });
                continue;
            }
            if let Some(reason) = self.kernel_gate(rule) {
                out.push(NotEvaluated {
                    rule,
                    part: None,
                    epoch: None,
                    reason,
                });
            }
        }
        if self.has_probe_list && self.missing_input(RuleId::G2, seen).is_none() {
            let window = self.available(ProbeId::MigrateOneIrq, seen)
                || self.available(ProbeId::MigrateAllOffEnter, seen);
            if !self.available(ProbeId::SetAffinityExit, seen) || !window {
                let p = if window {
                    ProbeId::SetAffinityExit
                } else {
                    ProbeId::MigrateAllOffEnter
                };
                out.push(NotEvaluated {
                    rule: RuleId::G2,
                    part: Some("irq_do_set_affinity failed in the migration window".into()),
                    epoch: None,
                    reason: self.why_missing(p),
                });
            }
        }
        out
    }

    fn missing_input(&self, rule: RuleId, seen: &[u64; NUM_PROBES as usize]) -> Option<String> {
        crate::probes::requirements(rule)
            .iter()
            .find(|group| !group.iter().any(|&p| self.available(p, seen)))
            .map(|group| self.why_missing(group[0]))
    }

    /// Kernel gates of the rules (README.md, "Rules" and "What it hooks"): `Some(why)` when the rule's input does not exist on
    /// this kernel.
    pub fn kernel_gate(&self, rule: RuleId) -> Option<String> {
        self.kernel_gate_ref(rule).map(str::to_string)
    }

    fn kernel_gate_ref(&self, rule: RuleId) -> Option<&str> {
        self.kernel_gates[rule as usize].as_deref()
    }

    fn work_out_kernel_gate(&self, rule: RuleId) -> Option<String> {
        match rule {
            RuleId::H4 => self.h4_gate(),
            RuleId::H5 => self.h5_gate(),
            _ => None,
        }
    }

    /// H4 reads the mask cache after hv_irq_unmask returns, which says whether the unmask
    /// worked only while hv_irq_unmask itself calls pci_msi_unmask_irq. The series that made
    /// pci-hyperv a per-device MSI parent (upstream 6.17) ended that, and brought
    /// hv_pcie_init_dev_msi_info: pci-hyperv's BTF showing that function decides (Debian's 7.x
    /// builds pci-hyperv into vmlinux, so its BTF is vmlinux's). Without the fact (pci_hyperv's
    /// BTF was not there when recording began, or an older trace file) the version decides,
    /// and the reason says so.
    fn h4_gate(&self) -> Option<String> {
        const NEW_PATH: &str = "hv_irq_unmask no longer calls pci_msi_unmask_irq, so the mask \
                                cache after it returns does not say whether the unmask worked";
        match fact_state(&self.facts, HV_MSI_PARENT) {
            FactState::Present => Some(format!(
                "pci-hyperv's BTF has {HV_MSI_PARENT}: it is a per-device MSI parent domain \
                 (the 6.17 series), and {NEW_PATH}"
            )),
            FactState::Absent => None,
            FactState::Unknown => self.by_version(HV_MSI_PARENT, |v| {
                v.at_least(6, 17)
                    .then(|| format!("on {v} (6.17 and later) {NEW_PATH}"))
            }),
        }
    }

    /// H5 looks for the silent unmask of hv_irq_unmask's early return for a vector without a
    /// remapping entry (2738d5ab7929). It came upstream in 6.4 with the series that added
    /// `hv_pcibus_device.state_lock`, and reached 6.1 stable with it: pci_hyperv's BTF showing
    /// that member decides. Without the fact (pci_hyperv's BTF was not there when recording
    /// began, or an older trace file), the version has to decide and the reason says so.
    fn h5_gate(&self) -> Option<String> {
        match fact_state(&self.facts, HV_STATE_LOCK) {
            FactState::Present => None,
            FactState::Absent => Some(format!(
                "pci_hyperv's BTF has no {HV_STATE_LOCK}: this pci-hyperv predates the series \
                 that brought hv_irq_unmask's early return for a vector without a remapping \
                 entry (2738d5ab7929), so the silent unmask H5 looks for does not exist there"
            )),
            FactState::Unknown => self.by_version(HV_STATE_LOCK, |v| {
                (!v.at_least(6, 4)).then(|| {
                    format!(
                        "{v} is before 6.4, where hv_irq_unmask's early return for a vector \
                         without a remapping entry came upstream (a distribution kernel may \
                         carry it earlier; record with pci_hyperv loaded to let its BTF tell)"
                    )
                })
            }),
        }
    }

    /// A gate whose BTF fact the trace does not have: the version decides, through `closed`
    /// (why the rule cannot hold on that version, or `None`), and the reason says it was the
    /// version.
    fn by_version(
        &self,
        fact: &str,
        closed: impl FnOnce(&KernelVersion) -> Option<String>,
    ) -> Option<String> {
        let unknown = format!(
            "the trace has no BTF fact about {fact} (pci_hyperv's BTF was not available when \
             recording began, or an older msitrace recorded it)"
        );
        match &self.version {
            None => Some(format!(
                "{unknown}, and kernel release {:?} could not be parsed to fall back on",
                self.release
            )),
            Some(v) => closed(v).map(|why| format!("{unknown}, so the version decides: {why}")),
        }
    }

    pub fn rule_enabled(&self, rule: RuleId, seen: &[u64; NUM_PROBES as usize]) -> bool {
        self.has_probe_list
            && self.missing_input(rule, seen).is_none()
            && self.kernel_gate_ref(rule).is_none()
    }

    /// Gate for acting on an event as it arrives: the kernel gate only (probe availability is
    /// decided at report time, when every probe that fired is known).
    pub fn kernel_allows(&self, rule: RuleId) -> bool {
        self.kernel_gate_ref(rule).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::CATALOGUE;

    fn status(p: ProbeId, st: Status) -> ProbeStatus {
        let h = hook_of(p);
        ProbeStatus {
            hook: h.hook.into(),
            symbol: h.symbol().into(),
            candidates: h.symbols.iter().map(|c| c.to_string()).collect(),
            attached_symbol: (st == Status::Attached).then(|| h.symbol().into()),
            method: h.method,
            status: st,
            reason: None,
            module: h.module.map(str::to_string),
            rules_losing_input: Vec::new(),
            probe: p,
            symbol_source: None,
        }
    }

    #[test]
    fn parses_distribution_releases() {
        let v = KernelVersion::parse("6.12.117+deb12-amd64").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (6, 12, 117));
        assert_eq!(KernelVersion::parse("6.1.0-56-amd64").unwrap().minor, 1);
        assert_eq!(KernelVersion::parse("5.15").unwrap().patch, 0);
        assert!(KernelVersion::parse("linux").is_none());
    }

    #[test]
    fn hv_rules_are_not_evaluated_without_pci_hyperv() {
        let probes: Vec<ProbeStatus> = CATALOGUE
            .iter()
            .map(|h| {
                let st = if h.module.is_some() {
                    Status::Absent
                } else {
                    Status::Attached
                };
                status(h.probe, st)
            })
            .collect();
        let g = Gates::new("6.12.117+deb12-amd64", &probes, &[]);
        let ne = g.static_not_evaluated(&[0; NUM_PROBES as usize]);
        let h4 = ne.iter().find(|n| n.rule == RuleId::H4).unwrap();
        assert_eq!(
            h4.reason,
            "hv_irq_unmask is not on this kernel (pci_hyperv not loaded)"
        );
        assert!(ne.iter().any(|n| n.rule == RuleId::H1));
        assert!(!ne.iter().any(|n| n.rule == RuleId::G1));
        // Events seen from the module's probes mean it loaded later and they attached.
        let mut seen = [0; NUM_PROBES as usize];
        seen[ProbeId::HvUnmaskExit as usize] = 1;
        let ne = g.static_not_evaluated(&seen);
        assert!(!ne.iter().any(|n| n.rule == RuleId::H4));
    }

    fn fact_named(name: &str, state: FactState) -> Vec<BtfFact> {
        vec![BtfFact {
            name: name.into(),
            state,
            source: Some("pci_hyperv".into()),
            reason: None,
        }]
    }

    fn fact(state: FactState) -> Vec<BtfFact> {
        fact_named(HV_STATE_LOCK, state)
    }

    #[test]
    fn h4_is_gated_by_the_msi_parent_fact_and_by_the_version_only_without_it() {
        let probes: Vec<ProbeStatus> = CATALOGUE
            .iter()
            .map(|h| status(h.probe, Status::Attached))
            .collect();
        let seen = [0; NUM_PROBES as usize];
        let h4 = |release: &str, state: Option<FactState>| {
            let facts = state.map_or_else(Vec::new, |s| fact_named(HV_MSI_PARENT, s));
            Gates::new(release, &probes, &facts)
                .static_not_evaluated(&seen)
                .into_iter()
                .find(|n| n.rule == RuleId::H4)
                .map(|n| n.reason)
        };
        // A 6.12 carrying the series (a backport): gated, whatever the version says.
        let backport = h4("6.12.117+deb12-amd64", Some(FactState::Present)).unwrap();
        assert!(backport.contains("per-device MSI parent"), "{backport}");
        // A 6.17-numbered kernel without it (a vendor revert): evaluated.
        assert_eq!(h4("6.17.1", Some(FactState::Absent)), None);
        // No fact: the version decides, and says so.
        let old_file = h4("7.3.4+deb13-amd64", None).unwrap();
        assert!(old_file.contains("so the version decides"), "{old_file}");
        assert_eq!(h4("6.12.117+deb12-amd64", None), None);
        assert!(h4("linux", None).unwrap().contains("could not be parsed"));
    }

    #[test]
    fn h5_is_gated_by_the_state_lock_fact_and_h4_by_the_version() {
        let probes: Vec<ProbeStatus> = CATALOGUE
            .iter()
            .map(|h| status(h.probe, Status::Attached))
            .collect();
        let seen = [0; NUM_PROBES as usize];
        let ne = |release: &str, facts: &[BtfFact]| {
            Gates::new(release, &probes, facts).static_not_evaluated(&seen)
        };
        let new = ne("6.17.1", &[]);
        assert!(
            new.iter()
                .any(|n| n.rule == RuleId::H4 && n.reason.contains("6.17"))
        );
        // 6.1 with the state_lock series (Debian's): evaluated, whatever the version says.
        let debian = ne("6.1.0-56-amd64", &fact(FactState::Present));
        assert!(debian.is_empty(), "{debian:?}");
        // A newer version without it (a vendor kernel that reverted it): not evaluated.
        let reverted = ne("6.12.117+deb12-amd64", &fact(FactState::Absent));
        assert!(
            reverted
                .iter()
                .any(|n| n.rule == RuleId::H5 && n.reason.contains("has no hv_pcibus_device"))
        );
        // No fact (older trace file): the version decides, and says so.
        let old = ne("6.1.0-56-amd64", &[]);
        let h5 = old.iter().find(|n| n.rule == RuleId::H5).unwrap();
        assert!(
            h5.reason.contains("so the version decides"),
            "{}",
            h5.reason
        );
        assert!(!old.iter().any(|n| n.rule == RuleId::H4));
        let mid = ne("6.12.117+deb12-amd64", &[]);
        assert!(mid.is_empty(), "{mid:?}");
        let bad = ne("linux", &fact(FactState::Present));
        assert!(bad.iter().all(|n| n.rule == RuleId::H4), "{bad:?}");
    }
}

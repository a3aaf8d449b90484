//! The rules of README.md ("Rules"), evaluated by the engine as events arrive (H1–H5, H9, G2) or when
//! a deadline passes (G1, G3, G5). Each finding names the rule, the vector(s), the epoch and the
//! evidence, and says in one sentence what a kernel engineer should look at.
//!
//! Severities: error where the device will get no interrupts (H1–H4, G1–G3, a failed
//! hv_pci_resume); warning for the heuristic G5, for findings whose escalation is pending (a
//! failed compose not yet used, an unmask that left the mask set but not yet written to the
//! device) and for findings weakened by later evidence (a re-compose, an unmask, lost events).

use tracer_common::ProbeId;

use super::divergence::{DivergenceUpdate, Evidence, Finding, Key, RuleId, Scope, Severity};
use super::state::{Compose, Phase, Restore, VectorState};
use super::{AbsenceClaim, Engine, HostSeen, Pending, secs};
use crate::engine::losses::LossReport;
use crate::event::{Event, MsiMsg, VectorSnap};

const COMPOSE_PROBES: &[ProbeId] = &[ProbeId::HvComposeEnter, ProbeId::HvComposeExit];
/// H1 also rests on the absence of the host's reply in a compose.
const COMPOSE_REPLY_PROBES: &[ProbeId] = &[
    ProbeId::HvComposeEnter,
    ProbeId::HvComposeExit,
    ProbeId::HvComposeCompl,
];
// Every probe whose events move a target (see `Engine::target_after_migration` and co).
const TARGET_PROBES: &[ProbeId] = &[
    ProbeId::VectorUpdate,
    ProbeId::VectorConfig,
    ProbeId::VectorClear,
    ProbeId::SetAffinityExit,
    ProbeId::WriteMsiMsg,
];
const ACTIVATE_PROBES: &[ProbeId] = &[ProbeId::VectorActivate];
const UNMASK_PROBES: &[ProbeId] = &[
    ProbeId::HvUnmaskEnter,
    ProbeId::HvUnmaskExit,
    ProbeId::PciMsiUnmask,
    ProbeId::PciIrqUnmaskMsi,
    ProbeId::PciIrqUnmaskMsix,
    ProbeId::WriteMsiMsg,
];

/// An open finding that later evidence may escalate or weaken.
#[derive(Clone, Debug)]
pub(crate) struct OpenFinding {
    pub key: Key,
    pub cycle: u32,
    /// The sentence as first raised, to which later evidence adds `notes`.
    pub base: String,
    pub notes: Vec<String>,
    pub escalated: bool,
}

impl OpenFinding {
    /// The base sentence with one more clause (kept for later revisions).
    fn with(&mut self, note: String) -> String {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
        let mut m = self.base.clone();
        for n in &self.notes {
            m.push_str("; ");
            m.push_str(n);
        }
        m
    }
}

impl Engine {
    /// `+1.234 s` from the start of the trace.
    pub(crate) fn t(&self, ts: u64) -> String {
        format!("+{:.3} s", ts.saturating_sub(self.origin_ns()) as f64 / 1e9)
    }

    fn key(&self, rule: RuleId, irq: u32, cause: &str, epoch: u32) -> Key {
        let generation = self.state.vectors.get(&irq).map_or(0, |v| v.generation);
        Key {
            rule,
            scope: Scope::Vector(irq, generation),
            cause: cause.to_string(),
            epoch,
        }
    }

    fn describe(&self, irq: u32) -> (String, Option<String>) {
        match self.state.vectors.get(&irq) {
            Some(v) => (v.describe(), v.device.clone()),
            None => ("device unknown".into(), None),
        }
    }

    fn raise(&mut self, f: Finding, out: &mut Vec<DivergenceUpdate>) {
        if let Some(u) = self.log.raise(f) {
            out.push(u);
        }
    }

    fn revise(
        &mut self,
        key: &Key,
        severity: Severity,
        meaning: String,
        evidence: Option<Evidence>,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if let Some(u) = self.log.revise(key, severity, meaning, evidence) {
            out.push(u);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_finding(
        &self,
        rule: RuleId,
        irq: u32,
        cause: &str,
        epoch: u32,
        severity: Severity,
        ts: u64,
        evidence: Vec<Evidence>,
        meaning: String,
    ) -> Finding {
        let device = self.state.vectors.get(&irq).and_then(|v| v.device.clone());
        Finding {
            key: self.key(rule, irq, cause, epoch),
            severity,
            irq: Some(irq),
            irqs: vec![irq],
            device,
            ts_ns: ts,
            evidence,
            meaning,
        }
    }

    /// Raise a finding that rests on the absence of events from `probes` since `from_ts`:
    /// weakened at once if some were lost then, and remembered so a later loss report does too.
    fn raise_absence(
        &mut self,
        mut f: Finding,
        probes: &'static [ProbeId],
        from_ts: u64,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let base = f.meaning.clone();
        if self.losses.lost_between(probes, from_ts, f.ts_ns) > 0 {
            f.severity = Severity::Warning;
            f.meaning = loss_note(&base, probes);
        }
        let claim = AbsenceClaim {
            key: f.key.clone(),
            probes,
            from_ts,
            to_ts: f.ts_ns,
            meaning: base,
        };
        let is_new = self.log.get(&f.key).is_none();
        self.raise(f, out);
        if is_new {
            self.absence_claims.push(claim);
        }
    }

    pub(crate) fn on_loss(&mut self, r: &LossReport, out: &mut Vec<DivergenceUpdate>) {
        let hits: Vec<(Key, String, &'static [ProbeId])> = self
            .absence_claims
            .iter()
            .filter(|c| {
                c.probes.contains(&r.probe) && r.from_ts_ns <= c.to_ts && r.ts_ns >= c.from_ts
            })
            .map(|c| (c.key.clone(), c.meaning.clone(), c.probes))
            .collect();
        for (key, base, probes) in hits {
            let ev = Evidence::note(
                r.ts_ns,
                "lost",
                format!(
                    "{} events of {} lost since {}",
                    r.count,
                    r.hook,
                    self.t(r.from_ts_ns)
                ),
            );
            self.revise(
                &key,
                Severity::Warning,
                loss_note(&base, probes),
                Some(ev),
                out,
            );
        }
    }

    // --- H1, H2, H3: compose and restore --------------------------------------------------

    /// **H3 compose failed.** Decided by what the kernel observably got: the message
    /// `hv_compose_msi_msg` returned (every pci-hyperv failure path zeroes it,
    /// `return_null_message`, in every version) and, where `hv_pci_compose_compl` is hooked,
    /// the host's status in its reply to this call (negative: the host refused, and
    /// pci-hyperv fails the compose). Either one saying failure is a failed compose; the
    /// status is in the evidence. `irq_data->chip_data` after return only corroborates:
    /// pci-hyperv stores the host's descriptor there on success and leaves it NULL on failure,
    /// but a pci-hyperv-like driver may keep its descriptor elsewhere. When the two disagree
    /// the message wins and the contradiction becomes an input warning, never a divergence. A
    /// return whose message and status could not be read decides nothing: it still counts as
    /// a compose for H1/H5, so a read the kernel did not allow cannot turn into an accusation.
    ///
    /// For H1 a compose also has to have reached the host: with the reply hook attached, a
    /// compose seen from entry to return without a reply attributed to it (pci-hyperv's
    /// multi-MSI early return reuses the old entry without asking) re-created nothing. Where
    /// that cannot be told ([`HostSeen::Unknown`]: no hook, entry not seen, a reply nobody
    /// could be told to own) the returned message decides, as it did before the hook.
    pub(crate) fn on_compose_exit(
        &mut self,
        ev: &Event,
        irq: u32,
        v: &VectorSnap,
        msg: Option<MsiMsg>,
        host: HostSeen,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let ts = ev.ts_ns;
        let cycle = self.cycle;
        let epoch = self.state.epoch;
        let msg_failed = msg.is_some_and(|m| m.is_zero());
        let (host_status, reply_evidence) = match &host {
            HostSeen::Replied { status, evidence } => (*status, Some(evidence.clone())),
            _ => (None, None),
        };
        let refused = host_status.is_some_and(|s| s < 0);
        let failed = msg_failed || refused;
        let ok = (msg.is_some() || host_status.is_some()).then_some(!failed);
        let reached_host = match host {
            HostSeen::Unknown => None,
            HostSeen::Replied { .. } => Some(true),
            HostSeen::NoReply => Some(false),
        };
        if msg.is_some() || host_status.is_some() {
            self.compose_exits_readable += 1;
        }
        // chip_data corroborates: NULL after a good message, or set after a zeroed one, is
        // the driver keeping its descriptor somewhere else (or a read gone wrong).
        let failed_by_msg = msg_failed;
        if let (Some(m), Some(cd)) = (msg, v.chip_data)
            && (cd == 0) != failed_by_msg
        {
            let (desc, _) = self.describe(irq);
            let (result, field) = if failed_by_msg {
                (
                    "a zeroed message (a failed compose)".to_string(),
                    format!("{cd:#x}"),
                )
            } else {
                (format!("message {m} (a good one)"), "NULL".to_string())
            };
            let note = format!(
                "irq {irq} ({desc}): hv_compose_msi_msg at {} returned {result}, but \
                 irq_data->chip_data was {field} after return; msitrace judged the compose by \
                 the returned message (chip_data only corroborates), so this driver may keep \
                 its remapping descriptor elsewhere",
                self.t(ts)
            );
            self.input_contradiction(irq, ts, note);
        }
        if let Some(vs) = self.state.vectors.get_mut(&irq) {
            vs.last_compose = Some(Compose {
                ts_ns: ts,
                epoch,
                cycle,
                msg,
                chip_data: v.chip_data,
                ok,
                host_status,
                reached_host,
            });
            if !failed {
                vs.compose_cycle = Some(cycle);
                if reached_host != Some(false) {
                    vs.host_compose_cycle = Some(cycle);
                }
            }
            if let (Some(true), Some(m)) = (ok, msg) {
                vs.composed_msg = Some((cycle, m, ts));
            }
        }
        if failed {
            let (desc, _) = self.describe(irq);
            let corroborated = if v.chip_data == Some(0) {
                ", chip_data NULL after return corroborates"
            } else {
                ""
            };
            let cycle_epoch = self.cycle_epoch();
            let why = match (refused, host_status, msg) {
                (true, Some(s), Some(m)) if m.is_zero() => format!(
                    "the host answered status {:#010x} (hv_pci_compose_compl), zeroed \
                     message{corroborated}",
                    s as u32
                ),
                (true, Some(s), Some(m)) => format!(
                    "the host answered status {:#010x} (hv_pci_compose_compl), though the \
                     returned message {m} was not zeroed",
                    s as u32
                ),
                (true, Some(s), None) => format!(
                    "the host answered status {:#010x} (hv_pci_compose_compl); the returned \
                     message could not be read",
                    s as u32
                ),
                _ => format!("zeroed message{corroborated}"),
            };
            let base = format!(
                "hv_compose_msi_msg for irq {irq} ({desc}) failed at {} in epoch {cycle_epoch} \
                 ({why}): the host refused an interrupt-remapping entry; look for the \
                 hv_compose_msi_req status in dmesg",
                self.t(ts)
            );
            let meaning = format!(
                "{base}; this becomes an error if the vector is restored or unmasked before a \
                 successful compose"
            );
            let f = self.vector_finding(
                RuleId::H3,
                irq,
                "compose-failed",
                cycle_epoch,
                Severity::Warning,
                ts,
                reply_evidence
                    .into_iter()
                    .chain(std::iter::once(Evidence::of(ev)))
                    .collect(),
                meaning,
            );
            self.open_finding(RuleId::H3, irq, &f, base);
            self.raise(f, out);
            return;
        }
        // A later compose in the same cycle weakens H1 (the driver re-requested the vector)
        // and closes H3; for H1 only one that was not seen to skip the host.
        if reached_host != Some(false)
            && self
                .open
                .get(&(RuleId::H1, irq))
                .is_some_and(|o| o.cycle == cycle)
        {
            let note = format!(
                "it was re-composed at {} (the driver re-requested the vector), so it \
                 recovered by accident, but hv_pci_resume should still re-compose before the \
                 PCI core restores (915cff7f38c5)",
                self.t(ts)
            );
            self.settle_as_warning(RuleId::H1, irq, note, ev, out);
        }
        if let Some(escalated) = self
            .open
            .get(&(RuleId::H3, irq))
            .filter(|o| o.cycle == cycle)
            .map(|o| o.escalated)
        {
            let note = format!("a compose at {} succeeded", self.t(ts));
            let sev = if escalated {
                Severity::Error
            } else {
                Severity::Warning
            };
            if let Some((key, meaning)) = self.open_note(RuleId::H3, irq, note, false) {
                self.revise(&key, sev, meaning, Some(Evidence::of(ev)), out);
            }
            self.open_remove(RuleId::H3, irq);
        }
    }

    /// The last compose of this vector failed in the current cycle: escalate H3.
    fn h3_escalate(
        &mut self,
        ev: &Event,
        irq: u32,
        what: &str,
        out: &mut Vec<DivergenceUpdate>,
    ) -> bool {
        let cycle = self.cycle;
        let failed = self
            .state
            .vectors
            .get(&irq)
            .and_then(|v| v.last_compose.as_ref())
            .is_some_and(|c| c.ok == Some(false) && c.cycle == cycle);
        if !failed {
            return false;
        }
        let note = format!(
            "the vector was then {what} at {}, so its interrupts go nowhere",
            self.t(ev.ts_ns)
        );
        let Some((key, meaning)) = self.open_note(RuleId::H3, irq, note, true) else {
            return false;
        };
        self.revise(&key, Severity::Error, meaning, Some(Evidence::of(ev)), out);
        true
    }

    pub(crate) fn on_restore_write(
        &mut self,
        ev: &Event,
        irq: u32,
        v: &VectorSnap,
        msg: MsiMsg,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let ts = ev.ts_ns;
        let epoch = self.state.epoch;
        let block = self.state.restore_block(irq);
        for &b in &block {
            if let Some(vs) = self.state.vectors.get_mut(&b) {
                let cache_masked = if b == irq {
                    v.cache_masked
                } else {
                    vs.cache_masked
                };
                vs.last_restore = Some(Restore {
                    ts_ns: ts,
                    epoch,
                    msg,
                    cache_masked,
                    via_irq: irq,
                });
            }
        }
        for &b in &block {
            self.h4_restore_writes_mask(ev, b, out);
        }
        let Some(vs) = self.state.vectors.get(&irq) else {
            return;
        };
        // Before the first resume of the trace we cannot know which composes came before it.
        if !vs.is_hyperv() || epoch == 0 {
            return;
        }
        let cycle = self.cycle;
        let compose_cycle = vs.compose_cycle;
        let host_compose_cycle = vs.host_compose_cycle;
        let composed = vs.composed_msg;
        let last_compose = vs.last_compose.clone();
        if self.h3_escalate(ev, irq, "restored by MMIO", out) {
            return;
        }
        let (desc, _) = self.describe(irq);
        let block_note = if block.len() > 1 {
            let irqs: Vec<String> = block.iter().map(u32::to_string).collect();
            format!(" and its multi-MSI block (irqs {})", irqs.join(", "))
        } else {
            String::new()
        };
        if host_compose_cycle != Some(cycle) {
            if !self.enabled(RuleId::H1) {
                return;
            }
            let mut evidence = vec![Evidence::of(ev)];
            if let Some(c) = &last_compose {
                let reply = match c.reached_host {
                    Some(false) => ", no reply from the host in that call",
                    _ => "",
                };
                evidence.push(Evidence::note(
                    c.ts_ns,
                    "hv_compose_msi_msg:return",
                    format!(
                        "last compose of irq {irq}, epoch {}, msg {}{reply}",
                        c.epoch,
                        c.msg.map_or_else(|| "?".into(), |m| m.to_string())
                    ),
                ));
            }
            if let Some(e) = self.state.epoch_info(epoch) {
                evidence.push(Evidence::note(
                    e.start_ts_ns,
                    "power:suspend_resume",
                    format!("dpm_resume_noirq: resume epoch {epoch} ({})", e.kind.name()),
                ));
            }
            let meaning = if compose_cycle == Some(cycle) {
                let at = last_compose
                    .as_ref()
                    .map_or_else(String::new, |c| format!(" at {}", self.t(c.ts_ns)));
                format!(
                    "irq {irq} ({desc}){block_note} was restored by MMIO in resume epoch \
                     {epoch}; hv_compose_msi_msg ran in that epoch{at} but returned with no \
                     reply from the host (no hv_pci_compose_compl in that call: it reused the \
                     old remapping entry, as the multi-MSI early return does), so the host has \
                     no entry for the message written and the device's interrupts go nowhere; \
                     check that the re-compose at resume really asks the host"
                )
            } else {
                format!(
                    "irq {irq} ({desc}){block_note} was restored by MMIO in resume epoch {epoch} \
                     without a successful hv_compose_msi_msg in that epoch: the host has no \
                     remapping entry for the message written, the device's interrupts go nowhere \
                     (pre-915cff7f38c5 pci-hyperv; check that hv_pci_resume re-composes)"
                )
            };
            let mut f = self.vector_finding(
                RuleId::H1,
                irq,
                "no-compose",
                epoch,
                Severity::Error,
                ts,
                evidence,
                meaning.clone(),
            );
            f.irqs = block.clone();
            self.open_finding(RuleId::H1, irq, &f, meaning);
            let from = self.cycle_start_ts;
            self.raise_absence(f, COMPOSE_REPLY_PROBES, from, out);
        } else if let Some((c, m, cts)) = composed
            && c == cycle
            && m != msg
            && self.enabled(RuleId::H2)
        {
            let evidence = vec![
                Evidence::note(
                    cts,
                    "hv_compose_msi_msg:return",
                    format!("irq {irq} composed msg {m}"),
                ),
                Evidence::of(ev),
            ];
            let meaning = format!(
                "irq {irq} ({desc}) was restored in resume epoch {epoch} with message {msg}, not \
                 the message {m} composed at {} in that epoch: the device writes to an address \
                 the host did not map; look at what rewrote desc->msg between the compose and \
                 pci_restore_msi_state",
                self.t(cts)
            );
            let mut f = self.vector_finding(
                RuleId::H2,
                irq,
                "message-differs",
                epoch,
                Severity::Error,
                ts,
                evidence,
                meaning,
            );
            f.irqs = block;
            self.raise(f, out);
        }
    }

    // --- H4, H5: unmask ---------------------------------------------------------------------

    /// **H5 unmask without compose.** Decided by the compose events observed: an unmask in the
    /// resume half of an epoch with no successful `hv_compose_msi_msg` of that vector in the
    /// current compose cycle (H3 judges success by the returned message). Before the trace's
    /// first resume nothing is decided: composes before the trace started are unknown.
    /// `chip_data` NULL at the unmask only corroborates (it is said in the finding); NULL after
    /// an observed good compose contradicts the events and is an input warning, and NULL alone
    /// decides nothing.
    pub(crate) fn on_unmask_enter(
        &mut self,
        ev: &Event,
        irq: u32,
        v: &VectorSnap,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        self.h3_escalate(ev, irq, "unmasked", out);
        self.h9_removing_bus(ev, irq, "unmasked", out);
        let ts = ev.ts_ns;
        let epoch = self.state.epoch;
        let null = v.chip_data == Some(0);
        let cycle = self.cycle;
        let vs = self.state.vectors.get(&irq);
        // A compose this cycle whose message was good or unreadable: H5 is not for it.
        let composed = vs.is_some_and(|vs| vs.compose_cycle == Some(cycle));
        // A compose this cycle seen to return a good message: chip_data NULL contradicts it.
        let good_compose = vs
            .and_then(|vs| vs.composed_msg)
            .filter(|(c, _, _)| *c == cycle)
            .map(|(_, _, t)| t);
        if let Some(cts) = good_compose
            && null
        {
            let (desc, _) = self.describe(irq);
            let note = format!(
                "irq {irq} ({desc}): hv_irq_unmask at {} read chip_data NULL, but the returned \
                 message of the compose at {} in this cycle was good; msitrace judged by the \
                 observed compose (chip_data only corroborates), so this driver may keep its \
                 remapping descriptor elsewhere",
                self.t(ts),
                self.t(cts)
            );
            self.input_contradiction(irq, ts, note);
        }
        if !self.enabled(RuleId::H5) {
            return;
        }
        let resume_half = matches!(self.state.phase, Phase::ResumingNoirq | Phase::Resumed);
        if epoch == 0 || !resume_half || composed {
            return;
        }
        let h1_open = self
            .log
            .get(&self.key(RuleId::H1, irq, "no-compose", epoch))
            .is_some();
        if !h1_open {
            let (desc, _) = self.describe(irq);
            let corroborated = if null {
                " (chip_data NULL at the unmask corroborates: no remapping entry)"
            } else {
                ""
            };
            let meaning = format!(
                "irq {irq} ({desc}) was unmasked at {} in resume epoch {epoch} before any \
                 hv_compose_msi_msg in that epoch{corroborated}: hv_irq_unmask retargets a \
                 remapping entry the host tore down at suspend; re-compose \
                 (hv_pci_restore_msi_state) before unmasking",
                self.t(ts)
            );
            let f = self.vector_finding(
                RuleId::H5,
                irq,
                "no-compose",
                epoch,
                Severity::Warning,
                ts,
                vec![Evidence::of(ev)],
                meaning,
            );
            let from = self.cycle_start_ts;
            self.raise_absence(f, COMPOSE_PROBES, from, out);
        }
    }

    pub(crate) fn on_unmask_exit(
        &mut self,
        ev: &Event,
        irq: u32,
        v: &VectorSnap,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if v.cache_masked.is_some() {
            self.unmask_exits_with_cache += 1;
        }
        if !self.gates.kernel_allows(RuleId::H4) {
            return;
        }
        match v.cache_masked {
            // genirq either never masked it (migrate_one_irq calls the chip directly) or
            // clears IRQD_IRQ_MASKED right after this returns (unmask_irq): either way it now
            // believes the line unmasked while the device keeps it masked. IRQD_IRQ_DISABLED
            // does not matter: during hibernation's CPU offline suspend_device_irqs has
            // disabled the line, and on resume irq_enable() -> unmask_irq() returns early
            // because IRQD_IRQ_MASKED is clear, so the stale device mask survives (seen on
            // Debian 6.12 in the QEMU guest).
            Some(true) if v.irqd_masked != Some(true) => {}
            Some(false) => {
                self.on_unmasked(ev, irq, out);
                return;
            }
            _ => return,
        }
        let ts = ev.ts_ns;
        let (desc, _) = self.describe(irq);
        let in_migration = v.in_migration || self.migration_windows.contains_key(&ev.cpu);
        let mut ctx = String::new();
        if in_migration {
            ctx.push_str(&format!(" inside the CPU{} offline migration", ev.cpu));
        }
        if let Some(bus) = self
            .state
            .vectors
            .get(&irq)
            .and_then(|v| v.hv_bus.as_ref())
            .and_then(|b| self.state.hv_buses.get(b))
            && bus.state == Some(super::state::HvBusState::Removing)
        {
            ctx.push_str(" while its bus is removing");
        }
        let irqd = match v.irqd_masked {
            Some(false) => "genirq says unmasked",
            Some(true) => "genirq marks it unmasked on return",
            None => "genirq believes it enabled",
        };
        let epoch = self.cycle_epoch();
        let base = format!(
            "hv_irq_unmask for irq {irq} ({desc}) returned at {}{ctx} with the MSI mask cache \
             still set while {irqd}: the device stays masked and nothing will unmask it \
             (pre-915cff7f38c5 pci-hyperv returned early when the retarget hypercall failed; \
             the fix always calls pci_msi_unmask_irq)",
            self.t(ts)
        );
        let meaning = format!(
            "{base}; it becomes an error when the restore writes the stale mask into the device"
        );
        let f = self.vector_finding(
            RuleId::H4,
            irq,
            "unmask-left-masked",
            epoch,
            Severity::Warning,
            ts,
            vec![Evidence::of(ev)],
            meaning,
        );
        if self
            .open
            .get(&(RuleId::H4, irq))
            .is_none_or(|o| o.key != f.key)
        {
            self.open_finding(RuleId::H4, irq, &f, base);
        }
        self.raise(f, out);
    }

    /// The mask cache was seen cleared: an open H4 was transient.
    pub(crate) fn on_unmasked(&mut self, ev: &Event, irq: u32, out: &mut Vec<DivergenceUpdate>) {
        if !self.open.contains_key(&(RuleId::H4, irq)) {
            return;
        }
        let note = format!(
            "a later unmask cleared the mask cache at {}",
            self.t(ev.ts_ns)
        );
        self.settle_as_warning(RuleId::H4, irq, note, ev, out);
    }

    fn h4_restore_writes_mask(&mut self, ev: &Event, irq: u32, out: &mut Vec<DivergenceUpdate>) {
        if !self.open.contains_key(&(RuleId::H4, irq)) {
            return;
        }
        let Some(r) = self
            .state
            .vectors
            .get(&irq)
            .and_then(|v| v.last_restore.clone())
        else {
            return;
        };
        match r.cache_masked {
            Some(true) => {}
            Some(false) => {
                self.on_unmasked(ev, irq, out);
                return;
            }
            None => return,
        }
        // No time in the clause: a hibernation restores twice (thaw, then the image's
        // restore) and the same clause must not be added once per restore; each write's time
        // is in the evidence.
        let note = format!(
            "the restore in resume epoch {} wrote the stale mask into the device, so its \
             interrupts stay masked after resume",
            r.epoch
        );
        if let Some((key, meaning)) = self.open_note(RuleId::H4, irq, note, true) {
            self.revise(&key, Severity::Error, meaning, Some(Evidence::of(ev)), out);
        }
    }

    // --- H9: bus state ----------------------------------------------------------------------

    pub(crate) fn h9_removing_bus(
        &mut self,
        ev: &Event,
        irq: u32,
        what: &str,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.enabled(RuleId::H9) || self.state.phase.in_transition() {
            return;
        }
        let Some(bus_name) = self.state.vectors.get(&irq).and_then(|v| v.hv_bus.clone()) else {
            return;
        };
        let Some(bus) = self.state.hv_buses.get(&bus_name) else {
            return;
        };
        if bus.state != Some(super::state::HvBusState::Removing) || bus.suspended {
            return;
        }
        let (desc, _) = self.describe(irq);
        let epoch = self.state.epoch;
        let meaning = format!(
            "irq {irq} ({desc}) was {what} at {} while its Hyper-V bus {bus_name} is `removing` \
             outside any suspend: the vmbus channel is closed, so the host drops the request; \
             look at why the bus did not come back (hv_pci_resume) or is being ejected",
            self.t(ev.ts_ns)
        );
        let f = Finding {
            key: Key {
                rule: RuleId::H9,
                scope: Scope::Bus(bus_name.clone()),
                cause: "removing-bus".into(),
                epoch,
            },
            severity: Severity::Warning,
            irq: Some(irq),
            irqs: vec![irq],
            device: Some(bus_name),
            ts_ns: ev.ts_ns,
            evidence: vec![Evidence::of(ev)],
            meaning,
        };
        self.raise(f, out);
    }

    pub(crate) fn h9_resume_failed(
        &mut self,
        ev: &Event,
        bus: &str,
        ret: i32,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let irqs: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| v.hv_bus.as_deref() == Some(bus))
            .map(|v| v.irq)
            .collect();
        let epoch = self.cycle_epoch().max(self.state.epoch);
        let meaning = format!(
            "hv_pci_resume of Hyper-V bus {bus} failed with {ret} ({}) at {}: the bus stays \
             down and none of its {} vector(s) will get interrupts; look at the vmbus channel \
             open and the host's PCI messages in dmesg",
            errno_name(ret),
            self.t(ev.ts_ns),
            irqs.len()
        );
        let f = Finding {
            key: Key {
                rule: RuleId::H9,
                scope: Scope::Bus(bus.to_string()),
                cause: "resume-failed".into(),
                epoch,
            },
            severity: Severity::Error,
            irq: irqs.first().copied(),
            irqs,
            device: Some(bus.to_string()),
            ts_ns: ev.ts_ns,
            evidence: vec![Evidence::of(ev)],
            meaning,
        };
        self.raise(f, out);
    }

    // --- G2: offline CPU --------------------------------------------------------------------

    pub(crate) fn g2_affinity_failures(&mut self, ev: &Event, out: &mut Vec<DivergenceUpdate>) {
        let Some(fails) = self.affinity_failures.remove(&ev.cpu) else {
            return;
        };
        if !self.enabled(RuleId::G2) {
            return;
        }
        let cpu = ev.cpu;
        for (irq, (ret, evidence)) in fails {
            if !self
                .state
                .vectors
                .get(&irq)
                .is_some_and(VectorState::has_action)
            {
                continue;
            }
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "irq_do_set_affinity for irq {irq} ({desc}) returned {ret} ({}) in the CPU{cpu} \
                 offline migration at {}: the vector stays on the dying CPU and its interrupts \
                 are lost; look at vector exhaustion on the remaining CPUs or the chip's \
                 set_affinity",
                errno_name(ret),
                self.t(evidence.ts_ns)
            );
            let epoch = self.cycle_epoch();
            let f = self.vector_finding(
                RuleId::G2,
                irq,
                &format!("set-affinity-failed-cpu{cpu}"),
                epoch,
                Severity::Error,
                evidence.ts_ns,
                vec![evidence, Evidence::of(ev)],
                meaning,
            );
            self.raise(f, out);
        }
    }

    pub(crate) fn g2_offline_cpu(&mut self, cpu: u32, ev: &Event, out: &mut Vec<DivergenceUpdate>) {
        self.offline_checked.insert(cpu);
        if !self.enabled(RuleId::G2) {
            return;
        }
        let left: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| {
                v.target.as_ref().is_some_and(|t| {
                    // irq_do_set_affinity succeeding in this CPU's migration window moved the
                    // vector even when no irq_vectors:vector_update follows (x86 on 6.12
                    // rewrites the message of a suspended line without one).
                    t.cpu == Some(cpu)
                        && !v.last_migration.as_ref().is_some_and(|m| {
                            m.from_cpu == cpu && m.ret == Some(0) && m.ts_ns >= t.ts_ns
                        })
                }) && v.has_action()
                    && v.active != Some(false)
                    && v.shutdown.is_none()
                    && v.managed_shutdown != Some(true)
            })
            .map(|v| v.irq)
            .collect();
        let from = self
            .cpu_going_down
            .map(|(_, t)| t)
            .unwrap_or(ev.ts_ns)
            .min(ev.ts_ns);
        for irq in left {
            let Some(t) = self.state.vectors.get(&irq).and_then(|v| v.target.clone()) else {
                continue;
            };
            let (desc, _) = self.describe(irq);
            let vector = t
                .vector
                .map_or_else(String::new, |v| format!("vector {v}, "));
            let meaning = format!(
                "irq {irq} ({desc}) still targets CPU{cpu} ({vector}from {}, {}, at {}) after \
                 CPU{cpu} went offline at {}: its interrupts are delivered to a dead CPU; look at \
                 why migrate_one_irq skipped or failed it",
                t.source.name(),
                t.via,
                self.t(t.ts_ns),
                self.t(ev.ts_ns)
            );
            let epoch = self.cycle_epoch();
            let evidence = vec![
                Evidence::note(
                    t.ts_ns,
                    t.via,
                    format!(
                        "irq {irq} on CPU{cpu}{}",
                        t.vector
                            .map_or_else(String::new, |v| format!(" vector {v}"))
                    ),
                ),
                Evidence::of(ev),
            ];
            let f = self.vector_finding(
                RuleId::G2,
                irq,
                &format!("offline-cpu{cpu}"),
                epoch,
                Severity::Error,
                ev.ts_ns,
                evidence,
                meaning,
            );
            self.raise_absence(f, TARGET_PROBES, from, out);
        }
    }

    // --- Deadlines: G1, G3, G5 --------------------------------------------------------------

    pub(crate) fn run_pending(&mut self, p: Pending, now: u64, out: &mut Vec<DivergenceUpdate>) {
        match p {
            Pending::G1 { epoch } => self.g1_masked_after_resume(epoch, now, out),
            Pending::G5 { epoch } => self.g5_silent_after_resume(epoch, now, out),
            Pending::G3 {
                cpu,
                online_ts,
                epoch,
            } => self.g3_not_restarted(cpu, online_ts, epoch, now, out),
        }
    }

    /// **G1 masked after resume.** Decided, at `resumed` + grace, by the device-level mask as
    /// the kernel last set it: the last mask operation observed (`pci_msi_(un)mask_irq`, the
    /// per-device domains' `pci_irq_(un)mask_msi(x)`, hv_irq_unmask's return) or the mask
    /// cache the restore wrote into the device (`__pci_write_msi_msg`), for a vector with an
    /// action that genirq believes enabled. Handler counts overrule it: an interrupt of the
    /// vector counted between two samples taken after both this resume began and the last
    /// masked observation proves the kernel delivered it, so it is not still masked (an unmask
    /// went through a path msitrace does not see). Growth across the suspend (the first sample
    /// after it against the last before) proves nothing: those interrupts may predate the
    /// mask. A vector whose samples show no such growth only corroborates the finding (said in
    /// it); without samples the mask observation decides alone.
    fn g1_masked_after_resume(&mut self, epoch: u32, now: u64, out: &mut Vec<DivergenceUpdate>) {
        if !self.enabled(RuleId::G1) {
            return;
        }
        let grace = secs(self.timing.g1_grace_ns);
        let epoch_start = self
            .state
            .epoch_info(epoch)
            .map_or(u64::MAX, |e| e.start_ts_ns);
        let masked: Vec<u32> = self
            .state
            .vectors
            .values()
            .filter(|v| {
                let fired_since = v
                    .counts
                    .last_growth
                    .is_some_and(|(from, _)| from >= v.cache_masked_ts_ns.max(epoch_start));
                v.has_action()
                    && v.genirq_enabled() == Some(true)
                    && v.cache_masked == Some(true)
                    && v.active != Some(false)
                    && !fired_since
            })
            .map(|v| v.irq)
            .collect();
        for irq in masked {
            let Some(v) = self.state.vectors.get(&irq) else {
                continue;
            };
            let seen_at = v.cache_masked_ts_ns;
            let seen_by = v.cache_masked_by;
            let sampled_since = v.counts.last_sample_ts_ns > seen_at;
            let note = Evidence::note(
                now,
                "deadline",
                format!("still masked {grace} after resume of epoch {epoch}"),
            );
            let still = format!("it was still masked {grace} after resume epoch {epoch}");
            if let Some((key, meaning)) = self.open_note(RuleId::H4, irq, still, true) {
                self.revise(&key, Severity::Error, meaning, Some(note), out);
                continue;
            }
            let (desc, _) = self.describe(irq);
            let silent = if sampled_since {
                ", and no interrupt of it was counted after that"
            } else {
                ""
            };
            let meaning = format!(
                "irq {irq} ({desc}) has an action and genirq says it is enabled, but its \
                 device-level mask was still set {grace} after resume epoch {epoch} (last seen \
                 masked by {seen_by} at {}{silent}): the device cannot raise this interrupt; \
                 look at what masked it before suspend and why resume did not unmask it",
                self.t(seen_at)
            );
            let evidence = vec![
                Evidence::note(seen_at, seen_by, format!("irq {irq} mask cache set")),
                note,
            ];
            let f = self.vector_finding(
                RuleId::G1,
                irq,
                "masked",
                epoch,
                Severity::Error,
                now,
                evidence,
                meaning,
            );
            self.raise_absence(f, UNMASK_PROBES, seen_at, out);
        }
    }

    fn g3_not_restarted(
        &mut self,
        cpu: u32,
        online_ts: u64,
        epoch: u32,
        now: u64,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.enabled(RuleId::G3) {
            return;
        }
        let down: Vec<(u32, u64)> = self
            .state
            .vectors
            .values()
            .filter_map(|v| {
                let s = v.shutdown.as_ref()?;
                (s.cpu == cpu && s.ts_ns <= online_ts && v.has_action()).then_some((v.irq, s.ts_ns))
            })
            .collect();
        for (irq, down_ts) in down {
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "managed irq {irq} ({desc}) was shut down when CPU{cpu} went offline at {} and \
                 not restarted {} after CPU{cpu} came back at {}: the device's queue for that \
                 CPU gets no interrupts; look at irq_affinity_online_cpu / irq_startup for this \
                 vector",
                self.t(down_ts),
                secs(now.saturating_sub(online_ts)),
                self.t(online_ts)
            );
            let evidence = vec![
                Evidence::note(
                    down_ts,
                    "irq_vectors:vector_deactivate",
                    format!("irq {irq} managed, CPU{cpu} going down"),
                ),
                Evidence::note(
                    online_ts,
                    "power:suspend_resume",
                    format!("CPU_ON {cpu} end"),
                ),
            ];
            let f = self.vector_finding(
                RuleId::G3,
                irq,
                &format!("not-restarted-cpu{cpu}"),
                epoch,
                Severity::Error,
                now,
                evidence,
                meaning,
            );
            self.raise_absence(f, ACTIVATE_PROBES, down_ts, out);
        }
    }

    fn g5_silent_after_resume(&mut self, epoch: u32, now: u64, out: &mut Vec<DivergenceUpdate>) {
        if !self.enabled(RuleId::G5) {
            return;
        }
        let Some(resumed) = self.state.epoch_info(epoch).and_then(|e| e.resumed_ts_ns) else {
            return;
        };
        if self.last_counts_ts.is_none_or(|t| t <= resumed) {
            self.epoch_notes.push(super::gates::NotEvaluated {
                rule: RuleId::G5,
                part: None,
                epoch: Some(epoch),
                reason: format!(
                    "no handler-count sample between resume of epoch {epoch} and {} later",
                    secs(self.timing.g5_silence_ns)
                ),
            });
            return;
        }
        let window = secs(self.timing.g5_silence_ns);
        let silent: Vec<(u32, u64, u64)> = self
            .state
            .vectors
            .values()
            .filter_map(|v| {
                let before = v.counts.before_suspend?;
                let quiet = v.counts.fired_before_suspend
                    && v.counts.last == Some(before)
                    && v.active != Some(false)
                    && v.shutdown.is_none();
                quiet.then_some((v.irq, before, v.counts.last_increase_ts_ns.unwrap_or(0)))
            })
            .collect();
        for (irq, count, fired_at) in silent {
            let (desc, _) = self.describe(irq);
            let meaning = format!(
                "irq {irq} ({desc}) fired before suspend (count {count}, last growth seen at {}) \
                 but 0 times in the {window} after resume epoch {epoch}: the device looks silent \
                 (heuristic, the check testers ran by hand on /proc/interrupts); check its MSI \
                 state above and whether the device had work to do",
                self.t(fired_at)
            );
            let evidence = vec![
                Evidence::note(
                    fired_at,
                    "irq counts",
                    format!("irq {irq} count grew to {count}"),
                ),
                Evidence::note(now, "deadline", format!("irq {irq} count still {count}")),
            ];
            let f = self.vector_finding(
                RuleId::G5,
                irq,
                "silent",
                epoch,
                Severity::Warning,
                now,
                evidence,
                meaning,
            );
            self.raise(f, out);
        }
    }

    /// A driver-private field contradicted what the kernel observably did: one input warning
    /// per vector (the first contradiction, then a count), never a divergence.
    fn input_contradiction(&mut self, irq: u32, ts: u64, text: String) {
        let generation = self.state.vectors.get(&irq).map_or(0, |v| v.generation);
        self.input_notes
            .entry((irq, generation))
            .and_modify(|n| n.more += 1)
            .or_insert(super::InputNote {
                ts_ns: ts,
                text,
                more: 0,
            });
    }

    // --- Open findings ----------------------------------------------------------------------

    fn open_finding(&mut self, rule: RuleId, irq: u32, f: &Finding, base: String) {
        self.open.insert(
            (rule, irq),
            OpenFinding {
                key: f.key.clone(),
                cycle: self.cycle,
                base,
                notes: Vec::new(),
                escalated: false,
            },
        );
    }

    /// Add a clause to an open finding and return its key and new sentence.
    fn open_note(
        &mut self,
        rule: RuleId,
        irq: u32,
        note: String,
        escalate: bool,
    ) -> Option<(Key, String)> {
        let o = self.open.get_mut(&(rule, irq))?;
        if escalate {
            o.escalated = true;
        }
        Some((o.key.clone(), o.with(note)))
    }

    /// Later evidence showed an open finding was transient or recovered: keep it, as a
    /// warning explained by `note` and `ev`, and stop tracking it.
    fn settle_as_warning(
        &mut self,
        rule: RuleId,
        irq: u32,
        note: String,
        ev: &Event,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if let Some((key, meaning)) = self.open_note(rule, irq, note, false) {
            self.revise(
                &key,
                Severity::Warning,
                meaning,
                Some(Evidence::of(ev)),
                out,
            );
        }
        self.open_remove(rule, irq);
    }

    fn open_remove(&mut self, rule: RuleId, irq: u32) {
        self.open.remove(&(rule, irq));
    }
}

/// The sentence of a finding weakened by losses. It does not carry the count, so that later
/// loss reports for the same window do not re-announce the divergence (the report lists them).
fn loss_note(base: &str, probes: &[ProbeId]) -> String {
    let hooks: Vec<&str> = probes
        .iter()
        .map(|p| crate::probes::hook_of(*p).hook)
        .collect();
    format!(
        "{base}; but events of {} were lost around then, so this may be a false alarm: check \
         the losses",
        hooks.join("/")
    )
}

/// Name of a negative errno for sentences.
pub fn errno_name(ret: i32) -> &'static str {
    match -ret {
        1 => "EPERM",
        5 => "EIO",
        11 => "EAGAIN",
        12 => "ENOMEM",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        28 => "ENOSPC",
        110 => "ETIMEDOUT",
        _ => "error",
    }
}

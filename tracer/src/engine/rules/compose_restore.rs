//! H1 restored without compose, H2 restored message differs, H3 compose failed: the
//! Hyper-V remapping entry a vector's message needs, from compose to restore.

use super::COMPOSE_REPLY_PROBES;
use crate::engine::divergence::{DivergenceUpdate, Evidence, RuleId, Severity};
use crate::engine::state::{Compose, Restore};
use crate::engine::{Engine, FastMap, HostSeen};
use crate::event::{Event, MsiMsg, VectorSnap};

/// An `hv_compose_msi_msg` between its entry and its return, and what the host answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct ComposeInFlight {
    /// The host's reply attributed to this compose: its status and the event. The event
    /// rather than its [`Evidence`]: only a failed compose cites it, and formatting the
    /// evidence of every reply cost more than the rest of the reply's handling.
    pub reply: Option<(Option<i32>, Event)>,
    /// A reply arrived that no compose could be told to own while this one was in flight.
    pub unattributed: bool,
}

/// The compose family's bookkeeping. The host's remapping entries live from one compose
/// cycle boundary (a suspend's teardown) to the next; composes in flight wait for the host's
/// reply to be attributed to them.
pub(crate) struct ComposeWatch {
    pub cycle: u32,
    pub cycle_start_ts: u64,
    pub cycle_bumped_since_suspend: bool,
    /// IRQ → its hv_compose_msi_msg in flight. Every compose adds and removes one: as
    /// BTreeMaps, this map and the affinity calls' took a seventh of the engine's instructions.
    pub composing: FastMap<u32, ComposeInFlight>,
    pub compose_exits_readable: u64,
}

impl ComposeWatch {
    pub fn new(start_ts: u64) -> ComposeWatch {
        ComposeWatch {
            cycle: 0,
            cycle_start_ts: start_ts,
            cycle_bumped_since_suspend: false,
            composing: FastMap::default(),
            compose_exits_readable: 0,
        }
    }
}

impl Engine {
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
        let cycle = self.compose.cycle;
        let epoch = self.state.epoch;
        let msg_failed = msg.is_some_and(|m| m.is_zero());
        let (host_status, reply_evidence) = match &host {
            HostSeen::Replied { status, event } => (*status, Some(event)),
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
            self.compose.compose_exits_readable += 1;
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
                    .chain(std::iter::once(ev))
                    .map(Evidence::of)
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
                .findings
                .get_open(RuleId::H1, irq)
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
            .findings
            .get_open(RuleId::H3, irq)
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
    pub(super) fn h3_escalate(
        &mut self,
        ev: &Event,
        irq: u32,
        what: &str,
        out: &mut Vec<DivergenceUpdate>,
    ) -> bool {
        let cycle = self.compose.cycle;
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
        let cycle = self.compose.cycle;
        let compose_cycle = vs.compose_cycle;
        let host_compose_cycle = vs.host_compose_cycle;
        let composed = vs.composed_msg;
        let last_compose = vs.last_compose.clone();
        if self.h3_escalate(ev, irq, "restored by MMIO", out) {
            return;
        }
        // Described only for a finding: nearly every restore write raises none.
        if host_compose_cycle != Some(cycle) {
            if !self.enabled(RuleId::H1) {
                return;
            }
            let (desc, _) = self.describe(irq);
            let block_note = if block.len() > 1 {
                let irqs: Vec<String> = block.iter().map(u32::to_string).collect();
                format!(" and its multi-MSI block (irqs {})", irqs.join(", "))
            } else {
                String::new()
            };
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
            let from = self.compose.cycle_start_ts;
            self.raise_absence(f, COMPOSE_REPLY_PROBES, from, out);
        } else if let Some((c, m, cts)) = composed
            && c == cycle
            && m != msg
            && self.enabled(RuleId::H2)
        {
            let (desc, _) = self.describe(irq);
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
}

//! H4 unmask left masked, H5 unmask without compose.

use super::COMPOSE_PROBES;
use crate::engine::Engine;
use crate::engine::divergence::{DivergenceUpdate, Evidence, RuleId, Severity};
use crate::engine::state::{HvBusState, Phase};
use crate::event::{Event, VectorSnap};

/// The unmask family's bookkeeping.
#[derive(Default)]
pub(crate) struct UnmaskWatch {
    /// hv_irq_unmask returns whose mask cache could be read: H4's input is there.
    pub unmask_exits_with_cache: u64,
}

impl Engine {
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
        let cycle = self.compose.cycle;
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
            .findings
            .is_logged(&self.key(RuleId::H1, irq, "no-compose", epoch));
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
            let from = self.compose.cycle_start_ts;
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
            self.unmask.unmask_exits_with_cache += 1;
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
        let in_migration = v.in_migration || self.migration.migration_windows.contains_key(&ev.cpu);
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
            && bus.state == Some(HvBusState::Removing)
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
            .findings
            .get_open(RuleId::H4, irq)
            .is_none_or(|o| o.key != f.key)
        {
            self.open_finding(RuleId::H4, irq, &f, base);
        }
        self.raise(f, out);
    }

    /// The mask cache was seen cleared: an open H4 was transient.
    pub(crate) fn on_unmasked(&mut self, ev: &Event, irq: u32, out: &mut Vec<DivergenceUpdate>) {
        if !self.findings.is_open(RuleId::H4, irq) {
            return;
        }
        let note = format!(
            "a later unmask cleared the mask cache at {}",
            self.t(ev.ts_ns)
        );
        self.settle_as_warning(RuleId::H4, irq, note, ev, out);
    }

    pub(super) fn h4_restore_writes_mask(
        &mut self,
        ev: &Event,
        irq: u32,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if !self.findings.is_open(RuleId::H4, irq) {
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
}

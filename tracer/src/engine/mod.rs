//! The state engine: a pure function from a sequence of [`Event`]s (ring buffer or trace file,
//! the same type) to per-vector state, a phase timeline and divergences. No I/O, no clock, no
//! kernel: time advances only from event timestamps, so a replay of a recorded file yields
//! exactly what the live run reported.
//!
//! Policy:
//! - Vectors are keyed by Linux IRQ and cross-checked with BDF + MSI index; a snapshot naming
//!   another device or index means the IRQ number was reused, and the old vector is retired.
//! - The phase follows `power:suspend_resume`; a resume epoch starts at each `dpm_resume_noirq`.
//! - Hyper-V remapping entries live for one *compose cycle*: a cycle ends where the host may
//!   have torn them down (`dpm_suspend_noirq`, where vmbus runs hv_pci_suspend) and where the
//!   world was rebuilt (`machine_suspend` end: a restored image or a woken machine). H1/H2/H5
//!   ask for a compose in the current cycle, which also accepts the fix's re-compose when it runs
//!   before `dpm_resume_noirq` (syscore resume, a supplier's noirq callback).
//! - Rules with a delay (G1 grace, G5 silence, G3 restart) are deadlines settled when a later
//!   event's timestamp passes them, or by [`Engine::finish`] at end of input.
//! - A vector's target (CPU, vector) follows every observation that moves it: x86
//!   `irq_vectors:vector_update/config/clear`, a successful `irq_do_set_affinity` in a CPU's
//!   offline migration window, and x86 messages written to the device where the message is a
//!   destination (not Hyper-V, not remapped). `migrate_one_irq`'s entry alone moves nothing:
//!   it runs for every IRQ and does not say whether or where it moved one.
//! - One divergence per rule, vector, cause and epoch ([`divergence::DivergenceLog`]); `apply`
//!   returns only new or changed ones so a live front-end logs each once.
//!
//! Where each part is: [`dispatch`] sends one event to the part it concerns; [`observe`]
//! keeps the vector model ([`vector`], [`state`]) up to date; [`phase`] follows the
//! suspend/resume phases, epochs and compose cycles; the rules are in [`rules`], one file per
//! family; what they find goes through the sink in [`findings`] into the
//! [`divergence::DivergenceLog`]; the gates deciding which rules can run are in [`gates`].

mod config;
mod dispatch;
pub mod divergence;
mod findings;
pub mod gates;
pub mod losses;
mod observe;
pub mod phase;
pub mod rules;
pub mod state;
pub mod vector;

use std::collections::BTreeSet;

use tracer_common::{NUM_PROBES, ProbeId};

pub use config::{EngineConfig, RuleTiming};
pub use divergence::{
    Change, Divergence, DivergenceUpdate, Evidence, RuleId, Severity, event_name, event_probe,
};
pub use gates::{KernelVersion, NotEvaluated};
pub use losses::{LossReport, Losses};
pub use state::{EngineState, Phase, VectorKind, VectorState};

use crate::duration::secs;

use crate::event::{Event, EventKind};
use gates::Gates;
use rules::Pending;

/// What the engine can tell about the host's answer to one compose.
#[derive(Clone, Debug)]
pub(crate) enum HostSeen {
    /// The reply hook was not there, the call's entry was not seen, or a reply went
    /// unattributed meanwhile: the returned message decides, as without the hook.
    Unknown,
    Replied {
        status: Option<i32>,
        /// The reply (`hv_pci_compose_compl`), for the evidence of a failed compose.
        event: Event,
    },
    /// The reply hook was attached and the compose returned without a reply in that call.
    NoReply,
}

/// The engine: the state it rebuilds, each rule family's own bookkeeping, and the one sink
/// of what the rules say. An event goes state first (dispatch, observe, phase), then to the
/// rule families, whose findings all go through [`findings::Findings`].
pub struct Engine {
    timing: RuleTiming,
    gates: Gates,
    state: EngineState,
    losses: Losses,
    seen: [u64; NUM_PROBES as usize],
    enabled: [bool; RuleId::ALL.len()],
    observed: observe::Observed,
    compose: rules::ComposeWatch,
    unmask: rules::UnmaskWatch,
    migration: rules::MigrationWatch,
    deadlines: rules::Deadlines,
    findings: findings::Findings,
    finished: bool,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let gates = Gates::new(&cfg.kernel_release, &cfg.probes, &cfg.btf_facts);
        let mut state = EngineState::from_seed(&cfg.seed);
        state.set_phase(state::Phase::Running, cfg.seed.taken_ns, "trace start");
        let mut e = Engine {
            timing: cfg.timing,
            gates,
            observed: observe::Observed::new(&state.vectors),
            compose: rules::ComposeWatch::new(cfg.seed.taken_ns),
            unmask: rules::UnmaskWatch::default(),
            migration: rules::MigrationWatch::default(),
            deadlines: rules::Deadlines::default(),
            findings: findings::Findings::default(),
            state,
            losses: Losses::default(),
            seen: [0; NUM_PROBES as usize],
            enabled: [false; RuleId::ALL.len()],
            finished: false,
        };
        e.refresh_enabled();
        e
    }

    /// A delayed rule is waiting (G1, G3, G5, a G1 held for a migration window) or a PM
    /// transition is under way: the handler counts must be sampled at full rate now. Otherwise
    /// nothing decides on the periodic samples until the next transition, whose start is
    /// sampled the moment the ring shows it.
    pub fn awaits_samples(&self) -> bool {
        !self.deadlines.pending.is_empty()
            || !self.deadlines.held_g1.is_empty()
            || self.state.phase.in_transition()
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    pub fn divergences(&self) -> &[Divergence] {
        self.findings.all()
    }

    pub fn losses(&self) -> &Losses {
        &self.losses
    }

    pub fn kernel_release(&self) -> &str {
        &self.gates.release
    }

    /// After the last resume, how long a run keeps going so that the delayed rules (G1's
    /// grace, G5's silence window) can conclude.
    pub fn settle_ns(&self) -> u64 {
        let t = self.timing;
        t.g1_grace_ns.max(t.g5_silence_ns) + 1_000_000_000
    }

    /// A suspend began and its resume has settled, or none began at all: a recording of a
    /// sleep cycle can stop here without cutting a rule short.
    pub fn cycle_settled(&self) -> bool {
        let st = self.state();
        let suspended = st.suspend_ts_ns.is_some() || !st.epochs.is_empty();
        if !suspended {
            return true;
        }
        let Some(last) = st.epochs.last() else {
            return false;
        };
        match (st.phase, last.resumed_ts_ns) {
            (Phase::Resumed, Some(ts)) => st.now_ns >= ts + self.settle_ns(),
            _ => false,
        }
    }

    pub fn timing(&self) -> RuleTiming {
        self.timing
    }

    /// Events seen per probe (indexed by `ProbeId as usize`).
    pub fn seen(&self) -> &[u64; NUM_PROBES as usize] {
        &self.seen
    }

    /// The instant reports count from: the seed's time, else the first event's.
    pub fn origin_ns(&self) -> u64 {
        match (self.state.timeline.first(), self.state.first_ts_ns) {
            (Some(s), _) if s.start_ts_ns != 0 => s.start_ts_ns,
            (_, Some(f)) => f,
            _ => 0,
        }
    }

    /// Warnings about the input the engine found: driver-private fields that contradicted
    /// what the kernel observably did (the rules decided on the observation), in time order.
    pub fn input_warnings(&self) -> Vec<String> {
        let mut out = self.findings.input_warnings();
        out.extend(self.observed.orphan_returns.iter().map(|(p, n)| {
            format!(
                "{n} return(s) of {} without their entry: which vector, device or bus each \
                 concerned is unknown, so none was used",
                crate::probes::hook_of(*p).hook
            )
        }));
        out
    }

    /// Rules (or parts, or epochs) that could not be evaluated, and why.
    pub fn not_evaluated(&self) -> Vec<NotEvaluated> {
        let mut out = self.gates.static_not_evaluated(&self.seen);
        let skip: BTreeSet<RuleId> = out
            .iter()
            .filter(|n| n.part.is_none())
            .map(|n| n.rule)
            .collect();
        let mut push = |rule: RuleId, part: Option<&str>, reason: String| {
            if !skip.contains(&rule) {
                out.push(NotEvaluated {
                    rule,
                    part: part.map(str::to_string),
                    epoch: None,
                    reason,
                });
            }
        };
        if self.state.epochs.is_empty() {
            for rule in [RuleId::H1, RuleId::H2, RuleId::G1, RuleId::G5] {
                push(
                    rule,
                    None,
                    "the trace has no resume epoch (no dpm_resume_noirq)".into(),
                );
            }
        }
        let exits = self.seen[ProbeId::HvComposeExit as usize];
        if exits > 0 && self.compose.compose_exits_readable == 0 {
            push(
                RuleId::H3,
                None,
                format!(
                    "none of the {exits} hv_compose_msi_msg returns could read the returned \
                     message (msi_msg layout missing), and H3 decides on it, not on chip_data"
                ),
            );
        }
        let unmasks = self.seen[ProbeId::HvUnmaskExit as usize];
        if unmasks > 0 && self.unmask.unmask_exits_with_cache == 0 {
            push(
                RuleId::H4,
                None,
                format!(
                    "none of the {unmasks} hv_irq_unmask returns could read the msi_desc mask \
                     cache (msi_desc layout missing)"
                ),
            );
        }
        if self.seen[ProbeId::IrqHandlerEntry as usize] == 0 && !self.state.epochs.is_empty() {
            push(
                RuleId::G5,
                Some("handler counts"),
                "the trace has no handler-count sample".into(),
            );
        }
        for n in self.findings.not_evaluated_notes() {
            if !skip.contains(&n.rule) {
                out.push(n.clone());
            }
        }
        out
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    fn refresh_enabled(&mut self) {
        for (i, rule) in RuleId::ALL.iter().enumerate() {
            self.enabled[i] = self.gates.rule_enabled(*rule, &self.seen);
        }
    }

    pub(crate) fn enabled(&self, rule: RuleId) -> bool {
        self.enabled[RuleId::ALL.iter().position(|r| *r == rule).unwrap_or(0)]
    }

    /// Feed one event. Returns the divergences it created or changed.
    pub fn apply(&mut self, ev: &Event) -> Vec<DivergenceUpdate> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.settle(ev.ts_ns, &mut out);
        self.state.events += 1;
        if self.state.first_ts_ns.is_none() {
            self.state.first_ts_ns = Some(ev.ts_ns);
            if self.compose.cycle_start_ts == 0 {
                self.compose.cycle_start_ts = ev.ts_ns;
            }
        }
        self.state.now_ns = self.state.now_ns.max(ev.ts_ns);
        if let Some(p) = event_probe(&ev.kind) {
            let i = p as usize;
            self.seen[i] += 1;
            if self.seen[i] == 1 {
                self.refresh_enabled();
            }
        }
        self.note_cpu_alive(ev);
        self.dispatch(ev, &mut out);
        out
    }

    /// End of input at `end_ts`: settle what is due, evaluate what the end decides (G3), and
    /// say which delayed rules could not be evaluated for want of time.
    pub fn finish(&mut self, end_ts: u64) -> Vec<DivergenceUpdate> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        let end_ts = end_ts.max(self.state.now_ns);
        self.settle(end_ts, &mut out);
        let rest = std::mem::take(&mut self.deadlines.pending);
        for ((deadline, _), p) in rest {
            match p {
                // The restart happens inside CPU_ON: nothing later can bring it.
                Pending::G3 { .. } => self.run_pending(p, end_ts, &mut out),
                Pending::G1 { epoch } => self.findings.not_evaluated(NotEvaluated {
                    rule: RuleId::G1,
                    part: None,
                    epoch: Some(epoch),
                    reason: format!(
                        "trace ended {} after resume of epoch {epoch}, needs {}",
                        secs(
                            end_ts.saturating_sub(deadline.saturating_sub(self.timing.g1_grace_ns))
                        ),
                        secs(self.timing.g1_grace_ns)
                    ),
                }),
                Pending::G5 { epoch } => self.findings.not_evaluated(NotEvaluated {
                    rule: RuleId::G5,
                    part: None,
                    epoch: Some(epoch),
                    reason: format!(
                        "trace ended {} after resume of epoch {epoch}, needs {}",
                        secs(
                            end_ts
                                .saturating_sub(deadline.saturating_sub(self.timing.g5_silence_ns))
                        ),
                        secs(self.timing.g5_silence_ns)
                    ),
                }),
            }
        }
        self.drop_held_g1("the trace ended");
        for ep in &self.state.epochs {
            if ep.resumed_ts_ns.is_none() {
                for rule in [RuleId::G1, RuleId::G5] {
                    self.findings.not_evaluated(NotEvaluated {
                        rule,
                        part: None,
                        epoch: Some(ep.epoch),
                        reason: format!(
                            "resume epoch {} never reached `resumed` in the trace",
                            ep.epoch
                        ),
                    });
                }
            }
        }
        if let Some(last) = self.state.timeline.last_mut()
            && last.end_ts_ns.is_none()
        {
            last.end_ts_ns = Some(end_ts);
        }
        self.state.now_ns = end_ts;
        self.finished = true;
        out
    }
}

/// A map the engine looks up at nearly every event and never iterates in an order that
/// matters. foldhash's fixed state: no random seed, so a replay runs the same every time.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// Bound on retired vectors kept for the report.
pub const MAX_RETIRED: usize = 1_000;

/// The IRQ an event is about, when it is about one (for per-vector tracks).
pub fn event_irq(k: &EventKind) -> Option<u32> {
    use EventKind as K;
    match k {
        K::ComposeEnter(v)
        | K::UnmaskEnter(v)
        | K::UnmaskExit(v)
        | K::MaskEnter(v)
        | K::MaskExit(v)
        | K::PciMsiMask(v)
        | K::PciMsiUnmask(v)
        | K::PciIrqMask { v, .. }
        | K::PciIrqUnmask { v, .. }
        | K::ComposeExit { v, .. }
        | K::WriteMsiMsg { v, .. } => Some(v.irq),
        K::MigrateOneIrq { irq }
        | K::SetAffinityEnter { irq, .. }
        | K::SetAffinityExit { irq, .. }
        | K::VectorUpdate { irq, .. }
        | K::VectorClear { irq, .. }
        | K::VectorConfig { irq, .. }
        | K::VectorActivate { irq, .. }
        | K::VectorDeactivate { irq, .. } => Some(*irq),
        K::ComposeCompl { irq, .. } => *irq,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::Seed;
    use state::TargetSource;

    fn pm(ts: u64, action: &str, start: bool) -> Event {
        Event {
            ts_ns: ts,
            cpu: 0,
            tgid: 0,
            kind: EventKind::SuspendResume {
                action: action.into(),
                val: 0x10,
                start,
            },
        }
    }

    #[test]
    fn deadlines_near_the_end_of_time_do_not_overflow() {
        let mut e = Engine::new(EngineConfig::new(
            "6.12.0",
            EngineConfig::all_probes_attached(),
            Seed::default(),
        ));
        for (ts, a) in [
            (u64::MAX - 10, "freeze_processes"),
            (u64::MAX - 5, "dpm_resume_noirq"),
            (u64::MAX - 1, "thaw_processes"),
        ] {
            e.apply(&pm(ts, a, true));
        }
        e.finish(u64::MAX);
        assert_eq!(e.state().epochs.len(), 1);
        assert!(e.not_evaluated().iter().any(|n| n.rule == RuleId::G5));
    }

    #[test]
    fn a_cleared_vector_targets_nothing_until_it_is_configured_again() {
        let seed = Seed {
            taken_ns: 1,
            online_cpus: vec![0, 1],
            vectors: vec![crate::seed::SeedVector {
                irq: 30,
                device: Some("0000:00:05.0".into()),
                kind: Some("msix".into()),
                effective_cpus: Some(vec![1]),
                ..Default::default()
            }],
        };
        let mut e = Engine::new(EngineConfig::new(
            "6.12.0",
            EngineConfig::all_probes_attached(),
            seed,
        ));
        let at = |ts, kind| Event {
            ts_ns: ts,
            cpu: 0,
            tgid: 0,
            kind,
        };
        let target = |e: &Engine| e.state().vectors[&30].target.clone().unwrap();
        assert_eq!(target(&e).source, TargetSource::Seed);
        e.apply(&at(
            10,
            EventKind::VectorClear {
                irq: 30,
                vector: 0x24,
                cpu: 1,
                prev_vector: 0,
                prev_cpu: 0,
            },
        ));
        assert_eq!((target(&e).cpu, target(&e).vector), (None, None));
        e.apply(&at(
            11,
            EventKind::VectorConfig {
                irq: 30,
                vector: 0xef,
                cpu: 0,
                apicdest: 0,
            },
        ));
        let t = target(&e);
        assert_eq!(
            (t.cpu, t.vector, t.via),
            (Some(0), Some(0xef), "vector_config")
        );
        assert_eq!(t.source, TargetSource::VectorTracepoint);
    }

    #[test]
    fn an_aborted_suspend_opens_no_epoch() {
        let mut e = Engine::new(EngineConfig::new(
            "6.12.0",
            EngineConfig::all_probes_attached(),
            Seed::default(),
        ));
        e.apply(&pm(10, "freeze_processes", true));
        e.apply(&pm(20, "dpm_suspend", true));
        e.apply(&pm(30, "dpm_complete", false));
        assert_eq!(e.state().phase, Phase::Resumed);
        assert_eq!(e.state().epoch, 0);
        e.apply(&pm(40, "brand_new_action", true));
        assert_eq!(e.state().unknown_actions["brand_new_action"], 1);
    }

    #[test]
    fn every_kernels_pm_actions_are_known() {
        // Seen on 5.10, 6.1, 6.12 and 7.3 guests: syscore's phases, and 7.x's name for the
        // console's resume, which ends the transition as resume_console did.
        let mut e = Engine::new(EngineConfig::new(
            "7.3.4",
            EngineConfig::all_probes_attached(),
            Seed::default(),
        ));
        e.apply(&pm(10, "freeze_processes", true));
        e.apply(&pm(20, "syscore_suspend", true));
        e.apply(&pm(21, "syscore_suspend", false));
        e.apply(&pm(30, "syscore_resume", true));
        e.apply(&pm(31, "syscore_resume", false));
        e.apply(&pm(40, "console_resume_all", true));
        assert!(
            e.state().unknown_actions.is_empty(),
            "{:?}",
            e.state().unknown_actions
        );
        assert_eq!(e.state().phase, Phase::Resumed);
    }
}

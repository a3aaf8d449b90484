//! The one sink of the rules' findings: a divergence is raised, revised by later evidence
//! (open findings, which H1, H3 and H4 keep per IRQ), or rests on the absence of events and
//! is weakened when those events turn out lost. Every rule goes through here; only this
//! file touches the [`super::divergence::DivergenceLog`].

use std::collections::BTreeMap;

use tracer_common::ProbeId;

use super::Engine;
use super::divergence::{
    Divergence, DivergenceLog, DivergenceUpdate, Evidence, Finding, Key, RuleId, Severity,
};
use super::gates::NotEvaluated;
use super::losses::LossReport;
use crate::event::Event;

/// A divergence that rests on the absence of events from some probes in a time window: a loss
/// of those probes in that window weakens it.
#[derive(Clone, Debug)]
pub(crate) struct AbsenceClaim {
    key: Key,
    probes: &'static [ProbeId],
    from_ts: u64,
    to_ts: u64,
    meaning: String,
}

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

/// A driver-private field that contradicted an observation (chip_data NULL after a good
/// compose): said once per vector as an input warning, with how often it happened again.
#[derive(Clone, Debug)]
pub(crate) struct InputNote {
    ts_ns: u64,
    text: String,
    more: u64,
}

/// Everything the rules have said: the log of divergences, the findings later evidence may
/// still revise, the ones resting on the absence of events, and what could not be evaluated
/// or was contradicted. Rules add to it only through the methods below.
#[derive(Default)]
pub(crate) struct Findings {
    log: DivergenceLog,
    /// Rules (H1, H3, H4) with an open divergence per IRQ that later evidence revises.
    open: BTreeMap<(RuleId, u32), OpenFinding>,
    absence_claims: Vec<AbsenceClaim>,
    epoch_notes: Vec<NotEvaluated>,
    /// Contradictions between driver-private fields and observations, per (IRQ, generation).
    input_notes: BTreeMap<(u32, u32), InputNote>,
}

impl Findings {
    pub fn all(&self) -> &[Divergence] {
        self.log.all()
    }

    pub fn is_open(&self, rule: RuleId, irq: u32) -> bool {
        self.open.contains_key(&(rule, irq))
    }

    pub fn get_open(&self, rule: RuleId, irq: u32) -> Option<&OpenFinding> {
        self.open.get(&(rule, irq))
    }

    pub fn is_logged(&self, key: &Key) -> bool {
        self.log.get(key).is_some()
    }

    /// The IRQ's number went to another vector: nothing open on it can be revised any more.
    pub fn close_irq(&mut self, irq: u32) {
        self.open.retain(|(_, i), _| *i != irq);
    }

    pub fn not_evaluated(&mut self, note: NotEvaluated) {
        self.epoch_notes.push(note);
    }

    pub fn not_evaluated_notes(&self) -> &[NotEvaluated] {
        &self.epoch_notes
    }

    /// A driver-private field contradicted what the kernel observably did: one input warning
    /// per vector (the first contradiction, then a count), never a divergence.
    pub fn input_contradiction(&mut self, irq: u32, generation: u32, ts_ns: u64, text: String) {
        self.input_notes
            .entry((irq, generation))
            .and_modify(|n| n.more += 1)
            .or_insert(InputNote {
                ts_ns,
                text,
                more: 0,
            });
    }

    /// The input contradictions, in time order.
    pub fn input_warnings(&self) -> Vec<String> {
        let mut notes: Vec<&InputNote> = self.input_notes.values().collect();
        notes.sort_by_key(|n| n.ts_ns);
        notes
            .into_iter()
            .map(|n| match n.more {
                0 => n.text.clone(),
                k => format!("{} (and {k} more time(s) for this vector)", n.text),
            })
            .collect()
    }
}

impl Engine {
    pub(super) fn raise(&mut self, f: Finding, out: &mut Vec<DivergenceUpdate>) {
        if let Some(u) = self.findings.log.raise(f) {
            out.push(u);
        }
    }

    pub(super) fn revise(
        &mut self,
        key: &Key,
        severity: Severity,
        meaning: String,
        evidence: Option<Evidence>,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        if let Some(u) = self.findings.log.revise(key, severity, meaning, evidence) {
            out.push(u);
        }
    }

    /// Raise a finding that rests on the absence of events from `probes` since `from_ts`:
    /// weakened at once if some were lost then, and remembered so a later loss report does too.
    pub(super) fn raise_absence(
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
        let is_new = self.findings.log.get(&f.key).is_none();
        self.raise(f, out);
        if is_new {
            self.findings.absence_claims.push(claim);
        }
    }

    pub(crate) fn on_loss(&mut self, r: &LossReport, out: &mut Vec<DivergenceUpdate>) {
        let hits: Vec<(Key, String, &'static [ProbeId])> = self
            .findings
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

    pub(super) fn open_finding(&mut self, rule: RuleId, irq: u32, f: &Finding, base: String) {
        self.findings.open.insert(
            (rule, irq),
            OpenFinding {
                key: f.key.clone(),
                cycle: self.compose.cycle,
                base,
                notes: Vec::new(),
                escalated: false,
            },
        );
    }

    /// Add a clause to an open finding and return its key and new sentence.
    pub(super) fn open_note(
        &mut self,
        rule: RuleId,
        irq: u32,
        note: String,
        escalate: bool,
    ) -> Option<(Key, String)> {
        let o = self.findings.open.get_mut(&(rule, irq))?;
        if escalate {
            o.escalated = true;
        }
        Some((o.key.clone(), o.with(note)))
    }

    /// Later evidence showed an open finding was transient or recovered: keep it, as a
    /// warning explained by `note` and `ev`, and stop tracking it.
    pub(super) fn settle_as_warning(
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

    pub(super) fn open_remove(&mut self, rule: RuleId, irq: u32) {
        self.findings.open.remove(&(rule, irq));
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

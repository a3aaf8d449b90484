//! The divergence report built from a finished engine: phase timeline, each vector before
//! suspend and after resume, the divergences (or "no divergence in N vectors across M resume
//! epochs"), the rules not evaluated and why, and the losses. `replay` prints it as text or
//! JSON; `verify` and the daemon use the same value.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::state::{
    CpuChange, GapMark, HvBus, HvEvidence, Migration, PhaseSpan, ResumeEpoch, Target, VectorView,
};
use crate::engine::{Divergence, Engine, Losses, NotEvaluated, RuleId, RuleTiming, Severity};
use crate::event::MsiMsg;

/// Which divergences make `replay` and `verify` exit 1. A test suite must be able to trust
/// exit 1 as "the device will get no interrupts": by default only errors count, and the
/// heuristic warnings (G5's silence, findings weakened by losses or later evidence) are listed
/// without failing the run; `warning` makes them count too, like -Werror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Exit 1 on an error-level divergence only.
    #[default]
    Error,
    /// Exit 1 on any divergence, warnings included.
    Warning,
}

/// `schema_version` of the report `replay --json` and `verify --json` print, described by
/// docs/schema/report.schema.json. Bumped when a field is removed, renamed, retyped or changes
/// meaning, or an enum value goes away; a new field or enum value keeps it (and goes into the
/// schema in the same change).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub vectors: usize,
    pub resume_epochs: usize,
    pub events: u64,
    pub errors: usize,
    pub warnings: usize,
    pub not_evaluated: usize,
    pub lost_events: u64,
    /// One line: the verdict.
    pub verdict: String,
}

/// One vector as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VectorReport {
    pub irq: u32,
    pub generation: u32,
    /// The IRQ this device's vector had before its driver freed and re-requested it.
    pub previous_irq: Option<u32>,
    /// Freed: this device's vector now lives at that IRQ.
    pub reallocated_to: Option<u32>,
    pub device: Option<String>,
    pub driver: Option<String>,
    pub kind: String,
    pub hyperv: Option<HvEvidence>,
    pub chip: Option<String>,
    pub actions: Option<String>,
    pub managed: Option<bool>,
    pub target: Option<Target>,
    pub last_compose_ts_ns: Option<u64>,
    pub last_compose_epoch: Option<u32>,
    pub last_compose_msg: Option<MsiMsg>,
    pub last_compose_ok: Option<bool>,
    pub last_restore_ts_ns: Option<u64>,
    pub last_restore_epoch: Option<u32>,
    pub last_restore_msg: Option<MsiMsg>,
    pub last_restore_masked: Option<bool>,
    pub last_migration: Option<Migration>,
    /// Handler count at start (/proc/interrupts, since boot).
    pub seed_count: u64,
    pub before_suspend: Option<VectorView>,
    /// State at the end of the trace, when it saw a resume.
    pub after_resume: Option<VectorView>,
    pub divergences: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`]: which docs/schema/report.schema.json describes this object.
    pub schema_version: u32,
    pub kernel_release: String,
    pub summary: Summary,
    /// Times in the report count from here (CLOCK_MONOTONIC ns).
    pub origin_ns: u64,
    pub end_ns: u64,
    pub timing: RuleTiming,
    pub timeline: Vec<PhaseSpan>,
    pub epochs: Vec<ResumeEpoch>,
    pub cpu_changes: Vec<CpuChange>,
    pub gaps: Vec<GapMark>,
    pub hv_buses: BTreeMap<String, HvBus>,
    pub divergences: Vec<Divergence>,
    pub vectors: Vec<VectorReport>,
    pub not_evaluated: Vec<NotEvaluated>,
    pub losses: Losses,
    /// `power:suspend_resume` actions the engine does not know (logged, not used).
    pub unknown_actions: BTreeMap<String, u64>,
    /// Why this report proves nothing, when it cannot: no event read, no rule evaluable, or
    /// (the caller's) no suspend seen by `verify`. Without a divergence this makes the exit
    /// code 2, never the 0 that says "clean".
    pub inconclusive: Vec<String>,
    /// Problems of the input: trace file damage and the like that the caller adds, then
    /// driver-private fields the engine saw contradict an observation (e.g. chip_data NULL
    /// after a compose that returned a good message).
    pub input_warnings: Vec<String>,
}

impl Report {
    pub fn from_engine(engine: &Engine) -> Report {
        let st = engine.state();
        let divergences = engine.divergences().to_vec();
        let resumed = !st.epochs.is_empty();
        let mut per_irq: BTreeMap<u32, usize> = BTreeMap::new();
        for d in &divergences {
            for irq in &d.irqs {
                *per_irq.entry(*irq).or_default() += 1;
            }
        }
        let vectors: Vec<VectorReport> = st
            .vectors
            .values()
            .map(|v| VectorReport {
                irq: v.irq,
                generation: v.generation,
                previous_irq: v.previous_irq,
                reallocated_to: v.reallocated_to,
                device: v.device.as_deref().map(str::to_owned),
                driver: v.driver.clone(),
                kind: v.kind.to_string(),
                hyperv: v.hyperv.clone(),
                chip: v.chip.clone(),
                actions: v.actions.clone(),
                managed: v.managed,
                target: v.target.clone(),
                last_compose_ts_ns: v.last_compose.as_ref().map(|c| c.ts_ns),
                last_compose_epoch: v.last_compose.as_ref().map(|c| c.epoch),
                last_compose_msg: v.last_compose.as_ref().and_then(|c| c.msg),
                last_compose_ok: v.last_compose.as_ref().and_then(|c| c.ok),
                last_restore_ts_ns: v.last_restore.as_ref().map(|r| r.ts_ns),
                last_restore_epoch: v.last_restore.as_ref().map(|r| r.epoch),
                last_restore_msg: v.last_restore.as_ref().map(|r| r.msg),
                last_restore_masked: v.last_restore.as_ref().and_then(|r| r.cache_masked),
                last_migration: v.last_migration.clone(),
                seed_count: v.counts.seed_total,
                before_suspend: v.before_suspend.clone(),
                after_resume: resumed.then(|| v.view(st.now_ns)),
                divergences: per_irq.get(&v.irq).copied().unwrap_or(0),
            })
            .collect();
        let not_evaluated = engine.not_evaluated();
        let errors = divergences
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = divergences.len() - errors;
        let mut inconclusive = Vec::new();
        if st.events == 0 {
            inconclusive.push("no event was read: the recording holds nothing to evaluate".into());
        } else if RuleId::ALL.iter().all(|r| {
            not_evaluated
                .iter()
                .any(|n| n.rule == *r && n.part.is_none() && n.epoch.is_none())
        }) {
            inconclusive.push("no rule could be evaluated (see \"Not evaluated\")".into());
        }
        let verdict = if divergences.is_empty() {
            format!(
                "no divergence in {} vectors across {} resume epochs",
                vectors.len(),
                st.epochs.len()
            )
        } else {
            format!(
                "{} divergence(s), {errors} error(s) and {warnings} warning(s), in {} vectors \
                 across {} resume epochs",
                divergences.len(),
                vectors.len(),
                st.epochs.len()
            )
        };
        let mut report = Report {
            schema_version: SCHEMA_VERSION,
            kernel_release: engine.kernel_release().to_string(),
            summary: Summary {
                vectors: vectors.len(),
                resume_epochs: st.epochs.len(),
                events: st.events,
                errors,
                warnings,
                not_evaluated: not_evaluated.len(),
                lost_events: engine.losses().total,
                verdict,
            },
            origin_ns: engine.origin_ns(),
            end_ns: st.now_ns,
            timing: engine.timing(),
            timeline: st.timeline.clone(),
            epochs: st.epochs.clone(),
            cpu_changes: st.cpu_changes.clone(),
            gaps: st.gaps.clone(),
            hv_buses: st.hv_buses.clone(),
            divergences,
            vectors,
            not_evaluated,
            losses: engine.losses().clone(),
            unknown_actions: st.unknown_actions.clone(),
            inconclusive: Vec::new(),
            input_warnings: engine.input_warnings(),
        };
        for reason in inconclusive {
            report = report.inconclusive(reason);
        }
        report
    }

    /// Say that this report proves nothing, and why: the verdict says so unless a
    /// divergence was found anyway.
    pub fn inconclusive(mut self, reason: String) -> Report {
        if self.divergences.is_empty() {
            self.summary.verdict = format!("nothing proven: {reason}");
        }
        self.inconclusive.push(reason);
        self
    }

    /// Put the caller's warnings (file damage, a command that failed) before the engine's.
    pub fn with_input_warnings(mut self, mut warnings: Vec<String>) -> Report {
        warnings.append(&mut self.input_warnings);
        self.input_warnings = warnings;
        self
    }

    /// The default policy's exit code: 0 = no error-level divergence, 1 = at least one.
    pub fn exit_code(&self) -> u8 {
        self.exit_code_for(FailOn::default())
    }

    /// 0 = nothing that `fail_on` counts, 1 = a divergence it counts, 2 = none, but the
    /// report proves nothing ([`Report::inconclusive`]). (2 for unusable input is the
    /// caller's.)
    pub fn exit_code_for(&self, fail_on: FailOn) -> u8 {
        let counts = |d: &Divergence| match fail_on {
            FailOn::Error => d.severity == Severity::Error,
            FailOn::Warning => true,
        };
        if self.divergences.iter().any(counts) {
            1
        } else if !self.inconclusive.is_empty() {
            2
        } else {
            0
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("report does not serialise: {e}") }),
        )
    }

    fn t(&self, ts: u64) -> String {
        crate::duration::offset(ts, self.origin_ns)
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "msitrace report: kernel {}, {} events, {} vectors, {} resume epochs",
            if self.kernel_release.is_empty() {
                "unknown"
            } else {
                &self.kernel_release
            },
            self.summary.events,
            self.summary.vectors,
            self.summary.resume_epochs
        );
        for w in &self.input_warnings {
            let _ = writeln!(s, "input warning: {w}");
        }
        for why in &self.inconclusive {
            let _ = writeln!(s, "nothing proven: {why}");
        }

        let _ = writeln!(s, "\nTimeline");
        // Phases, CPU changes and recorder gaps in one list, by time.
        let mut lines: Vec<(u64, String)> = Vec::new();
        for span in &self.timeline {
            lines.push((
                span.start_ts_ns,
                format!(
                    "{:<15} epoch {:<3} ({})",
                    span.phase.name(),
                    span.epoch,
                    span.cause
                ),
            ));
        }
        for c in &self.cpu_changes {
            let state = if c.online { "online" } else { "offline" };
            lines.push((c.ts_ns, format!("CPU{} {state} ({})", c.cpu, c.evidence)));
        }
        for g in &self.gaps {
            lines.push((g.ts_ns, format!("recorder gap: {}", g.reason)));
        }
        lines.sort_by_key(|(ts, _)| *ts);
        for (ts, line) in &lines {
            let _ = writeln!(s, "  {:>10}  {line}", self.t(*ts));
        }
        for e in &self.epochs {
            let _ = writeln!(
                s,
                "  epoch {}: {} ({}), noirq resume at {}, resumed at {}",
                e.epoch,
                e.kind.name(),
                e.sleep.name(),
                self.t(e.start_ts_ns),
                e.resumed_ts_ns
                    .map_or_else(|| "never".into(), |t| self.t(t))
            );
        }
        for (bus, b) in &self.hv_buses {
            let _ = writeln!(
                s,
                "  Hyper-V bus {}: state {}{}{}",
                if bus == "?" {
                    "(name unread)"
                } else {
                    bus.as_str()
                },
                b.state.map_or_else(|| "not seen".into(), |s| s.name()),
                if b.suspended { ", suspended" } else { "" },
                b.last_error
                    .map_or_else(String::new, |e| format!(", last error {e}"))
            );
        }

        let _ = writeln!(s, "\nVectors (before suspend -> after resume)");
        let _ = writeln!(
            s,
            "  {:>5} {:<14} {:<13} {:<12} {:<3} {:<9} {:<17} {:<9} {:<17} MESSAGE",
            "IRQ", "DEVICE", "KIND", "DRIVER", "HV", "CPU", "CPU FROM", "MASKED", "COUNT"
        );
        for v in &self.vectors {
            let b = v.before_suspend.as_ref();
            let a = v.after_resume.as_ref();
            let pair = |f: &dyn Fn(&VectorView) -> String| -> String {
                match (b, a) {
                    (Some(b), Some(a)) => format!("{}->{}", f(b), f(a)),
                    (Some(b), None) => f(b),
                    (None, Some(a)) => format!("?->{}", f(a)),
                    (None, None) => "-".into(),
                }
            };
            let cpu = pair(&|x| x.cpu.map_or_else(|| "?".into(), |c| c.to_string()));
            // What showed the CPU the table ends on (the target after resume, else now).
            let cpu_from = v.target.as_ref().map_or("-", |t| t.source.name());
            let masked = pair(&|x| yn(x.cache_masked).into());
            let count = pair(&|x| x.count.map_or_else(|| "?".into(), |c| c.to_string()));
            let msg = a
                .or(b)
                .and_then(|x| x.msg)
                .map_or_else(|| "-".into(), |m| m.to_string());
            let _ = writeln!(
                s,
                "  {:>5} {:<14} {:<13} {:<12} {:<3} {:<9} {:<17} {:<9} {:<17} {}{}{}",
                v.irq,
                v.device.as_deref().unwrap_or("?"),
                v.kind,
                v.driver.as_deref().unwrap_or("-"),
                if v.hyperv.is_some() { "yes" } else { "no" },
                cpu,
                cpu_from,
                masked,
                count,
                msg,
                match (v.previous_irq, v.reallocated_to) {
                    (_, Some(now)) => format!("  (freed; this vector is irq {now} now)"),
                    // The counts before and after are two IRQ numbers' counters.
                    (Some(was), None) => format!("  (was irq {was} before suspend)"),
                    (None, None) => String::new(),
                },
                if v.divergences > 0 {
                    "  <- divergence"
                } else {
                    ""
                }
            );
        }

        let _ = writeln!(s, "\nDivergences");
        if self.divergences.is_empty() {
            let _ = writeln!(s, "  {}", self.summary.verdict);
        }
        for d in &self.divergences {
            let sev = match d.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "WARNING",
            };
            let _ = writeln!(
                s,
                "  {sev} {} {} — irq {} ({}), epoch {}{}",
                d.rule,
                d.rule.title(),
                d.irq.map_or_else(|| "-".into(), |i| i.to_string()),
                d.device.as_deref().unwrap_or("?"),
                d.epoch,
                if d.occurrences > 1 {
                    format!(", seen {} times", d.occurrences)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(s, "    {}", d.meaning);
            for e in &d.evidence {
                let _ = writeln!(
                    s,
                    "    {:>10} {:<6} {:<36} {}",
                    self.t(e.ts_ns),
                    e.cpu.map_or_else(|| "-".into(), |c| format!("cpu{c}")),
                    e.event,
                    e.detail
                );
            }
            if d.evidence_dropped > 0 {
                let _ = writeln!(
                    s,
                    "    ({} more evidence items not kept)",
                    d.evidence_dropped
                );
            }
        }

        let _ = writeln!(s, "\nNot evaluated");
        if self.not_evaluated.is_empty() {
            let _ = writeln!(s, "  every rule was evaluated");
        }
        for n in &self.not_evaluated {
            let _ = writeln!(
                s,
                "  {}{}{}: not evaluated: {}",
                n.rule,
                n.part
                    .as_ref()
                    .map_or_else(String::new, |p| format!(" ({p})")),
                n.epoch
                    .map_or_else(String::new, |e| format!(" for epoch {e}")),
                n.reason
            );
        }

        let _ = writeln!(s, "\nLosses");
        if self.losses.total == 0 {
            let _ = writeln!(s, "  no event lost");
        }
        for p in &self.losses.per_probe {
            let _ = writeln!(s, "  {:<40} {} lost", p.hook, p.count);
        }
        for r in &self.losses.reports {
            let _ = writeln!(
                s,
                "  {:>10}  {} lost from {} since {} (phase {}, epoch {})",
                self.t(r.ts_ns),
                r.count,
                r.hook,
                self.t(r.from_ts_ns),
                r.phase.name(),
                r.epoch
            );
        }
        for (a, n) in &self.unknown_actions {
            let _ = writeln!(s, "\nunknown suspend_resume action {a:?} seen {n} times");
        }
        let _ = writeln!(s, "\n{}", self.summary.verdict);
        s
    }
}

fn yn(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

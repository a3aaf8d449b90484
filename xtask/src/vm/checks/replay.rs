//! `msitrace replay --json` on the host: exit code, losses, and exactly the divergences the
//! step's driver mode calls for.

use std::collections::BTreeSet;

use super::{
    Verdict,
    common::{describe_divergence, divergence_irqs, join, not_evaluated_reason},
    json::{Divergence, Report},
};
use crate::vm::plan::{Mode, Scenario, Step};

/// `msitrace replay` (default `--fail-on error`) exits 1 exactly when the report has an
/// error-level divergence: a buggy run (H1/H4 errors) exits 1, a run whose only findings are
/// warnings (G5's heuristic silence) exits 0. A divergence without a severity counts as an
/// error, the stricter reading.
pub(super) fn exit_code_mismatch(code: i32, divs: &[Divergence]) -> Option<String> {
    let errors = divs
        .iter()
        .filter(|d| d.severity.as_deref().unwrap_or("error") == "error")
        .count();
    let expected = i32::from(errors > 0);
    (code != expected).then(|| {
        format!(
            "msitrace replay exited {code} with {} divergence(s), {errors} of them errors \
             (expected {expected}: exit 1 means an error-level divergence)",
            divs.len()
        )
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_report(
    step: Step,
    report: &Report,
    code: i32,
    control: u32,
    tests: &[u32],
    g5_silence_s: u64,
    h4_gated_off: bool,
    v: &mut Verdict,
) {
    let divs = &report.divergences;
    let lost = report.losses.as_ref().and_then(|l| l.total);
    match lost {
        Some(0) => {}
        // The burst is meant to overflow the ring: its losses are checked in check_burst.
        Some(_) if step.scenario == Scenario::Burst => {}
        Some(n) => v.failures.push(format!("msitrace lost {n} events")),
        None => v.failures.push("the report has no losses.total".into()),
    }
    if let Some(why) = exit_code_mismatch(code, divs) {
        v.failures.push(why);
    }
    let in_report: BTreeSet<u32> = report.vectors.iter().filter_map(|x| x.irq).collect();
    for irq in std::iter::once(&control).chain(tests) {
        if !in_report.contains(irq) {
            v.failures.push(format!(
                "irq {irq} of hv_stub is not among the report's vectors"
            ));
        }
    }
    if !step.expects_dead_test_vectors() {
        if !divs.is_empty() {
            let d: Vec<String> = divs.iter().map(describe_divergence).collect();
            v.failures.push(format!(
                "expected no divergence, the report has: {}",
                d.join("; ")
            ));
        } else {
            v.facts.push("no divergence".into());
        }
        if step.mode == Mode::Opaque {
            // The driver's private field contradicts what the kernel did: said as input, for
            // the test vectors it composed.
            let warnings: Vec<&str> = report
                .input_warnings
                .iter()
                .map(String::as_str)
                .filter(|w| w.contains("chip_data"))
                .collect();
            if warnings.is_empty() {
                v.failures.push(
                    "the opaque driver left chip_data alone, yet the report has no input warning about it"
                        .into(),
                );
            } else {
                v.facts.push(format!(
                    "{} input warning(s) on chip_data, no H3/H5",
                    warnings.len()
                ));
            }
        }
        return;
    }
    let test_set: BTreeSet<u32> = tests.iter().copied().collect();
    let strays: Vec<String> = divs
        .iter()
        .filter(|d| {
            let irqs = divergence_irqs(d);
            irqs.is_empty() || !irqs.is_subset(&test_set)
        })
        .map(describe_divergence)
        .collect();
    if !strays.is_empty() {
        v.failures.push(format!(
            "divergences beyond hv_stub's test vectors {}: {}",
            join(&test_set),
            strays.join("; ")
        ));
    }
    let mut required = vec!["H1", "G5"];
    if step.scenario.offlines_cpus() && !h4_gated_off {
        required.push("H4");
    }
    if step.scenario.offlines_cpus() && h4_gated_off {
        // Never a silent pass: the buggy unmask did return early, and the report must say
        // why H4 does not judge it here.
        match not_evaluated_reason(report, "H4") {
            Some(why) => v
                .facts
                .push(format!("H4 not evaluated on this kernel: {why}")),
            None => v.failures.push(
                "H4 neither found nor said to be not evaluated on a kernel that gates it off"
                    .into(),
            ),
        }
    }
    let mut seen = Vec::new();
    for rule in &required {
        let on: BTreeSet<u32> = divs
            .iter()
            .filter(|d| d.rule.as_deref() == Some(rule))
            .flat_map(divergence_irqs)
            .collect();
        let missing: Vec<String> = test_set.difference(&on).map(u32::to_string).collect();
        if missing.is_empty() {
            seen.push(format!("{rule} {}", join(&on)));
            continue;
        }
        let mut why = format!("no {rule} for irq {}", missing.join(","));
        if *rule == "G5" {
            let silence = report
                .timing
                .as_ref()
                .and_then(|t| t.g5_silence_ns)
                .map(|n| n / 1_000_000_000);
            if let Some(s) = silence.filter(|s| *s > g5_silence_s) {
                why.push_str(&format!(
                    " (the engine waited {s} s, not the {g5_silence_s} s asked for)"
                ));
            }
        }
        let not_eval: Vec<String> = report
            .not_evaluated
            .iter()
            .filter(|n| n.rule.as_deref() == Some(rule))
            .filter_map(|n| n.reason.clone())
            .collect();
        if !not_eval.is_empty() {
            why.push_str(&format!(" (not evaluated: {})", not_eval.join("; ")));
        }
        v.failures.push(why);
    }
    let others: BTreeSet<&str> = divs
        .iter()
        .filter_map(|d| d.rule.as_deref())
        .filter(|r| !required.contains(r))
        .collect();
    if !others.is_empty() {
        seen.push(format!(
            "also {}",
            others.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    v.facts.push(seen.join("; "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::{Mode, Scenario};
    use serde_json::Value;

    fn typed(v: &Value) -> Report {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn where_h4_is_gated_off_the_report_must_say_so() {
        let step = Step::new(Scenario::Hibernate, Mode::Buggy);
        let mut report = serde_json::json!({
            "losses": {"total": 0},
            "vectors": [{"irq": 37}, {"irq": 38}, {"irq": 39}],
            "divergences": [
                {"rule": "H1", "severity": "error", "irq": 38, "irqs": [38]},
                {"rule": "H1", "severity": "error", "irq": 39, "irqs": [39]},
                {"rule": "G5", "severity": "warning", "irq": 38, "irqs": [38]},
                {"rule": "G5", "severity": "warning", "irq": 39, "irqs": [39]},
            ],
            "not_evaluated": [],
        });
        let verdict = |report: &Value, gated: bool| {
            let mut v = Verdict::default();
            check_report(step, &typed(report), 1, 37, &[38, 39], 4, gated, &mut v);
            v
        };
        // Before 6.17 H4 is required; from 6.17 its absence must be explained, never silent.
        assert!(!verdict(&report, false).pass());
        assert!(!verdict(&report, true).pass());
        report["not_evaluated"] = serde_json::json!([{"rule": "H4", "reason": "6.17 and later"}]);
        let v = verdict(&report, true);
        assert!(v.pass(), "{:?}", v.failures);
    }

    #[test]
    fn buggy_report_must_name_exactly_the_test_vectors() {
        let step = Step::new(Scenario::PmTestCore, Mode::Buggy);
        let report = serde_json::json!({
            "losses": {"total": 0},
            "vectors": [{"irq": 37}, {"irq": 38}, {"irq": 39}, {"irq": 25}],
            "divergences": [
                {"rule": "H1", "severity": "error", "irq": 38, "irqs": [38], "cause": "no-compose"},
                {"rule": "H1", "severity": "error", "irq": 39, "irqs": [39], "cause": "no-compose"},
                {"rule": "H4", "severity": "error", "irq": 38, "irqs": [38], "cause": "stale-mask"},
                {"rule": "H4", "severity": "error", "irq": 39, "irqs": [39], "cause": "stale-mask"},
                {"rule": "G5", "severity": "warning", "irq": 38, "irqs": [38], "cause": "silent"},
                {"rule": "G5", "severity": "warning", "irq": 39, "irqs": [39], "cause": "silent"},
            ],
            "not_evaluated": [],
        });
        let mut v = Verdict::default();
        check_report(step, &typed(&report), 1, 37, &[38, 39], 4, false, &mut v);
        assert!(v.pass(), "{:?}", v.failures);

        let mut wrong = report.clone();
        wrong["divergences"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"rule": "G5", "irq": 25, "irqs": [25], "cause": "silent"}));
        let mut v = Verdict::default();
        check_report(step, &typed(&wrong), 1, 37, &[38, 39], 11, false, &mut v);
        assert!(!v.pass());

        let mut v = Verdict::default();
        check_report(
            Step::new(Scenario::PmTestCore, Mode::Fixed),
            &typed(&report),
            1,
            37,
            &[38, 39],
            11,
            false,
            &mut v,
        );
        assert!(!v.pass(), "fixed mode must have no divergence");
    }

    #[test]
    fn replay_exits_1_on_errors_and_0_on_warnings_alone() {
        let d = |rule: &str, severity: &str| Divergence {
            rule: Some(rule.into()),
            severity: Some(severity.into()),
            irq: Some(38),
            ..Divergence::default()
        };
        let (h1, g5) = (d("H1", "error"), d("G5", "warning"));
        // A buggy run: errors (and the G5 warnings that follow them) exit 1.
        assert_eq!(exit_code_mismatch(1, &[h1.clone(), g5.clone()]), None);
        assert!(exit_code_mismatch(0, &[h1.clone(), g5.clone()]).is_some());
        // Only heuristic warnings: listed, exit 0.
        assert_eq!(exit_code_mismatch(0, std::slice::from_ref(&g5)), None);
        assert!(exit_code_mismatch(1, std::slice::from_ref(&g5)).is_some());
        // Clean, and unusable input.
        assert_eq!(exit_code_mismatch(0, &[]), None);
        assert!(exit_code_mismatch(2, &[]).is_some());
    }
}

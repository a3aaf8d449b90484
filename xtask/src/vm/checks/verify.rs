//! `msitrace verify`'s exit code and JSON report, as a distribution's test suite reads them.

use std::{collections::BTreeSet, fs, path::Path};

use super::{
    Verdict,
    common::{describe_divergence, divergence_irqs, error_findings, join, not_evaluated_reason},
    json::Report,
};
use crate::vm::plan::Step;

/// `msitrace verify` as a test suite uses it: exit 1 with H1 and H4 at error level on exactly
/// the test vectors after the buggy cycle, exit 0 after the fixed one, and no error — nor any
/// warning — on the control vector.
pub(super) fn check_verify(
    dir: &Path,
    step: Step,
    control: u32,
    tests: &[u32],
    h4_gated_off: bool,
    v: &mut Verdict,
) {
    let rc = fs::read_to_string(dir.join("verify.rc")).unwrap_or_default();
    let want = if step.expects_dead_test_vectors() {
        "1"
    } else {
        "0"
    };
    if rc.trim() != want {
        let err = fs::read_to_string(dir.join("verify.err")).unwrap_or_default();
        v.failures.push(format!(
            "msitrace verify exited {} instead of {want}: {}",
            rc.trim(),
            err.lines().last().unwrap_or_default()
        ));
    }
    let report: Report = match fs::read_to_string(dir.join("verify.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            v.failures
                .push(format!("msitrace verify --json printed no report: {e}"));
            return;
        }
    };
    let errors = error_findings(&report.divergences);
    let on_control: Vec<String> = report
        .divergences
        .iter()
        .filter(|d| divergence_irqs(d).contains(&control))
        .map(describe_divergence)
        .collect();
    if !on_control.is_empty() {
        v.failures.push(format!(
            "verify reports the control vector (irq {control}): {}",
            on_control.join("; ")
        ));
    }
    let irqs: BTreeSet<u32> = errors.iter().map(|(_, i)| *i).collect();
    if step.expects_dead_test_vectors() {
        let want: BTreeSet<u32> = tests.iter().copied().collect();
        let rules: &[&str] = if h4_gated_off && not_evaluated_reason(&report, "H4").is_some() {
            &["H1"]
        } else {
            &["H1", "H4"]
        };
        let missing: Vec<String> = rules
            .iter()
            .flat_map(|r| {
                let errors = &errors;
                tests
                    .iter()
                    .filter(move |i| !errors.contains(&(r.to_string(), **i)))
                    .map(move |i| format!("{r}@{i}"))
            })
            .collect();
        if irqs != want || !missing.is_empty() {
            v.failures.push(format!(
                "verify's errors are on irqs {{{}}} (missing {}), expected H1 and H4 on {{{}}}",
                join(&irqs),
                if missing.is_empty() {
                    "none".to_string()
                } else {
                    missing.join(" ")
                },
                join(&want)
            ));
        } else {
            v.facts.push(format!(
                "verify: exit 1, {} on irqs {}",
                rules.join(" and "),
                join(&irqs)
            ));
        }
    } else if !errors.is_empty() {
        v.failures.push(format!(
            "verify reports errors after the fixed cycle: {}",
            errors
                .iter()
                .map(|(r, i)| format!("{r}@{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    } else {
        v.facts.push("verify: exit 0, no error".into());
    }
}

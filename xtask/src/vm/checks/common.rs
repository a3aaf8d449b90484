//! What the checks share: how a divergence of msitrace's report is read and named, and sets
//! of irqs in words. Every check imports from here; this imports no check.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::json::{Divergence, Report};

/// A report's error-level findings as (rule, irq), one per vector a divergence names.
pub(super) fn error_findings(divergences: &[Divergence]) -> BTreeSet<(String, u32)> {
    divergences
        .iter()
        .filter(|d| d.severity.as_deref() == Some("error"))
        .flat_map(|d| {
            let rule = d.rule.clone().unwrap_or_default();
            divergence_irqs(d)
                .into_iter()
                .map(move |i| (rule.clone(), i))
        })
        .collect()
}

/// The IRQs a divergence is about.
pub(super) fn divergence_irqs(d: &Divergence) -> BTreeSet<u32> {
    let mut s: BTreeSet<u32> = d.irqs.iter().copied().collect();
    if let Some(i) = d.irq {
        s.insert(i);
    }
    s
}

pub(super) fn describe_divergence(d: &Divergence) -> String {
    let irqs: Vec<String> = divergence_irqs(d).iter().map(u32::to_string).collect();
    format!(
        "{} on irq {} ({})",
        d.rule.as_deref().unwrap_or("?"),
        if irqs.is_empty() {
            "-".into()
        } else {
            irqs.join(",")
        },
        d.cause.as_deref().unwrap_or("")
    )
}

/// Whether the report says, with a reason, that `rule` was not evaluated.
pub(super) fn not_evaluated_reason(report: &Report, rule: &str) -> Option<String> {
    report
        .not_evaluated
        .iter()
        .find(|n| n.rule.as_deref() == Some(rule))
        .and_then(|n| n.reason.clone())
}

pub(super) fn join(s: &BTreeSet<u32>) -> String {
    s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Why a step left nothing to judge: no outputs at all, or the guest's own `error` file.
pub(super) fn step_not_run(dir: &Path) -> Option<String> {
    if !dir.exists() {
        return Some(
            "no outputs from the guest for this step (it never ran or never saved)".into(),
        );
    }
    fs::read_to_string(dir.join("error"))
        .ok()
        .map(|e| format!("guest: {}", e.trim()))
}

/// The trace files (`*.msit`) in `dir`, in name order (a flight recorder's: oldest first).
pub(super) fn msit_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "msit"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The value of the first `key=value` word of `text` (`key` ends in `=`), parsed: the guest
/// writes its figures so.
pub(super) fn value<T: std::str::FromStr>(text: &str, key: &str) -> Option<T> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .parse()
        .ok()
}

//! What the checks share: how a divergence of msitrace's report is read and named, and sets
//! of irqs in words. Every check imports from here; this imports no check.

use std::collections::BTreeSet;

use serde_json::Value;

/// A report's error-level findings as (rule, irq), one per vector a divergence names.
pub(super) fn error_findings(divergences: Option<&Value>) -> BTreeSet<(String, u32)> {
    divergences
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("severity").and_then(Value::as_str) == Some("error"))
        .flat_map(|d| {
            let rule = d
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            divergence_irqs(d)
                .into_iter()
                .map(move |i| (rule.clone(), i))
        })
        .collect()
}

/// The IRQs a divergence is about.
pub(super) fn divergence_irqs(d: &Value) -> BTreeSet<u32> {
    let mut s: BTreeSet<u32> = d
        .get("irqs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_u64().map(|i| i as u32))
        .collect();
    if let Some(i) = d.get("irq").and_then(Value::as_u64) {
        s.insert(i as u32);
    }
    s
}

pub(super) fn describe_divergence(d: &Value) -> String {
    let irqs: Vec<String> = divergence_irqs(d).iter().map(u32::to_string).collect();
    format!(
        "{} on irq {} ({})",
        d.get("rule").and_then(Value::as_str).unwrap_or("?"),
        if irqs.is_empty() {
            "-".into()
        } else {
            irqs.join(",")
        },
        d.get("cause").and_then(Value::as_str).unwrap_or("")
    )
}

/// Whether the report says, with a reason, that `rule` was not evaluated.
pub(super) fn not_evaluated_reason(report: &Value, rule: &str) -> Option<String> {
    report
        .get("not_evaluated")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|n| n.get("rule").and_then(Value::as_str) == Some(rule))
        .and_then(|n| n.get("reason").and_then(Value::as_str).map(str::to_string))
}

pub(super) fn join(s: &BTreeSet<u32>) -> String {
    s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

//! `msitrace daemon`: its err-level entries on stderr (no journal in the guest).

use std::collections::{BTreeMap, BTreeSet};

use super::{Verdict, common::join};
use crate::vm::plan::Step;

/// The daemon's journal entries as it writes them to stderr when there is no journal: one
/// line each, `msitrace: <priority> <rule> irq=<n> ...: <message>`.
pub(super) fn daemon_err_irqs(log: &str) -> BTreeMap<u32, BTreeSet<String>> {
    let mut out: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for line in log.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("msitrace:") || words.next() != Some("err") {
            continue;
        }
        let Some(rule) = words.next() else { continue };
        let irq = line.split_whitespace().find_map(|w| {
            w.strip_prefix("irq=")?
                .trim_end_matches(':')
                .parse::<u32>()
                .ok()
        });
        if let Some(irq) = irq {
            out.entry(irq).or_default().insert(rule.to_string());
        }
    }
    out
}

pub(super) fn check_daemon_log(
    log: &str,
    step: Step,
    control: u32,
    tests: &[u32],
    v: &mut Verdict,
) {
    let err = daemon_err_irqs(log);
    if err.contains_key(&control) {
        v.failures.push(format!(
            "the daemon logged an err-level divergence for the control vector (irq {control})"
        ));
    }
    let logged: Vec<u32> = tests
        .iter()
        .copied()
        .filter(|i| err.contains_key(i))
        .collect();
    if step.expects_dead_test_vectors() {
        if logged.len() == tests.len() {
            let rules: BTreeSet<&String> = err.values().flatten().collect();
            v.facts.push(format!(
                "daemon logged err-level {} for irqs {}",
                rules.into_iter().cloned().collect::<Vec<_>>().join("/"),
                join(&logged.iter().copied().collect())
            ));
        } else {
            v.failures.push(format!(
                "the daemon logged err-level entries for irqs {{{}}} instead of every test vector {{{}}}",
                join(&logged.iter().copied().collect()),
                join(&tests.iter().copied().collect())
            ));
        }
    } else if !logged.is_empty() {
        v.failures.push(format!(
            "the daemon logged err-level entries for irqs {} in a step that must stay clean",
            join(&logged.iter().copied().collect())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::{Front, Mode, Scenario};

    #[test]
    fn daemon_stderr_lines_name_rule_and_irq() {
        let log = "msitrace: notice coverage 20 of 29 hooks attached\n\
msitrace: err H1 irq=38 device=0000:00:02.0: vector restored by MMIO without a compose\n\
msitrace: warning G3 irq=37 device=x: something\n\
msitrace: err G5 irq=39: silent after resume\n";
        let m = daemon_err_irqs(log);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [38, 39]);
        assert!(m[&38].contains("H1") && m[&39].contains("G5"));
        let buggy = Step::new(Scenario::S3, Mode::Buggy).with(Front::Daemon);
        let mut v = Verdict::default();
        check_daemon_log(log, buggy, 37, &[38, 39], &mut v);
        assert!(v.pass(), "{:?}", v.failures);
        let mut v = Verdict::default();
        check_daemon_log(log, buggy, 37, &[38, 39, 40], &mut v);
        assert!(!v.pass());
        let fixed = Step::new(Scenario::S3, Mode::Fixed).with(Front::Daemon);
        let mut v = Verdict::default();
        check_daemon_log(log, fixed, 37, &[38, 39], &mut v);
        assert!(!v.pass());
    }
}

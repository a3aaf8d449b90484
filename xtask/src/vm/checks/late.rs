//! The late-interrupt hibernation: the step proves something only if the test vectors did
//! fire after msitrace's last handler-count sample before the suspend, so that their count
//! grew across the sleep by interrupts from before it. The replay's G5 verdict (exactly the
//! dead vectors, none of the live ones) is judged with every resume step's.

use std::collections::BTreeMap;

use super::{
    Verdict,
    json::{Event, Kind},
};
use crate::vm::plan::Step;

/// The test vectors' counts in the last sample before the first `power:suspend_resume` event
/// and in the first sample after the last one, and whether the test vectors grew in between.
/// In buggy mode they deliver nothing after the resume, so that growth can only be interrupts
/// from before the freeze that no sample before the suspend saw.
pub(super) fn check_late_fires(step: Step, events: &[Event], tests: &[u32], v: &mut Verdict) {
    let pm: Vec<u64> = events
        .iter()
        .filter(|e| e.kind() == Kind::SuspendResume)
        .map(|e| e.ts_ns)
        .collect();
    let (Some(&first_pm), Some(&last_pm)) = (pm.iter().min(), pm.iter().max()) else {
        v.failures
            .push("late fires: the recording has no power:suspend_resume event".into());
        return;
    };
    let sample = |e: &Event| -> Option<(u64, BTreeMap<u32, u64>)> {
        Some((e.ts_ns, e.counts()?.iter().copied().collect()))
    };
    let samples: Vec<(u64, BTreeMap<u32, u64>)> = events.iter().filter_map(sample).collect();
    let before = samples
        .iter()
        .filter(|(t, _)| *t < first_pm)
        .max_by_key(|(t, _)| *t);
    let after = samples
        .iter()
        .filter(|(t, _)| *t > last_pm)
        .min_by_key(|(t, _)| *t);
    let (Some((tb, b)), Some((ta, a))) = (before, after) else {
        v.failures.push(
            "late fires: no handler-count sample on one side of the suspend and resume".into(),
        );
        return;
    };
    let grew: Vec<String> = tests
        .iter()
        .map(|irq| {
            let (x, y) = (
                b.get(irq).copied().unwrap_or(0),
                a.get(irq).copied().unwrap_or(0),
            );
            format!("{irq}: {x}->{y}")
        })
        .collect();
    let flat: Vec<u32> = tests
        .iter()
        .copied()
        .filter(|irq| a.get(irq).copied().unwrap_or(0) <= b.get(irq).copied().unwrap_or(0))
        .collect();
    v.facts.push(format!(
        "late fires: test vectors {} between the last sample before the suspend ({:.3} s before its first event) and the first after the resume ({:.3} s after its last)",
        grew.join(", "),
        first_pm.saturating_sub(*tb) as f64 / 1e9,
        ta.saturating_sub(last_pm) as f64 / 1e9
    ));
    if step.expects_dead_test_vectors() && !flat.is_empty() {
        v.failures.push(format!(
            "late fires: irq {flat:?} did not grow between the samples around the sleep: no interrupt of them came after the last sample before the suspend, so the step does not test what it is for"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::{Mode, Scenario};

    fn ev(line: &str) -> Event {
        serde_json::from_str(line).unwrap()
    }

    fn events(after: u64) -> Vec<Event> {
        vec![
            ev(
                r#"{"ts_ns": 1000, "cpu": 0, "tgid": 0, "kind": {"IrqCounts": {"counts": [[38, 5], [39, 5]]}}}"#,
            ),
            ev(
                r#"{"ts_ns": 2000, "cpu": 0, "tgid": 1, "kind": {"SuspendResume": {"action": "dpm_prepare", "val": 1, "start": true}}}"#,
            ),
            ev(
                r#"{"ts_ns": 3000, "cpu": 0, "tgid": 1, "kind": {"SuspendResume": {"action": "thaw_processes", "val": 0, "start": false}}}"#,
            ),
            ev(&format!(
                r#"{{"ts_ns": 3100, "cpu": 0, "tgid": 0, "kind": {{"IrqCounts": {{"counts": [[38, {after}], [39, {after}]]}}}}}}"#
            )),
        ]
    }

    #[test]
    fn a_buggy_step_without_late_growth_proves_nothing() {
        let buggy = Step::new(Scenario::HibernateLate, Mode::Buggy);
        let mut v = Verdict::default();
        check_late_fires(buggy, &events(9), &[38, 39], &mut v);
        assert!(v.failures.is_empty(), "{:?}", v.failures);
        assert!(v.facts[0].contains("38: 5->9"), "{:?}", v.facts);
        let mut v = Verdict::default();
        check_late_fires(buggy, &events(5), &[38, 39], &mut v);
        assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
        let fixed = Step::new(Scenario::HibernateLate, Mode::Fixed);
        let mut v = Verdict::default();
        check_late_fires(fixed, &events(5), &[38, 39], &mut v);
        assert!(v.failures.is_empty());
    }
}

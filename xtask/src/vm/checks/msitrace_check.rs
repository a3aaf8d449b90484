//! `msitrace check --json` in the guest after the sleep, with no recorder.

use std::{collections::BTreeSet, fs, path::Path};

use super::{
    Verdict,
    json::{CheckFinding, CheckReport},
};

impl CheckFinding {
    fn describe(&self) -> String {
        format!(
            "{} {} on {} ({}): {}",
            self.severity,
            self.rule,
            self.irq
                .map_or_else(|| format!("irqs {:?}", self.irqs), |i| format!("irq {i}")),
            self.device,
            self.cause
        )
    }
}

/// `msitrace check` after the sleep, recorder stopped (tests/guest/vmt.sh `check_after`): what
/// it reads from the real e1000e must match what hv_stub says it left there. After the buggy
/// driver's sleep (`want` is the rule): exit 1 with that rule at error level on exactly the
/// test vectors, C1 where they are masked in the device while genirq has them enabled, C2
/// where pci-hyperv leaves the device unmask to the per-device chip (6.17 and later), so that
/// they are unmasked with the message bug 1 left, routed to no CPU; after the fixed one exit 0
/// and no error.
/// The control and the plain vector never have a finding, and the e1000e's MSI-X table must
/// really have been read through its BAR (the one thing the host running the unit tests
/// cannot do).
pub(super) fn check_check(
    dir: &Path,
    want: Option<&str>,
    e1000e: Option<&str>,
    control: u32,
    tests: &[u32],
    plain: Option<u32>,
    v: &mut Verdict,
) {
    let err = fs::read_to_string(dir.join("check.err")).unwrap_or_default();
    let err_last = err.lines().last().unwrap_or("no message").to_string();
    let Ok(rc) = fs::read_to_string(dir.join("check.rc")) else {
        v.failures
            .push("msitrace check did not run after the sleep (no check.rc)".into());
        return;
    };
    let rc = rc.trim().to_string();
    let report: CheckReport = match fs::read_to_string(dir.join("check.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            v.failures.push(format!(
                "msitrace check exited {rc} without a report the rig reads ({e}): {err_last}"
            ));
            return;
        }
    };
    if let Some(why) = &report.unusable {
        v.failures
            .push(format!("msitrace check found nothing usable: {why}"));
    }
    let want_rc = if want.is_some() { "1" } else { "0" };
    if rc != want_rc {
        v.failures.push(format!(
            "msitrace check exited {rc}, expected {want_rc} ({}; {err_last})",
            report.summary.verdict
        ));
    }
    // The point of running it here: the table read through the real device's BAR.
    match e1000e {
        None => v
            .failures
            .push("the e1000e's address is unknown: cannot judge check's reading of it".into()),
        Some(bdf) => match report.devices.iter().find(|d| d.bdf == bdf) {
            None => v
                .failures
                .push(format!("msitrace check does not list the e1000e ({bdf})")),
            Some(d) if d.msix_table.as_deref() != Some("read") => {
                let lost: Vec<String> = report
                    .unreadable
                    .iter()
                    .filter(|u| u.what.contains(bdf))
                    .map(|u| format!("{}: {}", u.what, u.why))
                    .collect();
                v.failures.push(format!(
                    "msitrace check did not read the e1000e's MSI-X table ({}){}",
                    d.msix_table
                        .as_deref()
                        .unwrap_or("no MSI-X capability decoded"),
                    if lost.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", lost.join("; "))
                    }
                ));
            }
            Some(_) => {}
        },
    }
    // The device's mask bit as check read it, against hv_stub's role for the vector.
    let roles = std::iter::once((control, "control"))
        .chain(tests.iter().map(|&t| (t, "test")))
        .chain(plain.map(|p| (p, "plain")));
    for (irq, role) in roles {
        let want_masked = role == "test" && want == Some("C1");
        match report.vectors.iter().find(|x| x.irq == irq) {
            None => v.failures.push(format!(
                "msitrace check does not list hv_stub's {role} irq {irq}"
            )),
            Some(x) if e1000e.is_some_and(|b| b != x.device) => v.failures.push(format!(
                "msitrace check puts hv_stub's {role} irq {irq} on {}, not the e1000e",
                x.device
            )),
            Some(x) if x.device_state.masked != Some(want_masked) => {
                v.failures.push(format!(
                    "msitrace check reads {role} irq {irq} as {} in the device, expected {}",
                    match x.device_state.masked {
                        Some(true) => "masked".to_string(),
                        Some(false) => "unmasked".to_string(),
                        None => format!(
                            "unknown ({})",
                            x.device_state.unknown.as_deref().unwrap_or("no reason")
                        ),
                    },
                    if want_masked { "masked" } else { "unmasked" }
                ));
            }
            Some(_) => {}
        }
    }
    let quiet: Vec<u32> = std::iter::once(control).chain(plain).collect();
    let on_quiet: Vec<String> = report
        .findings
        .iter()
        .filter(|f| {
            f.irq.is_some_and(|i| quiet.contains(&i)) || f.irqs.iter().any(|i| quiet.contains(i))
        })
        .map(CheckFinding::describe)
        .collect();
    if !on_quiet.is_empty() {
        v.failures.push(format!(
            "msitrace check has findings on the control or plain vector: {}",
            on_quiet.join("; ")
        ));
    }
    let errors: BTreeSet<(&str, Option<u32>)> = report
        .findings
        .iter()
        .filter(|f| f.severity == "error")
        .map(|f| (f.rule.as_str(), f.irq))
        .collect();
    let want_rule = want;
    let want: BTreeSet<(&str, Option<u32>)> = match want_rule {
        Some(rule) => tests.iter().map(|&t| (rule, Some(t))).collect(),
        None => BTreeSet::new(),
    };
    let describe = |set: &BTreeSet<(&str, Option<u32>)>| {
        set.iter()
            .map(|(r, i)| format!("{r} irq {}", i.map_or("-".into(), |i| i.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: BTreeSet<_> = want.difference(&errors).copied().collect();
    let extra: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.severity == "error" && !want.contains(&(f.rule.as_str(), f.irq)))
        .map(CheckFinding::describe)
        .collect();
    if !missing.is_empty() {
        v.failures.push(format!(
            "msitrace check is missing the error finding(s) {}",
            describe(&missing)
        ));
    }
    if !extra.is_empty() {
        v.failures.push(format!(
            "msitrace check has error finding(s) beyond {}: {}",
            if want.is_empty() {
                "none expected".to_string()
            } else {
                describe(&want)
            },
            extra.join("; ")
        ));
    }
    if want_rule == Some("C2") {
        v.facts.push(
            "no stale mask to find: this pci-hyperv unmasks the device after hv_irq_unmask; \
             the message bug 1 left is C2"
                .into(),
        );
    }
    v.facts.push(format!(
        "check rc={rc}: {}{}",
        if errors.is_empty() {
            "no error".to_string()
        } else {
            describe(&errors)
        },
        if report.summary.warnings > 0 {
            format!(", {} warning(s)", report.summary.warnings)
        } else {
            String::new()
        }
    ));
    let n_errors = report
        .findings
        .iter()
        .filter(|f| f.severity == "error")
        .count();
    if report.summary.errors != n_errors {
        v.failures.push(format!(
            "msitrace check's summary counts {} errors, its findings {n_errors}",
            report.summary.errors
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::Step;
    use crate::vm::plan::{Front, Mode, Scenario};

    /// A `check --json` report as the tracer writes it (only the fields the rig reads, plus
    /// one it ignores), for hv_stub's control 37, tests 38 and 39, plain 40.
    fn check_report_json(masked_tests: bool, findings: &str, errors: usize) -> String {
        let vec = |irq: u32, masked: bool| {
            format!(
                r#"{{"irq": {irq}, "device": "0000:00:02.0", "kind": "MSI-X", "index": 0,
                    "device_state": {{"masked": {masked}, "unknown": null}}}}"#
            )
        };
        format!(
            r#"{{"kernel_release": "6.12", "privileged": true, "unusable": null,
                "summary": {{"devices": 1, "vectors": 4, "errors": {errors}, "warnings": 0,
                            "not_evaluated": 0, "unreadable": 0, "verdict": "v"}},
                "findings": [{findings}],
                "devices": [{{"bdf": "0000:00:02.0", "msix_table": "read"}}],
                "vectors": [{}, {}, {}, {}],
                "not_evaluated": [], "unreadable": [], "notes": []}}"#,
            vec(37, false),
            vec(38, masked_tests),
            vec(39, masked_tests),
            vec(40, false)
        )
    }

    fn c1(irq: u32) -> String {
        format!(
            r#"{{"rule": "C1", "severity": "error", "irq": {irq}, "irqs": [{irq}],
                "device": "0000:00:02.0", "driver": "hv_stub", "cause": "masked",
                "evidence": [], "meaning": "m"}}"#
        )
    }

    fn judge_check(step: Step, rc: &str, json: &str) -> Verdict {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-check-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("check.rc"), rc).unwrap();
        fs::write(dir.join("check.json"), json).unwrap();
        let mut v = Verdict::default();
        check_check(
            &dir,
            step.expects_dead_test_vectors().then_some("C1"),
            Some("0000:00:02.0"),
            37,
            &[38, 39],
            Some(40),
            &mut v,
        );
        fs::remove_dir_all(&dir).unwrap();
        v
    }

    #[test]
    fn check_after_the_buggy_sleep_must_name_exactly_the_test_vectors() {
        let buggy = Step::new(Scenario::Hibernate, Mode::Buggy);
        let good = check_report_json(true, &format!("{},{}", c1(38), c1(39)), 2);
        let v = judge_check(buggy, "1\n", &good);
        assert!(v.pass(), "{:?}", v.failures);
        assert_eq!(v.facts, ["check rc=1: C1 irq 38, C1 irq 39"]);
        // One test vector missed.
        let v = judge_check(buggy, "1\n", &check_report_json(true, &c1(38), 1));
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("missing") && f.contains("C1 irq 39"))
        );
        // A finding on the control vector, and the wrong exit code.
        let v = judge_check(
            buggy,
            "0\n",
            &check_report_json(true, &[c1(37), c1(38), c1(39)].join(","), 3),
        );
        assert!(v.failures.iter().any(|f| f.contains("control or plain")));
        assert!(v.failures.iter().any(|f| f.contains("beyond")));
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("exited 0, expected 1"))
        );
    }

    #[test]
    fn check_after_the_fixed_sleep_must_find_nothing() {
        let fixed = Step::new(Scenario::Hibernate, Mode::Fixed).with(Front::Verify);
        let v = judge_check(fixed, "0\n", &check_report_json(false, "", 0));
        assert!(v.pass(), "{:?}", v.failures);
        // The device still masked: the report reads it and says nothing, which is wrong twice.
        let v = judge_check(fixed, "0\n", &check_report_json(true, "", 0));
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("test irq 38 as masked"))
        );
        // A report that does not have the rig's fields fails the step instead of passing.
        let v = judge_check(fixed, "0\n", r#"{"summary": {}}"#);
        assert!(!v.pass());
    }
}

//! The verdict on each step, made on the host from what the guest brought back: the stand-in
//! driver's own counters and /proc/interrupts around the scenario (did the device's interrupts
//! really stop or keep coming), and msitrace's outputs (`probes --json` from the guest,
//! `replay --json` and `dump --json` run here on the recorded file), and `check --json` run in
//! the guest after the sleep, with no recorder.
//!
//! One module per check or family of checks, each judging one kind of output into a
//! [`Verdict`]; [`common`] holds what they share and imports none of them. [`check_step`] is
//! where a step's checks are called, in order.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    msitrace::{self, Msitrace},
    plan::{Front, Scenario, Step},
};

mod burst;
mod common;
mod daemon;
mod events;
pub mod json;
mod late;
mod live;
mod module;
mod msitrace_check;
mod probes;
mod replay;
mod service;
mod stale_mask;
pub mod stream;
mod verify;

pub use probes::check_probes;
pub use service::check_service;

use module::ModuleState;

/// One row of the final table.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub failures: Vec<String>,
    /// What was seen, in a few words (shown for passes too).
    pub facts: Vec<String>,
}

impl Verdict {
    pub fn pass(&self) -> bool {
        self.failures.is_empty()
    }
}

pub struct StepInput<'a> {
    pub step: Step,
    /// artifacts/<step id>.
    pub dir: &'a Path,
    /// BDF of the e1000e in the guest.
    pub e1000e: Option<&'a str>,
    /// Set when msitrace's outputs are to be checked.
    pub msitrace: Option<&'a Msitrace>,
    /// G5's window given to replay; the guest records one second longer after a buggy resume.
    pub g5_silence_s: u64,
    /// The run's second serial port, where `msitrace live` drew.
    pub tty1: &'a Path,
    /// The kernel's pci-hyperv unmasks without `pci_msi_unmask_irq` (6.17 and later), so
    /// msitrace does not evaluate H4 there: its report must say so instead.
    pub h4_gated_off: bool,
}

pub fn check_step(input: &StepInput) -> Verdict {
    let step = input.step;
    let dir = input.dir;
    // No sleep and no scenario snapshots: its own check (vm-test and `verdicts` both land here).
    if step.scenario == Scenario::StaleMask {
        return stale_mask::check(dir, input.e1000e, input.msitrace.is_some());
    }
    // No sleep and no delivery check: a measurement, judged by its own counts.
    if step.scenario == Scenario::Stream {
        return stream::check(dir, input.msitrace);
    }
    let mut v = Verdict::default();
    if let Some(why) = common::step_not_run(dir) {
        v.failures.push(why);
        return v;
    }
    let states: Vec<Option<ModuleState>> = ["s0", "s1", "s2"]
        .iter()
        .map(|s| {
            fs::read_to_string(dir.join(format!("{s}.state")))
                .ok()
                .and_then(|t| ModuleState::parse(&t))
        })
        .collect();
    let (Some(s0), Some(s1), Some(s2)) = (&states[0], &states[1], &states[2]) else {
        v.failures.push(
            "hv_stub's state snapshots are missing: the step did not get past its scenario".into(),
        );
        return v;
    };
    match fs::read_to_string(dir.join("action.rc")).map(|s| s.trim().to_string()) {
        Ok(rc) if rc == "0" => {}
        Ok(rc) => v.failures.push(format!(
            "the scenario's command failed in the guest (status {rc})"
        )),
        Err(_) => v.failures.push("the scenario's status is missing".into()),
    }
    // The burst fires back to back, where the APIC merges messages: the delivery check after
    // it starts from the snapshot the guest takes once the burst is over. The late
    // hibernation's loop fires up to the freeze and on until the guest stops it after the
    // resume: the check starts from the snapshot taken once it stopped.
    let own_start = matches!(step.scenario, Scenario::Burst | Scenario::HibernateLate);
    let burst_end = own_start
        .then(|| fs::read_to_string(dir.join("sb.state")).ok())
        .flatten()
        .and_then(|t| ModuleState::parse(&t));
    if own_start && burst_end.is_none() {
        v.failures
            .push("the snapshot after the scenario's own fires (sb.state) is missing".into());
        return v;
    }
    module::check_module(step, s0, s1, burst_end.as_ref().unwrap_or(s1), s2, &mut v);
    if let Some(m) = input.msitrace {
        let control = s0.control().map(|c| c.irq).unwrap_or(0);
        let tests: Vec<u32> = s0.tests().map(|t| t.irq).collect();
        let plain = s0.vectors.iter().find(|v| v.role == "plain").map(|v| v.irq);
        check_msitrace(input, m, control, &tests, plain, &mut v);
        if step.scenario.hibernates() || step.scenario == Scenario::S3 {
            // After the buggy sleep: the test vectors masked in the device (C1), or where
            // pci-hyperv leaves the device unmask to the per-device chip (6.17 and later),
            // unmasked with the message bug 1 left there, which routes to no CPU (C2).
            let want = step
                .expects_dead_test_vectors()
                .then(|| if stale_mask_possible(s2) { "C1" } else { "C2" });
            msitrace_check::check_check(dir, want, input.e1000e, control, &tests, plain, &mut v);
        }
    }
    v
}

/// Whether the loaded hv_stub's hv_irq_unmask is what unmasks the device (pci-hyperv up to
/// 6.16), so that bug 2's early return leaves the vector masked; from 6.17 the per-device chip
/// unmasks it after hv_irq_unmask returns. A state without the field is an hv_stub from before
/// it was reported, which always unmasked in hv_irq_unmask.
fn stale_mask_possible(st: &ModuleState) -> bool {
    st.get("hv_unmasks_device") != 0
}

/// The trace files a step's front-end left: one file, or the daemon's flight recorder set in
/// name order (oldest first).
pub fn step_traces(step: Step, dir: &Path) -> Vec<PathBuf> {
    match step.front {
        Front::Record | Front::Live | Front::Verify => {
            let t = dir.join("trace.msit");
            if t.exists() { vec![t] } else { Vec::new() }
        }
        Front::Daemon | Front::Service => common::msit_files(&dir.join("flight")),
    }
}

fn check_msitrace(
    input: &StepInput,
    m: &Msitrace,
    control: u32,
    tests: &[u32],
    plain: Option<u32>,
    v: &mut Verdict,
) {
    let step = input.step;
    let dir = input.dir;
    let front = step.front.name();
    let err_text = fs::read_to_string(dir.join("record.err")).unwrap_or_default();
    let traces = step_traces(step, dir);
    if traces.is_empty() {
        v.failures.push(format!(
            "msitrace {front} left no trace file: {}",
            err_text.lines().last().unwrap_or("no message")
        ));
        return;
    }
    let signal = match step.front {
        Front::Record => "SIGINT",
        Front::Live | Front::Daemon => "SIGTERM",
        Front::Service => "systemctl stop",
        Front::Verify => "the end of its command",
    };
    match fs::read_to_string(dir.join("record.rc")).map(|s| s.trim().to_string()) {
        Ok(rc) if rc == "0" => {}
        Ok(rc) => v.failures.push(format!(
            "msitrace {front} exited with {rc} on {signal}: {}",
            err_text.lines().last().unwrap_or("")
        )),
        Err(_) => v
            .failures
            .push(format!("msitrace {front}'s exit status is missing")),
    }
    if traces.len() > 1 {
        v.facts
            .push(format!("{} flight-recorder files", traces.len()));
    }
    match step.front {
        Front::Record => {}
        Front::Live => live::check_live_screen(input.tty1, step, dir, tests, v),
        Front::Daemon => daemon::check_daemon_log(&err_text, step, control, tests, v),
        Front::Service => service::check_service_step(dir, step, control, tests, v),
        Front::Verify => verify::check_verify(dir, step, control, tests, input.h4_gated_off, v),
    }
    let (code, report, stderr) = match msitrace::replay_json(m, &traces, input.g5_silence_s) {
        Ok(r) => r,
        Err(e) => {
            v.failures.push(format!("msitrace replay: {e:#}"));
            return;
        }
    };
    let Some(report) = report else {
        v.failures.push(format!(
            "msitrace replay --json exited {code} without a report: {stderr}"
        ));
        return;
    };
    let _ = fs::write(
        dir.join("replay.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    let report: json::Report = match serde_json::from_value(report) {
        Ok(r) => r,
        Err(e) => {
            v.failures.push(format!(
                "msitrace replay --json exited {code} with a report the rig cannot read: {e}"
            ));
            return;
        }
    };
    replay::check_report(
        step,
        &report,
        code,
        control,
        tests,
        input.g5_silence_s,
        input.h4_gated_off,
        v,
    );
    if step.front == Front::Service {
        service::check_journal_matches_replay(dir, &report, v);
    }
    match msitrace::dump_events(m, &traces) {
        Ok(events) => {
            if step.scenario == Scenario::Burst {
                match msitrace::trailer(m, &traces) {
                    Ok(Some(t)) => {
                        let guest = fs::read_to_string(dir.join("burst.rounds")).ok();
                        burst::check_burst(&events, &t, guest.as_deref(), v)
                    }
                    _ => v
                        .failures
                        .push("the burst's recording has no trailer".into()),
                }
            }
            if step.scenario == Scenario::HibernateLate {
                late::check_late_fires(step, &events, tests, v);
            }
            events::check_events(step, &events, input.e1000e, control, tests, v);
            if let Some(p) = plain {
                events::check_plain_vector(step, &events, p, v);
            }
            // A new check of the recorded events: its own file under checks/, declared above,
            // and one call here.
        }
        Err(e) => v.failures.push(format!("msitrace dump: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::Mode;

    /// A real step's outputs (tests/fixtures/vm/README.md): the buggy hibernation on 6.12,
    /// recorded by `msitrace verify`. hv_stub's control vector is irq 37, its test vectors 38
    /// and 39, the plain one 40.
    fn fixture() -> PathBuf {
        crate::util::repo_root().join("tests/fixtures/vm/6.12-hibernate.buggy.verify")
    }

    fn judge(step: Step) -> Verdict {
        let run = fixture();
        let dir = run.join("hibernate.buggy");
        let e1000e = fs::read_to_string(run.join("e1000e")).unwrap();
        let e1000e = Some(e1000e.trim());
        let mut v = check_step(&StepInput {
            step,
            dir: &dir,
            e1000e,
            msitrace: None,
            g5_silence_s: 4,
            tty1: Path::new("/nonexistent"),
            h4_gated_off: false,
        });
        let (control, tests, plain) = (37, [38, 39], Some(40));
        verify::check_verify(&dir, step, control, &tests, false, &mut v);
        let report: json::Report =
            serde_json::from_str(&fs::read_to_string(dir.join("verify.json")).unwrap()).unwrap();
        replay::check_report(step, &report, 1, control, &tests, 4, false, &mut v);
        let want = step.expects_dead_test_vectors().then_some("C1");
        msitrace_check::check_check(&dir, want, e1000e, control, &tests, plain, &mut v);
        v
    }

    #[test]
    fn a_recorded_buggy_hibernation_passes_as_it_did_in_the_rig() {
        let probes = check_probes(&fixture().join("probes.json"));
        assert!(probes.pass(), "{:?}", probes.failures);
        assert_eq!(
            probes.facts[0],
            "hv_compose_msi_msg, hv_irq_unmask, pci_restore_msi_state, __pci_write_msi_msg attached"
        );
        let step = Step::new(Scenario::Hibernate, Mode::Buggy).with(Front::Verify);
        let v = judge(step);
        assert!(v.pass(), "{:?}", v.failures);
        assert_eq!(
            v.facts,
            [
                "irqs delivered/fired after: 37:11/6 38:0/6 39:0/6 40:11/6",
                "verify: exit 1, H1 and H4 on irqs 38,39",
                "H1 38,39; G5 38,39; H4 38,39",
                "check rc=1: C1 irq 38, C1 irq 39",
            ]
        );
    }

    #[test]
    fn the_same_outputs_fail_a_step_that_must_stay_clean() {
        let v = judge(Step::new(Scenario::Hibernate, Mode::Fixed).with(Front::Verify));
        assert!(!v.pass());
        for want in [
            "hv_stub ran in mode buggy instead of fixed",
            "msitrace verify exited 1 instead of 0",
            "verify reports errors after the fixed cycle",
            "expected no divergence",
            "msitrace check exited 1, expected 0",
        ] {
            assert!(
                v.failures.iter().any(|f| f.contains(want)),
                "{want}: {:?}",
                v.failures
            );
        }
    }
}

//! The verdict on each step, made on the host from what the guest brought back: the stand-in
//! driver's own counters and /proc/interrupts around the scenario (did the device's interrupts
//! really stop or keep coming), and msitrace's outputs (`probes --json` from the guest,
//! `replay --json` and `dump --json` run here on the recorded file), and `check --json` run in
//! the guest after the sleep, with no recorder.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

use super::{
    msitrace::{self, Msitrace},
    plan::{Front, Mode, Scenario, Step},
};

/// One row of the final table.
#[derive(Clone, Debug)]
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

/// One vector line of /sys/kernel/debug/hv_stub/state, with `proc=` (its /proc/interrupts
/// total) appended by the guest.
#[derive(Clone, Debug, Default)]
struct VectorState {
    index: u32,
    irq: u32,
    role: String,
    cpu: i64,
    n: BTreeMap<String, i64>,
}

impl VectorState {
    fn get(&self, k: &str) -> i64 {
        self.n.get(k).copied().unwrap_or(-1)
    }
}

#[derive(Clone, Debug, Default)]
struct ModuleState {
    mode: String,
    n: BTreeMap<String, i64>,
    vectors: Vec<VectorState>,
}

impl ModuleState {
    fn parse(text: &str) -> Option<ModuleState> {
        let mut st = ModuleState::default();
        let mut header = false;
        for line in text.lines() {
            let kv: Vec<(&str, &str)> = line
                .split_whitespace()
                .filter_map(|t| t.split_once('='))
                .collect();
            if line.starts_with("mode=") {
                header = true;
                for (k, v) in kv {
                    if k == "mode" {
                        st.mode = v.to_string();
                    } else if let Ok(n) = v.parse() {
                        st.n.insert(k.to_string(), n);
                    }
                }
            } else if line.starts_with("vector=") {
                let mut v = VectorState::default();
                for (k, val) in kv {
                    match k {
                        "vector" => v.index = val.parse().ok()?,
                        "irq" => v.irq = val.parse().ok()?,
                        "role" => v.role = val.to_string(),
                        "cpu" => v.cpu = val.parse().unwrap_or(-1),
                        _ => {
                            if let Ok(n) = val.parse() {
                                v.n.insert(k.to_string(), n);
                            }
                        }
                    }
                }
                st.vectors.push(v);
            }
        }
        (header && !st.vectors.is_empty()).then_some(st)
    }

    fn get(&self, k: &str) -> i64 {
        self.n.get(k).copied().unwrap_or(-1)
    }

    fn vector(&self, index: u32) -> Option<&VectorState> {
        self.vectors.iter().find(|v| v.index == index)
    }

    fn control(&self) -> Option<&VectorState> {
        self.vectors.iter().find(|v| v.role == "control")
    }

    fn tests(&self) -> impl Iterator<Item = &VectorState> {
        self.vectors.iter().filter(|v| v.role == "test")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    /// Every fire delivered at least once.
    Alive,
    /// Fired, nothing delivered.
    Dead,
    /// Some fires lost: neither a healthy nor a cut-off vector.
    Partial,
    NotFired,
}

/// QEMU's e1000e sends each message twice 128 us apart and the APIC may merge the two, so a
/// fire delivers one or two interrupts (tests/guest/vmt.sh spaces the fires apart).
fn liveness(fired: i64, delivered: i64) -> Live {
    match (fired, delivered) {
        (f, _) if f <= 0 => Live::NotFired,
        (_, 0) => Live::Dead,
        (f, d) if d >= f => Live::Alive,
        _ => Live::Partial,
    }
}

fn delta(a: &VectorState, b: &VectorState, k: &str) -> i64 {
    b.get(k) - a.get(k)
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
    let mut v = Verdict {
        failures: Vec::new(),
        facts: Vec::new(),
    };
    let step = input.step;
    let dir = input.dir;
    if !dir.exists() {
        v.failures
            .push("no outputs from the guest for this step (it never ran or never saved)".into());
        return v;
    }
    if let Ok(e) = fs::read_to_string(dir.join("error")) {
        v.failures.push(format!("guest: {}", e.trim()));
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
    // it starts from the snapshot the guest takes once the burst is over.
    let burst_end = (step.scenario == Scenario::Burst)
        .then(|| fs::read_to_string(dir.join("sb.state")).ok())
        .flatten()
        .and_then(|t| ModuleState::parse(&t));
    if step.scenario == Scenario::Burst && burst_end.is_none() {
        v.failures
            .push("the snapshot after the burst (sb.state) is missing".into());
        return v;
    }
    check_module(step, s0, s1, burst_end.as_ref().unwrap_or(s1), s2, &mut v);
    if let Some(m) = input.msitrace {
        let control = s0.control().map(|c| c.irq).unwrap_or(0);
        let tests: Vec<u32> = s0.tests().map(|t| t.irq).collect();
        let plain = s0.vectors.iter().find(|v| v.role == "plain").map(|v| v.irq);
        check_msitrace(input, m, control, &tests, plain, &mut v);
        if matches!(step.scenario, Scenario::Hibernate | Scenario::S3) {
            // After the buggy sleep: the test vectors masked in the device (C1), or where
            // pci-hyperv leaves the device unmask to the per-device chip (6.17 and later),
            // unmasked with the message bug 1 left there, which routes to no CPU (C2).
            let want = step
                .expects_dead_test_vectors()
                .then(|| if stale_mask_possible(s2) { "C1" } else { "C2" });
            check_check(dir, want, input.e1000e, control, &tests, plain, &mut v);
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

/// `s0`..`s1` is before the scenario, `after`..`s2` after it (`after` is `s1` but for the
/// burst).
fn check_module(
    step: Step,
    s0: &ModuleState,
    s1: &ModuleState,
    after: &ModuleState,
    s2: &ModuleState,
    v: &mut Verdict,
) {
    if s2.mode != step.mode.name() {
        v.failures.push(format!(
            "hv_stub ran in mode {} instead of {}",
            s2.mode,
            step.mode.name()
        ));
    }
    let mut live_facts = Vec::new();
    for a in &s0.vectors {
        let (Some(b), Some(c)) = (s1.vector(a.index), s2.vector(a.index)) else {
            v.failures
                .push(format!("vector {} missing from a snapshot", a.index));
            continue;
        };
        let before = liveness(delta(a, b, "fired"), delta(a, b, "proc"));
        if before != Live::Alive {
            v.failures.push(format!(
                "irq {} ({}) before the scenario: {} of {} fires delivered; the rig itself is broken",
                a.irq,
                a.role,
                delta(a, b, "proc"),
                delta(a, b, "fired")
            ));
        }
        let bb = after.vector(a.index).unwrap_or(b);
        let fired = delta(bb, c, "fired");
        let got = delta(bb, c, "proc");
        let after = liveness(fired, got);
        let want = if a.role == "test" && step.expects_dead_test_vectors() {
            Live::Dead
        } else {
            Live::Alive
        };
        live_facts.push(format!("{}:{got}/{fired}", a.irq));
        if after != want {
            v.failures.push(format!(
                "irq {} ({}) after the scenario: {got} interrupts for {fired} fires, expected {}",
                a.irq,
                a.role,
                match want {
                    Live::Dead => "none (the bug cuts it off)",
                    _ => "at least one per fire",
                }
            ));
        }
        if delta(bb, c, "handled") != got {
            v.failures.push(format!(
                "irq {}: /proc/interrupts counted {got} but hv_stub's handler {}",
                a.irq,
                delta(bb, c, "handled")
            ));
        }
        let composes = delta(b, c, "composes");
        let skipped = delta(b, c, "unmask_skipped");
        let is_test = a.role == "test";
        // The plain vector is the kernel's own, which no Hyper-V compose touches.
        let is_plain = a.role == "plain";
        if step.scenario.resumes() && !is_plain {
            let recomposed = step.mode != Mode::Buggy || !is_test;
            if recomposed && composes < 1 {
                v.failures.push(format!(
                    "irq {}: hv_pci_resume did not re-compose it ({composes} composes)",
                    a.irq
                ));
            }
            if !recomposed && composes != 0 {
                v.failures.push(format!(
                    "irq {}: re-composed {composes} times in buggy mode",
                    a.irq
                ));
            }
        } else if composes != 0 && !is_plain {
            v.failures.push(format!(
                "irq {}: {composes} composes without a resume (x86 migrates without composing)",
                a.irq
            ));
        }
        if step.mode == Mode::Buggy
            && step.scenario.offlines_cpus()
            && step.scenario.resumes()
            && is_test
        {
            if skipped < 1 {
                v.failures.push(format!(
                    "irq {}: the buggy hv_irq_unmask never returned early (retarget never failed)",
                    a.irq
                ));
            }
            let got = (
                c.get("table_masked"),
                c.get("cache_masked"),
                c.get("genirq_masked"),
            );
            // Where pci-hyperv is an MSI parent (6.17 and later), the per-device chip unmasks
            // the device after hv_irq_unmask returns, whatever it did: the early return
            // cannot leave the vector masked there, and hv_stub, following it, does not.
            let (want, how) = if stale_mask_possible(s2) {
                (
                    (1, 1, 0),
                    "masked in the device table and the msi_desc cache while genirq says unmasked",
                )
            } else {
                (
                    (0, 0, 0),
                    "unmasked everywhere (this kernel's pci-hyperv leaves the device unmask to the per-device chip, after hv_irq_unmask)",
                )
            };
            if got != want {
                v.failures.push(format!(
                    "irq {}: expected {how}, got table={} cache={} genirq={}",
                    a.irq, got.0, got.1, got.2
                ));
            }
        } else if skipped != 0 {
            v.failures.push(format!(
                "irq {}: hv_irq_unmask returned early {skipped} times",
                a.irq
            ));
        }
        if step.scenario == Scenario::Hotplug && is_test && delta(b, c, "unmasks") < 1 {
            v.failures.push(format!(
                "irq {}: offlining its CPU did not go through hv_irq_unmask",
                a.irq
            ));
        }
    }
    let sys = s2.get("syscore_suspends") - s1.get("syscore_suspends");
    if step.scenario.reaches_syscore() && sys < 1 {
        v.failures.push(
            "the sleep never reached syscore_suspend: it did not go as deep as intended".into(),
        );
    }
    if step.scenario == Scenario::PmTestPlatform && sys != 0 {
        v.failures
            .push("pm_test=platform reached syscore_suspend: it went deeper than intended".into());
    }
    if step.scenario.resumes() && s2.get("bus_resumes") - s1.get("bus_resumes") < 1 {
        v.failures
            .push("the emulated vmbus never resumed (hv_pci_resume not called)".into());
    }
    v.facts.push(format!(
        "irqs delivered/fired after: {}",
        live_facts.join(" ")
    ));
}

/// The trace files a step's front-end left: one file, or the daemon's flight recorder set in
/// name order (oldest first).
pub fn step_traces(step: Step, dir: &Path) -> Vec<PathBuf> {
    match step.front {
        Front::Record | Front::Live | Front::Verify => {
            let t = dir.join("trace.msit");
            if t.exists() { vec![t] } else { Vec::new() }
        }
        Front::Daemon | Front::Service => {
            let mut files: Vec<PathBuf> = fs::read_dir(dir.join("flight"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "msit"))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files
        }
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
        Front::Live => check_live_screen(input.tty1, step, dir, tests, v),
        Front::Daemon => check_daemon_log(&err_text, step, control, tests, v),
        Front::Service => check_service_step(dir, step, control, tests, v),
        Front::Verify => check_verify(dir, step, control, tests, input.h4_gated_off, v),
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
    check_report(
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
        check_journal_matches_replay(dir, &report, v);
    }
    match msitrace::dump_events(m, &traces) {
        Ok(events) => {
            if step.scenario == Scenario::Burst {
                match msitrace::trailer(m, &traces) {
                    Ok(Some(t)) => check_burst(&events, &t, v),
                    _ => v
                        .failures
                        .push("the burst's recording has no trailer".into()),
                }
            }
            check_events(step, &events, input.e1000e, control, tests, v);
            if let Some(p) = plain {
                check_plain_vector(step, &events, p, v);
            }
        }
        Err(e) => v.failures.push(format!("msitrace dump: {e:#}")),
    }
}

/// `msitrace verify` as a test suite uses it: exit 1 with H1 and H4 at error level on exactly
/// the test vectors after the buggy cycle, exit 0 after the fixed one, and no error — nor any
/// warning — on the control vector.
fn check_verify(
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
    let report: Value = match fs::read_to_string(dir.join("verify.json"))
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
    let divs: Vec<&Value> = report
        .get("divergences")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let errors = error_findings(report.get("divergences"));
    let on_control: Vec<String> = divs
        .iter()
        .filter(|d| divergence_irqs(d).contains(&control))
        .map(|d| describe_divergence(d))
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

/// A report's error-level findings as (rule, irq), one per vector a divergence names.
fn error_findings(divergences: Option<&Value>) -> BTreeSet<(String, u32)> {
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

/// `systemctl show` output: `Key=value` a line.
fn unit_props(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// journalctl -o json: one object a line.
fn journal_entries(path: &Path) -> Result<Vec<Value>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("journal line is not JSON: {e}")))
        .collect()
}

fn field<'a>(e: &'a Value, k: &str) -> Option<&'a str> {
    e.get(k).and_then(Value::as_str)
}

/// The rule entries msitrace sent at err level: (rule, irq), from their own fields.
fn journal_errors(entries: &[Value]) -> BTreeSet<(String, u32)> {
    entries
        .iter()
        .filter(|e| field(e, "PRIORITY") == Some("3"))
        .filter_map(|e| {
            Some((
                field(e, "MSITRACE_RULE")?.to_string(),
                field(e, "IRQ")?.parse().ok()?,
            ))
        })
        .collect()
}

/// The service through the step: up the whole time (no restart, so the watchdog was fed across
/// the resume), stopped cleanly, and its err-level entries in the journal with their fields.
fn check_service_step(dir: &Path, step: Step, control: u32, tests: &[u32], v: &mut Verdict) {
    match unit_props(&dir.join("unit-before-stop.txt")) {
        Some(p) => {
            let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("?");
            if (get("ActiveState"), get("SubState"), get("NRestarts")) != ("active", "running", "0")
            {
                v.failures.push(format!(
                    "msitrace.service after the resume: {} ({}), {} restarts, result {}",
                    get("ActiveState"),
                    get("SubState"),
                    get("NRestarts"),
                    get("Result")
                ));
            } else {
                v.facts.push(format!(
                    "unit active through the resume, watchdog {} fed",
                    get("WatchdogUSec")
                ));
            }
        }
        None => v
            .failures
            .push("the unit's state before the stop is missing".into()),
    }
    if let Some(p) = unit_props(&dir.join("unit-after-stop.txt"))
        && p.get("Result").map(String::as_str) != Some("success")
    {
        v.failures.push(format!(
            "systemctl stop ended msitrace.service with result {}",
            p.get("Result").map(String::as_str).unwrap_or("?")
        ));
    }
    let entries = match journal_entries(&dir.join("journal.json")) {
        Ok(e) => e,
        Err(e) => {
            v.failures.push(format!("the guest's journal: {e}"));
            return;
        }
    };
    if let Some(e) = entries.iter().find(|e| {
        field(e, "MESSAGE")
            .is_some_and(|m| m.contains("Watchdog timeout") || m.contains("watchdog"))
    }) {
        v.failures.push(format!(
            "systemd: {}",
            field(e, "MESSAGE").unwrap_or_default()
        ));
    }
    // Every err-level rule entry carries what a log pipeline selects and groups on.
    for e in entries
        .iter()
        .filter(|e| field(e, "PRIORITY") == Some("3") && field(e, "MSITRACE_RULE").is_some())
    {
        let missing: Vec<&str> = [
            "MESSAGE_ID",
            "MSITRACE_SEVERITY",
            "MSITRACE_CAUSE",
            "IRQ",
            "DEVICE",
            "EPOCH",
        ]
        .into_iter()
        .filter(|k| field(e, k).is_none())
        .collect();
        if !missing.is_empty() {
            v.failures.push(format!(
                "journal entry {:?} lacks {}",
                field(e, "MESSAGE").unwrap_or_default(),
                missing.join(", ")
            ));
            break;
        }
    }
    let errors = journal_errors(&entries);
    let irqs: BTreeSet<u32> = errors.iter().map(|(_, i)| *i).collect();
    if irqs.contains(&control) {
        v.failures.push(format!(
            "the journal has an err-level entry for the control vector (irq {control})"
        ));
    }
    let want: BTreeSet<u32> = tests.iter().copied().collect();
    if step.expects_dead_test_vectors() {
        if irqs == want {
            let rules: BTreeSet<&str> = errors.iter().map(|(r, _)| r.as_str()).collect();
            v.facts.push(format!(
                "journal: err-level {} for irqs {} with MESSAGE_ID and MSITRACE_* fields",
                rules.into_iter().collect::<Vec<_>>().join("/"),
                join(&irqs)
            ));
        } else {
            v.failures.push(format!(
                "the journal's err-level entries name irqs {{{}}} instead of the test vectors {{{}}}",
                join(&irqs),
                join(&want)
            ));
        }
    } else if !irqs.is_empty() {
        v.failures.push(format!(
            "the journal has err-level entries for irqs {} in a step that must stay clean",
            join(&irqs)
        ));
    }
}

/// The flight recorder, replayed on the host, gives the verdict the service gave live.
fn check_journal_matches_replay(dir: &Path, report: &Value, v: &mut Verdict) {
    let Ok(entries) = journal_entries(&dir.join("journal.json")) else {
        return;
    };
    let live = journal_errors(&entries);
    let replayed = error_findings(report.get("divergences"));
    if live == replayed {
        v.facts
            .push("flight recorder replays to the journal's verdict".into());
    } else {
        let show = |s: &BTreeSet<(String, u32)>| {
            s.iter()
                .map(|(r, i)| format!("{r}@{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        v.failures.push(format!(
            "the flight recorder replays to errors {{{}}}, the journal said {{{}}}",
            show(&replayed),
            show(&live)
        ));
    }
}

/// The service leg outside the steps: the unit came up from `systemctl enable --now` with
/// READY=1 and its status line, `msitrace probes` under the unit's own sandbox attaches the
/// kprobes, and after a `kill -9` systemd restarted it and the new instance ran and stopped
/// cleanly with a trailer.
pub fn check_service(dir: &Path, m: &Msitrace) -> Verdict {
    let mut v = Verdict {
        failures: Vec::new(),
        facts: Vec::new(),
    };
    if !dir.exists() {
        v.failures
            .push("the systemd guest brought back no service/ directory".into());
        return v;
    }
    if let Ok(log) = fs::read_to_string(dir.join("dpkg.log"))
        && !dir.join("ready.txt").exists()
    {
        v.failures.push(format!(
            "dpkg -i msitrace.deb: {}",
            log.lines().last().unwrap_or_default()
        ));
        return v;
    }
    match unit_props(&dir.join("ready.txt")) {
        Some(p) => {
            let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
            if get("ActiveState") == "active" && get("SubState") == "running" {
                v.facts.push(format!(
                    "systemctl enable --now: active (running), STATUS \"{}\"",
                    get("StatusText")
                ));
                if get("StatusText").is_empty() {
                    v.failures
                        .push("the unit is running but sent no STATUS= line".into());
                }
            } else {
                v.failures.push(format!(
                    "systemctl enable --now msitrace: {} ({}), result {}, {} restarts",
                    get("ActiveState"),
                    get("SubState"),
                    get("Result"),
                    get("NRestarts")
                ));
            }
        }
        None => v
            .failures
            .push("the unit's state after systemctl enable --now is missing".into()),
    }
    let probes = check_probes(&dir.join("probes.json"));
    if probes.pass() {
        v.facts
            .push("probes inside the unit's sandbox: the kprobes attach".into());
    } else {
        let err = fs::read_to_string(dir.join("probes.err")).unwrap_or_default();
        v.failures.extend(
            probes
                .failures
                .into_iter()
                .map(|f| format!("probes inside the unit's sandbox: {f}")),
        );
        if let Some(l) = err.lines().last() {
            v.failures
                .push(format!("systemd-run … msitrace probes: {l}"));
        }
    }
    let killed = fs::read_to_string(dir.join("restart/killed-pid")).unwrap_or_default();
    match unit_props(&dir.join("restart/after-kill.txt")) {
        Some(p) => {
            let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
            let restarted = get("ActiveState") == "active"
                && get("NRestarts") == "1"
                && get("MainPID") != "0"
                && get("MainPID") != killed.trim();
            if restarted {
                v.facts.push("kill -9: restarted by systemd".into());
            } else {
                v.failures.push(format!(
                    "after kill -9: {} ({}), {} restarts, pid {} (killed {})",
                    get("ActiveState"),
                    get("SubState"),
                    get("NRestarts"),
                    get("MainPID"),
                    killed.trim()
                ));
            }
        }
        None => v
            .failures
            .push("the unit's state after kill -9 is missing".into()),
    }
    if let Some(p) = unit_props(&dir.join("restart/after-stop.txt"))
        && p.get("Result").map(String::as_str) != Some("success")
    {
        v.failures.push(format!(
            "the restarted instance stopped with result {}",
            p.get("Result").map(String::as_str).unwrap_or("?")
        ));
    }
    // The newest file is the restarted instance's: `systemctl stop` must have closed it.
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("restart"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "msit"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    match files.last() {
        Some(last) => match msitrace::trailer(m, std::slice::from_ref(last)) {
            Ok(Some(_)) => v
                .facts
                .push("the restarted instance's file has its trailer".into()),
            Ok(None) => v.failures.push(format!(
                "{} has no trailer after systemctl stop",
                last.file_name().unwrap_or_default().to_string_lossy()
            )),
            Err(e) => v.failures.push(format!("msitrace dump: {e:#}")),
        },
        None => v
            .failures
            .push("no flight-recorder file from the restarted instance".into()),
    }
    v
}

/// The badge `msitrace live` shows in a diverged vector's row (tracer/src/live/).
const LIVE_DIVERGED_BADGE: &str = "DIVERGED";

/// The daemon's journal entries as it writes them to stderr when there is no journal: one
/// line each, `msitrace: <priority> <rule> irq=<n> ...: <message>`.
fn daemon_err_irqs(log: &str) -> BTreeMap<u32, BTreeSet<String>> {
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

fn check_daemon_log(log: &str, step: Step, control: u32, tests: &[u32], v: &mut Verdict) {
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

/// The TUI's last frame before it quit, rebuilt from the bytes it wrote to ttyS1 by a VT100
/// emulator: what a person at that terminal saw after the resume.
fn live_last_frame(bytes: &[u8]) -> Result<String, String> {
    const ENTER: &[u8] = b"\x1b[?1049h";
    const LEAVE: &[u8] = b"\x1b[?1049l";
    let rfind = |pat: &[u8]| bytes.windows(pat.len()).rposition(|w| w == pat);
    if bytes.is_empty() {
        return Err("msitrace live drew nothing on ttyS1".into());
    }
    let leave = match (rfind(ENTER), rfind(LEAVE)) {
        (Some(e), Some(l)) if l > e => l,
        (None, _) => {
            return Err("msitrace live never switched ttyS1 to the alternate screen".into());
        }
        _ => {
            return Err(
                "msitrace live left ttyS1 in the alternate screen: the terminal was not restored on SIGTERM"
                    .into(),
            );
        }
    };
    let mut p = vt100::Parser::new(24, 80, 0);
    p.process(&bytes[..leave]);
    Ok(p.screen().contents())
}

/// Whether a table row of the frame starts with `irq` and carries the badge. The row's
/// first cell may hold the border and the cursor (`│▶38`).
fn marks_diverged(frame: &str, irq: u32) -> bool {
    frame.lines().any(|l| {
        let first = l
            .split_whitespace()
            .map(|w| w.trim_start_matches(|c: char| !c.is_alphanumeric()))
            .find(|w| !w.is_empty());
        first == Some(irq.to_string().as_str()) && l.contains(LIVE_DIVERGED_BADGE)
    })
}

fn check_live_screen(tty1: &Path, step: Step, dir: &Path, tests: &[u32], v: &mut Verdict) {
    let bytes = fs::read(tty1).unwrap_or_default();
    let frame = match live_last_frame(&bytes) {
        Ok(f) => f,
        Err(e) => {
            v.failures.push(e);
            return;
        }
    };
    let _ = fs::write(dir.join("live-last-frame.txt"), &frame);
    let missing: Vec<String> = tests
        .iter()
        .filter(|&&irq| !marks_diverged(&frame, irq))
        .map(|irq| irq.to_string())
        .collect();
    let all = tests
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match (step.expects_dead_test_vectors(), missing.len()) {
        (true, 0) => v.facts.push(format!(
            "the TUI's last frame at 80x24 marks irqs {all} {LIVE_DIVERGED_BADGE}"
        )),
        (true, _) => v.failures.push(format!(
            "the TUI's last frame (live-last-frame.txt) does not mark irqs {} {LIVE_DIVERGED_BADGE}",
            missing.join(",")
        )),
        (false, n) if n == tests.len() => {
            v.facts.push("the TUI's last frame marks no test vector".into())
        }
        (false, _) => v.failures.push(format!(
            "the TUI's last frame (live-last-frame.txt) marks a test vector {LIVE_DIVERGED_BADGE} in a step that must stay clean"
        )),
    }
}

/// Events user space adds to a recording (samples, gaps, loss records): not kernel events.
const USERSPACE_KINDS: [&str; 3] = ["IrqCounts", "Gap", "Lost"];

fn kind_name(e: &Value) -> Option<&str> {
    let k = e.get("kind")?;
    k.as_str().or_else(|| {
        k.as_object()
            .and_then(|o| o.keys().next())
            .map(String::as_str)
    })
}

/// Nothing silent under a burst: every time a streaming program ran (its hit counter), its
/// record is in the file or was counted as lost — exactly, per the trailer's counters. The
/// handler-count program only counts in a map and writes no records. What fit in the ring is
/// what the file holds between the last handler-count sample before the stop and the first
/// after it (the recorder samples every second while it runs).
fn check_burst(events: &[Value], trailer: &Value, v: &mut Verdict) {
    let kernel: Vec<u64> = events
        .iter()
        .filter(|e| kind_name(e).is_some_and(|k| !USERSPACE_KINDS.contains(&k)))
        .filter_map(|e| e.get("ts_ns").and_then(Value::as_u64))
        .collect();
    let in_file = kernel.len() as u64;
    let (mut hits, mut lost) = (0u64, 0u64);
    for row in trailer["counters"].as_array().into_iter().flatten() {
        if row[0].as_str() == Some("IrqHandlerEntry") {
            continue;
        }
        hits += row[1].as_u64().unwrap_or(0);
        lost += row[2].as_u64().unwrap_or(0);
    }
    let decode_errors = trailer["decode_errors"].as_u64().unwrap_or(0);
    let mut samples: Vec<u64> = events
        .iter()
        .filter(|e| kind_name(e) == Some("IrqCounts"))
        .filter_map(|e| e.get("ts_ns").and_then(Value::as_u64))
        .collect();
    samples.sort_unstable();
    let stop = samples
        .windows(2)
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a);
    let fit = stop.map(|(a, b)| kernel.iter().filter(|&&t| t > a && t < b).count());
    v.facts.push(format!(
        "burst: {hits} records produced in the step, {in_file} in the file, {lost} counted lost, {decode_errors} undecodable"
    ));
    if in_file + lost + decode_errors != hits {
        v.failures.push(format!(
            "{hits} records were produced but {in_file} are in the file and {lost} were counted lost: {} unaccounted for",
            hits as i128 - (in_file + lost + decode_errors) as i128
        ));
    }
    match (lost, fit, stop) {
        (0, _, _) => v.failures.push(format!(
            "the burst did not overflow the ring ({hits} records): raise BURST_ROUNDS to measure what fits"
        )),
        (_, Some(n), Some((a, b))) => v.facts.push(format!(
            "recorder stopped {:.1} s: the default ring held {n} records (target >= 100000), {lost} more were counted lost",
            (b - a) as f64 / 1e9
        )),
        _ => v.failures.push("no handler-count samples around the stop".into()),
    }
}

/// The IRQs a divergence is about.
fn divergence_irqs(d: &Value) -> BTreeSet<u32> {
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

fn describe_divergence(d: &Value) -> String {
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

/// `msitrace replay` (default `--fail-on error`) exits 1 exactly when the report has an
/// error-level divergence: a buggy run (H1/H4 errors) exits 1, a run whose only findings are
/// warnings (G5's heuristic silence) exits 0. A divergence without a severity counts as an
/// error, the stricter reading.
fn exit_code_mismatch(code: i32, divs: &[&Value]) -> Option<String> {
    let errors = divs
        .iter()
        .filter(|d| d.get("severity").and_then(Value::as_str).unwrap_or("error") == "error")
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

/// Whether the report says, with a reason, that `rule` was not evaluated.
fn not_evaluated_reason(report: &Value, rule: &str) -> Option<String> {
    report
        .get("not_evaluated")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|n| n.get("rule").and_then(Value::as_str) == Some(rule))
        .and_then(|n| n.get("reason").and_then(Value::as_str).map(str::to_string))
}

#[allow(clippy::too_many_arguments)]
fn check_report(
    step: Step,
    report: &Value,
    code: i32,
    control: u32,
    tests: &[u32],
    g5_silence_s: u64,
    h4_gated_off: bool,
    v: &mut Verdict,
) {
    let divs: Vec<&Value> = report
        .get("divergences")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let lost = report.pointer("/losses/total").and_then(Value::as_u64);
    match lost {
        Some(0) => {}
        // The burst is meant to overflow the ring: its losses are checked in check_burst.
        Some(_) if step.scenario == Scenario::Burst => {}
        Some(n) => v.failures.push(format!("msitrace lost {n} events")),
        None => v.failures.push("the report has no losses.total".into()),
    }
    if let Some(why) = exit_code_mismatch(code, &divs) {
        v.failures.push(why);
    }
    let in_report: BTreeSet<u32> = report
        .get("vectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| x.get("irq").and_then(Value::as_u64).map(|i| i as u32))
        .collect();
    for irq in std::iter::once(&control).chain(tests) {
        if !in_report.contains(irq) {
            v.failures.push(format!(
                "irq {irq} of hv_stub is not among the report's vectors"
            ));
        }
    }
    if !step.expects_dead_test_vectors() {
        if !divs.is_empty() {
            let d: Vec<String> = divs.iter().map(|d| describe_divergence(d)).collect();
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
                .get("input_warnings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
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
        .map(|d| describe_divergence(d))
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
            .filter(|d| d.get("rule").and_then(Value::as_str) == Some(rule))
            .flat_map(|d| divergence_irqs(d))
            .collect();
        let missing: Vec<String> = test_set.difference(&on).map(u32::to_string).collect();
        if missing.is_empty() {
            seen.push(format!("{rule} {}", join(&on)));
            continue;
        }
        let mut why = format!("no {rule} for irq {}", missing.join(","));
        if *rule == "G5" {
            let silence = report
                .pointer("/timing/g5_silence_ns")
                .and_then(Value::as_u64)
                .map(|n| n / 1_000_000_000);
            if let Some(s) = silence.filter(|s| *s > g5_silence_s) {
                why.push_str(&format!(
                    " (the engine waited {s} s, not the {g5_silence_s} s asked for)"
                ));
            }
        }
        let not_eval: Vec<String> = report
            .get("not_evaluated")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|n| n.get("rule").and_then(Value::as_str) == Some(rule))
            .filter_map(|n| n.get("reason").and_then(Value::as_str).map(str::to_string))
            .collect();
        if !not_eval.is_empty() {
            why.push_str(&format!(" (not evaluated: {})", not_eval.join("; ")));
        }
        v.failures.push(why);
    }
    let others: BTreeSet<&str> = divs
        .iter()
        .filter_map(|d| d.get("rule").and_then(Value::as_str))
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

/// The parts of `msitrace check --json` the rig judges, typed: a field renamed or retyped in
/// the report fails the step here instead of reading as absent.
#[derive(Debug, Deserialize)]
struct CheckJson {
    unusable: Option<String>,
    summary: CheckJsonSummary,
    findings: Vec<CheckJsonFinding>,
    devices: Vec<CheckJsonDevice>,
    vectors: Vec<CheckJsonVector>,
    unreadable: Vec<CheckJsonUnreadable>,
}

#[derive(Debug, Deserialize)]
struct CheckJsonSummary {
    errors: usize,
    warnings: usize,
    verdict: String,
}

#[derive(Debug, Deserialize)]
struct CheckJsonFinding {
    rule: String,
    severity: String,
    irq: Option<u32>,
    irqs: Vec<u32>,
    device: String,
    cause: String,
}

#[derive(Debug, Deserialize)]
struct CheckJsonDevice {
    bdf: String,
    /// `read`, or why the MSI-X table was not.
    msix_table: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckJsonVector {
    irq: u32,
    device: String,
    device_state: CheckJsonDeviceView,
}

#[derive(Debug, Deserialize)]
struct CheckJsonDeviceView {
    masked: Option<bool>,
    unknown: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckJsonUnreadable {
    what: String,
    why: String,
}

impl CheckJsonFinding {
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
#[allow(clippy::too_many_arguments)]
fn check_check(
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
    let report: CheckJson = match fs::read_to_string(dir.join("check.json"))
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
        .map(CheckJsonFinding::describe)
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
        .map(CheckJsonFinding::describe)
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

fn join(s: &BTreeSet<u32>) -> String {
    s.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// An event of `dump --json`: `{"ts_ns", "cpu", "pid", "kind": "Unit" | {"Variant": payload}}`.
struct Ev<'a> {
    ts: u64,
    kind: &'a str,
    payload: Option<&'a Value>,
}

impl<'a> Ev<'a> {
    fn of(e: &'a Value) -> Option<Ev<'a>> {
        let ts = e.get("ts_ns")?.as_u64()?;
        let k = e.get("kind")?;
        if let Some(s) = k.as_str() {
            return Some(Ev {
                ts,
                kind: s,
                payload: None,
            });
        }
        let (name, payload) = k.as_object()?.iter().next()?;
        Some(Ev {
            ts,
            kind: name.as_str(),
            payload: Some(payload),
        })
    }

    fn field(&self, k: &str) -> Option<&'a Value> {
        let p = self.payload?;
        p.get(k).or_else(|| p.get("v").and_then(|v| v.get(k)))
    }

    fn irq(&self) -> Option<u32> {
        self.field("irq").and_then(Value::as_u64).map(|i| i as u32)
    }

    fn device(&self) -> Option<&'a str> {
        self.field("device").and_then(Value::as_str)
    }
}

/// The ordinary vector hv_stub disables across every sleep: its mask before the sleep and its
/// unmask after the resume were seen, through whichever path this kernel masks ordinary
/// devices with (the per-device MSI domains' callbacks from 6.2), and nothing was raised on
/// it (the report checks already fail on any divergence beyond the test vectors).
fn check_plain_vector(step: Step, events: &[Value], irq: u32, v: &mut Verdict) {
    if !step.scenario.resumes() {
        return;
    }
    let evs: Vec<Ev> = events.iter().filter_map(Ev::of).collect();
    let kinds = |mask: bool| -> Vec<(u64, &str)> {
        let names: &[&str] = if mask {
            &["PciIrqMask", "PciMsiMask"]
        } else {
            &["PciIrqUnmask", "PciMsiUnmask"]
        };
        evs.iter()
            .filter(|e| names.contains(&e.kind) && e.irq() == Some(irq))
            .map(|e| (e.ts, e.kind))
            .collect()
    };
    let masks = kinds(true);
    let unmasks = kinds(false);
    let first_mask = masks.first().map(|m| m.0);
    match (first_mask, unmasks.iter().find(|u| Some(u.0) > first_mask)) {
        (Some(_), Some((_, how))) => v.facts.push(format!(
            "plain irq {irq}: masked across the sleep, unmask seen ({how}), no G1"
        )),
        _ => v.failures.push(format!(
            "plain irq {irq}: mask/unmask across the sleep not seen ({} masks, {} unmasks recorded)",
            masks.len(),
            unmasks.len()
        )),
    }
}

fn check_events(
    step: Step,
    events: &[Value],
    bdf: Option<&str>,
    control: u32,
    tests: &[u32],
    v: &mut Verdict,
) {
    let evs: Vec<Ev> = events.iter().filter_map(Ev::of).collect();
    if evs.is_empty() {
        v.failures.push("the trace holds no events".into());
        return;
    }
    let has = |kind: &str, irq: Option<u32>, after: u64| {
        evs.iter()
            .any(|e| e.kind == kind && e.ts > after && (irq.is_none() || e.irq() == irq))
    };
    let restore_of_device = |kind: &str, after: u64| {
        evs.iter()
            .any(|e| e.kind == kind && e.ts > after && (bdf.is_none() || e.device() == bdf))
    };
    let restored = |irq: u32, after: u64| {
        evs.iter().any(|e| {
            e.kind == "WriteMsiMsg"
                && e.ts > after
                && e.irq() == Some(irq)
                && e.field("in_restore").and_then(Value::as_bool) == Some(true)
        })
    };
    let mut missing = Vec::new();
    let all: Vec<u32> = std::iter::once(control)
        .chain(tests.iter().copied())
        .collect();
    let migration = |after: u64| {
        (has("MigrateAllOffEnter", None, after) && has("MigrateAllOffExit", None, after))
            || has("MigrateOneIrq", None, after)
    };
    if step.scenario.offlines_cpus() {
        if !migration(0) {
            missing.push("migration window".to_string());
        }
        for &t in tests {
            for k in ["MaskEnter", "UnmaskEnter", "UnmaskExit"] {
                if !has(k, Some(t), 0) {
                    missing.push(format!("{k} irq {t}"));
                }
            }
        }
    }
    if step.scenario == Scenario::Reset || step.scenario.resumes() {
        for k in ["RestoreEnter", "RestoreExit"] {
            if !restore_of_device(k, 0) {
                missing.push(format!("{k} of {}", bdf.unwrap_or("the e1000e")));
            }
        }
        for &i in &all {
            if !restored(i, 0) {
                missing.push(format!("restore write irq {i}"));
            }
        }
    }
    if step.scenario.resumes() {
        if !has("SuspendResume", None, 0) {
            missing.push("phase transitions (power:suspend_resume)".into());
        }
        for k in ["HvPciSuspendEnter", "HvPciResumeEnter"] {
            if !has(k, None, 0) {
                missing.push(k.to_string());
            }
        }
        for &i in &all {
            let composed = has("ComposeExit", Some(i), 0);
            let should = step.mode != Mode::Buggy || i == control;
            if should && !composed {
                missing.push(format!("ComposeExit irq {i}"));
            }
            if !should && composed {
                v.failures
                    .push(format!("irq {i} was composed in buggy mode"));
            }
        }
        // The guest offlines a CPU and resets the e1000e once the resume is over: kprobes,
        // kretprobes and the migration window must still fire.
        let resumed = evs
            .iter()
            .filter(|e| e.kind == "SuspendResume")
            .map(|e| e.ts)
            .max()
            .unwrap_or(0);
        let mut dead = Vec::new();
        if !migration(resumed) {
            dead.push("migration window");
        }
        for k in ["RestoreEnter", "RestoreExit"] {
            if !restore_of_device(k, resumed) {
                dead.push(if k == "RestoreEnter" {
                    "pci_restore_msi_state"
                } else {
                    "pci_restore_msi_state:return"
                });
            }
        }
        if !has("WriteMsiMsg", None, resumed) {
            dead.push("__pci_write_msi_msg");
        }
        if dead.is_empty() {
            v.facts.push("probes fire after resume".into());
        } else {
            v.failures
                .push(format!("silent after the resume: {}", dead.join(", ")));
        }
    }
    if !missing.is_empty() {
        v.failures
            .push(format!("not recorded: {}", missing.join(", ")));
    }
}

/// The per-run check of `msitrace probes --json`: the hooks the rules need are attached, and
/// `migrate_one_irq` is, or is replaced by its fallback window with the reason said.
pub fn check_probes(path: &Path) -> Verdict {
    let mut v = Verdict {
        failures: Vec::new(),
        facts: Vec::new(),
    };
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => {
            v.failures
                .push("the guest brought back no `msitrace probes --json` output".into());
            return v;
        }
    };
    let json: Value = match serde_json::from_str(&text) {
        Ok(j) => j,
        Err(e) => {
            v.failures
                .push(format!("`msitrace probes --json` is not JSON: {e}"));
            return v;
        }
    };
    let rows: Vec<&Value> = match &json {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o
            .values()
            .find_map(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let row = |hook: &str| {
        rows.iter()
            .find(|r| r.get("hook").and_then(Value::as_str) == Some(hook))
            .copied()
    };
    let status = |hook: &str| {
        row(hook)
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("missing")
    };
    for hook in [
        "hv_compose_msi_msg",
        "hv_compose_msi_msg:return",
        "hv_irq_unmask",
        "hv_irq_unmask:return",
        "pci_restore_msi_state",
        "__pci_write_msi_msg",
    ] {
        if status(hook) != "attached" {
            let reason = row(hook)
                .and_then(|r| r.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("");
            v.failures
                .push(format!("{hook} is {} {reason}", status(hook)));
        }
    }
    // A hook attached to another candidate than its own name (a renamed function such as
    // hv_vmbus_compose_msi_msg) is a fact worth reading, not a failure. Older msitrace builds
    // have no attached_symbol: nothing to say then.
    if let Some(on) = row("hv_compose_msi_msg")
        .and_then(|r| r.get("attached_symbol"))
        .and_then(Value::as_str)
        .filter(|on| *on != "hv_compose_msi_msg")
    {
        v.facts.push(format!("hv_compose_msi_msg attached to {on}"));
    }
    match status("migrate_one_irq") {
        "attached" => v.facts.push("migrate_one_irq attached".into()),
        s => {
            let reason = row("migrate_one_irq")
                .and_then(|r| r.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let fallback = [
                "irq_migrate_all_off_this_cpu",
                "irq_migrate_all_off_this_cpu:return",
            ]
            .iter()
            .all(|h| status(h) == "attached");
            if reason.is_empty() {
                v.failures
                    .push(format!("migrate_one_irq is {s} and the reason is not said"));
            }
            if !fallback {
                v.failures.push(format!(
                    "migrate_one_irq is {s} and its fallback window is not attached"
                ));
            }
            if !reason.is_empty() && fallback {
                v.facts.push(format!(
                    "migrate_one_irq {s} ({reason}), fallback window attached"
                ));
            }
        }
    }
    if v.failures.is_empty() {
        v.facts.insert(
            0,
            "hv_compose_msi_msg, hv_irq_unmask, pci_restore_msi_state, __pci_write_msi_msg attached"
                .into(),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "mode=buggy bus=installed bus_suspends=1 bus_resumes=1 syscore_suspends=1 syscore_resumes=1\n\
vector=0 irq=37 role=control cpu=0 composes=2 masks=0 unmasks=0 retarget_failed=0 unmask_skipped=0 fired=6 handled=11 table_masked=0 cache_masked=0 genirq_masked=0 table_addr=0xfee00000 table_data=0x00000024 irte_gen=2 proc=11\n\
vector=1 irq=38 role=test cpu=0 composes=1 masks=1 unmasks=1 retarget_failed=1 unmask_skipped=1 fired=6 handled=5 table_masked=1 cache_masked=1 genirq_masked=0 table_addr=0xfeef0000 table_data=0x00000025 irte_gen=1 proc=5\n";

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
        let mut v = Verdict {
            failures: Vec::new(),
            facts: Vec::new(),
        };
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

    #[test]
    fn the_tui_frame_is_rebuilt_from_the_serial_bytes() {
        let mut bytes = b"\x1b[?1049h\x1b[2J\x1b[1;1H 37  ok\x1b[2;1H 38  DIVERGED H1".to_vec();
        // A later redraw of row 2 only, as ratatui sends a diff.
        bytes.extend_from_slice(b"\x1b[2;6HDIVERGED H4");
        let mut closed = bytes.clone();
        closed.extend_from_slice(b"\x1b[?1049l$ ");
        let frame = live_last_frame(&closed).unwrap();
        assert!(frame.contains(" 38  DIVERGED H4"), "{frame}");
        assert!(frame.lines().any(|l| l.trim_start().starts_with("37")));
        assert!(
            live_last_frame(&bytes)
                .unwrap_err()
                .contains("not restored")
        );
        assert!(live_last_frame(b"").unwrap_err().contains("nothing"));
        assert!(
            live_last_frame(b"plain text\n")
                .unwrap_err()
                .contains("never switched")
        );
    }

    #[test]
    fn a_burst_must_account_for_every_record() {
        let ev = |ts: u64, kind: Value| serde_json::json!({"ts_ns": ts, "cpu": 0, "pid": 0, "kind": kind});
        let mut events = vec![ev(
            1_000_000_000,
            serde_json::json!({"IrqCounts": {"counts": []}}),
        )];
        for i in 0..5 {
            events.push(ev(
                2_000_000_000 + i,
                serde_json::json!({"MaskEnter": {"irq": 38}}),
            ));
        }
        events.push(ev(2_500_000_000, serde_json::json!("MigrateAllOffEnter")));
        events.push(ev(
            9_000_000_000,
            serde_json::json!({"Lost": {"probe": "HvMaskEnter", "count": 3}}),
        ));
        events.push(ev(
            9_000_000_000,
            serde_json::json!({"IrqCounts": {"counts": []}}),
        ));
        let trailer = |hits: u64, lost: u64| serde_json::json!({"counters": [["HvMaskEnter", hits - 1, lost], ["MigrateAllOffEnter", 1, 0], ["IrqHandlerEntry", 99, 0]], "decode_errors": 0});
        let burst = |hits: u64, lost: u64| {
            let mut v = Verdict {
                failures: Vec::new(),
                facts: Vec::new(),
            };
            check_burst(&events, &trailer(hits, lost), &mut v);
            v
        };
        let v = burst(9, 3);
        assert!(v.pass(), "{:?}", v.failures);
        assert!(
            v.facts.iter().any(|f| f.contains("held 6 records")),
            "{:?}",
            v.facts
        );
        let v = burst(10, 3);
        assert!(
            v.failures.iter().any(|f| f.contains("1 unaccounted for")),
            "{:?}",
            v.failures
        );
        let v = burst(6, 0);
        assert!(
            v.failures.iter().any(|f| f.contains("did not overflow")),
            "{:?}",
            v.failures
        );
    }

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
        let mut v = Verdict {
            failures: Vec::new(),
            facts: Vec::new(),
        };
        check_daemon_log(log, buggy, 37, &[38, 39], &mut v);
        assert!(v.pass(), "{:?}", v.failures);
        let mut v = Verdict {
            failures: Vec::new(),
            facts: Vec::new(),
        };
        check_daemon_log(log, buggy, 37, &[38, 39, 40], &mut v);
        assert!(!v.pass());
        let fixed = Step::new(Scenario::S3, Mode::Fixed).with(Front::Daemon);
        let mut v = Verdict {
            failures: Vec::new(),
            facts: Vec::new(),
        };
        check_daemon_log(log, fixed, 37, &[38, 39], &mut v);
        assert!(!v.pass());
    }

    #[test]
    fn parses_the_module_state() {
        let st = ModuleState::parse(STATE).unwrap();
        assert_eq!(st.mode, "buggy");
        assert_eq!(st.get("syscore_suspends"), 1);
        assert_eq!(st.control().unwrap().irq, 37);
        let t: Vec<u32> = st.tests().map(|v| v.irq).collect();
        assert_eq!(t, [38]);
        assert_eq!(st.vector(1).unwrap().get("proc"), 5);
        assert_eq!(st.vector(1).unwrap().get("table_masked"), 1);
        assert!(ModuleState::parse("garbage").is_none());
    }

    #[test]
    fn a_diverged_row_is_found_with_or_without_the_cursor() {
        let frame = "phase resumed  epoch 1  4 DIVERGED\n\
                     │▶38    DIVERGED 0000:02:00.0 hv_stub    MSI-X 1   MASKED never     H1 H4   █\n\
                     │ 39    DIVERGED 0000:02:00.0 hv_stub    MSI-X 2   MASKED never     H1 H4   █\n\
                     │ 37    ok       0000:02:00.0 hv_stub    MSI-X 0   open   ok ep1           ║\n\
                     │ERROR H4  irq 37   ep1 0000:02:00.0 DIVERGED in a sentence\n";
        assert!(marks_diverged(frame, 38));
        assert!(marks_diverged(frame, 39));
        assert!(!marks_diverged(frame, 37));
        assert!(!marks_diverged(frame, 1));
    }

    #[test]
    fn liveness_tells_dead_from_alive() {
        assert_eq!(liveness(3, 6), Live::Alive);
        assert_eq!(liveness(3, 3), Live::Alive);
        assert_eq!(liveness(3, 0), Live::Dead);
        assert_eq!(liveness(3, 2), Live::Partial);
        assert_eq!(liveness(0, 0), Live::NotFired);
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
            let mut v = Verdict {
                failures: vec![],
                facts: vec![],
            };
            check_report(step, report, 1, 37, &[38, 39], 4, gated, &mut v);
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
        let mut v = Verdict {
            failures: vec![],
            facts: vec![],
        };
        check_report(step, &report, 1, 37, &[38, 39], 4, false, &mut v);
        assert!(v.pass(), "{:?}", v.failures);

        let mut wrong = report.clone();
        wrong["divergences"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"rule": "G5", "irq": 25, "irqs": [25], "cause": "silent"}));
        let mut v = Verdict {
            failures: vec![],
            facts: vec![],
        };
        check_report(step, &wrong, 1, 37, &[38, 39], 11, false, &mut v);
        assert!(!v.pass());

        let mut v = Verdict {
            failures: vec![],
            facts: vec![],
        };
        check_report(
            Step::new(Scenario::PmTestCore, Mode::Fixed),
            &report,
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
        let h1 = serde_json::json!({"rule": "H1", "severity": "error", "irq": 38});
        let g5 = serde_json::json!({"rule": "G5", "severity": "warning", "irq": 38});
        // A buggy run: errors (and the G5 warnings that follow them) exit 1.
        assert_eq!(exit_code_mismatch(1, &[&h1, &g5]), None);
        assert!(exit_code_mismatch(0, &[&h1, &g5]).is_some());
        // Only heuristic warnings: listed, exit 0.
        assert_eq!(exit_code_mismatch(0, &[&g5]), None);
        assert!(exit_code_mismatch(1, &[&g5]).is_some());
        // Clean, and unusable input.
        assert_eq!(exit_code_mismatch(0, &[]), None);
        assert!(exit_code_mismatch(2, &[]).is_some());
    }

    #[test]
    fn events_of_dump_json() {
        let e = serde_json::json!({"ts_ns": 5, "cpu": 0, "pid": 1, "kind": {"ComposeExit": {"v": {"irq": 38, "device": "0000:02:00.0"}, "msg": null}}});
        let ev = Ev::of(&e).unwrap();
        assert_eq!(
            (ev.kind, ev.irq(), ev.device()),
            ("ComposeExit", Some(38), Some("0000:02:00.0"))
        );
        let u = serde_json::json!({"ts_ns": 6, "cpu": 1, "pid": 0, "kind": "MigrateAllOffEnter"});
        let ev = Ev::of(&u).unwrap();
        assert_eq!((ev.kind, ev.irq()), ("MigrateAllOffEnter", None));
    }
}

//! msitrace.service under systemd: the unit's state through the step, its journal entries, and
//! the service leg outside the steps (enable, the restart after kill -9 that starts each step's
//! instance, and what that instance attached inside the unit's sandbox).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use serde_json::Value;

use super::{
    Verdict,
    common::{error_findings, join},
    json::Report,
    probes::check_probe_rows,
};
use crate::vm::{
    msitrace::{self, Msitrace},
    plan::Step,
};

/// `systemctl show` output: `Key=value` a line.
pub(super) fn unit_props(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// journalctl -o json: one object a line.
pub(super) fn journal_entries(path: &Path) -> Result<Vec<Value>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("journal line is not JSON: {e}")))
        .collect()
}

pub(super) fn field<'a>(e: &'a Value, k: &str) -> Option<&'a str> {
    e.get(k).and_then(Value::as_str)
}

/// The rule entries msitrace sent at err level: (rule, irq), from their own fields.
pub(super) fn journal_errors(entries: &[Value]) -> BTreeSet<(String, u32)> {
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
pub(super) fn check_service_step(
    dir: &Path,
    step: Step,
    control: u32,
    tests: &[u32],
    v: &mut Verdict,
) {
    // The step's instance is the one systemd restarted after service.sh's kill -9: no restart
    // but that one.
    let killed = dir
        .parent()
        .and_then(|art| unit_props(&art.join("service/restart/after-kill.txt")));
    let restarts = killed
        .as_ref()
        .and_then(|p| p.get("NRestarts").cloned())
        .unwrap_or_else(|| "0".into());
    match unit_props(&dir.join("unit-before-stop.txt")) {
        Some(p) => {
            let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("?");
            if (get("ActiveState"), get("SubState"), get("NRestarts"))
                != ("active", "running", restarts.as_str())
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
    // The same errors on the serial console, through the kernel log: what is left to read
    // when the journal's disk or the shipper's network is the dead device.
    let console = dir
        .parent()
        .and_then(Path::parent)
        .map(|run| run.join("console.log"))
        .and_then(|p| fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let on_console = console_errors(&console);
    if step.expects_dead_test_vectors() {
        if on_console == want {
            v.facts.push(format!(
                "serial console: the kernel log's msitrace err lines name irqs {}",
                join(&on_console)
            ));
        } else {
            v.failures.push(format!(
                "the serial console's msitrace err lines name irqs {{{}}} instead of the test vectors {{{}}} (kmsg forwarding)",
                join(&on_console),
                join(&want)
            ));
        }
    } else if !on_console.is_empty() {
        v.failures.push(format!(
            "the serial console has msitrace err lines for irqs {} in a step that must stay clean",
            join(&on_console)
        ));
    }
}

/// IRQs named by the daemon's kernel-log lines on a serial console (`[  12.3] msitrace: err
/// H1 irq=38 device=…: …`).
fn console_errors(text: &str) -> BTreeSet<u32> {
    text.lines()
        .filter_map(|l| l.split_once("msitrace: err ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let irq = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("irq="))?;
            irq.trim_end_matches(':').parse().ok()
        })
        .collect()
}

/// The flight recorder, replayed on the host, gives the verdict the service gave live.
pub(super) fn check_journal_matches_replay(dir: &Path, report: &Report, v: &mut Verdict) {
    let Ok(entries) = journal_entries(&dir.join("journal.json")) else {
        return;
    };
    let live = journal_errors(&entries);
    let replayed = error_findings(&report.divergences);
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
    let mut v = Verdict::default();
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
    // What the unit's sandbox let msitrace attach, with the stand-in's hooks there to attach
    // to: the header of the instance systemd restarted after the kill (with hv_stub loaded,
    // as pci_hyperv is at boot), the last of the files.
    let files = super::common::msit_files(&dir.join("restart"));
    match files.last().map(|f| msitrace::header(m, f)) {
        Some(Ok(h)) => {
            let probes = check_probe_rows(&h.probes);
            if probes.pass() {
                v.facts.push(
                    "the restarted instance, inside the unit's sandbox: the kprobes attach".into(),
                );
            } else {
                v.failures.extend(
                    probes
                        .failures
                        .into_iter()
                        .map(|f| format!("the restarted instance, inside the unit's sandbox: {f}")),
                );
            }
        }
        Some(Err(e)) => v.failures.push(format!("{e:#}")),
        None => {}
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

#[cfg(test)]
mod tests {
    use super::console_errors;

    #[test]
    fn the_consoles_msitrace_err_lines_give_their_irqs() {
        let console = "[   41.02] e1000e: link up\n\
            [   57.118830] msitrace: err H1 irq=38 device=0000:02:00.0 epoch=1: irq 38 was restored\n\
            [   57.119000] msitrace: err H4 irq=39 device=0000:02:00.0 epoch=1 (updated): still masked\n\
            [   58.000000] msitrace: 2 more error finding(s) not written here (rate limit): see the journal\n\
            [   59.000000] msitrace: warning G5 irq=37 device=0000:02:00.0 epoch=1: silent\n";
        assert_eq!(
            console_errors(console).into_iter().collect::<Vec<_>>(),
            vec![38, 39]
        );
        assert!(console_errors("").is_empty());
    }
}

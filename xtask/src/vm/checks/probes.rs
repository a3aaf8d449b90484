//! `msitrace probes --json`, once per kernel.

use std::{fs, path::Path};

use super::{
    Verdict,
    json::{ProbeStatus, Probes},
};

/// The hooks the rules need most: anything but `attached` fails the run.
const REQUIRED: [&str; 6] = [
    "hv_compose_msi_msg",
    "hv_compose_msi_msg:return",
    "hv_irq_unmask",
    "hv_irq_unmask:return",
    "pci_restore_msi_state",
    "__pci_write_msi_msg",
];

/// The per-run check of `msitrace probes --json`: the hooks the rules need are attached, and
/// `migrate_one_irq` is, or is replaced by its fallback window with the reason said.
pub fn check_probes(path: &Path) -> Verdict {
    let mut v = Verdict::default();
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => {
            v.failures
                .push("the guest brought back no `msitrace probes --json` output".into());
            return v;
        }
    };
    match serde_json::from_str::<Probes>(&text).and_then(Probes::rows) {
        Ok(rows) => check_probe_rows(&rows),
        Err(e) => {
            v.failures
                .push(format!("`msitrace probes --json` is not JSON: {e}"));
            v
        }
    }
}

/// The same check of the rows, wherever they come from (`probes --json`, or a trace's header,
/// which lists the same rows for the probes of the recording).
pub fn check_probe_rows(rows: &[ProbeStatus]) -> Verdict {
    let mut v = Verdict::default();
    let row = |hook: &str| rows.iter().find(|r| r.hook.as_deref() == Some(hook));
    let status = |hook: &str| {
        row(hook)
            .and_then(|r| r.status.as_deref())
            .unwrap_or("missing")
    };
    for hook in REQUIRED {
        if status(hook) != "attached" {
            let reason = row(hook).and_then(|r| r.reason.as_deref()).unwrap_or("");
            v.failures
                .push(format!("{hook} is {} {reason}", status(hook)));
        }
    }
    // `error` is msitrace's own fault on this kernel (the verifier refused one of its
    // programs, as 5.10's did hv_pci_compose_compl's for a day unnoticed): any hook, not only
    // the ones the rules need most.
    for r in rows.iter().filter(|r| r.status.as_deref() == Some("error")) {
        v.failures.push(format!(
            "{} failed to load: {}",
            r.hook.as_deref().unwrap_or("a hook"),
            r.reason.as_deref().unwrap_or("no reason given")
        ));
    }
    // A hook attached to another candidate than its own name (a renamed function such as
    // hv_vmbus_compose_msi_msg) is a fact worth reading, not a failure. Older msitrace builds
    // have no attached_symbol: nothing to say then.
    if let Some(on) = row("hv_compose_msi_msg")
        .and_then(|r| r.attached_symbol.as_deref())
        .filter(|on| *on != "hv_compose_msi_msg")
    {
        v.facts.push(format!("hv_compose_msi_msg attached to {on}"));
    }
    match status("migrate_one_irq") {
        "attached" => v.facts.push("migrate_one_irq attached".into()),
        s => {
            let reason = row("migrate_one_irq")
                .and_then(|r| r.reason.as_deref())
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

    fn rows(extra: &str) -> String {
        let attached = REQUIRED
            .iter()
            .chain(&["migrate_one_irq"])
            .map(|h| format!(r#"{{"hook":"{h}","status":"attached"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        format!(r#"{{"schema_version":1,"probes":[{attached}{extra}]}}"#)
    }

    fn judge(json: &str) -> Verdict {
        let dir = std::env::temp_dir().join(format!("xtask-probes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.json", json.len()));
        std::fs::write(&path, json).unwrap();
        let v = check_probes(&path);
        let _ = std::fs::remove_file(&path);
        v
    }

    #[test]
    fn a_program_the_verifier_refused_fails_the_run_whatever_its_hook() {
        assert!(judge(&rows("")).pass());
        let v = judge(&rows(
            r#",{"hook":"hv_pci_compose_compl","status":"error","reason":"the verifier refused the program: invalid read from stack R10 off=-32 size=8"}"#,
        ));
        assert!(!v.pass(), "{v:?}");
        assert!(
            v.failures[0].starts_with("hv_pci_compose_compl failed to load: the verifier refused"),
            "{:?}",
            v.failures
        );
        // Absent (not in this kernel) is the kernel's word, not a failure.
        assert!(
            judge(&rows(
                r#",{"hook":"pci_irq_mask_msix","status":"absent","reason":"not in kallsyms"}"#
            ))
            .pass()
        );
    }
}

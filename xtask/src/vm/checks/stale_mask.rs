//! The verdict on the stale-mask step (issue #14; guest side: `step_stale_mask` in
//! tests/guest/vmt.sh). hv_stub, in the fixed mode, left one test vector masked in the device
//! (its MSI-X vector-control bit, table and msi_desc cache) while genirq has it enabled, with
//! no sleep and no recorder: `msitrace check` alone must exit 1 with the device-masked-while-
//! enabled finding (C1) at error level on exactly that vector and nothing error-level on any
//! other, having read the e1000e's MSI-X table through its BAR; once hv_stub lifts the mask it
//! must exit 0 with no error.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use super::Verdict;
use super::json::{CheckFinding, CheckReport};

/// One `vector=` line of hv_stub's state: its index, IRQ, role and numeric fields.
struct Vector {
    index: u32,
    irq: u32,
    role: String,
    n: BTreeMap<String, i64>,
}

impl Vector {
    fn get(&self, k: &str) -> i64 {
        self.n.get(k).copied().unwrap_or(-1)
    }
}

fn vectors(path: &Path) -> Option<Vec<Vector>> {
    let text = fs::read_to_string(path).ok()?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("vector=")) {
        let mut v = Vector {
            index: 0,
            irq: 0,
            role: String::new(),
            n: BTreeMap::new(),
        };
        for (k, val) in line.split_whitespace().filter_map(|t| t.split_once('=')) {
            match k {
                "vector" => v.index = val.parse().ok()?,
                "irq" => v.irq = val.parse().ok()?,
                "role" => v.role = val.to_string(),
                _ => {
                    if let Ok(n) = val.parse() {
                        v.n.insert(k.to_string(), n);
                    }
                }
            }
        }
        out.push(v);
    }
    (!out.is_empty()).then_some(out)
}

/// The three mask views hv_stub reports for a vector: table, msi_desc cache, genirq.
fn masks(v: &Vector) -> (i64, i64, i64) {
    (
        v.get("table_masked"),
        v.get("cache_masked"),
        v.get("genirq_masked"),
    )
}

/// An error- or warning-level finding of `check --json`, in a few words.
fn describe(f: &CheckFinding) -> String {
    format!(
        "{} {} on {} ({})",
        f.severity,
        f.rule,
        f.irq
            .map_or_else(|| format!("irqs {:?}", f.irqs), |i| format!("irq {i}")),
        f.cause
    )
}

fn finding_irqs(f: &CheckFinding) -> Vec<u32> {
    let mut irqs = f.irqs.clone();
    irqs.extend(f.irq);
    irqs.sort_unstable();
    irqs.dedup();
    irqs
}

/// Judge one `check --json` run (`<name>.rc`, `<name>.json`, `<name>.err` in `dir`). `stale`
/// is the IRQ left masked behind genirq's back, or None once the mask is lifted.
fn judge_check(
    dir: &Path,
    name: &str,
    stale: Option<u32>,
    ours: &[(u32, String)],
    e1000e: Option<&str>,
    v: &mut Verdict,
) {
    let label = if stale.is_some() {
        "check with the stale mask"
    } else {
        "check after clearing it"
    };
    let err = fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    let err_last = err.lines().last().unwrap_or("no message").to_string();
    let Ok(rc) = fs::read_to_string(dir.join(format!("{name}.rc"))) else {
        v.failures
            .push(format!("{label}: did not run (no {name}.rc)"));
        return;
    };
    let rc = rc.trim().to_string();
    let report: CheckReport = match fs::read_to_string(dir.join(format!("{name}.json")))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            v.failures.push(format!(
                "{label}: exited {rc} without a report the rig reads ({e}): {err_last}"
            ));
            return;
        }
    };
    if let Some(why) = &report.unusable {
        v.failures
            .push(format!("{label}: found nothing usable: {why}"));
    }
    let want_rc = if stale.is_some() { "1" } else { "0" };
    if rc != want_rc {
        v.failures.push(format!(
            "{label}: exited {rc}, expected {want_rc} ({}; {err_last})",
            report.summary.verdict
        ));
    }
    // The device really read: the table through the e1000e's BAR.
    match e1000e {
        None => v
            .failures
            .push("the e1000e's address is unknown: cannot judge check's reading of it".into()),
        Some(bdf) => {
            let dev = report.devices.iter().find(|d| d.bdf == bdf);
            match dev {
                None => v
                    .failures
                    .push(format!("{label}: does not list the e1000e ({bdf})")),
                Some(d) if d.msix_table.as_deref() != Some("read") => v.failures.push(format!(
                    "{label}: did not read the e1000e's MSI-X table ({})",
                    d.msix_table
                        .as_deref()
                        .unwrap_or("no MSI-X capability decoded")
                )),
                Some(_) => {}
            }
        }
    }
    // Each of hv_stub's vectors as check read it in the device.
    for (irq, role) in ours {
        let want = stale == Some(*irq);
        let x = report.vectors.iter().find(|x| x.irq == *irq);
        match x.map(|x| (x.device_state.masked, x)) {
            None => v
                .failures
                .push(format!("{label}: does not list hv_stub's {role} irq {irq}")),
            Some((Some(m), _)) if m == want => {}
            Some((m, x)) => v.failures.push(format!(
                "{label}: reads {role} irq {irq} as {} in the device, expected {}",
                match m {
                    Some(true) => "masked".to_string(),
                    Some(false) => "unmasked".to_string(),
                    None => format!(
                        "unknown ({})",
                        x.device_state.unknown.as_deref().unwrap_or("no reason")
                    ),
                },
                if want { "masked" } else { "unmasked" }
            )),
        }
    }
    let findings = &report.findings;
    let errors: Vec<&CheckFinding> = findings.iter().filter(|f| f.severity == "error").collect();
    if report.summary.errors != errors.len() {
        v.failures.push(format!(
            "{label}: its summary counts {} errors, its findings {}",
            report.summary.errors,
            errors.len()
        ));
    }
    if let Some(irq) = stale {
        let on_it: Vec<&&CheckFinding> = errors
            .iter()
            .filter(|f| f.rule == "C1" && finding_irqs(f) == [irq])
            .collect();
        if on_it.is_empty() {
            v.failures.push(format!(
                "{label}: no error-level C1 (masked in the device while enabled) on irq {irq}"
            ));
        }
    }
    let extra: Vec<String> = errors
        .iter()
        .filter(|f| stale.is_none() || f.rule != "C1" || finding_irqs(f) != [stale.unwrap_or(0)])
        .map(|f| describe(f))
        .collect();
    if !extra.is_empty() {
        v.failures.push(format!(
            "{label}: error-level finding(s) beyond {}: {}",
            stale.map_or("none expected".to_string(), |i| format!("C1 on irq {i}")),
            extra.join("; ")
        ));
    }
    let warnings: Vec<String> = findings
        .iter()
        .filter(|f| f.severity != "error")
        .map(describe)
        .collect();
    v.facts.push(format!(
        "{label}: rc={rc}, {}{}",
        if errors.is_empty() {
            "no error".to_string()
        } else {
            errors
                .iter()
                .map(|f| describe(f))
                .collect::<Vec<_>>()
                .join(", ")
        },
        if warnings.is_empty() {
            String::new()
        } else {
            format!("; warnings: {}", warnings.join(", "))
        }
    ));
}

/// `dir`: artifacts/stale-mask.fixed; `msitrace`: whether the guest ran msitrace at all.
pub fn check(dir: &Path, e1000e: Option<&str>, msitrace: bool) -> Verdict {
    let mut v = Verdict::default();
    if let Some(why) = super::common::step_not_run(dir) {
        v.failures.push(why);
        return v;
    }
    let snap = |s: &str| -> PathBuf { dir.join(format!("{s}.state")) };
    let (Some(s0), Some(s1), Some(s2)) = (
        vectors(&snap("s0")),
        vectors(&snap("s1")),
        vectors(&snap("s2")),
    ) else {
        v.failures
            .push("hv_stub's state snapshots (s0, s1, s2) are missing or unreadable".into());
        return v;
    };
    let Some(index) = fs::read_to_string(dir.join("stale.vector"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        v.failures
            .push("the guest did not say which vector it masked (stale.vector)".into());
        return v;
    };
    let Some(target) = s0.iter().find(|x| x.index == index) else {
        v.failures
            .push(format!("vector {index} is not among hv_stub's vectors"));
        return v;
    };
    if target.role != "test" {
        v.failures.push(format!(
            "the stale mask went on the {} vector {index}, not a test vector",
            target.role
        ));
    }
    let irq = target.irq;
    // What hv_stub itself says it left, before and after: the state check must find.
    for (name, st, want_target) in [
        ("before", &s0, (0, 0, 0)),
        ("with the stale mask", &s1, (1, 1, 0)),
        ("after clearing it", &s2, (0, 0, 0)),
    ] {
        for x in st.iter() {
            let want = if x.index == index {
                want_target
            } else {
                (0, 0, 0)
            };
            if masks(x) != want {
                let (t, c, g) = masks(x);
                v.failures.push(format!(
                    "hv_stub {name}: {} irq {} has table={t} cache={c} genirq={g}, expected {want:?}",
                    x.role, x.irq
                ));
            }
        }
    }
    v.facts.push(format!(
        "hv_stub masked test irq {irq} in table and cache, genirq unmasked; cleared after"
    ));
    if !msitrace {
        return v;
    }
    let ours: Vec<(u32, String)> = s0.iter().map(|x| (x.irq, x.role.clone())).collect();
    judge_check(dir, "check", Some(irq), &ours, e1000e, &mut v);
    judge_check(dir, "check-clear", None, &ours, e1000e, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "mode=fixed bus=installed hv_unmasks_device=1 stale_mask=-1\n\
vector=0 irq=37 role=control cpu=0 table_masked=0 cache_masked=0 genirq_masked=0\n\
vector=1 irq=38 role=test cpu=1 table_masked=0 cache_masked=0 genirq_masked=0\n\
vector=2 irq=39 role=test cpu=1 table_masked=0 cache_masked=0 genirq_masked=0\n\
vector=3 irq=40 role=plain cpu=0 table_masked=0 cache_masked=0 genirq_masked=0\n";

    fn report(masked: &[u32], findings: &str, errors: usize) -> String {
        let vec = |irq: u32| {
            format!(
                r#"{{"irq": {irq}, "device": "0000:00:02.0", "device_state": {{"masked": {}}}}}"#,
                masked.contains(&irq)
            )
        };
        format!(
            r#"{{"summary": {{"errors": {errors}, "warnings": 0, "verdict": "v"}},
                "findings": [{findings}],
                "devices": [{{"bdf": "0000:00:02.0", "msix_table": "read"}}],
                "vectors": [{}, {}, {}, {}], "unreadable": []}}"#,
            vec(37),
            vec(38),
            vec(39),
            vec(40)
        )
    }

    fn c1(irq: u32) -> String {
        format!(
            r#"{{"rule": "C1", "severity": "error", "irq": {irq}, "irqs": [{irq}], "device": "0000:00:02.0", "cause": "masked"}}"#
        )
    }

    fn judge(stale_check: (&str, String), clear_check: (&str, String)) -> Verdict {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xtask-stale-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        let masked = STATE.replace(
            "irq=38 role=test cpu=1 table_masked=0 cache_masked=0",
            "irq=38 role=test cpu=1 table_masked=1 cache_masked=1",
        );
        fs::write(dir.join("s0.state"), STATE).unwrap();
        fs::write(dir.join("s1.state"), masked).unwrap();
        fs::write(dir.join("s2.state"), STATE).unwrap();
        fs::write(dir.join("stale.vector"), "1\n").unwrap();
        fs::write(dir.join("check.rc"), stale_check.0).unwrap();
        fs::write(dir.join("check.json"), stale_check.1).unwrap();
        fs::write(dir.join("check-clear.rc"), clear_check.0).unwrap();
        fs::write(dir.join("check-clear.json"), clear_check.1).unwrap();
        let v = check(&dir, Some("0000:00:02.0"), true);
        fs::remove_dir_all(&dir).unwrap();
        v
    }

    #[test]
    fn exactly_the_stale_vector_then_nothing() {
        let v = judge(
            ("1\n", report(&[38], &c1(38), 1)),
            ("0\n", report(&[], "", 0)),
        );
        assert!(v.pass(), "{:?}", v.failures);
    }

    #[test]
    fn a_miss_a_stray_and_a_wrong_exit_fail() {
        // C1 on the wrong vector, check read nothing masked.
        let v = judge(
            ("1\n", report(&[], &c1(39), 1)),
            ("0\n", report(&[], "", 0)),
        );
        assert!(v.failures.iter().any(|f| f.contains("no error-level C1")));
        assert!(v.failures.iter().any(|f| f.contains("beyond C1 on irq 38")));
        assert!(v.failures.iter().any(|f| f.contains("irq 38 as unmasked")));
        // Still an error after the clear, and exit 0 with the stale mask.
        let v = judge(
            ("0\n", report(&[38], &c1(38), 1)),
            ("1\n", report(&[38], &c1(38), 1)),
        );
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("exited 0, expected 1"))
        );
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("exited 1, expected 0"))
        );
        assert!(v.failures.iter().any(|f| f.contains("none expected")));
    }
}

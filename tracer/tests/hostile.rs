//! Issue #18, through the real binary: msitrace tried as an attacker and an unlucky operator
//! would. Each case asserts the exit code, the one-line message, and that nothing outside the
//! intended file changed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tracer::engine::EngineConfig;
use tracer::event::{Event, EventKind, VectorSnap};
use tracer::seed::{Seed, SeedVector};
use tracer::trace_file::{TraceHeader, TraceWriter};

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");

fn msitrace(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("msitrace runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/traces/6.12-hibernate-buggy.msit")
}

/// A directory of this test's own, empty.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msitrace-hostile-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit 2 and one `msitrace: ` line containing `needle`: the message scripts and people get.
fn assert_refused(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line, not: {e}");
    assert!(e.starts_with("msitrace: "), "{e}");
    assert!(e.contains(needle), "{needle:?} not in: {e}");
}

/// A run that must end by itself: killed and failed after `limit` (a FIFO that blocks, a
/// read that never ends). Its address space is capped so that a regression cannot take the
/// machine's memory with it.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &cap);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msitrace runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Why a case that attaches probes cannot run here (it then says SKIP, never passes silently).
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

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A trace as a crafted file could carry it: escape sequences in the kernel release, a
/// device name and an action name, and a chip_data pointer above 2^53.
fn crafted_trace(path: &Path) {
    let header = TraceHeader {
        kernel_release: "6.12\x1b]0;owned\x07\x1b[2J".into(),
        probes: EngineConfig::all_probes_attached(),
        seed: Seed {
            taken_ns: 1_000,
            online_cpus: vec![0, 1],
            vectors: vec![SeedVector {
                irq: 41,
                device: Some("0000:00:02.0\x1b[31m".into()),
                driver: Some("drv\x1b[1m".into()),
                kind: Some("msix".into()),
                msi_index: Some(1),
                actions: Some("eth0\x1b[5m".into()),
                ..Default::default()
            }],
        },
        ..Default::default()
    };
    let mut w = TraceWriter::create(path, &header).unwrap();
    let ev = |ts_ns: u64, kind: EventKind| Event {
        ts_ns,
        cpu: 0,
        tgid: 1,
        kind,
    };
    let snap = VectorSnap {
        irq: 41,
        device: Some("0000:00:02.0\x1b[31m".into()),
        msi_index: Some(1),
        msix: Some(true),
        chip_data: Some(0xffff_8880_0000_1001),
        ..Default::default()
    };
    for e in [
        ev(
            2_000,
            EventKind::SuspendResume {
                action: "freeze\x1b[2Jprocesses".into(),
                val: 0,
                start: true,
            },
        ),
        ev(2_500, EventKind::MaskEnter(snap)),
        ev(
            3_000,
            EventKind::RestoreEnter {
                device: "0000:00:02.0\x1b[31m".into(),
                msi_enabled: Some(false),
                msix_enabled: Some(true),
                power_state: Some(0),
            },
        ),
    ] {
        w.append(&e).unwrap();
    }
    w.finish(&serde_json::json!({})).unwrap();
}

// Case 12: durations are range-checked by the parser, before anything runs.
#[test]
fn every_duration_flag_refuses_values_that_would_overflow() {
    let fx = fixture();
    let dir = scratch("durations");
    let out = dir.join("out.msit");
    for value in ["1e19", "1e300", "NaN", "inf", "-1"] {
        let runs: Vec<Vec<String>> = vec![
            vec![
                "verify".into(),
                format!("--timeout={value}"),
                "--".into(),
                "true".into(),
            ],
            vec![
                "record".into(),
                "-o".into(),
                s(&out).into(),
                format!("--duration={value}"),
            ],
            vec!["replay".into(), format!("--silence={value}"), s(&fx).into()],
            vec!["replay".into(), format!("--grace={value}"), s(&fx).into()],
            vec![
                "daemon".into(),
                format!("--grace={value}"),
                "--replay".into(),
                s(&fx).into(),
            ],
        ];
        for args in runs {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = msitrace(&args);
            assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
            assert_refused(&o, "out of range: give a number of seconds from");
        }
    }
    assert!(!out.exists());
    fs::remove_dir_all(dir).unwrap();
}

/// stdout as a pipe whose reader already left.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

// Case 12: a closed pipe (`| head`) ends the output quietly; a full disk names stdout.
#[test]
fn printing_commands_survive_a_closed_pipe_and_name_stdout_when_it_is_full() {
    let fx = fixture();
    for args in [
        vec!["replay", s(&fx)],
        vec!["replay", "--json", s(&fx)],
        vec!["dump", s(&fx)],
    ] {
        let o = Command::new(BIN)
            .args(&args)
            .stdout(closed_pipe())
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        // replay's code is its verdict (1: the fixture has errors), not the reader leaving.
        let want = if args[0] == "replay" { 1 } else { 0 };
        assert_eq!(o.status.code(), Some(want), "{args:?}: {e}");

        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(BIN).args(&args).stdout(full).output().unwrap();
        assert_refused(&o, "cannot write to standard output");
    }
    // export prints only to stderr: a full one loses the lines, not the export.
    let dir = scratch("export-stderr");
    let out = dir.join("out.json");
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(BIN)
        .args(["export", s(&fx), "-o", s(&out)])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(fs::metadata(&out).unwrap().len() > 0);
    fs::remove_dir_all(dir).unwrap();
}

// Case 9: settings are a regular file of bounded size; a FIFO or /dev/zero is refused at once.
#[test]
fn the_daemon_reads_only_regular_settings_files_of_bounded_size() {
    let dir = scratch("config");
    let fifo = dir.join("fifo.toml");
    mkfifo(&fifo);
    let big = dir.join("big.toml");
    fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    for (config, needle) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (big.as_path(), "more than a settings file's limit"),
    ] {
        let o = bounded(
            Command::new(BIN).args(["daemon", "--config", s(config), "--replay", s(&fixture())]),
            Duration::from_secs(20),
        );
        assert_refused(&o, needle);
        assert!(stderr(&o).contains(s(config)), "{}", stderr(&o));
    }
    // /dev/null still says "no settings file", as the service's tests and benches use it.
    let o = msitrace(&["daemon", "--config", "/dev/null", "--replay", s(&fixture())]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    fs::remove_dir_all(dir).unwrap();
}

// Case 6: verify's temporary trace does not outlive a run that failed.
#[test]
fn verify_leaves_no_temporary_trace_behind_when_it_fails() {
    // Not root, verify stops before it creates anything: the case would pass for nothing.
    if let Some(why) = skip_reason() {
        eprintln!("SKIP verify_leaves_no_temporary_trace_behind_when_it_fails: {why}");
        return;
    }
    let tmp = scratch("verify-tmp");
    let o = Command::new(BIN)
        .args(["verify", "--timeout", "5", "--", "/nonexistent/cmd"])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({})", stderr(&o));
    fs::remove_dir_all(tmp).unwrap();
}

// Cases 1 and 2: export creates its output like a trace file: never through a link, never
// onto one of its inputs, 0600 whatever the umask, and the old output whole until the new
// one is.
#[test]
fn export_never_writes_through_a_link_onto_its_input_or_with_a_loose_mode() {
    let dir = scratch("export");
    let input = dir.join("in.msit");
    fs::copy(fixture(), &input).unwrap();
    let original = fs::read(&input).unwrap();

    let o = msitrace(&["export", s(&input), "-o", s(&input)]);
    assert_refused(&o, "is the input");
    let hard = dir.join("hard.json");
    fs::hard_link(&input, &hard).unwrap();
    let o = msitrace(&["export", s(&input), "-o", s(&hard)]);
    assert_refused(&o, "is the input");
    assert_eq!(fs::read(&input).unwrap(), original, "input changed");

    let victim = dir.join("root-only");
    fs::write(&victim, b"keep me").unwrap();
    let link = dir.join("planted.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = msitrace(&["export", s(&input), "-o", s(&link)]);
    assert_refused(&o, "symbolic link");
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");

    let out = dir.join("out.json");
    fs::write(&out, b"previous export").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["export", s(&input), "-o", s(&out)]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o} under umask 000");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    assert!(json["traceEvents"].is_array());
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "hard.json",
            "in.msit",
            "out.json",
            "planted.json",
            "root-only"
        ],
        "no temporary file left"
    );
    fs::remove_dir_all(dir).unwrap();
}

// Case 3: without a terminal, live fails before it creates, truncates or reads anything.
#[test]
fn live_without_a_terminal_touches_no_file() {
    let dir = scratch("live");
    let existing = dir.join("existing.msit");
    fs::copy(fixture(), &existing).unwrap();
    let original = fs::read(&existing).unwrap();
    let o = msitrace(&["live", "-o", s(&existing)]);
    assert_refused(&o, "needs a terminal on stdin and stdout");
    assert_eq!(fs::read(&existing).unwrap(), original);
    // Refused by the early check, before the file is replayed: not by the terminal setup
    // after the replay ("cannot drive this terminal").
    let o = msitrace(&["live", "--replay", s(&existing)]);
    assert_refused(&o, "needs a terminal on stdin and stdout");
    assert!(
        stderr(&o).starts_with("msitrace: msitrace live needs a terminal"),
        "{}",
        stderr(&o)
    );
    fs::remove_dir_all(dir).unwrap();
}

// Case 14: what a person sees when something is refused.
#[test]
fn refusals_say_what_is_wrong_once() {
    let dir = scratch("messages");
    let fifo = dir.join("fifo.msit");
    mkfifo(&fifo);
    let o = bounded(
        Command::new(BIN).args(["record", "-o", s(&fifo)]),
        Duration::from_secs(20),
    );
    assert_refused(&o, "is not a regular file");

    let settings = dir.join("msitrace.toml");
    fs::write(&settings, "state_dir = \"\"\n").unwrap();
    let o = msitrace(&[
        "daemon",
        "--config",
        s(&settings),
        "--replay",
        s(&fixture()),
    ]);
    assert_refused(&o, "state_dir is empty");

    let o = msitrace(&[
        "daemon",
        "--log-target",
        "stderr",
        "--replay",
        s(&fixture()),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    let last = e.lines().last().unwrap();
    assert!(
        last.starts_with("msitrace: notice stopped (end of the replayed files): "),
        "{last}"
    );
    fs::remove_dir_all(dir).unwrap();
}

// Case 15: kernel pointers keep every bit in JSON.
#[test]
fn dump_json_prints_pointers_as_hex_strings() {
    let dir = scratch("pointers");
    let trace = dir.join("crafted.msit");
    crafted_trace(&trace);
    let o = msitrace(&["dump", "--json", s(&trace)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let mask = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"]["kind"]["MaskEnter"].is_object())
        .expect("the MaskEnter event");
    assert_eq!(
        mask["event"]["kind"]["MaskEnter"]["chip_data"],
        "0xffff888000001001"
    );
    fs::remove_dir_all(dir).unwrap();
}

// Case 13: nothing from a trace file reaches the terminal as an escape sequence.
#[test]
fn escape_sequences_in_a_trace_do_not_reach_the_terminal() {
    let dir = scratch("escapes");
    let trace = dir.join("crafted.msit");
    crafted_trace(&trace);
    for args in [vec!["replay", s(&trace)], vec!["dump", s(&trace)]] {
        let o = msitrace(&args);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                !bytes.iter().any(|&b| b == 0x1b || b == 0x07),
                "{args:?} {name}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("6.12\\x1b]0;owned\\x07\\x1b[2J"), "{out}");
        assert!(out.contains("0000:00:02.0\\x1b[31m"), "{out}");
    }
    fs::remove_dir_all(dir).unwrap();
}

// Case 14: a closed terminal (SIGHUP) ends `record` with its trailer, as SIGTERM does.
#[test]
fn record_finishes_its_file_on_sighup() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP record_finishes_its_file_on_sighup: {why}");
        return;
    }
    let dir = scratch("sighup");
    let trace = dir.join("hup.msit");
    let mut child = Command::new(BIN)
        .args(["record", "-q", "-o", s(&trace)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The file exists once the probes are attached and the header written; the signal
    // handlers are installed right after.
    let start = Instant::now();
    while !trace.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("record still running 20 s after SIGHUP");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("stopped by SIGHUP"), "{e}");
    let dump = msitrace(&["dump", s(&trace)]);
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("# trailer: "), "{text}");
    fs::remove_dir_all(dir).unwrap();
}

// Case 14: a file that cannot be created is named once, with what to do.
#[test]
fn a_trace_file_that_cannot_be_created_is_named_once() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP a_trace_file_that_cannot_be_created_is_named_once: {why}");
        return;
    }
    let dir = scratch("no-dir");
    let trace = dir.join("missing/dir/x.msit");
    let o = msitrace(&["record", "--duration", "1", "-o", s(&trace)]);
    assert_refused(&o, "create its directory first");
    assert_eq!(stderr(&o).matches(s(&trace)).count(), 1, "{}", stderr(&o));
    fs::remove_dir_all(dir).unwrap();
}

//! `msitrace daemon` for real: its entries read back from a real systemd-journald (started in
//! a private mount namespace with its own /run and journal), and its flight recorder after
//! SIGTERM and after kill -9 on this machine's kernel. Root only; each test says why it skips.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");
const JOURNALD: &str = "/lib/systemd/systemd-journald";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/traces")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msitrace-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
#[ignore = "root-only: journald in a private mount namespace; `cargo xtask test` runs it as root"]
fn a_buggy_hibernation_gives_err_entries_in_a_real_journal() {
    support::require_root();
    for tool in [JOURNALD, "/usr/bin/journalctl", "/usr/bin/unshare"] {
        support::require(
            (!Path::new(tool).exists())
                .then(|| format!("{tool} is missing (`cargo xtask setup` installs systemd)")),
        );
    }
    // journald gets a fresh /run (its sockets) and /var/log (so storage is volatile, under
    // /run/log/journal) that nobody else sees; the daemon's entries reach it over the native
    // protocol socket as they would under systemd. The package's catalog is installed over the
    // namespace's catalog directories, and `journalctl -x` must explain an H4 entry with it.
    let dir = tmp("catalog");
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/msitrace.catalog"),
        dir.join("catalog/msitrace.catalog"),
    )
    .unwrap();
    let explained = dir.join("explained.txt");
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal
{JOURNALD} >/dev/null 2>&1 &
JPID=$!
i=0; while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
{BIN} daemon --replay {} --silence 4 --log-target journal --config /dev/null
sleep 0.5
journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=msitrace
mkdir -p /var/lib/systemd/catalog
mount -t tmpfs tmpfs /var/lib/systemd/catalog
mount --bind {catalog} /usr/lib/systemd/catalog
journalctl --update-catalog
journalctl -D /run/log/journal -x --no-pager MESSAGE_ID=6400b5e883de416c81e374b0d2ed5a38 > {explained}
kill $JPID"#,
        fixture("6.12-hibernate-buggy.msit").display(),
        catalog = dir.join("catalog").display(),
        explained = explained.display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    assert!(
        out.status.success(),
        "the journald run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let field = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let err: Vec<&Value> = entries
        .iter()
        .filter(|e| field(e, "PRIORITY") == "3")
        .collect();
    assert!(!err.is_empty(), "no err entry in the journal: {entries:?}");
    for irq in ["38", "39"] {
        for (rule, id) in [
            ("H1", "a6f7f2aa366c4572a5230e929acdbdd9"),
            ("H4", "6400b5e883de416c81e374b0d2ed5a38"),
        ] {
            let e = err
                .iter()
                .find(|e| field(e, "IRQ") == irq && field(e, "MSITRACE_RULE") == rule)
                .unwrap_or_else(|| panic!("no err {rule} entry for irq {irq}"));
            assert_eq!(field(e, "MESSAGE_ID"), id);
            assert_eq!(field(e, "DEVICE"), "0000:02:00.0");
            assert_eq!(field(e, "DRIVER"), "hv_stub");
            assert_eq!(field(e, "EPOCH"), "1");
            assert_eq!(field(e, "KERNEL"), "6.12.117+deb12-amd64");
            assert!(!field(e, "MSI_INDEX").is_empty() && !field(e, "PHASE").is_empty());
            assert!(field(e, "MESSAGE").contains(&format!("irq {irq}")));
        }
    }
    assert!(
        !entries.iter().any(|e| field(e, "IRQ") == "37"),
        "the control vector (irq 37) must have no entry"
    );
    let notice = |id: &str| {
        entries
            .iter()
            .find(|e| field(e, "MESSAGE_ID") == id)
            .map(|e| field(e, "PRIORITY"))
    };
    assert_eq!(
        notice("9ee6fdb294f54c7b9c1d212b9c30272e").as_deref(),
        Some("5"),
        "coverage"
    );
    assert_eq!(
        notice("918795556d5c4389bbefd43da5312a7d").as_deref(),
        Some("5"),
        "resume summary"
    );
    assert_eq!(
        notice("0e975160c9314087a5539e9ee52e2012").as_deref(),
        Some("5"),
        "phase change"
    );
    let text = std::fs::read_to_string(&explained).unwrap_or_default();
    assert!(
        text.contains("Subject: Unmask failed while CPUs went offline")
            && text.contains("IRQ 38 of 0000:02:00.0")
            && text.contains("915cff7f38c5"),
        "journalctl -x does not explain the H4 entry with the catalog:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Start the daemon on this kernel with its flight recorder in `dir`.
fn start_daemon(dir: &Path) -> std::process::Child {
    support::require_root();
    let mut child = Command::new(BIN)
        .args([
            "daemon",
            "--log-target",
            "stderr",
            "--config",
            "/dev/null",
            // Not into this machine's node_exporter directory.
            "--no-metrics",
            "--state-dir",
        ])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("msitrace daemon starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("the daemon exited ({st}) before its flight recorder began: {err}");
        }
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "no flight-recorder file after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replay(dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["replay", "--json"])
        .arg(dir)
        .output()
        .expect("replay runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "root-only: attaches eBPF programs; `cargo xtask test` runs it as root"]
fn sigterm_leaves_a_finished_flight_recorder() {
    let dir = tmp("term");
    let mut child = start_daemon(&dir);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let st = wait(&mut child);
    assert!(st.success(), "the daemon exited with {st} on SIGTERM");
    let (code, report) = replay(&dir);
    assert_eq!(code, 0, "{report}");
    let r: Value = serde_json::from_str(&report).expect("a JSON report");
    let warnings = r
        .get("input_warnings")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(!warnings.contains("no trailer"), "{warnings}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "root-only: attaches eBPF programs; `cargo xtask test` runs it as root"]
fn kill_9_leaves_a_file_readable_up_to_its_last_whole_record() {
    let dir = tmp("kill");
    let mut child = start_daemon(&dir);
    // Two flushes (every 250 ms) and a handler-count sample (every second) reach the file.
    std::thread::sleep(Duration::from_millis(1600));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (code, report) = replay(&dir);
    assert_eq!(code, 0, "{report}");
    let r: Value = serde_json::from_str(&report).expect("a JSON report");
    let warnings = r
        .get("input_warnings")
        .map(Value::to_string)
        .unwrap_or_default();
    assert!(
        warnings.contains("no trailer"),
        "a killed recording has no trailer: {warnings}"
    );
    let dump = Command::new(BIN)
        .arg("dump")
        .arg(&dir)
        .output()
        .expect("dump runs");
    assert!(dump.status.success());
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("irq-counts"),
        "the first samples were flushed: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #15: a full disk under the flight recorder stopped the daemon (and `Restart=` then
/// restarted it in a loop). Now the file stops, the journal says so, and the service goes on
/// until it is told to stop. The state directory is a 1 MiB tmpfs in a private mount
/// namespace, filled up once the daemon is recording.
#[test]
#[ignore = "root-only: a tmpfs in a private mount namespace and eBPF programs; `cargo xtask test` runs it as root"]
fn a_full_disk_stops_the_flight_recorder_not_the_daemon() {
    support::require_root();
    let dir = tmp("full");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let err = dir.join("daemon.err");
    // A full tmpfs still takes writes into the file's last page, so the failure comes once
    // the samples (one a second) have filled it: up to half a minute here.
    let script = r#"
        set -e
        mount -t tmpfs -o size=1m,mode=0700 msitrace-test "$1"
        mkdir -m 0700 "$1/state"
        "$2" daemon --log-target stderr --config /dev/null --no-metrics --state-dir "$1/state" > /dev/null 2> "$3" &
        pid=$!
        trap 'kill -9 $pid 2> /dev/null || true' EXIT
        i=0
        until ls "$1/state" | grep -q '^msitrace-.*\.msit$'; do
            i=$((i + 1)); [ $i -lt 300 ] || { echo "no flight-recorder file"; exit 1; }
            sleep 0.1
        done
        dd if=/dev/zero of="$1/fill" bs=4k 2> /dev/null || true
        i=0
        until grep -q 'No space left' "$3"; do
            i=$((i + 1)); [ $i -lt 1200 ] || { echo "no write failed in 120 s"; exit 1; }
            sleep 0.1
        done
        sleep 2
        kill -0 $pid || { echo "the daemon died with the disk"; exit 1; }
        kill -TERM $pid
        wait $pid
    "#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&mnt)
        .arg(BIN)
        .arg(&err)
        .output()
        .expect("unshare runs");
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = log.lines().collect();
    let failed = lines
        .iter()
        .position(|l| l.starts_with("msitrace: warning recorder:") && l.contains("No space left"))
        .unwrap_or_else(|| panic!("no warning that the file stopped:\n{log}"));
    assert!(
        lines[failed + 1..]
            .iter()
            .any(|l| l.starts_with("msitrace: notice stopped (SIGTERM)")),
        "the journal did not go on to the end:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

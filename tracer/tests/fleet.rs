//! Central journals for real: three guests (their own machine id, hostname, journald and
//! kernel, from the recorded traces through `daemon --replay`) ship their journals with
//! systemd-journal-upload to one systemd-journal-remote on 127.0.0.1; every field of the
//! daemon's entries must come out of the remote's files as the guest wrote it, and
//! `msitrace fleet` must make the table of them. Root only (mount, UTS and PID namespaces).
//! Also, without root: what `fleet` says when it has nothing to read.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const UPLOAD: &str = "/lib/systemd/systemd-journal-upload";
const K612: &str = "6.12.117+deb12-amd64";
const K61: &str = "6.1.0-56-amd64";
const K510: &str = "5.10.0-46-amd64";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msitrace-fleet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child killed and reaped however the test ends, an assertion failure included.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// Wait at most `limit` for the child to exit by itself.
    fn wait(&mut self, what: &str, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not finish in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// systemd-journal-remote on a socket bound here and handed over as systemd would
/// (LISTEN_FDS, fd 3): the port is known and listening before it starts, with no race for it.
fn start_remote(out: &Path, log: &Path) -> (Reaped, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the pid of the process that reads it: the shell's, which exec keeps.
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", REMOTE])
        .arg("--listen-http=-3")
        .arg(format!("--output={}/", out.display()))
        .arg("--split-mode=host")
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // SAFETY: only dup2 and fcntl between fork and exec. dup2 leaves the new descriptor
    // inheritable; a listener that already is fd 3 must have its close-on-exec flag cleared.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = Reaped(cmd.spawn().expect("systemd-journal-remote starts"));
    drop(listener);
    (child, port)
}

/// One guest: its own /run, /var/log, /etc/machine-id, hostname and journald; the daemon
/// replays `trace` into that journal, the guest keeps a copy of what its journal says
/// (local.json), then uploads its journal files to the remote and exits. PID namespace: if
/// the test dies, killing the shell takes journald with it.
fn start_guest(dir: &Path, host: &str, trace: &str, port: u16) -> Reaped {
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mount --bind "$1/machine-id" /etc/machine-id
hostname "$2"
mkdir -p /run/systemd/journal
{JOURNALD} >/dev/null 2>&1 &
JPID=$!
i=0; while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
"$3" daemon --replay "$4" --silence 4 --log-target journal --config /dev/null
sleep 0.5
journalctl -D /run/log/journal -o json --all --no-pager SYSLOG_IDENTIFIER=msitrace > "$1/local.json"
kill $JPID; wait $JPID || true
{UPLOAD} --url "http://127.0.0.1:$5" --follow=no -D /run/log/journal
"#
    );
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(dir)
        .arg(host)
        .arg(support::BIN)
        .arg(support::trace_fixture(trace))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("guest.err")).unwrap())
        .spawn()
        .expect("unshare runs");
    Reaped(child)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn field(e: &Value, k: &str) -> String {
    e.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Every field the sender wrote or its journald stamped, as text: all but the receiving
/// journal's own (`__CURSOR`, `__SEQNUM`, ...), which a copy cannot keep.
fn sent_fields(e: &Value) -> BTreeMap<String, String> {
    e.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

struct Guest {
    host: &'static str,
    machine_id: &'static str,
    trace: &'static str,
    kernel: &'static str,
}

const GUESTS: [Guest; 3] = [
    Guest {
        host: "guest-a",
        machine_id: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
        trace: "6.12-hibernate-buggy.msit",
        kernel: K612,
    },
    Guest {
        host: "guest-b",
        machine_id: "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
        trace: "6.1-hibernate-buggy.msit",
        kernel: K61,
    },
    Guest {
        host: "guest-c",
        machine_id: "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
        trace: "5.10-hibernate-fixed.msit",
        kernel: K510,
    },
];

#[test]
#[ignore = "root-only: journald, journal-upload and journal-remote in private namespaces; `cargo xtask test` runs it as root"]
fn three_guests_journals_survive_upload_to_journal_remote_and_make_one_fleet_table() {
    support::require_root();
    for tool in [
        JOURNALD,
        REMOTE,
        UPLOAD,
        "/usr/bin/journalctl",
        "/usr/bin/unshare",
    ] {
        support::require((!Path::new(tool).exists()).then(|| {
            format!("{tool} is missing (`cargo xtask setup` installs systemd and systemd-journal-remote)")
        }));
    }
    let started = Instant::now();
    let top = tmp("roundtrip");
    let remote_dir = top.join("remote");
    std::fs::create_dir_all(&remote_dir).unwrap();
    let (mut remote, port) = start_remote(&remote_dir, &top.join("remote.err"));

    let mut guests = Vec::new();
    for g in &GUESTS {
        let dir = top.join(g.host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("machine-id"), format!("{}\n", g.machine_id)).unwrap();
        guests.push((g, dir.clone(), start_guest(&dir, g.host, g.trace, port)));
    }
    for (g, dir, child) in &mut guests {
        let st = child.wait(g.host, Duration::from_secs(60));
        assert!(
            st.success(),
            "{} failed ({st}): {}\njournal-remote said: {}",
            g.host,
            std::fs::read_to_string(dir.join("guest.err")).unwrap_or_default(),
            std::fs::read_to_string(top.join("remote.err")).unwrap_or_default()
        );
    }
    // SIGTERM: journal-remote closes its files (offline) as it exits.
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(remote.0.id() as i32, libc::SIGTERM) },
        0
    );
    let st = remote.wait("systemd-journal-remote", Duration::from_secs(10));
    let remote_log = std::fs::read_to_string(top.join("remote.err")).unwrap_or_default();
    assert!(
        st.success(),
        "journal-remote exited with {st}: {remote_log}"
    );

    let out = Command::new("journalctl")
        .arg("-D")
        .arg(&remote_dir)
        .args([
            "-o",
            "json",
            "--all",
            "--no-pager",
            "SYSLOG_IDENTIFIER=msitrace",
        ])
        .output()
        .expect("journalctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote_entries = json_lines(&String::from_utf8_lossy(&out.stdout));
    let ids: BTreeSet<String> = remote_entries
        .iter()
        .map(|e| field(e, "_MACHINE_ID"))
        .collect();
    let want: BTreeSet<String> = GUESTS.iter().map(|g| g.machine_id.to_string()).collect();
    assert_eq!(
        ids, want,
        "three machines in the remote's journal: {remote_log}"
    );

    // What each guest's own journal said, as the expectation for the fleet table below.
    let mut expected_rows: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for (g, dir, _) in &guests {
        let local =
            json_lines(&std::fs::read_to_string(dir.join("local.json")).expect("local.json"));
        assert!(
            !local.is_empty(),
            "{}: no msitrace entry in its journal",
            g.host
        );
        for e in &local {
            assert_eq!(field(e, "_MACHINE_ID"), g.machine_id, "{}", g.host);
            assert_eq!(field(e, "_HOSTNAME"), g.host);
            assert_eq!(field(e, "KERNEL"), g.kernel, "{}", g.host);
            assert!(!field(e, "MESSAGE_ID").is_empty(), "{}: {e}", g.host);
        }
        let err: Vec<&Value> = local
            .iter()
            .filter(|e| field(e, "PRIORITY") == "3")
            .collect();
        if g.trace.contains("buggy") {
            assert!(!err.is_empty(), "{}: no err entry", g.host);
        } else {
            assert!(
                !local.iter().any(|e| !field(e, "MSITRACE_RULE").is_empty()),
                "{}: the fixed kernel diverged",
                g.host
            );
        }
        for e in &err {
            for k in [
                "MSITRACE_RULE",
                "MSITRACE_SEVERITY",
                "MSITRACE_CAUSE",
                "IRQ",
                "DEVICE",
                "DRIVER",
                "EPOCH",
                "PHASE",
            ] {
                assert!(
                    !field(e, k).is_empty(),
                    "{}: an err entry without {k}: {e}",
                    g.host
                );
            }
        }
        for e in local
            .iter()
            .filter(|e| !field(e, "MSITRACE_RULE").is_empty())
        {
            let row = expected_rows
                .entry((field(e, "KERNEL"), field(e, "MSITRACE_RULE")))
                .or_default();
            row.0.insert(field(e, "DRIVER"));
            row.1.insert(field(e, "DEVICE"));
        }
        // Every entry, every field: the same in the remote's files as in the guest's.
        let mut sent: Vec<_> = local.iter().map(sent_fields).collect();
        let mut received: Vec<_> = remote_entries
            .iter()
            .filter(|e| field(e, "_MACHINE_ID") == g.machine_id)
            .map(sent_fields)
            .collect();
        sent.sort();
        received.sort();
        assert_eq!(
            received.len(),
            sent.len(),
            "{}: entries lost or added on the way",
            g.host
        );
        for (s, r) in sent.iter().zip(&received) {
            assert_eq!(r, s, "{}: an entry changed on the way", g.host);
        }
    }

    // The table, from the remote's files.
    let dir = remote_dir.to_str().unwrap();
    let out = support::msitrace(&["fleet", "--journal-dir", dir, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Value = serde_json::from_slice(&out.stdout).expect("fleet --json is JSON");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/fleet.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errs: Vec<String> = validator
        .iter_errors(&table)
        .map(|e| format!("at {}: {e}", e.instance_path))
        .collect();
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert_eq!(table["schema_version"], 1);
    assert_eq!(table["machines"].as_array().unwrap().len(), 3);
    let rows = table["rows"].as_array().unwrap();
    let got: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> = rows
        .iter()
        .map(|r| {
            let set = |k: &str| -> BTreeSet<String> {
                r[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            (
                (field(r, "kernel"), field(r, "rule")),
                (set("drivers"), set("devices")),
            )
        })
        .collect();
    assert_eq!(
        got, expected_rows,
        "the rows are what the guests' journals said"
    );
    let row = |kernel: &str, rule: &str| {
        rows.iter()
            .find(|r| r["kernel"] == kernel && r["rule"] == rule)
            .unwrap_or_else(|| panic!("no {kernel} {rule} row: {table}"))
    };
    // One machine per kernel: each row is 1 of 1, and 5.10 (fixed) has none.
    let h1 = row(K612, "H1");
    assert_eq!(
        (
            h1["machines_diverged"].as_u64(),
            h1["machines_on_kernel"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(h1["machines"][0]["hostname"], "guest-a");
    assert_eq!(h1["drivers"], serde_json::json!(["hv_stub"]));
    assert_eq!(h1["devices"], serde_json::json!(["0000:02:00.0"]));
    assert_eq!(h1["severity"], "error");
    let h4_61 = row(K61, "H4");
    assert_eq!(
        (
            h4_61["machines_diverged"].as_u64(),
            h4_61["machines_on_kernel"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(h4_61["machines"][0]["machine_id"], GUESTS[1].machine_id);
    let c = table["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["hostname"] == "guest-c")
        .expect("guest-c is listed");
    assert_eq!(
        c["rules"],
        serde_json::json!([]),
        "the fixed guest diverged on nothing"
    );

    let out = support::msitrace(&["fleet", "--journal-dir", dir]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.starts_with("msitrace fleet: 3 machines, 3 kernels, 2 with divergences ("),
        "{text}"
    );
    let line_of = |words: &[&str]| {
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= words.len() && w[..words.len()] == *words
        })
    };
    assert!(
        line_of(&[
            K612,
            "H1",
            "error",
            "1",
            "of",
            "1",
            "hv_stub",
            "0000:02:00.0"
        ]),
        "{text}"
    );
    assert!(
        line_of(&["guest-c", GUESTS[2].machine_id, K510, "none"]),
        "{text}"
    );

    // --since goes to journalctl: nothing is that recent.
    let out = support::msitrace(&[
        "fleet",
        "--journal-dir",
        dir,
        "--since",
        "2999-01-01",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let later: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(later["machines"], serde_json::json!([]));
    assert_eq!(later["since"], "2999-01-01");
    let out = support::msitrace(&["fleet", "--journal-dir", dir, "--since", "not a time"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journalctl could not read") && err.lines().count() == 1,
        "{err}"
    );

    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the round trip took {:?}",
        started.elapsed()
    );
    drop(guests);
    drop(remote);
    let _ = std::fs::remove_dir_all(&top);
}

#[test]
fn fleet_says_in_one_line_what_to_do_when_it_has_nothing_to_read() {
    let dir = tmp("empty");
    let missing = dir.join("nope");
    for (d, says) in [
        (&missing, "is not a directory"),
        (&dir, "no journal files (*.journal)"),
    ] {
        let out = support::msitrace(&["fleet", "--journal-dir", d.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(says) && err.contains("systemd-journal-remote"),
            "{err}"
        );
    }
    // A journal file is there, journalctl is not.
    std::fs::write(dir.join("system.journal"), b"").unwrap();
    let out = Command::new(support::BIN)
        .args(["fleet", "--journal-dir", dir.to_str().unwrap()])
        .env("PATH", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journalctl is not installed") && err.lines().count() == 1,
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

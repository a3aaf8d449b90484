//! `msitrace daemon` and `msitrace probes` under the restrictions of packaging/msitrace.service,
//! reproduced without systemd so that every `cargo xtask test` run catches a regression the
//! unit would only show on a real machine: /proc/kallsyms unreadable (ProtectKernelTunables
//! mounts a mode-000 node over it), /sys and /proc/sys read-only, only the unit's bounding set
//! of capabilities (root without CAP_DAC_OVERRIDE), no_new_privs, UMask=0077. Root only; skips, saying why,
//! elsewhere.

mod support;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");

/// Run by `sh -c` inside `unshare --mount`, with the command to restrict as its arguments.
/// The mounts die with the namespace; nothing outside it changes.
const RESTRICT: &str = r#"set -e
empty=$MSITRACE_TEST_EMPTY
: > "$empty"
chmod 000 "$empty"
mount --bind "$empty" /proc/kallsyms
# A service starts after sysinit.target, where systemd's sys-kernel-tracing.mount has put
# tracefs in place; the restricted daemon could not mount it itself (no CAP_SYS_ADMIN).
[ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing
# ProtectKernelTunables=yes: /sys with every mount below it, and /proc/sys, read-only.
for m in $(awk '$5 == "/sys" || $5 ~ "^/sys/" { print $5 }' /proc/self/mountinfo); do
    mount -o remount,bind,ro "$m"
done
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
restrict="setpriv --no-new-privs --bounding-set=-all,$MSITRACE_TEST_CAPS --inh-caps=-all"
# Proof that the restrictions hold, so the test cannot pass by not restricting anything.
if $restrict head -c 1 /proc/kallsyms >/dev/null 2>&1; then
    echo "restriction not in effect: /proc/kallsyms is readable" >&2
    exit 97
fi
if awk '($5 == "/proc/sys" || $5 == "/sys" || $5 ~ "^/sys/") && $6 !~ /^ro/ { rw = 1 }
        END { exit !rw }' /proc/self/mountinfo; then
    echo "restriction not in effect: a mount of /sys or /proc/sys is writable" >&2
    exit 97
fi
umask 0077
exec $restrict "$@"
"#;

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: mount namespaces and eBPF programs need root".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("this kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    for tool in ["/usr/bin/unshare", "/usr/bin/setpriv"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (util-linux)"));
        }
    }
    None
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msitrace-restricted-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary directory");
    d
}

/// `msitrace args…` as the unit would run it.
fn restricted(work: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        RESTRICT,
        "sh",
    ])
    .arg(BIN)
    .args(args)
    .env("MSITRACE_TEST_EMPTY", work.join("empty"))
    .env("MSITRACE_TEST_CAPS", unit_capabilities());
    c
}

/// The unit's CapabilityBoundingSet as setpriv's `+cap,…` list, read from the unit itself so
/// that the test keeps up with it.
fn unit_capabilities() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/msitrace.service");
    let text = std::fs::read_to_string(&unit).expect("packaging/msitrace.service");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty(), "an empty CapabilityBoundingSet");
    caps.join(",")
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    err
}

/// The datagrams sent to the notify socket until READY=1, or why there was none.
fn wait_ready(sock: &UnixDatagram, child: &mut Child) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
            if seen.lines().any(|l| l == "READY=1") {
                return Ok(seen);
            }
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Err(format!(
                "the daemon exited ({st}) before READY=1: {}",
                stderr_of(child).trim()
            ));
        }
    }
    Err(format!("no READY=1 within 60 s (received: {seen:?})"))
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
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

/// The kprobe-style rows (not tracepoints) must say which symbol table decided them, and on
/// this setup it cannot be /proc/kallsyms.
fn assert_fallback_source(rows: &[Value], whose: &str) {
    let symbol_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| r["method"] != "tracepoint" && r["method"] != "rawtracepoint")
        .filter(|r| r["status"] != "unused")
        .collect();
    assert!(!symbol_rows.is_empty(), "{whose}: no kprobe rows: {rows:?}");
    for r in symbol_rows {
        let source = &r["symbol_source"];
        let kind = source["kind"].as_str().unwrap_or("");
        assert!(
            ["available_filter_functions", "btf"].contains(&kind),
            "{whose}: {} names no fallback symbol source: {r}",
            r["hook"]
        );
        let passed_over = source["passed_over"].to_string();
        assert!(
            passed_over.contains("/proc/kallsyms: Permission denied"),
            "{whose}: {} does not say why /proc/kallsyms was not used: {r}",
            r["hook"]
        );
        assert!(
            source["limits"].as_str().is_some_and(|l| !l.is_empty()),
            "{whose}: the fallback's limits are not said: {r}"
        );
        assert_ne!(r["status"], "error", "{whose}: {r}");
    }
}

/// Every tracepoint this kernel has is attached: the restrictions must cost none of them.
fn assert_tracepoints_attached(rows: &[Value], whose: &str) {
    let mut classic_attached = 0;
    for r in rows
        .iter()
        .filter(|r| r["method"] == "tracepoint" || r["method"] == "rawtracepoint")
    {
        let reason = r["reason"].as_str().unwrap_or("");
        match r["status"].as_str() {
            Some("attached") => classic_attached += usize::from(r["method"] == "tracepoint"),
            Some("absent") if reason.contains("is not on this kernel") => {}
            // The per-interrupt counter is not loaded by default: the handler counts come
            // from the kernel's own counters, which the restrictions must leave readable.
            Some("unused")
                if r["probe"] == "IrqHandlerEntry" && reason.contains("per_cpu_count") => {}
            _ => panic!("{whose}: a tracepoint did not attach: {r}"),
        }
    }
    assert!(
        classic_attached > 0,
        "{whose}: no classic tracepoint attached: {rows:?}"
    );
}

#[test]
#[ignore = "root-only: mount namespaces and eBPF programs; `cargo xtask test` runs it as root"]
fn the_daemon_runs_under_the_units_restrictions() {
    support::require(skip_reason());
    let work = tmp("daemon");
    let state = work.join("state");
    std::fs::create_dir(&state).expect("the state directory");
    // node_exporter's textfile directory is root's (Debian's is root:root 0755): writable
    // without CAP_DAC_OVERRIDE, and the file must come out 0644 despite UMask=0077.
    let metrics = work.join("textfile");
    std::fs::create_dir(&metrics).expect("the metrics directory");
    let notify_path = work.join("notify");
    let sock = UnixDatagram::bind(&notify_path).expect("a notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut child = restricted(
        &work,
        &[
            "daemon",
            "--log-target",
            "stderr",
            "--config",
            "/dev/null",
            "--state-dir",
            state.to_str().expect("a UTF-8 temporary path"),
            "--metrics-dir",
            metrics.to_str().expect("a UTF-8 temporary path"),
        ],
    )
    .env("NOTIFY_SOCKET", &notify_path)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("unshare runs");

    let notified = match wait_ready(&sock, &mut child) {
        Ok(n) => n,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e}");
        }
    };
    assert!(notified.contains("STATUS="), "{notified}");
    std::thread::sleep(Duration::from_secs(2));
    if let Some(st) = child.try_wait().expect("try_wait") {
        panic!(
            "the daemon died ({st}) 2 s after READY=1: {}",
            stderr_of(&mut child).trim()
        );
    }
    // Metrics are rewritten while running (the first sample a second after start), not only
    // at stop.
    assert!(
        metrics.join("msitrace.prom").exists(),
        "no msitrace.prom 2 s after READY=1"
    );
    // The pid is the daemon's: unshare, sh and setpriv each exec the next without forking.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(
        st.success(),
        "the daemon exited with {st} on SIGTERM: {err}"
    );

    let dump = Command::new(BIN)
        .args(["dump", "--json"])
        .arg(&state)
        .output()
        .expect("dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let header = lines
        .iter()
        .find_map(|l| l.get("header"))
        .expect("the flight recorder has a header");
    assert!(
        lines.iter().any(|l| l.get("trailer").is_some()),
        "the flight recorder was not closed with a trailer: {err}"
    );
    let rows = header["probes"]
        .as_array()
        .expect("the header lists probes");
    assert_tracepoints_attached(rows, "the flight recorder's header");
    assert_fallback_source(rows, "the flight recorder's header");
    // The handler counts come from /sys/kernel/irq under the same restrictions: a sample with
    // none would leave G5 and G1 blind without a word.
    let counted = lines.iter().any(|l| {
        l["event"]["kind"]["IrqCounts"]["counts"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    assert!(
        counted,
        "no handler count was read under the unit's restrictions: {err}"
    );
    assert!(!err.contains("metrics not written"), "{err}");
    let prom = metrics.join("msitrace.prom");
    let text = std::fs::read_to_string(&prom).expect("msitrace.prom written at stop");
    assert!(text.contains("\nmsitrace_hooks_attached "), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter's user must read msitrace.prom");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
#[ignore = "root-only: mount namespaces and eBPF programs; `cargo xtask test` runs it as root"]
fn probes_runs_under_the_units_restrictions_and_names_its_symbol_source() {
    support::require(skip_reason());
    let work = tmp("probes");
    let out: Output = restricted(&work, &["probes", "--json"])
        .output()
        .expect("unshare runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "probes --json failed: {err}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON object");
    let rows: Vec<Value> = serde_json::from_value(report["probes"].clone()).expect("an array");
    assert_tracepoints_attached(&rows, "probes --json");
    assert_fallback_source(&rows, "probes --json");

    let text = restricted(&work, &["probes"])
        .output()
        .expect("unshare runs");
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Kernel symbols from ") && text.contains("/proc/kallsyms: Permission denied"),
        "the table does not say where the symbols came from: {text}"
    );
    let _ = std::fs::remove_dir_all(&work);
}

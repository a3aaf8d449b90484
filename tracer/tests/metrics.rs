//! The daemon's metrics as Prometheus gets them: `msitrace daemon --replay` writes
//! msitrace.prom for Debian's real node_exporter, whose textfile collector serves it on a
//! loopback port, scraped here over plain HTTP; and the alerting rules shipped in
//! packaging/ checked and unit-tested with promtool. Root only (`cargo xtask setup`
//! installs both programs as root); each test says what it is missing.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_msitrace");
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const PROMTOOL: &str = "/usr/bin/promtool";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msitrace-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn require_tool(path: &str, package: &str) {
    support::require(
        (!Path::new(path).exists()).then(|| {
            format!("{path} is missing (`cargo xtask setup` installs {package}, as root)")
        }),
    );
}

/// node_exporter, killed when the test ends however it ends.
struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now (the kernel's choice), for node_exporter to take.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

/// `GET /metrics` over HTTP/1.0 (no chunking, the server closes): the body, or why not.
fn scrape(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

fn start_exporter(dir: &Path) -> (Exporter, u16) {
    let mut last = String::new();
    // The free port may be taken again before node_exporter binds it: a few tries.
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node_exporter starts");
        let mut ex = Exporter(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = ex.0.try_wait().expect("try_wait") {
                let mut err = String::new();
                let _ = ex.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
                last = format!("node_exporter exited ({st}): {err}");
                break;
            }
            match scrape(port) {
                Ok(_) => return (ex, port),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("node_exporter did not serve /metrics: {last}");
}

/// The value of one series in an exposition, by its name and labels as written.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
#[ignore = "root-only: Debian's node_exporter, which `cargo xtask setup` installs as root; `cargo xtask test` runs it as root"]
fn node_exporter_serves_the_metrics_of_a_buggy_hibernation() {
    support::require_root();
    require_tool(NODE_EXPORTER, "prometheus-node-exporter");
    let dir = tmp("textfile");
    let (_exporter, port) = start_exporter(&dir);
    let out = Command::new(BIN)
        .args(["daemon", "--log-target", "stderr", "--config", "/dev/null"])
        .arg("--metrics-dir")
        .arg(&dir)
        .arg("--replay")
        .arg(repo("tests/fixtures/traces/6.12-hibernate-buggy.msit"))
        .output()
        .expect("msitrace runs");
    assert!(
        out.status.success(),
        "the replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("msitrace.prom");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("msitrace.prom written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "node_exporter's user must read it");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["msitrace.prom"], "a temporary file was left");

    let text = scrape(port).expect("a scrape");
    assert_eq!(
        value(&text, "node_textfile_scrape_error"),
        Some(0.0),
        "node_exporter could not parse msitrace.prom:\n{text}"
    );
    for (series, want) in [
        (
            r#"msitrace_divergences_total{rule="H1",severity="error"}"#,
            2.0,
        ),
        (
            r#"msitrace_divergences_total{rule="H4",severity="error"}"#,
            2.0,
        ),
        (
            r#"msitrace_divergences_total{rule="H4",severity="warning"}"#,
            2.0,
        ),
        (
            r#"msitrace_divergences_total{rule="G5",severity="error"}"#,
            0.0,
        ),
        ("msitrace_vectors", 16.0),
        ("msitrace_vectors_diverged", 2.0),
        ("msitrace_resume_epochs_total", 1.0),
        ("msitrace_hooks_attached", 28.0),
        ("msitrace_hooks_expected", 29.0),
        (r#"msitrace_events_lost_total{probe="hv_irq_unmask"}"#, 0.0),
        (
            &format!(
                r#"msitrace_info{{kernel="6.12.117+deb12-amd64",version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    let last = value(&text, "msitrace_last_resume_timestamp_seconds").expect("last resume");
    assert!(last > 1.6e9, "a wall-clock time: {last}");
    // The types survive node_exporter: counters stay counters (an OpenMetrics file would
    // have come out untyped).
    for t in [
        "# TYPE msitrace_divergences_total counter",
        "# TYPE msitrace_events_lost_total counter",
        "# TYPE msitrace_resume_epochs_total counter",
        "# TYPE msitrace_vectors gauge",
        "# TYPE msitrace_info gauge",
    ] {
        assert!(text.lines().any(|l| l == t), "no `{t}` in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "root-only: promtool, which `cargo xtask setup` installs as root; `cargo xtask test` runs it as root"]
fn the_alerting_rules_are_valid_and_fire_when_they_should() {
    support::require_root();
    require_tool(PROMTOOL, "prometheus");
    for args in [
        ["check", "rules", "packaging/msitrace.rules.yml"],
        ["test", "rules", "packaging/msitrace.rules.test.yml"],
    ] {
        let out = Command::new(PROMTOOL)
            .args(args)
            .current_dir(repo(""))
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[ignore = "root-only: promtool, which `cargo xtask setup` installs as root; `cargo xtask test` runs it as root"]
fn promtool_finds_nothing_to_lint_in_the_metrics() {
    support::require_root();
    require_tool(PROMTOOL, "prometheus");
    let dir = tmp("lint");
    let st = Command::new(BIN)
        .args(["daemon", "--log-target", "stderr", "--config", "/dev/null"])
        .arg("--metrics-dir")
        .arg(&dir)
        .arg("--replay")
        .arg(repo("tests/fixtures/traces/6.12-hibernate-buggy.msit"))
        .stderr(Stdio::null())
        .status()
        .expect("msitrace runs");
    assert!(st.success());
    let file = std::fs::File::open(dir.join("msitrace.prom")).expect("msitrace.prom written");
    let out = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(file)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

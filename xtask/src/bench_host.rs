//! The figures `cargo xtask bench` measures on the running kernel with the release binary:
//! what each program costs per event by the kernel's own accounting (kernel.bpf_stats_enabled:
//! run_time_ns / run_cnt), side by side with bpftrace doing the same work on the same hook in
//! the same run; the daemon's peak memory on 10,000 vectors; the daemon's CPU while idle.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::is_root;
use serde_json::{Value, json};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's BPF run-time accounting on, and back to what it was when dropped.
struct StatsOn(String);

impl StatsOn {
    fn new() -> Result<StatsOn> {
        let old = fs::read_to_string(STATS).with_context(|| format!("cannot read {STATS}"))?;
        fs::write(STATS, "1").with_context(|| format!("cannot enable {STATS}"))?;
        Ok(StatsOn(old.trim().to_string()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = fs::write(STATS, &self.0);
    }
}

/// Kills the child if the measurement stops half-way.
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(c.id() as i32, sig);
    }
}

/// Start `cmd`, and wait until a line of its `stream` output contains `ready`.
fn start(mut cmd: Command, stderr: bool, ready: &str) -> Result<Reaped> {
    if stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let out: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().context("no stderr")?)
    } else {
        Box::new(child.stdout.take().context("no stdout")?)
    };
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !told && line.contains(&ready) {
                let _ = tx.send(());
                told = true;
            }
        }
    });
    let child = Reaped(Some(child));
    rx.recv_timeout(Duration::from_secs(60))
        .with_context(|| format!("{:?} did not get ready in 60 s", cmd.get_program()))?;
    Ok(child)
}

/// Interrupts from the disk: written, fsynced, for `d`.
fn disk_load(d: Duration) -> Result<()> {
    let path = std::env::temp_dir().join(format!("msitrace-bench-load-{}", std::process::id()));
    let t = Instant::now();
    let mut round = 0u8;
    while t.elapsed() < d {
        fs::write(&path, vec![round; 256 << 10])?;
        fs::File::open(&path)?.sync_all()?;
        round = round.wrapping_add(1);
    }
    let _ = fs::remove_file(&path);
    Ok(())
}

/// run_time_ns and run_cnt of a process's BPF programs of one type, from /proc/PID/fdinfo.
fn prog_stats(pid: u32, prog_type: u32) -> (u64, u64) {
    let (mut ns, mut cnt) = (0, 0);
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    for fd in fds.filter_map(|e| e.ok()) {
        let is_prog =
            fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("prog_type:") == Some(u64::from(prog_type)) {
            ns += field("run_time_ns:").unwrap_or(0);
            cnt += field("run_cnt:").unwrap_or(0);
        }
    }
    (ns, cnt)
}

fn ensure_bpftrace() -> Result<()> {
    if Command::new("bpftrace").arg("--version").output().is_ok() {
        return Ok(());
    }
    println!("bench: installing bpftrace (apt-get) for the comparison");
    let ok = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "bpftrace",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("bpftrace is missing and apt-get could not install it");
    }
    Ok(())
}

/// msitrace and bpftrace on `irq:irq_handler_entry`, at once, under the same disk load. It is
/// the hook of msitrace's that fires on demand on a host without kprobes. Both take the IRQ
/// number and add one to a per-IRQ count in a map that user space reads: bpftrace with
/// `@[args->irq] = count()` on the classic tracepoint (a per-CPU hash; Debian's bpftrace 0.17
/// has no raw tracepoints), msitrace on the raw tracepoint, in the IRQ's slot of an array,
/// plus its per-probe hit counter.
pub fn kernel_costs(bin: &Path) -> Result<Value> {
    if !is_root() {
        bail!("needs root (BPF statistics, attaching programs)");
    }
    ensure_bpftrace()?;
    let _stats = StatsOn::new()?;
    let trace = std::env::temp_dir().join(format!("msitrace-bench-{}.msit", std::process::id()));
    let mut rec = Command::new(bin);
    // The program is the opt-in source of handler counts; by default none runs.
    rec.args(["record", "--quiet", "--irq-counts", "bpf", "-o"])
        .arg(&trace);
    let mut msitrace = start(rec, true, "recording to")?;
    let mut bt = Command::new("bpftrace");
    bt.args([
        "-e",
        "tracepoint:irq:irq_handler_entry { @[args->irq] = count(); }",
    ]);
    let mut bpftrace = start(bt, false, "Attaching")?;
    disk_load(Duration::from_secs(5))?;
    let bt_pid = bpftrace.0.as_ref().map(Child::id).unwrap_or(0);
    // BPF_PROG_TYPE_TRACEPOINT.
    let (bt_ns, bt_cnt) = prog_stats(bt_pid, 5);
    if let Some(c) = &msitrace.0 {
        signal(c, libc::SIGINT);
    }
    if let Some(mut c) = msitrace.0.take() {
        c.wait()?;
    }
    if let Some(c) = &bpftrace.0 {
        signal(c, libc::SIGINT);
    }
    if let Some(mut c) = bpftrace.0.take() {
        let _ = c.wait();
    }
    let dump = Command::new(bin)
        .arg("dump")
        .arg(&trace)
        .arg("--json")
        .output()?;
    let _ = fs::remove_file(&trace);
    let trailer = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("trailer").cloned())
        .context("msitrace's recording has no trailer")?;
    let mut programs = Vec::new();
    let mut handler = None;
    for row in trailer["bpf_stats"].as_array().into_iter().flatten() {
        let (Some(p), Some(ns), Some(runs)) = (row[0].as_str(), row[1].as_u64(), row[2].as_u64())
        else {
            continue;
        };
        if p == "IrqHandlerEntry" {
            handler = Some((ns, runs));
        }
        programs.push(
            json!({"probe": p, "run_ns": ns, "runs": runs, "ns_per_event": ns.checked_div(runs)}),
        );
    }
    let (m_ns, m_cnt) = handler.context("msitrace's irq_handler_entry did not run")?;
    if bt_cnt == 0 {
        bail!("bpftrace's program did not run");
    }
    let m = m_ns as f64 / m_cnt as f64;
    let b = bt_ns as f64 / bt_cnt as f64;
    Ok(json!({
        "hook": "irq:irq_handler_entry",
        "msitrace_ns_per_event": m, "msitrace_events": m_cnt,
        "bpftrace_ns_per_event": b, "bpftrace_events": bt_cnt,
        "ratio": m / b,
        "msitrace_programs": programs,
    }))
}

/// Peak RSS of `msitrace daemon --replay` over the 10,000-vector workload: the daemon's whole
/// state for that many vectors, and its logging path.
pub fn daemon_rss(bin: &Path, workload: &Path) -> Result<u64> {
    let child = Command::new(bin)
        .args([
            "daemon",
            "--config",
            "/dev/null",
            "--log-target",
            "stderr",
            "--replay",
        ])
        .arg(workload)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start msitrace daemon --replay")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("msitrace daemon --replay failed (status {status})");
    }
    Ok(usage.ru_maxrss as u64 * 1024)
}

/// Windows the idle watch is cut into: their spread says how steady the figure is.
const IDLE_WINDOWS: u64 = 6;

/// The live daemon (`msitrace daemon`, recording to a temporary flight-recorder directory)
/// left idle for `secs`: its CPU time and wake-ups per window of `secs / 6`, summed over its
/// threads, then where its memory is, from /proc/PID/smaps.
pub fn live_daemon(bin: &Path, secs: u64) -> Result<Value> {
    if !is_root() {
        bail!("needs root (the live daemon attaches programs)");
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("msitrace-bench-state-{}", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.args([
        "daemon",
        "--config",
        "/dev/null",
        "--log-target",
        "stderr",
        "--state-dir",
    ])
    .arg(&dir);
    let mut d = start(cmd, true, "coverage")?;
    let pid = d.0.as_ref().map(Child::id).unwrap_or(0);
    // Nanoseconds on a CPU (schedstat's first field: the 10 ms clock ticks of /proc/PID/stat
    // are a twelfth of the whole budget over 60 s) and context switches, voluntary or not:
    // each is a wake-up.
    let sample = || -> Result<(u64, u64)> {
        let (mut ns, mut switches) = (0, 0);
        for t in fs::read_dir(format!("/proc/{pid}/task"))? {
            let t = t?.path();
            let stat = fs::read_to_string(t.join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            for l in fs::read_to_string(t.join("status"))
                .unwrap_or_default()
                .lines()
            {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    switches += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        Ok((ns, switches))
    };
    // Settle: the start-up (BTF, seed) is not idle time.
    std::thread::sleep(Duration::from_secs(2));
    let window = Duration::from_secs((secs / IDLE_WINDOWS).max(1));
    let (mut cpu, mut wakeups) = (Vec::new(), Vec::new());
    let (mut last, mut at) = (sample()?, Instant::now());
    let (first, t0) = (last, at);
    for _ in 0..IDLE_WINDOWS {
        std::thread::sleep(window);
        let (now, t) = (sample()?, Instant::now());
        let wall = t.duration_since(at).as_secs_f64();
        cpu.push(now.0.saturating_sub(last.0) as f64 / 1e9 / wall * 100.0);
        wakeups.push(now.1.saturating_sub(last.1) as f64 / wall);
        (last, at) = (now, t);
    }
    let wall = at.duration_since(t0).as_secs_f64();
    let threads = fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("cannot read /proc/{pid}/smaps"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(c) = &d.0 {
        signal(c, libc::SIGTERM);
    }
    if let Some(mut c) = d.0.take() {
        let _ = c.wait();
    }
    let _ = fs::remove_dir_all(&dir);
    let m = memory(&smaps);
    Ok(json!({
        "seconds": wall,
        "threads": threads,
        "cpu_percent": (last.0 - first.0) as f64 / 1e9 / wall * 100.0,
        "cpu_percent_windows": cpu,
        "wakeups_per_s": (last.1 - first.1) as f64 / wall,
        "wakeups_per_s_windows": wakeups,
        "memory_kib": m,
        "peak_rss_kib": peak_kib,
        "btf_vmlinux_bytes": fs::metadata("/sys/kernel/btf/vmlinux").map(|m| m.len()).ok(),
    }))
}

/// Resident memory by kind, in KiB, from a smaps text. The ring buffer's data pages are
/// mapped twice in a row (so that a record can wrap), so its Rss counts them twice; its Pss
/// (a page mapped n times counts 1/n each time) is the memory it takes.
fn memory(smaps: &str) -> Value {
    let (mut ring_rss, mut ring_pss, mut heap, mut anon, mut stack, mut code) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut rss, mut pss) = (0u64, 0u64);
    let mut name = String::new();
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let Some(first) = f.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode, [name].
            name = f.nth(4).unwrap_or("").to_string();
            continue;
        }
        let kib = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match first {
            "Rss:" => {
                rss += kib;
                match name.as_str() {
                    // The ring, and the few pages of its producer and consumer positions.
                    "anon_inode:bpf-map" => ring_rss += kib,
                    "[heap]" => heap += kib,
                    "" => anon += kib,
                    n if n.starts_with("[stack") => stack += kib,
                    n if n.starts_with('/') => code += kib,
                    _ => {}
                }
            }
            "Pss:" => {
                pss += kib;
                if name == "anon_inode:bpf-map" {
                    ring_pss += kib;
                }
            }
            _ => {}
        }
    }
    json!({
        "rss": rss, "pss": pss,
        "ring_rss": ring_rss, "ring": ring_pss,
        "heap": heap + anon, "stacks": stack, "code": code,
        "other": rss.saturating_sub(ring_rss + heap + anon + stack + code),
        "resident": rss - ring_rss + ring_pss,
    })
}

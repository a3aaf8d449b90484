//! One guest under QEMU TCG: boot the kernel with the initramfs and a plan on the command line,
//! watch the serial console, wake a guest that sleeps too long, quit QEMU when the guest says
//! it is done (its own power-off is not trusted after a real S3 under TCG), and treat a
//! timeout, a silent console, a panic, an RCU stall or a soft lockup as a failed run.
//!
//! Files come back on a second raw virtio disk (serial `vmt-out`) that the guest overwrites
//! with a tar of /out after each step. A disk beats the serial line here: the tar is written
//! between steps, never while a sleep or a hibernation image is in flight, the disk is never
//! mounted so a hibernation cannot leave a file system half-written, and megabytes of trace
//! cost nothing on the console.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{kernel::Kernel, plan::Step};

/// Console lines that end a run as failed. `Kernel panic` also covers oopses with
/// panic_on_oops; the others are the hangs TCG guests are prone to.
const FATAL: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: soft lockup",
    "watchdog: BUG: soft lockup",
    "rcu_sched self-detected stall",
    "rcu_preempt self-detected stall",
    "rcu: INFO: rcu_sched detected stalls",
    "rcu: INFO: rcu_preempt detected stalls",
    "detected stalls on CPUs/tasks",
    "BUG: unable to handle",
    "general protection fault",
    "Oops: ",
];

/// QEMU 10.0.2 under TCG has aborted like this while rebooting for a hibernation resume.
const QEMU_FLAKE: &str = "iotlb_to_section";

/// A guest that prints nothing for this long is hung (the longest quiet stretch is a
/// hibernation: image write, reboot and image load, ~30 s on an idle machine).
const SILENCE_LIMIT: Duration = Duration::from_secs(150);

/// After "VMT wake-me", the RTC alarm wakes an S3 guest in ~2 s; if it has not said "woke"
/// this long after, the host presses the wake button (`system_wakeup`).
const WAKE_AFTER: Duration = Duration::from_secs(10);

pub struct RunSpec<'a> {
    pub kernel: &'a Kernel,
    pub initrd: &'a Path,
    pub plan: &'a [Step],
    pub dir: PathBuf,
    pub msitrace: bool,
    /// `msitrace probes --json --timings` runs before the first recording (`vmt.probes=1`).
    pub probes: bool,
    /// G5's window for `msitrace record --silence`; buggy-mode resume steps keep recording a
    /// second longer after the resume.
    pub g5_silence_s: u64,
    /// Prefix of progress lines.
    pub label: String,
    /// The Debian root disk to boot systemd from (`vmt.root=systemd`), for runs that test the
    /// service; each run boots a fresh copy.
    pub root_image: Option<&'a Path>,
    /// The instruction-counting plugin (tests/guest-insns), for the stream step: its counts go
    /// to the step's directory as insns.txt.
    pub insn_plugin: Option<&'a Path>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The guest printed `VMT done` and the host quit QEMU.
    Done,
    Timeout(Duration),
    Silent(Duration),
    /// The console line that made it fatal.
    Fatal(String),
    /// QEMU ended by itself (or could not start): its status and stderr's last line.
    QemuExited(String),
}

impl End {
    pub fn describe(&self) -> String {
        match self {
            End::Done => "completed".into(),
            End::Timeout(d) => format!("timed out after {} s", d.as_secs()),
            End::Silent(d) => format!("hung: no console output for {} s", d.as_secs()),
            End::Fatal(l) => format!("guest failed: {l}"),
            End::QemuExited(s) => format!("QEMU exited: {s}"),
        }
    }
}

pub struct RunOutcome {
    pub end: End,
    pub wall: Duration,
    /// QEMU's CPU time (user and system, all its threads), read just before it was stopped:
    /// how much of the wall time the host's cores were busy, which says whether runs can share
    /// the machine.
    pub cpu: Option<Duration>,
    pub console: PathBuf,
    /// What the guest wrote to its second serial port (`msitrace live`'s screen).
    pub tty1: PathBuf,
    /// Where the guest's /out was extracted (present even after a failed run: the guest saves
    /// after every step).
    pub artifacts: PathBuf,
    pub artifact_error: Option<String>,
    /// Why the run was retried, when it was.
    pub retried: Option<String>,
}

impl RunSpec<'_> {
    pub fn timeout(&self) -> Duration {
        // Generous for a loaded 2-core machine, bounded so a hung guest cannot stall CI.
        let steps: u64 = self
            .plan
            .iter()
            .map(|s| match s.scenario {
                super::plan::Scenario::Hibernate | super::plan::Scenario::HibernateLate => 150,
                super::plan::Scenario::S3 => 70,
                super::plan::Scenario::Burst => 240,
                // Eighteen starts of a tracer (bpftrace compiles its script each time) and
                // bursts, some 12 minutes. Under instruction counting, both vCPUs on one host
                // thread.
                super::plan::Scenario::Stream => 1800,
                _ => 60,
            })
            .sum();
        // systemd's boot under TCG, the package install, the watchdog wait and the restart.
        let systemd = if self.root_image.is_some() { 180 } else { 0 };
        Duration::from_secs(
            120 + systemd + steps + (self.g5_silence_s + 1) * self.plan.len() as u64,
        )
    }

    /// A run with a real S3 boots the bzImage: from QEMU's PVH entry (10.0.2) the RTC wake-up
    /// of a sleeping 6.12 guest never came, and the wake button rebooted it afresh.
    fn boot_image(&self) -> PathBuf {
        if self
            .plan
            .iter()
            .any(|s| s.scenario == super::plan::Scenario::S3)
        {
            self.kernel.vmlinuz()
        } else {
            self.kernel.boot_image()
        }
    }

    fn cmdline(&self) -> String {
        let plan: Vec<String> = self.plan.iter().map(|s| s.plan_item()).collect();
        // iomem=relaxed: Debian's kernels are built with CONFIG_IO_STRICT_DEVMEM, under which
        // the kernel refuses to map a BAR its driver has claimed (sysfs resourceN: EINVAL), so
        // `msitrace check` cannot read hv_stub's MSI-X table; the README tells users the same.
        // hibernate=nocompress: under TCG the image's LZO is the slow part of a hibernation
        // (6.12, 88 MB: written in 4.9 s and read back in 7.1 s, one thread each way; 29 s on a
        // loaded host), and QEMU's raw disk takes the plain pages at ~80 MB/s (1.0 s, 1.2 s).
        // watchdog_thresh=60, rcu_cpu_stall_timeout=120: a loop the kernel runs without a
        // reschedule lasts seconds under TCG and tens of seconds when the host's cores are
        // shared by three guests: 6.1's boot kernel loading a 46,240-page image ran 25 s in
        // snapshot_write_next on a fresh-clone CI and the soft-lockup detector (20 s) ended the
        // run. A real hang still shows, at 120 s, inside every run's timeout.
        // rcu_expedited: every kprobe msitrace detaches, every CPU offline and module unload
        // waits for RCU grace periods, which under TCG take tens of milliseconds each: 6.12,
        // hotplug, reset and pm_test=platform in one run, 28 s twice against 34 and 35 s, and
        // 17-18 s of QEMU's CPU against 19-21 (interleaved). Nothing here tests RCU's pace.
        let mut line = format!(
            "console=ttyS0,115200 rdinit=/init panic=0 no_console_suspend loglevel=4 \
             mitigations=off iomem=relaxed hibernate=nocompress \
             watchdog_thresh=60 rcupdate.rcu_cpu_stall_timeout=120 rcupdate.rcu_expedited=1 \
             vmt.plan={} vmt.msitrace={} vmt.probes={} vmt.g5silence={}",
            plan.join(","),
            u8::from(self.msitrace),
            u8::from(self.probes),
            self.g5_silence_s
        );
        if self.root_image.is_some() {
            // systemd's own status lines stay on the console (they show where a boot hangs);
            // no first-boot questions on it.
            line.push_str(" vmt.root=systemd systemd.firstboot=off systemd.show_status=error");
            // The kernel's PM lines (image found, restored, devices resumed) say where a
            // hibernation of a whole system stops.
            // The steps' lines come through /dev/kmsg there: unthrottled.
            line = line.replace(
                "loglevel=4",
                "loglevel=7 pm_debug_messages printk.devkmsg=on",
            );
        }
        line
    }
}

/// Whether a failed run earns its one retry, and why. Only failures that say nothing about
/// msitrace's verdicts: QEMU's own TCG abort; a guest that never got as far as the harness (no
/// `VMT` line on the console: under TCG the kernel has been seen to stall in RCU during boot,
/// before init ran); and a guest gone silent in a sleep step ([`hung_in_sleep_step`]). Any other
/// failure of a guest that reached the harness is never retried: that could hide a real one.
/// A retry is a fact of every row of its run, and vm-test names it again at the end.
pub fn retry_reason(end: &End, console: &str) -> Option<String> {
    match end {
        End::Done => None,
        End::QemuExited(msg) if msg.contains(QEMU_FLAKE) => Some(format!(
            "QEMU aborted ({msg}); known QEMU 10.0.2 TCG flake, retried once"
        )),
        _ if !reached_harness(console) => {
            Some("the guest never reached the harness (no VMT line on the console): retried".into())
        }
        End::Fatal(msg) if is_stall(msg) => stalled_restoring_image(console).map(|line| {
            format!(
                "the guest stalled ({msg}) after it restarted to restore its hibernation image, \
                 before the harness spoke again (its last line `{line}`); retried once (under \
                 TCG the kernel that boots to load the image has stalled in RCU so, like a \
                 first boot; a second stall fails the run)"
            )
        }),
        End::Silent(d) => hung_in_sleep_step(console).map(|line| {
            format!(
                "the guest went silent for {} s in or right after a sleep, its last line `{line}`; \
                 retried once (6.12 under TCG has hung so after pm_test with and without the \
                 daemon; a second hang fails the run)",
                d.as_secs()
            )
        }),
        _ => None,
    }
}

/// The console's last `VMT` line, when it belongs to a step that suspends (pm_test, S3,
/// hibernation). Under TCG the guest kernel has hung there with no message at all (no RCU
/// stall, no hung task: its timers stop), twice in 6.12's pm_test steps; a hang anywhere else,
/// or one that comes back in the retry, is a failure like any other.
fn hung_in_sleep_step(console: &str) -> Option<String> {
    let line = console
        .lines()
        .rev()
        .map(|l| l.trim_start_matches('\r'))
        .filter_map(|l| {
            if l.starts_with("VMT ") {
                Some(l)
            } else if l.starts_with('[') {
                l.find("] VMT ").map(|i| &l[i + 2..])
            } else {
                None
            }
        })
        .next()?;
    let id = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("step="))
        .or_else(|| line.strip_prefix("VMT step ")?.split_whitespace().next())?;
    let scenario = id.split('.').next()?;
    matches!(
        scenario,
        "pmtest-platform" | "pmtest-core" | "s3" | "hibernate" | "hibernate-late"
    )
    .then(|| line.to_string())
}

/// An RCU stall or a soft lockup: a CPU that did not get to run, which TCG causes on a loaded
/// host. An oops, a panic or a bad access is never one of these.
fn is_stall(msg: &str) -> bool {
    msg.contains("stall") || msg.contains("soft lockup")
}

/// The hibernation step's last `VMT` line, when the guest has since printed the restart that
/// boots a fresh kernel to load the image and nothing of the harness after it. Before its init
/// prints anything, that kernel has run no msitrace and no harness: its failure is a boot
/// failure like [`reached_harness`]'s (the console's earlier `VMT` lines belong to the boot it
/// replaces). Once its init has spoken it is not excused: from `resume-image` on, the image
/// and its hooks may be running.
fn stalled_restoring_image(console: &str) -> Option<String> {
    let restart = console.rfind(RESTART)?;
    if reached_harness(&console[restart..]) {
        return None;
    }
    let line = hung_in_sleep_step(&console[..restart])?;
    line.contains("step=hibernate").then_some(line)
}

/// What the kernel prints (KERN_EMERG, so at any loglevel) as it reboots after writing a
/// hibernation image with /sys/power/disk = reboot.
const RESTART: &str = "reboot: Restarting system";

/// A `VMT` line as [`watch`] reads them: at the start of a line (maybe after systemd's
/// carriage return) or after the kernel log's timestamp.
fn reached_harness(console: &str) -> bool {
    console.lines().any(|l| {
        let l = l.trim_start_matches('\r');
        l.starts_with("VMT ") || (l.starts_with('[') && l.contains("] VMT "))
    })
}

/// Run the guest; a run that [`retry_reason`] excuses is retried once, the first attempt's
/// console kept beside the second's.
pub fn run(spec: &RunSpec) -> Result<RunOutcome> {
    fs::create_dir_all(&spec.dir)?;
    let first = run_once(spec)?;
    let console = fs::read(&first.console).unwrap_or_default();
    if let Some(why) = retry_reason(&first.end, &String::from_utf8_lossy(&console)) {
        let kept = spec.dir.join("console.attempt1.log");
        println!(
            "vm: {}: {why} (first attempt: {}; its console: {})",
            spec.label,
            first.end.describe(),
            kept.display()
        );
        let _ = fs::rename(&first.console, &kept);
        let _ = fs::rename(
            spec.dir.join("qemu.stderr"),
            spec.dir.join("qemu.attempt1.stderr"),
        );
        let mut second = run_once(spec)?;
        second.retried = Some(format!("first attempt: {}; {why}", first.end.describe()));
        return Ok(second);
    }
    Ok(first)
}

fn run_once(spec: &RunSpec) -> Result<RunOutcome> {
    let console = spec.dir.join("console.log");
    let tty1 = spec.dir.join("tty1.log");
    let stderr_path = spec.dir.join("qemu.stderr");
    let swap = spec.dir.join("swap.img");
    let outdisk = spec.dir.join("out.img");
    let rootdisk = spec.dir.join("root.img");
    let artifacts = spec.dir.join("artifacts");
    for f in [&console, &tty1, &swap, &outdisk, &rootdisk] {
        let _ = fs::remove_file(f);
    }
    if artifacts.exists() {
        fs::remove_dir_all(&artifacts)?;
    }
    // Sparse files: the swap holds one hibernation image, the output disk one tar of /out.
    fs::File::create(&swap)?.set_len(512 << 20)?;
    fs::File::create(&outdisk)?.set_len(256 << 20)?;
    fs::File::create(&console)?;
    if let Some(image) = spec.root_image {
        super::rootfs::copy_for_run(image, &rootdisk)?;
    }
    // A unix socket path must fit in 108 bytes; the work directory may be deep. Runs of
    // different kernels share their directory's name (run-1) and may run at once.
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let monitor = std::env::temp_dir().join(format!(
        "msitrace-vm-{}-{}.sock",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_file(&monitor);

    let hibernates = spec.plan.iter().any(|s| s.scenario.hibernates());
    let mut cmd = Command::new("qemu-system-x86_64");
    // Without ERMS and FSRM the guest kernel copies and clears memory with 8-byte moves instead
    // of `rep movsb`/`rep stosb`, which TCG runs a byte per iteration: the late hibernation's
    // run took 28-29 s of QEMU's CPU against 32-34 s with both (6.12, interleaved), most of it
    // in the hibernation (the image's copy, write and restore). Nothing here tests them.
    cmd.args([
        "-machine",
        "q35",
        "-cpu",
        "max,erms=off,fsrm=off",
        "-smp",
        "2",
        "-m",
        "1024",
    ]);
    // One host thread for both vCPUs. Guests run several at a time (`--jobs`), and with a
    // thread per vCPU two guests already kept more threads runnable than this machine has
    // cores: three single-threaded guests at a time ended the 6.12 plan in 131-156 s, two of
    // the other kind in 174-187 s (interleaved runs), for about the same CPU.
    cmd.args(["-accel", "tcg,thread=single"]);
    // The stream step compares programs by the kernel's bpf_stats, which time them. Under
    // plain TCG that time follows the emulator (translation, its caches, the host's load) more
    // than the programs; with instruction counting the guest's clock advances 8 ns per guest
    // instruction, so a program's run time is its instruction count, helpers included.
    if spec
        .plan
        .iter()
        .any(|s| s.scenario == super::plan::Scenario::Stream)
    {
        cmd.args(["-icount", "shift=3,sleep=on"]);
    }
    let insns = spec.dir.join("insns.txt");
    let _ = fs::remove_file(&insns);
    if let Some(plugin) = spec.insn_plugin {
        cmd.arg("-plugin")
            .arg(format!("{},out={}", plugin.display(), insns.display()));
    }
    cmd.args(["-display", "none", "-nodefaults", "-no-user-config"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .arg("-kernel")
        .arg(spec.boot_image())
        .arg("-initrd")
        .arg(spec.initrd)
        .arg("-append")
        .arg(spec.cmdline())
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        // ttyS1: the terminal `msitrace live` draws on in the guest, kept apart from the console
        // whose lines the host parses.
        .arg("-serial")
        .arg(format!("file:{}", tty1.display()));
    for i in 1..=4 {
        cmd.arg("-device").arg(format!(
            "pcie-root-port,id=rp{i},bus=pcie.0,chassis={i},slot={i}"
        ));
    }
    cmd.args(["-netdev", "hubport,id=n0,hubid=0"])
        .args([
            "-device",
            "virtio-net-pci,netdev=n0,bus=rp1,mq=on,vectors=6,romfile=",
        ])
        .args(["-netdev", "hubport,id=n1,hubid=1"])
        .args(["-device", "e1000e,netdev=n1,bus=rp2,romfile="])
        // cache=unsafe on every disk: each guest flush (the hibernation image's, the output
        // disk's conv=fsync after every step) would otherwise wait on a host fdatasync of a
        // scratch file no one needs after a host crash, on a disk other jobs share (6.12's
        // hibernate.fixed: 39 s against 42 s with the default writeback).
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=swap,format=raw,cache=unsafe",
            swap.display()
        ))
        .args([
            "-device",
            "virtio-blk-pci,drive=swap,bus=rp3,serial=vmt-swap",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=out,format=raw,cache=unsafe",
            outdisk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=out,bus=rp4,serial=vmt-out"]);
    if spec.root_image.is_some() {
        cmd.args([
            "-device",
            "pcie-root-port,id=rp5,bus=pcie.0,chassis=5,slot=5",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=root,format=raw,cache=unsafe",
            rootdisk.display()
        ))
        .args([
            "-device",
            "virtio-blk-pci,drive=root,bus=rp5,serial=vmt-root",
        ]);
    }
    // A hibernation reboots the guest; anywhere else a reboot is a crash, and ending QEMU on it
    // turns a panic=N reboot loop into a prompt failure.
    if !hibernates {
        cmd.arg("-no-reboot");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path)?);

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("cannot start qemu-system-x86_64 (vm-test installs qemu-system-x86)")?;
    let end = watch(spec, &mut child, &console, &monitor, start);
    let mut cpu = cpu_time(child.id());
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let end = match end {
        End::QemuExited(_) => {
            cpu = None;
            let status = child.try_wait().ok().flatten();
            let err = fs::read_to_string(&stderr_path).unwrap_or_default();
            let last = err
                .lines()
                .rfind(|l| !l.contains("is not connected to host network"))
                .unwrap_or("no message")
                .to_string();
            End::QemuExited(format!(
                "{}, {last}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "status unknown".into())
            ))
        }
        other => {
            stop(&mut child, &monitor);
            other
        }
    };
    let wall = start.elapsed();
    let _ = fs::remove_file(&monitor);
    let _ = fs::remove_file(&swap);
    let _ = fs::remove_file(&rootdisk);
    fs::create_dir_all(&artifacts)?;
    let artifact_error = extract(&outdisk, &artifacts)
        .err()
        .map(|e| format!("{e:#}"));
    let _ = fs::remove_file(&outdisk);
    if insns.exists() {
        for s in spec
            .plan
            .iter()
            .filter(|s| s.scenario == super::plan::Scenario::Stream)
        {
            let step = artifacts.join(s.id());
            if step.is_dir() {
                fs::copy(&insns, step.join("insns.txt"))?;
            }
        }
    }
    Ok(RunOutcome {
        end,
        wall,
        cpu,
        console,
        tty1,
        artifacts,
        artifact_error,
        retried: None,
    })
}

fn watch(
    spec: &RunSpec,
    child: &mut Child,
    console: &Path,
    monitor: &Path,
    start: Instant,
) -> Result<End> {
    let timeout = spec.timeout();
    let mut timeline = fs::File::create(spec.dir.join("timeline.txt"))?;
    let mut offset = 0u64;
    let mut partial = String::new();
    let mut last_output = Instant::now();
    let mut wake: Option<(Instant, u32)> = None;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(End::QemuExited(String::new()));
        }
        let mut f = fs::File::open(console)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if !buf.is_empty() {
            offset += buf.len() as u64;
            last_output = Instant::now();
            partial.push_str(&String::from_utf8_lossy(&buf));
            while let Some(nl) = partial.find('\n') {
                let line: String = partial.drain(..=nl).collect();
                // A unit writing to the console (the systemd guest's steps) may start its line
                // after systemd's carriage return.
                let line = line.trim_end().trim_start_matches('\r');
                // The systemd guest's steps write through the kernel log: `[  12.345678] VMT …`.
                let line = match line.strip_prefix('[').and_then(|l| l.split_once("] VMT ")) {
                    Some((_, rest)) => &line[line.len() - rest.len() - 4..],
                    None => line,
                };
                if let Some(f) = FATAL.iter().find(|p| line.contains(*p)) {
                    // Let the guest print the rest of the report (the stack) before quitting.
                    thread::sleep(Duration::from_secs(2));
                    return Ok(End::Fatal(format!("{f} ({})", line.trim())));
                }
                if let Some(msg) = line.strip_prefix("VMT ") {
                    let cpu = cpu_time(child.id());
                    progress(spec, msg, start, cpu);
                    // Each harness line with the host's clock and QEMU's CPU time: which
                    // phases of a step cost the host's cores, and which only wait.
                    let _ = writeln!(
                        timeline,
                        "{:.2} {:.2} {msg}",
                        start.elapsed().as_secs_f64(),
                        cpu.map_or(f64::NAN, |c| c.as_secs_f64())
                    );
                    if msg.starts_with("wake-me") {
                        wake = Some((Instant::now(), 0));
                    } else if msg.starts_with("woke") || msg.starts_with("step ") {
                        wake = None;
                    } else if msg.starts_with("done") {
                        return Ok(End::Done);
                    }
                }
            }
        }
        if let Some((since, pokes)) = &mut wake
            && since.elapsed() > WAKE_AFTER
            && *pokes < 3
        {
            println!(
                "vm: {}: guest still asleep; sending system_wakeup",
                spec.label
            );
            let _ = hmp(monitor, "system_wakeup");
            *since = Instant::now();
            *pokes += 1;
        }
        if start.elapsed() > timeout {
            return Ok(End::Timeout(timeout));
        }
        if last_output.elapsed() > SILENCE_LIMIT {
            return Ok(End::Silent(SILENCE_LIMIT));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Console lines worth showing as they happen.
fn progress(spec: &RunSpec, msg: &str, start: Instant, cpu: Option<Duration>) {
    let t = start.elapsed().as_secs_f64();
    let cpu = cpu.map_or(String::new(), |c| format!(", {:5.1}s CPU", c.as_secs_f64()));
    let show = msg.starts_with("step ")
        || msg.starts_with("error")
        || msg.starts_with("hibernating")
        || msg.starts_with("resumed")
        || msg.starts_with("done");
    if show {
        let msg = msg.split(" uptime=").next().unwrap_or(msg);
        println!("vm: {} [{t:6.1}s{cpu}] {msg}", spec.label);
    }
}

fn hmp(monitor: &Path, command: &str) -> Result<()> {
    let mut s = UnixStream::connect(monitor)
        .with_context(|| format!("cannot connect to QEMU's monitor {}", monitor.display()))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    // QEMU reads the line asynchronously; give it a moment before the socket closes.
    thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// utime + stime of a live process.
fn cpu_time(pid: u32) -> Option<Duration> {
    let ticks = stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// utime + stime in clock ticks from a /proc/PID/stat line: fields 14 and 15, counted after
/// the command name, which may hold spaces and parentheses.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = after.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

fn stop(child: &mut Child, monitor: &Path) {
    let _ = hmp(monitor, "quit");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last tar the guest wrote on its output disk (tar stops at the archive's end marker;
/// the rest of the sparse file is zeros).
fn extract(disk: &Path, dest: &Path) -> Result<()> {
    let out = Command::new("tar")
        .arg("-xf")
        .arg(disk)
        .arg("-C")
        .arg(dest)
        .output()
        .context("cannot run tar")?;
    if !out.status.success() {
        anyhow::bail!(
            "the guest's output disk holds no readable tar ({}): it died before saving",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(())
}

/// The last `n` lines of the console, for a failure.
pub fn console_tail(console: &Path, n: usize) -> String {
    let text = fs::read(console).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime …
        let stat = "4242 (qemu (x) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 750 125 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(stat), Some(875));
        assert_eq!(stat_cpu_ticks("4242 (qemu) S 1"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
    }

    const BOOT_STALL: &str = "\
[    0.000000] Linux version 6.12.117+deb12-amd64
[   31.204417] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
";

    #[test]
    fn a_guest_that_never_reached_the_harness_is_retried() {
        let stall = End::Fatal("rcu: INFO: rcu_preempt detected stalls (…)".into());
        let why = retry_reason(&stall, BOOT_STALL).expect("retried");
        assert!(why.contains("never reached the harness"), "{why}");
        assert!(retry_reason(&End::Silent(SILENCE_LIMIT), "").is_some());
        assert!(retry_reason(&End::Timeout(Duration::from_secs(9)), BOOT_STALL).is_some());
    }

    #[test]
    fn a_guest_that_reached_the_harness_is_not_retried() {
        let stall = End::Fatal("rcu: INFO: rcu_preempt detected stalls (…)".into());
        let reached = format!("{BOOT_STALL}VMT boot kernel=6.12 uptime=4.1\n");
        assert_eq!(retry_reason(&stall, &reached), None);
        // The systemd guest's lines come through the kernel log, after systemd's CR.
        let systemd = format!("{BOOT_STALL}\r[   20.93] VMT ready uptime=20.86\n");
        assert_eq!(retry_reason(&End::Silent(SILENCE_LIMIT), &systemd), None);
        assert_eq!(retry_reason(&End::Done, ""), None);
        // A word that merely contains VMT is not the harness speaking.
        let other = End::QemuExited("exit status: 1, no message".into());
        assert!(retry_reason(&other, "XVMT something\n").is_some());
    }

    #[test]
    fn a_guest_silent_in_a_sleep_step_is_retried_and_silent_elsewhere_is_not() {
        let after_pm_test = "VMT ready uptime=5.1\nVMT step pmtest-platform.buggy begin uptime=98.27\n\
             VMT action step=pmtest-platform.buggy uptime=106.53\n\
             [   85.79] msitrace: err H1 irq=38\n\
             VMT action-done step=pmtest-platform.buggy rc=0 uptime=106.90\n";
        let why = retry_reason(&End::Silent(SILENCE_LIMIT), after_pm_test).expect("retried");
        assert!(
            why.contains("action-done step=pmtest-platform.buggy"),
            "{why}"
        );
        let systemd = "\r[   20.93] VMT step s3.buggy begin uptime=20.86\n";
        assert!(retry_reason(&End::Silent(SILENCE_LIMIT), systemd).is_some());
        let burst = format!("{after_pm_test}VMT step burst.fixed begin uptime=120.1\n");
        assert_eq!(retry_reason(&End::Silent(SILENCE_LIMIT), &burst), None);
        // Only a silence: a fatal console line or a timeout in a sleep step is a failure.
        let fatal = End::Fatal("BUG: kernel NULL pointer dereference".into());
        assert_eq!(retry_reason(&fatal, after_pm_test), None);
        let slow = End::Timeout(Duration::from_secs(900));
        assert_eq!(retry_reason(&slow, after_pm_test), None);
    }

    /// CI's 6.12 run, 2026-12-01: the kernel booted to load the image stalled at its ninth
    /// grace period (g=-1163), its clock restarted below the restart line's.
    const RESTORE_STALL: &str = "VMT ready uptime=4.66\n\
        VMT step hibernate.buggy begin uptime=4.76\n\
        VMT action step=hibernate.buggy uptime=19.43\n\
        VMT hibernating step=hibernate.buggy uptime=19.63\n\
        [   22.419408] reboot: Restarting system\n\
        [   22.205726] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
        [   22.209078] rcu: \t0-...!: (101 ticks this GP) idle=43d8/0/0x0 softirq=147/148 fqs=1\n\
        [   22.209078] rcu: \t(detected by 1, t=5255 jiffies, g=-1163, q=193 ncpus=2)\n";

    #[test]
    fn a_stall_after_the_restart_that_restores_the_image_is_retried() {
        let stall = End::Fatal("rcu: INFO: rcu_preempt detected stalls (…)".into());
        let why = retry_reason(&stall, RESTORE_STALL).expect("retried");
        assert!(why.contains("hibernating step=hibernate.buggy"), "{why}");
        let lockup = End::Fatal("watchdog: BUG: soft lockup - CPU#0 stuck for 23s!".into());
        assert!(retry_reason(&lockup, RESTORE_STALL).is_some());
    }

    #[test]
    fn a_failure_once_the_image_runs_again_or_not_a_stall_is_not_retried() {
        let stall = End::Fatal("rcu: INFO: rcu_preempt detected stalls (…)".into());
        // The resumed image spoke: a stall from here on is its own, msitrace's hooks live.
        let resumed = format!("{RESTORE_STALL}VMT resumed step=hibernate.buggy uptime=24.1\n");
        assert_eq!(retry_reason(&stall, &resumed), None);
        // Once the fresh kernel's init asks for the image, the image may be what stalled.
        let loading = RESTORE_STALL.replace(
            "[   22.205726] rcu",
            "VMT resume-image dev=254:0 uptime=3.1\n[   22.205726] rcu",
        );
        assert_eq!(retry_reason(&stall, &loading), None);
        // A panic or an oops is never excused, restart or not.
        let oops = End::Fatal("BUG: unable to handle page fault for address".into());
        assert_eq!(retry_reason(&oops, RESTORE_STALL), None);
        // A restart outside a hibernation step (a reset step rebooting the guest) is no image
        // restore.
        let reset = RESTORE_STALL.replace("hibernate.buggy", "reset.buggy");
        assert_eq!(retry_reason(&stall, &reset), None);
        // A stall before the restart is the hibernating kernel's.
        let before = "VMT step hibernate.buggy begin uptime=4.76\n\
            [   20.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n";
        assert_eq!(retry_reason(&stall, before), None);
    }

    #[test]
    fn the_qemu_abort_is_retried_even_after_the_harness_ran() {
        let abort = End::QemuExited(format!("signal: 6, Assertion {QEMU_FLAKE} failed"));
        let why = retry_reason(&abort, "VMT boot kernel=6.12 uptime=4.1\n").expect("retried");
        assert!(why.contains("QEMU aborted"), "{why}");
    }
}

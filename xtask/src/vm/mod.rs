//! The QEMU rig. `cargo xtask vm-test` boots the kernel matrix ([`host::MATRIX`]: Debian's 5.10,
//! 6.1, 6.1 cloud, 6.12 and 7.x, each the current one of its series) under TCG with hv_stub
//! (tests/guest-module, a stand-in for pci-hyperv on QEMU's e1000e) and msitrace inside, runs
//! every scenario of [`plan`] in the fixed and the buggy mode, and judges each step on the host
//! from hv_stub's counters, /proc/interrupts and msitrace's own outputs ([`checks`]).
//! `cargo xtask demo` runs the buggy hibernation on 6.12 and prints the report.
//!
//! The work directory (`<repo>/vm-work`, or `$MSITRACE_VM_WORK`, or `--work-dir`) is also the
//! cache between runs:
//!
//! ```text
//! apt/                 private apt configuration, lists and archive cache
//! debs/                the kernel and header packages (kept)
//! kernels/<abi>/       the packages unpacked (kept; a stamp says which)
//! build/<abi>/         hv_stub.ko, rebuilt every run (seconds)
//! initramfs/<abi>/     the staged tree and initrd.cpio, rebuilt every run
//! out/<abi>/run-<n>/   console.log, qemu.stderr, artifacts/ (the guest's /out, replay.json)
//! ```

mod checks;
mod costs;
mod host;
mod initramfs;
mod insns;
mod kernel;
mod module;
mod msitrace;
mod plan;
mod qemu;
mod recorded;

pub use recorded::{VerdictsArgs, run as verdicts};
mod rootfs;
mod timing;

use crate::util::{repo_root, run_checked, run_output, run_status};
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use checks::Verdict;
use kernel::Kernel;
use msitrace::Msitrace;
use plan::{Scenario, Step};
use qemu::{End, RunOutcome, RunSpec};

pub(crate) const WORK_ENV: &str = "MSITRACE_VM_WORK";

/// G5's window (`record`/`replay --silence`): how long a vector that fired before the suspend
/// may stay silent after the resume. Shorter than msitrace's default to keep CI fast: in the
/// initramfs guests the script's own write to /sys/power/state returns at the thaw and its
/// fires follow, msitrace's first sample after the resume 0.1-0.5 s after the thaw and the
/// fires' growth 1-2 s after it (6.1, 6.12, 7.x, this host and CI's).
const G5_SILENCE_S: u64 = 4;

/// G5's window in the systemd guests: msitrace's default, as the unit runs it. There the
/// system hibernates itself (systemctl hibernate) and the script runs again only once
/// systemd's sleep job is over: on a fresh-clone CI with three guests on two slower cores,
/// its first fires came 5.5 s after the thaw, the daemon's first sample 2.3 s after it, and
/// with a 4 s window G5 fell on 7.x's live control and plain vectors. The window's wait in the
/// initramfs guests' buggy steps, 10 s everywhere, added 44 s to 6.12's plan (278 s, one run).
const G5_SILENCE_SYSTEMD_S: u64 = 10;

/// The window a run records and is judged with.
fn g5_silence_s(steps: &[Step]) -> u64 {
    if plan::boots_systemd(steps) {
        G5_SILENCE_SYSTEMD_S
    } else {
        G5_SILENCE_S
    }
}

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Kernel series to boot: 5.10, 6.1, 6.1-cloud, 6.12, 7.x (repeatable) [default: all].
    #[arg(long = "kernel", value_name = "SERIES")]
    pub kernels: Vec<String>,
    /// Run only these scenarios or steps, e.g. `s3`, `hibernate.buggy` or
    /// `hibernate.buggy.service` (repeatable or comma-separated) [default: all].
    #[arg(long, value_name = "STEP")]
    pub only: Vec<String>,
    /// Check the rig without msitrace: hv_stub, the scenarios and interrupt liveness only.
    #[arg(long)]
    pub no_msitrace: bool,
    /// Downloads, builds and outputs, kept as the cache between runs
    /// [default: $MSITRACE_VM_WORK, else <repo>/vm-work].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// QEMU guests run at once. A guest is one host thread and waits much of its time (its
    /// steps' sleeps, the G5 window): three at once keep a 2-core machine's cores busy. For
    /// 6.12's plan alone four ended a little sooner (107-115 s against 113-119, three runs each)
    /// on a little more CPU (150-164 s against 145-155); the matrix's runs of all kernels are
    /// bound by CPU. A plan with the stream step runs alone: its end-to-end rates are the host's.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub jobs: u32,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Downloads, builds and outputs, shared with vm-test
    /// [default: $MSITRACE_VM_WORK, else <repo>/vm-work].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// The series of the matrix a kernel release belongs to (`6.1-cloud` for
/// `6.1.0-57-cloud-amd64`), or `None` for a kernel vm-test does not boot.
pub(crate) fn series_of(release: &str) -> Option<&'static str> {
    let cloud = release.contains("-cloud-");
    host::MATRIX
        .iter()
        .find(|s| {
            release.starts_with(s.version_prefix)
                && s.metas.iter().any(|m| m.contains("-cloud-")) == cloud
        })
        .map(|s| s.name)
}

/// The rig's work directory: `--work-dir`, else $MSITRACE_VM_WORK, else <repo>/vm-work. The
/// commands that read what vm-test left (bench, matrix) look where it wrote.
pub(crate) fn resolve_work_dir(arg: Option<PathBuf>, repo: &Path) -> PathBuf {
    arg.or_else(|| std::env::var_os(WORK_ENV).map(PathBuf::from))
        .unwrap_or_else(|| repo.join("vm-work"))
}

fn work_dir(arg: Option<PathBuf>, repo: &Path) -> Result<PathBuf> {
    let dir = resolve_work_dir(arg, repo);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// What msitrace can do in this tree.
enum Tracer {
    /// `--no-msitrace`.
    Off,
    Usable(Msitrace),
    /// Built, or not, but the rig cannot assert on its outputs: why.
    Unusable(String),
}

struct Guest {
    kernel: Kernel,
    initrd: PathBuf,
}

struct Rig {
    work: PathBuf,
    guests: Vec<Guest>,
    tracer: Tracer,
    /// The Debian root disk, when a run boots systemd.
    root_image: Option<PathBuf>,
    /// The stream step's instruction-counting QEMU plugin, when the plan has the step.
    insn_plugin: Option<PathBuf>,
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// Download and unpack each kernel series asked for (all of the matrix when none is).
fn fetch_kernels(work: &Path, apt: &host::Apt, series: &[String]) -> Result<Vec<kernel::Kernel>> {
    let wanted: Vec<&host::Series> = if series.is_empty() {
        host::MATRIX.iter().collect()
    } else {
        series
            .iter()
            .map(|s| {
                host::Apt::series(s).with_context(|| {
                    let names: Vec<&str> = host::MATRIX.iter().map(|m| m.name).collect();
                    format!(
                        "unknown kernel series `{s}`: use one of {}",
                        names.join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let debs = work.join("debs");
    let mut kernels = Vec::new();
    for s in wanted {
        // This machine's release through its own configuration; another release through
        // one of its own, used only to download.
        let foreign;
        let from = if s.release == "bookworm" {
            apt
        } else {
            foreign = host::Apt::for_release(work, s.release)?;
            foreign.update_if_stale()?;
            &foreign
        };
        let p = from.resolve(s)?;
        let images = p
            .images
            .iter()
            .map(|i| from.download(i, &debs))
            .collect::<Result<Vec<_>>>()?;
        let headers = p
            .headers
            .iter()
            .map(|h| from.download(h, &debs))
            .collect::<Result<Vec<_>>>()?;
        kernels.push(kernel::unpack(
            &p,
            &images,
            &headers,
            &work.join("kernels").join(&p.abi),
        )?);
    }
    Ok(kernels)
}

/// Everything before the first boot: packages, kernels, hv_stub, msitrace, initramfs, and for
/// the service runs (`systemd`) the package and the Debian root disk.
fn prepare(
    repo: &Path,
    work: &Path,
    series: &[String],
    want_msitrace: bool,
    systemd: bool,
    stream: bool,
) -> Result<Rig> {
    let t = Instant::now();
    let insn_plugin = if stream {
        Some(insns::build(repo)?)
    } else {
        None
    };
    let apt = host::Apt::new(work)?;
    apt.update_if_stale()?;
    apt.ensure_installed()?;
    let t_apt = t.elapsed();

    // The systemd guests' root disk needs neither the kernels nor the module: mmdebstrap runs
    // while they download, unpack and build (a minute of CI's wall time). Its time is reported
    // as what it added after them.
    let (kernels, modules, tracer, root_disk, times) = std::thread::scope(|sc| -> Result<_> {
        let root_job = (systemd && want_msitrace).then(|| sc.spawn(|| rootfs::ensure(work, &apt)));
        let t = Instant::now();
        let kernels = fetch_kernels(work, &apt, series)?;
        let t_kernels = t.elapsed();

        let t = Instant::now();
        let mut modules = Vec::new();
        for k in &kernels {
            let (ko, cached) = module::build(repo, k, work, &work.join("build").join(&k.abi))?;
            println!(
                "vm: hv_stub.ko for {} {} (syscore API: {})",
                k.abi,
                if cached {
                    "as built before from the same sources"
                } else {
                    "built"
                },
                k.syscore_api()
            );
            modules.push(ko);
        }
        let t_module = t.elapsed();

        let t = Instant::now();
        let tracer = if !want_msitrace {
            Tracer::Off
        } else {
            match msitrace::build(repo) {
                Ok(m) if m.usable() => Tracer::Usable(m),
                Ok(m) => Tracer::Unusable(format!(
                    "msitrace in this tree lacks {}",
                    m.missing().join(", ")
                )),
                Err(e) => Tracer::Unusable(format!("{e:#}")),
            }
        };
        let t_msitrace = t.elapsed();

        let t = Instant::now();
        let root_disk = root_job.map(|job| match job.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("making the guest's root disk panicked")),
        });
        Ok((
            kernels,
            modules,
            tracer,
            root_disk,
            (t_kernels, t_module, t_msitrace, t.elapsed()),
        ))
    })?;
    let (t_kernels, t_module, t_msitrace, t_root_wait) = times;

    let t = Instant::now();
    let (deb, root_image) = match (&tracer, root_disk) {
        (Tracer::Usable(_), Some(root)) => {
            let built = crate::dist::build(None)?;
            (Some(built.deb), Some(root?))
        }
        _ => (None, None),
    };
    let t_rootfs = t.elapsed() + t_root_wait;

    let t = Instant::now();
    let mut guests = Vec::new();
    for (k, ko) in kernels.into_iter().zip(&modules) {
        let dir = work.join("initramfs").join(&k.abi);
        let initrd = dir.join("initrd.cpio");
        let m = match &tracer {
            Tracer::Usable(m) => Some(m),
            _ => None,
        };
        initramfs::build(&k, ko, m, deb.as_deref(), &dir.join("root"), &initrd)?;
        guests.push(Guest { kernel: k, initrd });
    }
    println!(
        "vm: ready: apt {}, kernels {}, hv_stub {}, msitrace {}, package and root disk {}, initramfs {}",
        secs(t_apt),
        secs(t_kernels),
        secs(t_module),
        secs(t_msitrace),
        secs(t_rootfs),
        secs(t.elapsed())
    );
    Ok(Rig {
        work: work.to_path_buf(),
        guests,
        tracer,
        root_image,
        insn_plugin,
    })
}

struct Row {
    kernel: String,
    what: String,
    verdict: Verdict,
}

/// Boot `g` with `steps`; its files go to out/<abi>/<name>.
fn run_guest(
    rig: &Rig,
    g: &Guest,
    name: &str,
    steps: &[Step],
    label: String,
    probes: bool,
) -> Result<RunOutcome> {
    let usable = matches!(rig.tracer, Tracer::Usable(_));
    let root_image = if plan::boots_systemd(steps) {
        Some(
            rig.root_image
                .as_deref()
                .context("a service run needs msitrace's package and the root disk")?,
        )
    } else {
        None
    };
    let spec = RunSpec {
        root_image,
        kernel: &g.kernel,
        initrd: &g.initrd,
        plan: steps,
        dir: rig.work.join("out").join(&g.kernel.abi).join(name),
        msitrace: usable,
        probes,
        g5_silence_s: g5_silence_s(steps),
        label,
        insn_plugin: rig
            .insn_plugin
            .as_deref()
            .filter(|_| steps.iter().any(|s| s.scenario == Scenario::Stream)),
    };
    qemu::run(&spec)
}

/// The order runs start in: the dearest first, so that the lanes end together rather than one
/// long run starting last. Rough weights, rounded from CI's runs: a step 10 s, a hibernation's
/// image and settle 25 s, systemd's boot with the package's install and restart check 40 s.
fn dispatch_order<'a>(runs: impl Iterator<Item = &'a [Step]>) -> Vec<usize> {
    let cost = |steps: &[Step]| -> u32 {
        steps
            .iter()
            .map(|s| if s.scenario.hibernates() { 25 } else { 10 })
            .sum::<u32>()
            + if plan::boots_systemd(steps) { 40 } else { 0 }
    };
    let costs: Vec<u32> = runs.map(cost).collect();
    let mut order: Vec<usize> = (0..costs.len()).collect();
    // Stable: equal runs keep the plan's order.
    order.sort_by_key(|&j| std::cmp::Reverse(costs[j]));
    order
}

/// A run that ended, and when it started and ended by the host's clock.
struct DoneRun {
    label: String,
    outcome: RunOutcome,
    start: Instant,
    end: Instant,
}

/// Whether run `ri` of a kernel runs `msitrace probes --json --timings` before its first
/// recording: the first, whose output the kernel's `probes` row judges (each run's would say
/// the same of one kernel, at a whole msitrace start each: 5-6 s of QEMU's CPU under TCG), and
/// a stream step's, which finds msitrace's programs by it.
fn runs_probes(ri: usize, steps: &[Step]) -> bool {
    ri == 0 || steps.iter().any(|s| s.scenario == Scenario::Stream)
}

/// Run `jobs` (guest index, run index, steps) `lanes` at a time, in the jobs' order. The first
/// run that cannot start at all (QEMU missing, a disk not written) stops the rest.
fn run_all(rig: &Rig, jobs: &[(usize, usize, Vec<Step>)], lanes: usize) -> Result<Vec<DoneRun>> {
    let order = dispatch_order(jobs.iter().map(|(_, _, steps)| steps.as_slice()));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<DoneRun>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    thread::scope(|s| {
        for _ in 0..lanes.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(&j) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let (gi, ri, steps) = &jobs[j];
                    let g = &rig.guests[*gi];
                    let label = format!("{} run {}", g.kernel.series, ri + 1);
                    let t_start = Instant::now();
                    let r = run_guest(
                        rig,
                        g,
                        &format!("run-{}", ri + 1),
                        steps,
                        label.clone(),
                        runs_probes(*ri, steps),
                    );
                    let t_end = Instant::now();
                    match &r {
                        Ok(o) => println!("vm: {label}: {} in {}", o.end.describe(), secs(o.wall)),
                        Err(_) => stop.store(true, Ordering::Relaxed),
                    }
                    *slots[j].lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(r.map(|outcome| DoneRun {
                            label,
                            outcome,
                            start: t_start,
                            end: t_end,
                        }));
                }
            });
        }
    });
    let results: Vec<_> = slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let mut out = Vec::with_capacity(results.len());
    let mut not_run = false;
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => not_run = true,
        }
    }
    if not_run {
        bail!("a run was not started, though no run failed to start");
    }
    Ok(out)
}

/// Judge the steps of one run (and, once per kernel, `probes`).
fn judge_run(rig: &Rig, g: &Guest, steps: &[Step], outcome: &RunOutcome, rows: &mut Vec<Row>) {
    let series = g.kernel.series.clone();
    let art = &outcome.artifacts;
    let e1000e = fs::read_to_string(art.join("e1000e")).ok();
    let e1000e = e1000e.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if outcome.end != End::Done || outcome.artifact_error.is_some() {
        let mut failures = vec![outcome.end.describe()];
        failures.extend(outcome.artifact_error.clone());
        let ids: Vec<String> = steps.iter().map(|s| s.id()).collect();
        rows.push(Row {
            kernel: series.clone(),
            what: format!("run ({})", ids.join(", ")),
            verdict: Verdict {
                failures,
                facts: Vec::new(),
            },
        });
    }
    let m = match &rig.tracer {
        Tracer::Usable(m) => Some(m),
        _ => None,
    };
    if m.is_some()
        && !rows
            .iter()
            .any(|r| r.kernel == series && r.what == "probes")
    {
        rows.push(Row {
            kernel: series.clone(),
            what: "probes".into(),
            verdict: checks::check_probes(&art.join("probes.json")),
        });
    }
    if let Some(m) = m
        && plan::boots_systemd(steps)
    {
        rows.push(Row {
            kernel: series.clone(),
            what: "service (systemd)".into(),
            verdict: checks::check_service(&art.join("service"), m),
        });
    }
    for &step in steps {
        let dir = art.join(step.id());
        let mut verdict = checks::check_step(&checks::StepInput {
            step,
            dir: &dir,
            e1000e,
            msitrace: m,
            g5_silence_s: g5_silence_s(steps),
            tty1: &outcome.tty1,
            h4_gated_off: g.kernel.at_least(6, 17),
        });
        if let Tracer::Unusable(why) = &rig.tracer {
            verdict
                .failures
                .push(format!("msitrace assertions not run: {why}"));
        }
        if let Some(r) = &outcome.retried {
            verdict.facts.push(r.clone());
        }
        rows.push(Row {
            kernel: series.clone(),
            what: match step.front {
                plan::Front::Record => step.id(),
                f => format!("{} ({})", step.id(), f.name()),
            },
            verdict,
        });
    }
}

fn render_table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(4).max(4);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<6}  {:<w$}  {:<6}  details",
        "kernel", "step", "result"
    );
    for r in rows {
        let (res, lines) = if r.verdict.pass() {
            ("pass", r.verdict.facts.clone())
        } else {
            // What was seen too: a failure says what went wrong, the facts what the step did.
            let mut l = r.verdict.failures.clone();
            l.extend(r.verdict.facts.iter().cloned());
            ("FAIL", l)
        };
        let mut lines = lines.into_iter();
        let _ = writeln!(
            s,
            "{:<6}  {:<w$}  {:<6}  {}",
            r.kernel,
            r.what,
            res,
            lines.next().unwrap_or_default()
        );
        for l in lines {
            let _ = writeln!(s, "{:<6}  {:<w$}  {:<6}  {l}", "", "", "");
        }
    }
    s
}

pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let t0 = Instant::now();
    let repo = repo_root();
    let work = work_dir(args.work_dir, &repo)?;
    let filter = plan::parse_filter(&args.only)?;
    let runs: Vec<Vec<Step>> = [
        plan::Plan::Full,
        plan::Plan::Core,
        plan::Plan::CoreAndService,
        plan::Plan::FullAndLate,
    ]
    .into_iter()
    .flat_map(|p| plan::runs(&filter, p))
    .collect();
    if runs.is_empty() {
        bail!("--only selects no step");
    }
    let systemd = runs.iter().any(|r| plan::boots_systemd(r));
    let stream = runs
        .iter()
        .flatten()
        .any(|s| s.scenario == Scenario::Stream);
    let rig = prepare(
        &repo,
        &work,
        &args.kernels,
        !args.no_msitrace,
        systemd,
        stream,
    )?;
    if let Tracer::Unusable(why) = &rig.tracer {
        println!("vm: msitrace cannot be used ({why}); the guests run, every step fails");
    }
    let t_setup = t0.elapsed();
    // Every run of every kernel, each its own QEMU: they run `--jobs` at a time, the dearest
    // first so that the last to start is a short one, and are judged in the plan's order.
    let jobs: Vec<(usize, usize, Vec<Step>)> = rig
        .guests
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| {
            plan::runs(&filter, g.kernel.plan)
                .into_iter()
                .enumerate()
                .map(move |(ri, steps)| (gi, ri, steps))
        })
        .collect();
    let lanes = if stream { 1 } else { args.jobs as usize };
    let done = run_all(&rig, &jobs, lanes)?;
    let mut rows = Vec::new();
    let mut records = Vec::new();
    let mut per_kernel = Vec::new();
    let mut costs = Vec::new();
    let mut timings = Vec::new();
    let mut streams = Vec::new();
    for (gi, g) in rig.guests.iter().enumerate() {
        let mut kcosts = costs::Costs::new();
        let mut ktime = timing::Breakdown::default();
        let mut span: Option<(Instant, Instant)> = None;
        for ((_, _, steps), run) in jobs
            .iter()
            .zip(done.iter())
            .filter(|((j, _, _), _)| *j == gi)
        {
            let outcome = &run.outcome;
            span = Some(span.map_or((run.start, run.end), |(a, b)| {
                (a.min(run.start), b.max(run.end))
            }));
            ktime.add(
                &timing::of_run(
                    &fs::read_to_string(&outcome.console).unwrap_or_default(),
                    outcome.wall,
                    outcome.cpu,
                )
                .with_timeline(
                    &fs::read_to_string(outcome.console.with_file_name("timeline.txt"))
                        .unwrap_or_default(),
                ),
            );
            judge_run(&rig, g, steps, outcome, &mut rows);
            if let Tracer::Usable(m) = &rig.tracer {
                costs::add_steps(m, steps, &outcome.artifacts, &mut kcosts);
                if let Some(s) = steps.iter().find(|s| s.scenario == Scenario::Stream) {
                    let dir = outcome.artifacts.join(s.id());
                    if let Ok(c) = checks::stream::load(&dir, Some(m))
                        .and_then(checks::stream::Comparison::new)
                    {
                        streams.push((g.kernel.series.clone(), dir, c));
                    }
                }
            }
            records.push(run);
        }
        if let Some((a, b)) = span {
            per_kernel.push(format!(
                "{} {} ({} in QEMU)",
                g.kernel.series,
                secs(b - a),
                secs(Duration::from_secs_f64(ktime.wall))
            ));
        }
        timings.push(ktime.render(&g.kernel.series));
        costs.push((g.kernel.series.clone(), kcosts));
    }

    println!();
    println!(
        "vm-test: kernels {}",
        rig.guests
            .iter()
            .map(|g| g.kernel.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{}", render_table(&rows));
    if matches!(rig.tracer, Tracer::Usable(_)) {
        print!("{}", costs::render(&costs));
        let path = work.join("out/kprobe-costs.json");
        if let Err(e) = fs::write(&path, costs::to_json(&costs).to_string()) {
            println!("vm: cannot write {}: {e}", path.display());
        }
    }
    for (series, dir, c) in &streams {
        print!("{}", render_stream(series, c));
        let path = work.join(STREAM_RECORD);
        let record = serde_json::json!({
            "kernel": series,
            "step": dir,
            "recorded_unix": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "guest_clock": STREAM_CLOCK,
            "comparison": c.to_json(),
        });
        if let Err(e) = fs::write(&path, record.to_string()) {
            println!("vm: cannot write {}: {e}", path.display());
        }
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.verdict.pass()).collect();
    for r in &records {
        if r.outcome.end != End::Done {
            println!(
                "\n--- console tail, {} ({}) ---\n{}",
                r.label,
                r.outcome.console.display(),
                qemu::console_tail(&r.outcome.console, 40)
            );
        }
    }
    if matches!(rig.tracer, Tracer::Off) {
        println!("\nvm: msitrace was left out (--no-msitrace): its assertions did not run");
    }
    println!("\nvm: where the guests' time went (seconds, by the guests' own clock):");
    for t in &timings {
        println!("  {t}");
    }
    println!(
        "\nvm: wall time {} (setup {}; runs {} at a time; by kernel, first start to last end: \
         {}); outputs in {}",
        secs(t0.elapsed()),
        secs(t_setup),
        lanes,
        per_kernel.join(", "),
        work.join("out").display()
    );
    // Again at the end: a CI log cut to its tail (the tables above are long) still names them,
    // and the runs that passed only at their second attempt.
    for r in &records {
        if let Some(why) = &r.outcome.retried {
            println!("vm-test: RETRIED {}: {why}", r.label);
        }
    }
    for r in &failed {
        for f in &r.verdict.failures {
            println!("vm-test: FAIL {} {}: {f}", r.kernel, r.what);
        }
    }
    // The plain closing line CI reads as a test count.
    println!(
        "vm-test: {} passed, {} failed",
        rows.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} checks failed (see the table above)",
            failed.len(),
            rows.len()
        );
    }
    Ok(())
}

/// Where vm-test keeps the newest comparison with bpftrace (under the work directory), which
/// `cargo xtask bench` prints.
pub(crate) const STREAM_RECORD: &str = "out/stream-vs-bpftrace.json";

/// How the stream step's guest keeps time (qemu.rs): what its bpf_stats figures count.
pub(crate) const STREAM_CLOCK: &str = "TCG counting instructions, 8 ns each";

fn render_stream(series: &str, c: &checks::stream::Comparison) -> String {
    let rounds = c.passes.first().map(|p| p.msitrace.rounds).unwrap_or(0);
    let mut out = format!(
        "\nvm: the streaming path against bpftrace on the same hooks, guest {series} \
         ({STREAM_CLOCK}: ratios), {} passes of {rounds} vector-move rounds per tool\n",
        c.passes.len()
    );
    for (k, v) in c.lines() {
        let _ = writeln!(out, "  {k}: {v}");
    }
    out
}

pub fn demo(args: DemoArgs) -> Result<()> {
    let repo = repo_root();
    let work = work_dir(args.work_dir, &repo)?;
    let rig = prepare(&repo, &work, &["6.12".to_string()], true, false, false)?;
    let m = match &rig.tracer {
        Tracer::Usable(m) => m,
        Tracer::Unusable(why) => bail!("the demo needs msitrace's record and replay: {why}"),
        Tracer::Off => unreachable!("prepare was asked for msitrace"),
    };
    let g = rig.guests.first().context("no 6.12 kernel was prepared")?;
    let step = plan::DEMO_RUN[0];
    debug_assert_eq!(step.scenario, Scenario::Hibernate);
    println!(
        "demo: booting Debian {} under QEMU (TCG); hv_stub drives QEMU's e1000e the way pci-hyperv \
         did before 915cff7f38c5, msitrace records a hibernation and resume",
        g.kernel.abi
    );
    let outcome = run_guest(
        &rig,
        g,
        "demo",
        plan::DEMO_RUN,
        format!("demo {}", g.kernel.series),
        false,
    )?;
    if outcome.end != End::Done {
        bail!(
            "the guest did not finish: {}\n{}",
            outcome.end.describe(),
            qemu::console_tail(&outcome.console, 40)
        );
    }
    let dir = outcome.artifacts.join(step.id());
    let console = fs::read_to_string(&outcome.console).unwrap_or_default();
    println!("\ndemo: what the device's vectors did after the resume (fires of QEMU's e1000e):");
    for l in console
        .lines()
        .filter(|l| l.starts_with("VMT live") && l.contains("phase=after"))
    {
        let f: Vec<&str> = l
            .split_whitespace()
            .filter(|t| {
                [
                    "irq=",
                    "role=",
                    "fired=",
                    "delivered=",
                    "table_masked=",
                    "unmask_skipped=",
                ]
                .iter()
                .any(|p| t.starts_with(p))
            })
            .collect();
        println!("  {}", f.join(" "));
    }
    let trace = dir.join("trace.msit");
    println!(
        "\ndemo: msitrace replay {} --silence {G5_SILENCE_S}\n",
        trace.display()
    );
    let (code, text) = msitrace::replay_text(m, &trace, G5_SILENCE_S)?;
    println!("{text}");
    let verdict = checks::check_step(&checks::StepInput {
        step,
        dir: &dir,
        e1000e: fs::read_to_string(outcome.artifacts.join("e1000e"))
            .ok()
            .as_deref()
            .map(str::trim),
        msitrace: Some(m),
        g5_silence_s: G5_SILENCE_S,
        tty1: &outcome.tty1,
        h4_gated_off: g.kernel.at_least(6, 17),
    });
    match (code, verdict.pass()) {
        (1, true) => println!(
            "demo: msitrace found the divergences of the buggy driver, on its test vectors only"
        ),
        (1, false) => println!(
            "demo: msitrace reported divergences, but not exactly the expected ones: {}",
            verdict.failures.join("; ")
        ),
        // Exit 0 means no error-level divergence (warnings alone do not fail a run).
        (0, _) => println!(
            "demo: msitrace found no error-level divergence, though the buggy driver cut two \
             vectors off"
        ),
        _ => bail!("msitrace replay could not read the trace (exit {code})"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dearest_runs_start_first() {
        let runs: Vec<Vec<Step>> = plan::DEFAULT_RUNS.iter().map(|r| r.to_vec()).collect();
        let order = dispatch_order(runs.iter().map(Vec::as_slice));
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..runs.len()).collect::<Vec<_>>(), "each run once");
        // The full plan's first run (a hibernation and six steps) outweighs the systemd run,
        // which outweighs a lone hibernation; the lone ones come last.
        assert_eq!(order[0], 0, "{order:?}");
        let service = runs.iter().position(|r| plan::boots_systemd(r)).unwrap();
        let lone = runs
            .iter()
            .position(|r| r.len() == 1 && !plan::boots_systemd(r))
            .unwrap();
        let at = |j| order.iter().position(|&o| o == j).unwrap();
        assert!(at(service) < at(lone), "{order:?}");
        assert_eq!(*order.last().unwrap(), lone, "{order:?}");
    }
}

//! What the guests run: the scenarios, the stand-in driver's modes, and how the steps are
//! grouped into QEMU runs (one hibernation per run: QEMU 10.0.2 has been seen to abort while
//! rebooting after a second one).

use std::fmt;

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// CPU 1 offline and back through sysfs: the migration path, no PM at all.
    Hotplug,
    /// `echo 1 > /sys/bus/pci/devices/<bdf>/reset`: the PCI core restores MSI-X from its cache.
    Reset,
    /// Suspend-to-RAM with pm_test=platform: devices suspended down to noirq, CPUs stay up.
    PmTestPlatform,
    /// pm_test=core: CPUs go offline too and syscore runs; the machine does not sleep.
    PmTestCore,
    /// Real S3, woken by the RTC alarm.
    S3,
    /// Real hibernation to the swap disk, reboot, image restore.
    Hibernate,
    /// The hibernation with every vector fired in a loop up to the freeze (the freezer stops
    /// the loop): interrupts after msitrace's last sample before the suspend, which show
    /// first in the sample after the resume. G5 must still name exactly the dead vectors.
    HibernateLate,
    /// The recorder stopped (SIGSTOP, as user space is during a freeze) while the test vectors
    /// are moved between CPUs over and over: more events than the default ring holds.
    Burst,
    /// No sleep and no trace: hv_stub leaves one test vector masked in the device while
    /// genirq has it enabled (its `stale_mask` knob), and `msitrace check` alone must name
    /// exactly that vector; then the mask is lifted and check must be clean (issue #14).
    StaleMask,
    /// No sleep: the burst's vector moves with every consumer live, under `msitrace record`,
    /// under bpftrace printing the same fields from the same hooks, and under empty programs
    /// there, in passes (issue #17). bpftrace comes from Debian's package on the root disk.
    Stream,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::Hotplug,
        Scenario::Reset,
        Scenario::PmTestPlatform,
        Scenario::PmTestCore,
        Scenario::S3,
        Scenario::Hibernate,
        Scenario::HibernateLate,
        Scenario::Burst,
        Scenario::StaleMask,
        Scenario::Stream,
    ];

    /// The guest's name for it (`act_<name>` in tests/guest/vmt.sh, with `-` as `_`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Hotplug => "hotplug",
            Scenario::Reset => "reset",
            Scenario::PmTestPlatform => "pmtest-platform",
            Scenario::PmTestCore => "pmtest-core",
            Scenario::S3 => "s3",
            Scenario::Hibernate => "hibernate",
            Scenario::HibernateLate => "hibernate-late",
            Scenario::Burst => "burst",
            Scenario::StaleMask => "stale-mask",
            Scenario::Stream => "stream",
        }
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s)
    }

    /// Its tools are on the Debian root disk only (the initramfs is too small for bpftrace and
    /// its libraries): the run boots systemd.
    pub fn needs_root_disk(self) -> bool {
        self == Scenario::Stream
    }

    /// A real hibernation (one per QEMU run, first in it; needs the swap disk).
    pub fn hibernates(self) -> bool {
        matches!(self, Scenario::Hibernate | Scenario::HibernateLate)
    }

    /// The system goes through a noirq suspend and resume: the emulated vmbus bus is torn down
    /// and the PCI core restores the device's MSI-X state afterwards.
    pub fn resumes(self) -> bool {
        matches!(
            self,
            Scenario::PmTestPlatform
                | Scenario::PmTestCore
                | Scenario::S3
                | Scenario::Hibernate
                | Scenario::HibernateLate
        )
    }

    /// CPU 1 goes offline, so the test vectors migrate through hv_irq_mask/hv_irq_unmask.
    pub fn offlines_cpus(self) -> bool {
        matches!(
            self,
            Scenario::Hotplug
                | Scenario::PmTestCore
                | Scenario::S3
                | Scenario::Hibernate
                | Scenario::HibernateLate
        )
    }

    /// The sleep reaches syscore_suspend (pm_test=platform stops before it).
    pub fn reaches_syscore(self) -> bool {
        matches!(
            self,
            Scenario::PmTestCore | Scenario::S3 | Scenario::Hibernate | Scenario::HibernateLate
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Fixed,
    Buggy,
    /// Fixed, with the host's entry kept off `irq_data->chip_data` (a driver whose private
    /// conventions differ from pci-hyperv's): what the kernel does is the fixed driver's.
    Opaque,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fixed => "fixed",
            Mode::Buggy => "buggy",
            Mode::Opaque => "opaque",
        }
    }
}

/// Which of msitrace's front-ends records the step in the guest. Each writes the same trace
/// format, so every step gets the same checks, and the front-end its own on top: every
/// front-end is thereby proven on the real kernels, through a real suspend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Front {
    /// `msitrace record -o FILE`, stopped by SIGINT.
    Record,
    /// `msitrace live --output FILE` drawing on the guest's second serial port (a real tty,
    /// 80x24, captured by the host), stopped by SIGTERM.
    Live,
    /// `msitrace daemon` with its flight recorder in the step's directory and its journal
    /// entries on stderr (no journald in the guest), stopped by SIGTERM.
    Daemon,
    /// `msitrace.service` under systemd as PID 1, installed from the project's .deb on a
    /// Debian root disk and started by `systemctl enable --now`: its sandbox, its journal
    /// entries (read with journalctl -o json), its flight recorder in /var/lib/msitrace, and
    /// `systemctl stop`. A run with such a step boots systemd and has no other front-end.
    Service,
    /// `msitrace verify --json -o FILE -- CMD`, CMD being the hibernation with the fires around
    /// it, as a distribution's test suite runs it: its exit code and JSON are checked.
    Verify,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Record => "record",
            Front::Live => "live",
            Front::Daemon => "daemon",
            Front::Service => "service",
            Front::Verify => "verify",
        }
    }
}

/// One scenario with hv_stub loaded in one mode, recorded by one front-end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Step {
    pub scenario: Scenario,
    pub mode: Mode,
    pub front: Front,
}

impl Step {
    pub const fn new(scenario: Scenario, mode: Mode) -> Step {
        Step {
            scenario,
            mode,
            front: Front::Record,
        }
    }

    pub const fn with(self, front: Front) -> Step {
        Step { front, ..self }
    }

    /// `s3.buggy`: the directory of the step's outputs.
    pub fn id(self) -> String {
        format!("{}.{}", self.scenario.name(), self.mode.name())
    }

    /// `s3.buggy.daemon`: the guest's plan item.
    pub fn plan_item(self) -> String {
        format!("{}.{}", self.id(), self.front.name())
    }

    /// The bugs cut the test vectors off only where the bus is torn down and restored; a
    /// buggy driver that never sees a teardown (CPU hotplug at run time, a function reset)
    /// behaves exactly like a fixed one, which the tracer must not flag.
    pub fn expects_dead_test_vectors(self) -> bool {
        self.mode == Mode::Buggy && self.scenario.resumes()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

use Mode::{Buggy, Fixed, Opaque};

/// The late-interrupt hibernations, each its own run (one hibernation per run), on the newest
/// kernel of the full plan. Without `--only` the buggy one alone: its control and plain vectors
/// stay alive, so it shows G5 on no live vector as well as on the dead ones, and the fixed one
/// (`--only hibernate-late`) would add a QEMU run to CI's 40 minutes and no other proof. The
/// buggy one is recorded by `verify`, and stands in there for the full plan's own buggy
/// hibernation under verify ([`DEFAULT_RUNS`]' last run): verify is what a test suite runs,
/// where a G5 warning on a vector that fired up to the freeze would fail a fixed kernel, and
/// one QEMU run (two kernel boots, a hibernation, a msitrace start: 40 s of CPU under TCG)
/// proves both.
const LATE_RUNS: &[&[Step]] = &[
    &[Step::new(HibernateLate, Buggy).with(Front::Verify)],
    &[Step::new(HibernateLate, Fixed)],
];
use Scenario::*;

/// Every step, in QEMU runs. Each run starts with its hibernation (the resumed kernel then runs
/// the rest), and S3 comes last in its run: after a real S3 only the host ends the guest. Hotplug
/// and reset run in buggy mode only: it is the mode that must stay clean there. The TUI records
/// the buggy hibernation (it must live through the machine's own hibernation and show the
/// divergence after) and the daemon the buggy pm_test and the buggy S3.
pub const DEFAULT_RUNS: &[&[Step]] = &[
    &[
        Step::new(Hibernate, Buggy).with(Front::Live),
        Step::new(Hotplug, Buggy),
        Step::new(Reset, Buggy),
        Step::new(PmTestPlatform, Fixed),
        Step::new(PmTestPlatform, Buggy).with(Front::Daemon),
        Step::new(Burst, Fixed),
        Step::new(StaleMask, Fixed),
    ],
    &[
        Step::new(Hibernate, Fixed).with(Front::Verify),
        Step::new(PmTestCore, Fixed),
        Step::new(PmTestCore, Opaque),
        Step::new(PmTestCore, Buggy),
        Step::new(S3, Fixed),
        Step::new(S3, Buggy).with(Front::Daemon),
    ],
    // The service as an operator installs it, through a hibernation the system itself starts
    // (systemctl hibernate).
    &[Step::new(Hibernate, Buggy).with(Front::Service)],
    // Last: the late hibernation under verify replaces it where it runs (LATE_RUNS).
    &[Step::new(Hibernate, Buggy).with(Front::Verify)],
];

/// Whether the run boots systemd on the Debian root disk (its steps record with the service,
/// or need what only that disk holds).
pub fn boots_systemd(run: &[Step]) -> bool {
    run.iter()
        .any(|s| s.front == Front::Service || s.scenario.needs_root_disk())
}

/// The kernels of the matrix that run only the core of the plan: both bugs through a real
/// hibernation, the fixed driver through one, and the CPU offline that must stay clean.
pub const CORE_RUNS: &[&[Step]] = &[
    &[
        Step::new(Hibernate, Buggy).with(Front::Verify),
        Step::new(Hotplug, Buggy),
    ],
    &[
        Step::new(Hibernate, Fixed).with(Front::Verify),
        Step::new(StaleMask, Fixed),
    ],
];

/// `cargo xtask demo`: the bug as a user meets it.
pub const DEMO_RUN: &[Step] = &[Step::new(Hibernate, Buggy)];

/// One `--only` item: a scenario, and maybe its mode and front-end.
pub type Filter = (Scenario, Option<Mode>, Option<Front>);

/// Parse `--only` values: a scenario (`s3`), a step (`s3.buggy`), or a step recorded by one
/// front-end (`hibernate.buggy.service`).
pub fn parse_filter(items: &[String]) -> Result<Vec<Filter>> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let mut parts = item.split('.');
        let sc = parts.next().unwrap_or_default();
        let mode = match parts.next() {
            None => None,
            Some("fixed") => Some(Fixed),
            Some("buggy") => Some(Buggy),
            Some("opaque") => Some(Opaque),
            Some(m) => bail!("unknown mode `{m}` in `{item}`: use fixed, buggy or opaque"),
        };
        let front = match parts.next() {
            None => None,
            Some(f) => match [
                Front::Record,
                Front::Live,
                Front::Daemon,
                Front::Service,
                Front::Verify,
            ]
            .into_iter()
            .find(|x| x.name() == f)
            {
                Some(x) => Some(x),
                None => bail!(
                    "unknown front-end `{f}` in `{item}`: use record, live, daemon, service or verify"
                ),
            },
        };
        let Some(sc) = Scenario::from_name(sc) else {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            bail!("unknown scenario `{sc}`: use one of {}", names.join(", "));
        };
        out.push((sc, mode, front));
    }
    Ok(out)
}

/// Which runs a kernel of the matrix boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// [`DEFAULT_RUNS`]: every scenario, mode and front-end.
    Full,
    /// [`CORE_RUNS`].
    Core,
    /// [`CORE_RUNS`] and the systemd service's run.
    CoreAndService,
    /// [`DEFAULT_RUNS`] and the late-interrupt hibernations ([`LATE_RUNS`]).
    FullAndLate,
}

/// The systemd service's run of [`DEFAULT_RUNS`], for the plans that add it to the core.
const SERVICE_RUNS: &[&[Step]] = &[&[Step::new(Hibernate, Buggy).with(Front::Service)]];

/// The comparison with bpftrace, on one kernel (the newest of the full plan: its figures are
/// ratios, which one kernel gives), at the end of its systemd run, which already pays for the
/// root disk's boot. Only when `--only` names it: it is a benchmark (its figures go to `cargo
/// xtask bench`), not a check of msitrace's verdicts, and its passes would add about two
/// minutes to a CI run already past its 40.
const STREAM_STEP: Step = Step::new(Stream, Fixed);

/// A kernel's runs with only the steps the filter keeps (all when it is empty).
pub fn runs(filter: &[Filter], plan: Plan) -> Vec<Vec<Step>> {
    let runs: Vec<&[Step]> = match plan {
        Plan::Full => DEFAULT_RUNS.to_vec(),
        Plan::FullAndLate if filter.is_empty() => DEFAULT_RUNS[..DEFAULT_RUNS.len() - 1]
            .iter()
            .chain(&LATE_RUNS[..1])
            .copied()
            .collect(),
        Plan::FullAndLate => DEFAULT_RUNS.iter().chain(LATE_RUNS).copied().collect(),
        Plan::Core => CORE_RUNS.to_vec(),
        Plan::CoreAndService => CORE_RUNS.iter().chain(SERVICE_RUNS).copied().collect(),
    };
    let runs = runs.into_iter().map(|run| {
        let mut run = run.to_vec();
        if plan == Plan::FullAndLate && !filter.is_empty() && boots_systemd(&run) {
            run.push(STREAM_STEP);
        }
        run
    });
    runs.map(|run| {
        run.into_iter()
            .filter(|s| {
                filter.is_empty()
                    || filter.iter().any(|(sc, m, f)| {
                        *sc == s.scenario
                            && m.is_none_or(|m| m == s.mode)
                            && f.is_none_or(|f| f == s.front)
                    })
            })
            .collect::<Vec<_>>()
    })
    .filter(|r| !r.is_empty())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_runs_and_each_run_has_one_hibernation_first_and_s3_last() {
        let all: Vec<Step> = runs(&[], Plan::FullAndLate)
            .into_iter()
            .chain(runs(&[], Plan::Full))
            .chain(LATE_RUNS.iter().map(|r| r.to_vec()))
            .chain(runs(
                &parse_filter(&["stream".into()]).unwrap(),
                Plan::FullAndLate,
            ))
            .flatten()
            .collect();
        for sc in Scenario::ALL {
            assert!(all.iter().any(|s| s.scenario == sc), "{sc:?} never runs");
        }
        for front in [
            Front::Record,
            Front::Live,
            Front::Daemon,
            Front::Service,
            Front::Verify,
        ] {
            assert!(
                all.iter()
                    .any(|s| s.front == front && s.expects_dead_test_vectors()),
                "{front:?} never records a buggy resume"
            );
        }
        let plans = [
            Plan::Full,
            Plan::Core,
            Plan::CoreAndService,
            Plan::FullAndLate,
        ];
        for run in plans.into_iter().flat_map(|p| runs(&[], p)) {
            let hib = run.iter().filter(|s| s.scenario.hibernates()).count();
            assert!(hib <= 1);
            if hib == 1 {
                assert!(run[0].scenario.hibernates());
            }
            if boots_systemd(&run) {
                assert!(
                    run.iter()
                        .all(|s| s.front == Front::Service || s.scenario == Stream)
                );
            }
            if let Some(i) = run.iter().position(|s| s.scenario == S3) {
                assert!(run[i..].iter().all(|s| s.scenario == S3));
            }
        }
    }

    #[test]
    fn the_late_hibernation_under_verify_replaces_the_plain_one_where_it_runs() {
        let ids = |plan| -> Vec<String> {
            runs(&[], plan)
                .iter()
                .flatten()
                .map(|s| s.plan_item())
                .collect()
        };
        let full = ids(Plan::Full);
        let late = ids(Plan::FullAndLate);
        assert!(full.contains(&"hibernate.buggy.verify".to_string()));
        assert!(!late.contains(&"hibernate.buggy.verify".to_string()));
        assert!(late.contains(&"hibernate-late.buggy.verify".to_string()));
        assert_eq!(
            runs(&[], Plan::FullAndLate).len(),
            runs(&[], Plan::Full).len()
        );
        // Asked for by name, it still runs.
        let f = parse_filter(&["hibernate.buggy.verify".into()]).unwrap();
        assert_eq!(runs(&f, Plan::FullAndLate).len(), 1);
    }

    #[test]
    fn filters_keep_scenarios_and_steps() {
        let f = parse_filter(&["s3.buggy,reset".into()]).unwrap();
        let r = runs(&f, Plan::Full);
        let ids: Vec<String> = r.iter().flatten().map(|s| s.id()).collect();
        assert_eq!(ids, ["reset.buggy", "s3.buggy"]);
        assert!(parse_filter(&["nap".into()]).is_err());
        assert!(parse_filter(&["s3.sleepy".into()]).is_err());
        let f = parse_filter(&["hibernate.buggy.service".into()]).unwrap();
        let r = runs(&f, Plan::Full);
        assert_eq!(r.len(), 1);
        assert!(boots_systemd(&r[0]));
        assert!(parse_filter(&["hibernate.buggy.tui".into()]).is_err());
    }

    #[test]
    fn the_comparison_with_bpftrace_runs_once_in_one_kernels_systemd_run_when_asked() {
        let with_stream = |filter: &[Filter], plan| {
            runs(filter, plan)
                .into_iter()
                .filter(|r| r.iter().any(|s| s.scenario == Stream))
                .collect::<Vec<_>>()
        };
        for plan in [
            Plan::Full,
            Plan::Core,
            Plan::CoreAndService,
            Plan::FullAndLate,
        ] {
            assert!(with_stream(&[], plan).is_empty(), "{plan:?}");
        }
        let stream_and_service = parse_filter(&["stream,hibernate.buggy.service".into()]).unwrap();
        for plan in [Plan::Full, Plan::Core, Plan::CoreAndService] {
            assert!(
                with_stream(&stream_and_service, plan).is_empty(),
                "{plan:?}"
            );
        }
        let r = with_stream(&stream_and_service, Plan::FullAndLate);
        assert_eq!(r.len(), 1);
        assert!(boots_systemd(&r[0]));
        assert_eq!(r[0].last(), Some(&Step::new(Stream, Fixed)));
        assert_eq!(r[0].iter().filter(|s| s.scenario == Stream).count(), 1);
        // Alone, it still boots the disk its tools are on.
        let alone = runs(
            &parse_filter(&["stream".into()]).unwrap(),
            Plan::FullAndLate,
        );
        assert_eq!(alone, [vec![Step::new(Stream, Fixed)]]);
        assert!(boots_systemd(&alone[0]));
        assert!(runs(&parse_filter(&["stream".into()]).unwrap(), Plan::Full).is_empty());
    }
}

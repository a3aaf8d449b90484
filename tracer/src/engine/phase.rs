//! The phase tracker: `power:suspend_resume` actions and their `PM_EVENT_*` values, parsed
//! once into a [`PmAction`], and the engine's phase, resume epochs and compose cycles that
//! follow them.

use serde::Serialize;

use super::divergence::DivergenceUpdate;
use super::gates::NotEvaluated;
use super::state::ResumeEpoch;
use super::{Engine, Pending, RuleId};
use crate::duration::secs;
use crate::event::Event;

/// `PM_EVENT_*` of include/linux/pm.h: the `event` of a `pm_message_t`, as `dpm_*` actions
/// and the device PM callbacks carry it. Stable since 2.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmEvent {
    Freeze,
    Suspend,
    Hibernate,
    Quiesce,
    Resume,
    Thaw,
    Restore,
    Recover,
}

impl PmEvent {
    pub const ALL: [PmEvent; 8] = [
        PmEvent::Freeze,
        PmEvent::Suspend,
        PmEvent::Hibernate,
        PmEvent::Quiesce,
        PmEvent::Resume,
        PmEvent::Thaw,
        PmEvent::Restore,
        PmEvent::Recover,
    ];

    pub const fn bits(self) -> u32 {
        match self {
            PmEvent::Freeze => 0x0001,
            PmEvent::Suspend => 0x0002,
            PmEvent::Hibernate => 0x0004,
            PmEvent::Quiesce => 0x0008,
            PmEvent::Resume => 0x0010,
            PmEvent::Thaw => 0x0020,
            PmEvent::Restore => 0x0040,
            PmEvent::Recover => 0x0080,
        }
    }

    /// The event whose value is exactly `val` (no flag such as PM_EVENT_AUTO set).
    pub fn from_bits(val: u32) -> Option<PmEvent> {
        PmEvent::ALL.into_iter().find(|e| e.bits() == val)
    }

    /// As the kernel's `pm_verb()` names it.
    pub fn name(self) -> &'static str {
        match self {
            PmEvent::Freeze => "freeze",
            PmEvent::Suspend => "suspend",
            PmEvent::Hibernate => "hibernate",
            PmEvent::Quiesce => "quiesce",
            PmEvent::Resume => "resume",
            PmEvent::Thaw => "thaw",
            PmEvent::Restore => "restore",
            PmEvent::Recover => "recover",
        }
    }
}

/// A `power:suspend_resume` action with what its `val` means for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmAction {
    SuspendEnter,
    SyncFilesystems,
    FreezeProcesses,
    FreezeKernelThreads,
    DpmPrepare,
    DpmSuspend(Option<PmEvent>),
    DpmSuspendLate,
    DpmSuspendNoirq,
    /// The CPU going offline.
    CpuOff(u32),
    /// Hibernation when `val` is PM_EVENT_HIBERNATE, else a suspend state (1..=3).
    MachineSuspend(SleepKind),
    /// The CPU coming back.
    CpuOn(u32),
    DpmResumeNoirq(ResumeKind),
    DpmResumeEarly,
    DpmResume,
    SyscoreSuspend,
    SyscoreResume,
    DpmComplete,
    ThawProcesses,
    /// `resume_console`, which 7.x renamed `console_resume_all`.
    ResumeConsole,
    Unknown,
}

impl PmAction {
    pub fn parse(action: &str, val: u32) -> PmAction {
        match action {
            "suspend_enter" => PmAction::SuspendEnter,
            "sync_filesystems" => PmAction::SyncFilesystems,
            "freeze_processes" => PmAction::FreezeProcesses,
            "freeze_kernel_threads" => PmAction::FreezeKernelThreads,
            "dpm_prepare" => PmAction::DpmPrepare,
            "dpm_suspend" => PmAction::DpmSuspend(PmEvent::from_bits(val)),
            "dpm_suspend_late" => PmAction::DpmSuspendLate,
            "dpm_suspend_noirq" => PmAction::DpmSuspendNoirq,
            "CPU_OFF" => PmAction::CpuOff(val),
            "machine_suspend" => PmAction::MachineSuspend(if val == PmEvent::Hibernate.bits() {
                SleepKind::Hibernation
            } else {
                SleepKind::Suspend
            }),
            "CPU_ON" => PmAction::CpuOn(val),
            "dpm_resume_noirq" => PmAction::DpmResumeNoirq(ResumeKind::from_pm_event(val)),
            "dpm_resume_early" => PmAction::DpmResumeEarly,
            "dpm_resume" => PmAction::DpmResume,
            "syscore_suspend" => PmAction::SyscoreSuspend,
            "syscore_resume" => PmAction::SyscoreResume,
            "dpm_complete" => PmAction::DpmComplete,
            "thaw_processes" => PmAction::ThawProcesses,
            "resume_console" | "console_resume_all" => PmAction::ResumeConsole,
            _ => PmAction::Unknown,
        }
    }

    /// What the start of this action tells of the sleep to come, when anything.
    pub fn sleep_kind(self) -> Option<SleepKind> {
        match self {
            PmAction::SuspendEnter => Some(SleepKind::Suspend),
            PmAction::DpmSuspend(Some(PmEvent::Freeze | PmEvent::Quiesce)) => {
                Some(SleepKind::Hibernation)
            }
            PmAction::DpmSuspend(Some(PmEvent::Suspend)) => Some(SleepKind::Suspend),
            _ => None,
        }
    }
}

/// One `power:suspend_resume` event, parsed.
#[derive(Clone, Copy, Debug)]
pub struct PmStep<'a> {
    pub action: PmAction,
    pub begin: bool,
    /// The action as the kernel named it: the cause shown in the timeline.
    pub name: &'a str,
}

impl<'a> PmStep<'a> {
    pub fn parse(action: &'a str, val: u32, begin: bool) -> PmStep<'a> {
        PmStep {
            action: PmAction::parse(action, val),
            begin,
            name: action,
        }
    }
}

/// Where the system is in a suspend/resume cycle, from `power:suspend_resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No suspend seen yet.
    Running,
    /// Processes frozen, device callbacks running.
    Suspending,
    /// Secondary CPUs going or gone offline (`CPU_OFF`): the migration window.
    CpusOffline,
    /// `machine_suspend` for S3 / s2idle / standby.
    Sleeping,
    /// `machine_suspend` for hibernation: the snapshot is taken, the image written.
    Image,
    /// From `dpm_resume_noirq` (a new resume epoch) until devices and processes are back.
    ResumingNoirq,
    /// Devices resumed and processes thawed.
    Resumed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Suspending => "suspending",
            Phase::CpusOffline => "CPUs offline",
            Phase::Sleeping => "sleeping",
            Phase::Image => "image",
            Phase::ResumingNoirq => "resuming-noirq",
            Phase::Resumed => "resumed",
        }
    }

    /// Between the start of a suspend and the end of the resume that follows it.
    pub fn in_transition(self) -> bool {
        !matches!(self, Phase::Running | Phase::Resumed)
    }
}

/// The PM event of a resume epoch, from the `val` of `dpm_resume_noirq` (include/linux/pm.h
/// PM_EVENT_*): tells an S3 resume from the thaw after the hibernation snapshot and from the
/// restore of a hibernation image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeKind {
    Resume,
    Thaw,
    Restore,
    Recover,
    Other(u32),
}

impl ResumeKind {
    pub fn from_pm_event(val: u32) -> ResumeKind {
        match PmEvent::from_bits(val) {
            Some(PmEvent::Resume) => ResumeKind::Resume,
            Some(PmEvent::Thaw) => ResumeKind::Thaw,
            Some(PmEvent::Restore) => ResumeKind::Restore,
            Some(PmEvent::Recover) => ResumeKind::Recover,
            _ => ResumeKind::Other(val),
        }
    }

    pub fn name(self) -> String {
        match self {
            ResumeKind::Resume => "resume".into(),
            ResumeKind::Thaw => "thaw".into(),
            ResumeKind::Restore => "restore".into(),
            ResumeKind::Recover => "recover".into(),
            ResumeKind::Other(v) => format!("pm event {v:#x}"),
        }
    }
}

/// Whether the machine was put to sleep or hibernated, from `machine_suspend`'s `val`
/// (a suspend state 1..=3, or PM_EVENT_HIBERNATE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SleepKind {
    Suspend,
    Hibernation,
    Unknown,
}

impl SleepKind {
    pub fn name(self) -> &'static str {
        match self {
            SleepKind::Suspend => "suspend",
            SleepKind::Hibernation => "hibernation",
            SleepKind::Unknown => "sleep of unknown kind",
        }
    }
}

impl Engine {
    /// The epoch a finding belongs to: while suspending, the resume epoch about to come.
    pub(crate) fn cycle_epoch(&self) -> u32 {
        let suspending = matches!(
            self.state.phase,
            Phase::Suspending | Phase::CpusOffline | Phase::Sleeping | Phase::Image
        );
        if suspending {
            self.state.epoch + 1
        } else {
            self.state.epoch
        }
    }

    fn bump_cycle(&mut self, ts: u64) {
        self.compose.cycle += 1;
        self.compose.cycle_start_ts = ts;
        self.compose.cycle_bumped_since_suspend = true;
    }

    fn begin_suspend(&mut self, ts: u64, cause: &str) {
        // A delayed rule of the previous resume that has not run yet cannot wait any more:
        // the counts and masks it needs are about to change.
        let due: Vec<((u64, u64), Pending)> = self
            .deadlines
            .pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::G1 { .. } | Pending::G5 { .. }))
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        for ((deadline, seq), p) in due {
            self.deadlines.pending.remove(&(deadline, seq));
            let (rule, epoch, need) = match p {
                Pending::G1 { epoch } => (RuleId::G1, epoch, self.timing.g1_grace_ns),
                Pending::G5 { epoch } => (RuleId::G5, epoch, self.timing.g5_silence_ns),
                Pending::G3 { .. } => continue,
            };
            self.findings.not_evaluated(NotEvaluated {
                rule,
                part: None,
                epoch: Some(epoch),
                reason: format!(
                    "the next suspend began {} after resume of epoch {epoch}, needs {}",
                    secs(ts.saturating_sub(deadline.saturating_sub(need))),
                    secs(need)
                ),
            });
        }
        self.drop_held_g1("the next suspend began");
        self.state.suspend_ts_ns = Some(ts);
        self.state.sleep = SleepKind::Unknown;
        self.compose.cycle_bumped_since_suspend = false;
        for v in self.state.vectors.values_mut() {
            v.before_suspend = Some(v.view(ts));
            v.counts.before_suspend = v.counts.last;
            v.counts.fired_before_suspend = v.counts.last_increase_ts_ns.is_some_and(|t| t <= ts);
            v.counts.after_resume = None;
        }
        self.state.set_phase(Phase::Suspending, ts, cause);
    }

    pub(super) fn on_suspend_resume(
        &mut self,
        ev: &Event,
        step: PmStep<'_>,
        out: &mut Vec<DivergenceUpdate>,
    ) {
        let ts = ev.ts_ns;
        let phase = self.state.phase;
        let PmStep {
            action,
            begin: start,
            name,
        } = step;
        match action {
            PmAction::SuspendEnter
            | PmAction::SyncFilesystems
            | PmAction::FreezeProcesses
            | PmAction::FreezeKernelThreads
            | PmAction::DpmPrepare
            | PmAction::DpmSuspend(_)
            | PmAction::DpmSuspendLate
            | PmAction::DpmSuspendNoirq => {
                if start && !phase.in_transition() {
                    self.begin_suspend(ts, name);
                }
                if start && let Some(kind) = action.sleep_kind() {
                    self.state.sleep = kind;
                }
                if start && action == PmAction::DpmSuspendNoirq {
                    // vmbus's noirq suspend runs hv_pci_suspend: the host's remapping entries
                    // may be gone from here on.
                    self.bump_cycle(ts);
                }
            }
            PmAction::CpuOff(cpu) => {
                if start {
                    if matches!(phase, Phase::Running | Phase::Resumed) {
                        self.begin_suspend(ts, "CPU_OFF");
                    }
                    self.state.set_phase(Phase::CpusOffline, ts, "CPU_OFF");
                    self.migration.cpu_going_down = Some((cpu, ts));
                    self.migration.offline_checked.remove(&cpu);
                } else {
                    self.state.cpu_change(ts, cpu, false, "CPU_OFF");
                    self.migration.cpu_going_down = None;
                    if !self.migration.offline_checked.contains(&cpu) {
                        self.g2_offline_cpu(cpu, ev, out);
                    }
                }
            }
            PmAction::MachineSuspend(kind) => {
                if start {
                    let p = match kind {
                        SleepKind::Hibernation => Phase::Image,
                        _ => Phase::Sleeping,
                    };
                    if !phase.in_transition() {
                        self.begin_suspend(ts, "machine_suspend");
                    }
                    self.state.sleep = kind;
                    self.state.set_phase(p, ts, "machine_suspend");
                } else {
                    // Woken, or the image kernel restored: composes before this do not count.
                    self.bump_cycle(ts);
                    self.state
                        .set_phase(Phase::CpusOffline, ts, "machine_suspend end");
                }
            }
            PmAction::CpuOn(cpu) => {
                if !start {
                    self.state.cpu_change(ts, cpu, true, "CPU_ON");
                    self.migration.offline_checked.remove(&cpu);
                    let epoch = self.cycle_epoch();
                    self.schedule(
                        ts.saturating_add(self.timing.g3_grace_ns),
                        Pending::G3 {
                            cpu,
                            online_ts: ts,
                            epoch,
                        },
                    );
                }
            }
            PmAction::DpmResumeNoirq(kind) => {
                if start {
                    if !self.compose.cycle_bumped_since_suspend {
                        self.bump_cycle(ts);
                    }
                    self.compose.cycle_bumped_since_suspend = false;
                    self.state.epoch += 1;
                    let ep = ResumeEpoch {
                        epoch: self.state.epoch,
                        kind,
                        sleep: self.state.sleep,
                        suspend_ts_ns: self.state.suspend_ts_ns,
                        start_ts_ns: ts,
                        resumed_ts_ns: None,
                    };
                    self.state.epochs.push(ep);
                    self.state
                        .set_phase(Phase::ResumingNoirq, ts, "dpm_resume_noirq");
                }
            }
            // syscore runs with one CPU left and interrupts off, between the noirq phases and
            // the sleep itself: nothing a vector's state depends on changes there.
            PmAction::DpmResumeEarly
            | PmAction::DpmResume
            | PmAction::SyscoreSuspend
            | PmAction::SyscoreResume => {}
            PmAction::DpmComplete | PmAction::ThawProcesses | PmAction::ResumeConsole => {
                let done = match action {
                    PmAction::DpmComplete => !start,
                    _ => true,
                };
                if done && phase.in_transition() {
                    self.resumed(ts, name);
                }
            }
            PmAction::Unknown => {
                let n = self
                    .state
                    .unknown_actions
                    .entry(name.to_string())
                    .or_default();
                *n += 1;
            }
        }
    }

    fn resumed(&mut self, ts: u64, cause: &str) {
        let suspend_ts = self.state.suspend_ts_ns.take();
        self.state.set_phase(Phase::Resumed, ts, cause);
        let Some(ep) = self.state.epochs.last_mut() else {
            return;
        };
        // Only the epoch this cycle opened: an aborted suspend (pm_test freezer/devices) has
        // no noirq resume and no new epoch.
        let this_cycle =
            ep.resumed_ts_ns.is_none() && suspend_ts.is_none_or(|s| ep.start_ts_ns >= s);
        if !this_cycle {
            return;
        }
        ep.resumed_ts_ns = Some(ts);
        let epoch = ep.epoch;
        self.schedule(
            ts.saturating_add(self.timing.g1_grace_ns),
            Pending::G1 { epoch },
        );
        self.schedule(
            ts.saturating_add(self.timing.g5_silence_ns),
            Pending::G5 { epoch },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm_events_round_trip_and_flags_are_not_events() {
        for e in PmEvent::ALL {
            assert_eq!(PmEvent::from_bits(e.bits()), Some(e));
        }
        // PM_EVENT_AUTO | PM_EVENT_SUSPEND (runtime suspend) is no plain event.
        assert_eq!(PmEvent::from_bits(0x0402), None);
    }

    #[test]
    fn actions_carry_what_their_value_means() {
        assert_eq!(PmAction::parse("CPU_OFF", 3), PmAction::CpuOff(3));
        assert_eq!(
            PmAction::parse("machine_suspend", PmEvent::Hibernate.bits()),
            PmAction::MachineSuspend(SleepKind::Hibernation)
        );
        assert_eq!(
            PmAction::parse("machine_suspend", 3),
            PmAction::MachineSuspend(SleepKind::Suspend)
        );
        assert_eq!(
            PmAction::parse("dpm_resume_noirq", PmEvent::Restore.bits()),
            PmAction::DpmResumeNoirq(ResumeKind::Restore)
        );
        assert_eq!(
            PmAction::parse("dpm_suspend", PmEvent::Quiesce.bits()).sleep_kind(),
            Some(SleepKind::Hibernation)
        );
        assert_eq!(PmAction::parse("dpm_suspend", 0x0402).sleep_kind(), None);
        assert_eq!(
            PmAction::parse("console_resume_all", 0),
            PmAction::ResumeConsole
        );
        assert_eq!(PmAction::parse("brand_new_action", 0), PmAction::Unknown);
    }
}

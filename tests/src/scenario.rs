//! A small builder for kernel event sequences. Each method appends the events one kernel step
//! produces (the `power:suspend_resume` pair of a phase, a CPU going offline with its migration
//! window, a restore writing each vector), at a clock the scenario advances explicitly, so a
//! test reads like the suspend/resume path it models.

use tracer::btf_layout::BtfFact;
use tracer::engine::{
    Divergence, DivergenceUpdate, Engine, EngineConfig, RuleId, RuleTiming, Severity,
};
use tracer::event::{Event, EventKind, MsiMsg, VectorSnap};
use tracer::probes::{ProbeStatus, Status};
use tracer::report::Report;
use tracer::seed::{Seed, SeedVector};
use tracer_common::ProbeId;

/// One MSI/MSI-X vector of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    pub irq: u32,
    pub dev: &'static str,
    pub index: u32,
    pub msix: bool,
}

impl Vector {
    pub const fn msix(irq: u32, dev: &'static str, index: u32) -> Vector {
        Vector {
            irq,
            dev,
            index,
            msix: true,
        }
    }

    pub const fn msi(irq: u32, dev: &'static str, index: u32) -> Vector {
        Vector {
            irq,
            dev,
            index,
            msix: false,
        }
    }
}

/// What kind of sleep a cycle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sleep {
    /// S3: `suspend_enter`, PM_EVENT_SUSPEND, machine_suspend(mem), resume with PM_EVENT_RESUME.
    S3,
    /// Hibernation as the image kernel sees it: PM_EVENT_FREEZE, machine_suspend(HIBERNATE),
    /// a gap while the image is written and the machine reboots, then PM_EVENT_RESTORE.
    Hibernate,
}

/// An x86 MSI message for a destination APIC id and a vector.
pub fn x86_msg(dest: u32, vector: u32) -> MsiMsg {
    MsiMsg {
        address_lo: 0xfee0_0000 | (dest << 12),
        address_hi: 0,
        data: vector,
    }
}

pub struct Scenario {
    pub kernel: String,
    pub probes: Vec<ProbeStatus>,
    pub seed: Seed,
    pub timing: RuleTiming,
    /// What the kernel's BTF showed (the kernel gates' input); empty = unknown, as in a
    /// trace file written before msitrace kept facts.
    pub btf_facts: Vec<BtfFact>,
    events: Vec<Event>,
    now: u64,
    cpu: u32,
}

impl Scenario {
    /// A scenario on `kernel` with every probe attached, CPUs 0 and 1 online, at t = 1 s.
    pub fn new(kernel: &str) -> Scenario {
        Scenario {
            kernel: kernel.to_string(),
            probes: EngineConfig::all_probes_attached(),
            seed: Seed {
                taken_ns: 1_000_000_000,
                online_cpus: vec![0, 1],
                vectors: Vec::new(),
            },
            timing: RuleTiming::default(),
            btf_facts: Vec::new(),
            events: Vec::new(),
            now: 1_000_000_000,
            cpu: 0,
        }
    }

    /// Mark probes with another status (e.g. `Absent` for pci_hyperv's when it is not loaded).
    pub fn probe_status(mut self, probes: &[ProbeId], status: Status) -> Scenario {
        for p in &mut self.probes {
            if probes.contains(&p.probe) {
                p.status = status;
                p.reason = None;
            }
        }
        self
    }

    /// A vector present at start: its action, its CPU (effective affinity) and count.
    pub fn seed_vector(
        mut self,
        v: Vector,
        action: Option<&str>,
        cpu: Option<u32>,
        count: u64,
    ) -> Scenario {
        self.seed.vectors.push(SeedVector {
            irq: v.irq,
            device: Some(v.dev.to_string()),
            driver: Some("hvfake".into()),
            kind: Some(if v.msix { "msix" } else { "msi" }.into()),
            chip: Some(format!(
                "PCI-{}-{}",
                if v.msix { "MSIX" } else { "MSI" },
                v.dev
            )),
            actions: action.map(str::to_string),
            count,
            cpus_fired: Vec::new(),
            effective_cpus: cpu.map(|c| vec![c]),
            msi_index: Some(v.index),
            hv_bus: None,
            debugfs: None,
        });
        self
    }

    /// Put the last seeded vector's device on a Hyper-V bus.
    pub fn on_hv_bus(mut self, bus: &str) -> Scenario {
        if let Some(v) = self.seed.vectors.last_mut() {
            v.hv_bus = Some(bus.to_string());
        }
        self
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn seed(&self) -> &tracer::seed::Seed {
        &self.seed
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn wait_ms(&mut self, ms: u64) -> &mut Scenario {
        self.now += ms * 1_000_000;
        self
    }

    /// Following events run on this CPU.
    pub fn on_cpu(&mut self, cpu: u32) -> &mut Scenario {
        self.cpu = cpu;
        self
    }

    /// Append an event at the current time (then 1 µs passes).
    pub fn push(&mut self, kind: EventKind) -> &mut Scenario {
        self.events.push(Event {
            ts_ns: self.now,
            cpu: self.cpu,
            tgid: 1,
            kind,
        });
        self.now += 1_000;
        self
    }

    pub fn snap(v: Vector) -> VectorSnap {
        VectorSnap {
            irq: v.irq,
            hwirq: v.index as u64,
            device: Some(v.dev.into()),
            msi_index: Some(v.index),
            msix: Some(v.msix),
            ..Default::default()
        }
    }

    fn snap_masked(v: Vector, cache: bool, irqd: bool, in_migration: bool) -> VectorSnap {
        VectorSnap {
            cache_masked: Some(cache),
            irqd_masked: Some(irqd),
            irqd_disabled: Some(false),
            managed: Some(false),
            managed_shutdown: Some(false),
            chip_data: Some(0xffff_8880_0100_0000 + v.irq as u64),
            in_migration,
            ..Self::snap(v)
        }
    }

    pub fn pm(&mut self, action: &str, val: u32, start: bool) -> &mut Scenario {
        self.push(EventKind::SuspendResume {
            action: action.to_string(),
            val,
            start,
        })
    }

    /// The begin/end pair of a phase.
    pub fn pm_span(&mut self, action: &str, val: u32) -> &mut Scenario {
        self.pm(action, val, true).wait_ms(1).pm(action, val, false)
    }

    /// hv_compose_msi_msg entry and return with `msg` (zero = the host refused), and
    /// `chip_data` as pci-hyperv leaves it: NULL after a failure, the descriptor otherwise.
    pub fn compose(&mut self, v: Vector, msg: MsiMsg) -> &mut Scenario {
        let chip_data = if msg.is_zero() {
            0
        } else {
            0xffff_8880_0100_0000 + v.irq as u64
        };
        self.compose_with_chip_data(v, msg, Some(chip_data))
    }

    /// hv_compose_msi_msg entry and return with `msg` and whatever `chip_data` the driver
    /// leaves (a pci-hyperv-like driver may keep its descriptor elsewhere and leave it NULL).
    pub fn compose_with_chip_data(
        &mut self,
        v: Vector,
        msg: MsiMsg,
        chip_data: Option<u64>,
    ) -> &mut Scenario {
        let mut s = Self::snap_masked(v, false, false, false);
        s.chip_data = chip_data;
        self.push(EventKind::ComposeEnter(Self::snap(v)));
        // pci-hyperv: a good message comes from the host's reply (status 0); a zeroed one
        // here stands for a compose that got no reply (the device gone, the channel closed).
        if !msg.is_zero() {
            self.host_reply(Some(v.irq), Some(0));
        }
        self.push(EventKind::ComposeExit {
            v: s,
            msg: Some(msg),
        })
    }

    /// hv_pci_compose_compl: the host's reply, attributed to the in-flight compose of `irq`
    /// (`None`: no compose in flight owned its context), with `resp->status`.
    pub fn host_reply(&mut self, irq: Option<u32>, status: Option<i32>) -> &mut Scenario {
        self.push(EventKind::ComposeCompl {
            irq,
            status,
            resp_size: 36,
        })
    }

    /// hv_compose_msi_msg entry, the host's reply with `status`, and the return with `msg`
    /// (`None`: unreadable), as pci-hyperv leaves chip_data.
    pub fn compose_replied(
        &mut self,
        v: Vector,
        status: i32,
        msg: Option<MsiMsg>,
    ) -> &mut Scenario {
        let mut s = Self::snap_masked(v, false, false, false);
        let good = status >= 0 && msg.is_some_and(|m| !m.is_zero());
        s.chip_data = Some(if good {
            0xffff_8880_0100_0000 + v.irq as u64
        } else {
            0
        });
        self.push(EventKind::ComposeEnter(Self::snap(v)));
        self.host_reply(Some(v.irq), Some(status));
        self.push(EventKind::ComposeExit { v: s, msg })
    }

    /// hv_compose_msi_msg entry and return with `msg` and no reply from the host in between:
    /// the multi-MSI early return that reuses the old entry.
    pub fn compose_unreplied(&mut self, v: Vector, msg: MsiMsg) -> &mut Scenario {
        let s = Self::snap_masked(v, false, false, false);
        self.push(EventKind::ComposeEnter(Self::snap(v)));
        self.push(EventKind::ComposeExit {
            v: s,
            msg: Some(msg),
        })
    }

    /// hv_irq_unmask entry and return that clears the mask cache, with `chip_data` as read.
    pub fn hv_unmask_with_chip_data(&mut self, v: Vector, chip_data: Option<u64>) -> &mut Scenario {
        let mut enter = Self::snap_masked(v, true, true, false);
        enter.chip_data = chip_data;
        let mut exit = Self::snap_masked(v, false, true, false);
        exit.chip_data = chip_data;
        self.push(EventKind::UnmaskEnter(enter));
        self.push(EventKind::UnmaskExit(exit))
    }

    /// hv_irq_unmask entry and return; `left_masked`: the buggy early return.
    pub fn hv_unmask(&mut self, v: Vector, left_masked: bool, in_migration: bool) -> &mut Scenario {
        self.push(EventKind::UnmaskEnter(Self::snap_masked(
            v,
            true,
            !in_migration,
            in_migration,
        )));
        self.push(EventKind::UnmaskExit(Self::snap_masked(
            v,
            left_masked,
            !in_migration,
            in_migration,
        )))
    }

    pub fn hv_mask(&mut self, v: Vector, in_migration: bool) -> &mut Scenario {
        self.push(EventKind::MaskEnter(Self::snap_masked(
            v,
            false,
            false,
            in_migration,
        )));
        self.push(EventKind::MaskExit(Self::snap_masked(
            v,
            true,
            false,
            in_migration,
        )))
    }

    /// The per-device MSI domain's mask callback (`pci_irq_mask_msi(x)`, 6.2 and later), as
    /// genirq or the CPU-offline migration calls it for an ordinary device: seen on entry,
    /// the mask cache still clear, genirq's view unchanged (enabled).
    pub fn pci_irq_mask(&mut self, v: Vector) -> &mut Scenario {
        let mut s = Self::snap_masked(v, false, false, false);
        s.chip_data = None;
        self.push(EventKind::PciIrqMask { v: s, msix: v.msix })
    }

    /// `pci_irq_unmask_msi(x)` on entry: the mask cache still set.
    pub fn pci_irq_unmask(&mut self, v: Vector) -> &mut Scenario {
        let mut s = Self::snap_masked(v, true, false, false);
        s.chip_data = None;
        self.push(EventKind::PciIrqUnmask { v: s, msix: v.msix })
    }

    /// pci_restore_msi_state of `dev`, writing each vector's message and mask cache.
    pub fn restore(&mut self, dev: &str, writes: &[(Vector, MsiMsg, bool)]) -> &mut Scenario {
        self.push(EventKind::RestoreEnter {
            device: dev.to_string(),
            msi_enabled: Some(writes.iter().any(|w| !w.0.msix)),
            msix_enabled: Some(writes.iter().any(|w| w.0.msix)),
            power_state: Some(0),
        });
        for &(v, msg, masked) in writes {
            let mut s = Self::snap_masked(v, masked, false, false);
            s.chip_data = None;
            self.push(EventKind::WriteMsiMsg {
                v: s,
                msg,
                in_restore: true,
                power_state: Some(0),
            });
        }
        self.push(EventKind::RestoreExit {
            device: dev.to_string(),
        })
    }

    pub fn vector_update(&mut self, irq: u32, cpu: u32, vector: u32) -> &mut Scenario {
        self.push(EventKind::VectorUpdate {
            irq,
            vector,
            cpu,
            prev_vector: 0,
            prev_cpu: 0,
        })
    }

    /// `irq_vectors:vector_config`: the vector, CPU and destination APIC id the kernel
    /// programmed (the only event that shows which APIC id a CPU has).
    pub fn vector_config(
        &mut self,
        irq: u32,
        cpu: u32,
        vector: u32,
        apicdest: u32,
    ) -> &mut Scenario {
        self.push(EventKind::VectorConfig {
            irq,
            vector,
            cpu,
            apicdest,
        })
    }

    /// `__pci_write_msi_msg` outside a restore (activation, or a set_affinity that rewrites
    /// the message, as in the CPU-offline migration).
    pub fn write_msg(&mut self, v: Vector, msg: MsiMsg, in_migration: bool) -> &mut Scenario {
        let s = VectorSnap {
            in_migration,
            ..Self::snap(v)
        };
        self.push(EventKind::WriteMsiMsg {
            v: s,
            msg,
            in_restore: false,
            power_state: Some(0),
        })
    }

    pub fn set_affinity(&mut self, irq: u32, ret: i32) -> &mut Scenario {
        self.push(EventKind::SetAffinityEnter {
            irq,
            in_migration: true,
        });
        self.push(EventKind::SetAffinityExit {
            irq,
            ret,
            in_migration: true,
        })
    }

    pub fn activate(&mut self, irq: u32, managed: bool, active: bool) -> &mut Scenario {
        let kind = if active {
            EventKind::VectorActivate {
                irq,
                managed,
                can_reserve: !managed,
                reserve: false,
            }
        } else {
            EventKind::VectorDeactivate {
                irq,
                managed,
                can_reserve: !managed,
                reserve: false,
            }
        };
        self.push(kind)
    }

    pub fn counts(&mut self, counts: &[(u32, u64)]) -> &mut Scenario {
        self.push(EventKind::IrqCounts {
            counts: counts.to_vec(),
        })
    }

    pub fn lost(&mut self, probe: ProbeId, count: u64) -> &mut Scenario {
        self.push(EventKind::Lost { probe, count })
    }

    pub fn gap(&mut self, reason: &str) -> &mut Scenario {
        self.push(EventKind::Gap {
            reason: reason.to_string(),
        })
    }

    /// Freeze processes and suspend devices down to noirq.
    pub fn suspend_devices(&mut self, sleep: Sleep) -> &mut Scenario {
        let event = match sleep {
            Sleep::S3 => {
                self.pm("suspend_enter", 3, true);
                0x0002
            }
            Sleep::Hibernate => 0x0001,
        };
        self.pm_span("freeze_processes", 0)
            .pm_span("dpm_prepare", event)
            .pm_span("dpm_suspend", event)
            .pm_span("dpm_suspend_late", event)
            .pm_span("dpm_suspend_noirq", event)
    }

    /// `CPU_OFF` of `cpu`: its migration window runs `body` on the dying CPU.
    pub fn cpu_off(&mut self, cpu: u32, body: impl FnOnce(&mut Scenario)) -> &mut Scenario {
        let back = self.cpu;
        self.pm("CPU_OFF", cpu, true);
        self.on_cpu(cpu).push(EventKind::MigrateAllOffEnter);
        body(self);
        self.on_cpu(cpu).push(EventKind::MigrateAllOffExit);
        self.on_cpu(back).pm("CPU_OFF", cpu, false)
    }

    /// A CPU taken offline through sysfs: the migration window without `CPU_OFF`.
    pub fn sysfs_offline(&mut self, cpu: u32, body: impl FnOnce(&mut Scenario)) -> &mut Scenario {
        let back = self.cpu;
        self.on_cpu(cpu).push(EventKind::MigrateAllOffEnter);
        body(self);
        self.on_cpu(cpu).push(EventKind::MigrateAllOffExit);
        self.on_cpu(back)
    }

    /// machine_suspend: sleep (S3) or snapshot + image write + reboot + image load (hibernation).
    pub fn sleep(&mut self, sleep: Sleep) -> &mut Scenario {
        match sleep {
            Sleep::S3 => {
                self.pm("machine_suspend", 3, true)
                    .wait_ms(1000)
                    .pm("machine_suspend", 3, false)
            }
            Sleep::Hibernate => self.pm("machine_suspend", 0x0004, true).wait_ms(15_000).pm(
                "machine_suspend",
                0x0004,
                false,
            ),
        }
    }

    /// `CPU_ON` of `cpu`, running `body` while it comes up (managed vectors restart here).
    pub fn cpu_on(&mut self, cpu: u32, body: impl FnOnce(&mut Scenario)) -> &mut Scenario {
        self.pm("CPU_ON", cpu, true);
        body(self);
        self.pm("CPU_ON", cpu, false)
    }

    /// `dpm_resume_noirq` (a new resume epoch), running `body` inside it (the restores).
    pub fn resume_noirq(
        &mut self,
        sleep: Sleep,
        body: impl FnOnce(&mut Scenario),
    ) -> &mut Scenario {
        let event = match sleep {
            Sleep::S3 => 0x0010,
            Sleep::Hibernate => 0x0040,
        };
        self.pm("dpm_resume_noirq", event, true);
        body(self);
        self.pm("dpm_resume_noirq", event, false)
    }

    /// The rest of the resume: early, normal, complete, thaw.
    pub fn resume_devices(&mut self, sleep: Sleep) -> &mut Scenario {
        let event = match sleep {
            Sleep::S3 => 0x0010,
            Sleep::Hibernate => 0x0040,
        };
        self.pm_span("dpm_resume_early", event)
            .pm_span("dpm_resume", event)
            .pm_span("dpm_complete", event)
            .pm_span("thaw_processes", 0)
    }

    /// Sample handler counts every second for `secs` seconds, each vector growing by `grow`.
    pub fn tick_counts(&mut self, counts: &mut [(u32, u64, u64)], secs: u64) -> &mut Scenario {
        for _ in 0..secs {
            self.wait_ms(1000);
            for (_, c, grow) in counts.iter_mut() {
                *c += *grow;
            }
            let sample: Vec<(u32, u64)> = counts.iter().map(|(i, c, _)| (*i, *c)).collect();
            self.counts(&sample);
        }
        self
    }

    /// Feed every event to a fresh engine, finish at the current time, build the report.
    pub fn run(&self) -> Outcome {
        let cfg = EngineConfig {
            kernel_release: self.kernel.clone(),
            probes: self.probes.clone(),
            seed: self.seed.clone(),
            timing: self.timing,
            btf_facts: self.btf_facts.clone(),
        };
        let mut engine = Engine::new(cfg);
        let mut updates = Vec::new();
        for ev in &self.events {
            updates.extend(engine.apply(ev));
        }
        updates.extend(engine.finish(self.now));
        let report = Report::from_engine(&engine);
        Outcome {
            engine,
            updates,
            report,
        }
    }
}

pub struct Outcome {
    pub engine: Engine,
    pub updates: Vec<DivergenceUpdate>,
    pub report: Report,
}

impl Outcome {
    pub fn divergences(&self) -> &[Divergence] {
        self.engine.divergences()
    }

    /// (rule, irq) of every divergence, sorted: what a test compares.
    pub fn fired(&self) -> Vec<(RuleId, Option<u32>)> {
        let mut v: Vec<(RuleId, Option<u32>)> =
            self.divergences().iter().map(|d| (d.rule, d.irq)).collect();
        v.sort();
        v
    }

    pub fn find(&self, rule: RuleId, irq: u32) -> Option<&Divergence> {
        self.divergences()
            .iter()
            .find(|d| d.rule == rule && d.irq == Some(irq))
    }

    pub fn severity(&self, rule: RuleId, irq: u32) -> Option<Severity> {
        self.find(rule, irq).map(|d| d.severity)
    }

    pub fn not_evaluated(&self, rule: RuleId) -> Vec<String> {
        self.report
            .not_evaluated
            .iter()
            .filter(|n| n.rule == rule)
            .map(|n| n.reason.clone())
            .collect()
    }
}

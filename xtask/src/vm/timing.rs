//! Where a guest run's wall time goes, from the guest's own console lines (each carries the
//! guest's uptime) and the host's wall clock around QEMU. The kernel matrix is the largest part
//! of CI, and a step cannot be cut well before it is known whether boots, hibernation images,
//! msitrace's start or the steps' own waits cost the time.
//!
//! The guest's uptime is CLOCK_BOOTTIME, which the kernel advances across a hibernation by the
//! time the RTC saw pass: "sleep" below is the whole of image write, power-off, restore boot
//! and image read. What the guest's clock cannot see (QEMU's start, firmware, the kernel's load
//! before its clock runs, power-off at the end) is the wall time less the last uptime read.

use std::time::Duration;

/// One run's breakdown, in seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Breakdown {
    pub runs: u32,
    pub wall: f64,
    /// Kernel start to the first step (init, modules; systemd's boot in the service runs).
    pub boot: f64,
    /// msitrace started until it said it was recording (`recording … after=`).
    pub msitrace_start: f64,
    /// Hibernations, from `hibernating` to `resumed`.
    pub sleep: f64,
    /// The steps' remaining time: their actions, settle windows, checks and saved outputs.
    pub steps: f64,
    /// Guest time outside any step after the first began, and after the last ended.
    pub between: f64,
    /// Wall time the guest's clock does not cover.
    pub outside: f64,
    /// QEMU's CPU time, over the runs that had it read ([`Breakdown::cpu_runs`]).
    pub cpu: f64,
    pub cpu_runs: u32,
    /// The same CPU time by phase, from the runs' timelines ([`Breakdown::with_timeline`]).
    pub cpu_split: CpuSplit,
}

/// QEMU's CPU time by phase. Three guests at a time on two cores keep the host's cores busy,
/// and then the plan's wall time follows its CPU time, not the guests' clocks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuSplit {
    /// QEMU's start to the first step: firmware, the kernel's boot, init (systemd's boot).
    pub boot: f64,
    /// From the line before each `recording` to it: msitrace's start.
    pub start: f64,
    /// From the line before each `recorded` to it: msitrace's stop (the hooks' detach), and in
    /// the buggy sleep steps G5's window waited out before it.
    pub stop: f64,
    /// `hibernating` to `resumed`: image written, power-off, the boot kernel, image read.
    pub sleep: f64,
    /// The rest: the steps' actions, fires, checks and saves.
    pub rest: f64,
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
}

/// `console` is the run's serial console; `wall` what the host measured around QEMU, `cpu` the
/// CPU time QEMU used.
pub fn of_run(console: &str, wall: Duration, cpu: Option<Duration>) -> Breakdown {
    let mut b = Breakdown {
        runs: 1,
        wall: wall.as_secs_f64(),
        cpu: cpu.map_or(0.0, |c| c.as_secs_f64()),
        cpu_runs: u32::from(cpu.is_some()),
        ..Breakdown::default()
    };
    let mut first_begin = None;
    let mut begin = None;
    let mut hibernating = None;
    let mut in_steps = 0.0;
    let mut last_uptime: f64 = 0.0;
    for line in console.lines() {
        let Some(rest) = line.find("VMT ").map(|i| &line[i + 4..]) else {
            continue;
        };
        let uptime = field(rest, "uptime=");
        if let Some(u) = uptime {
            last_uptime = last_uptime.max(u);
        }
        let word = rest.split_whitespace().next().unwrap_or("");
        match (word, uptime) {
            ("step", Some(u)) if rest.contains(" begin ") => {
                first_begin.get_or_insert(u);
                begin = Some(u);
            }
            ("step", Some(u)) if rest.contains(" end ") => {
                if let Some(b0) = begin.take() {
                    in_steps += u - b0;
                }
            }
            ("recording", _) => b.msitrace_start += field(rest, "after=").unwrap_or(0.0),
            ("hibernating", Some(u)) => hibernating = Some(u),
            ("resumed", Some(u)) => {
                if let Some(h) = hibernating.take() {
                    b.sleep += u - h;
                }
            }
            _ => {}
        }
    }
    let Some(first) = first_begin else {
        b.outside = b.wall;
        return b;
    };
    b.boot = first;
    b.steps = (in_steps - b.msitrace_start - b.sleep).max(0.0);
    b.between = (last_uptime - first - in_steps).max(0.0);
    b.outside = (b.wall - last_uptime).max(0.0);
    b
}

impl Breakdown {
    /// Split the CPU time by phase from the run's `timeline.txt`: `wall cpu message` a line,
    /// the host's clock and QEMU's CPU time when each harness line arrived. Each line's CPU
    /// since the line before goes to the phase that line ends.
    pub fn with_timeline(mut self, timeline: &str) -> Breakdown {
        let c = &mut self.cpu_split;
        let mut prev = 0.0;
        let mut begun = false;
        let mut asleep = false;
        for line in timeline.lines() {
            let mut words = line.splitn(3, ' ');
            let (Some(_), Some(cpu), Some(msg)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let Some(cpu) = cpu.parse::<f64>().ok().filter(|c| c.is_finite()) else {
                continue;
            };
            let delta = (cpu - prev).max(0.0);
            prev = cpu;
            let word = msg.split_whitespace().next().unwrap_or("");
            let phase = if !begun {
                begun = word == "step" && msg.contains(" begin ");
                &mut c.boot
            } else if asleep {
                asleep = word != "resumed";
                &mut c.sleep
            } else {
                match word {
                    "recording" => &mut c.start,
                    "recorded" => &mut c.stop,
                    _ => &mut c.rest,
                }
            };
            *phase += delta;
            asleep |= word == "hibernating";
        }
        self
    }

    pub fn add(&mut self, o: &Breakdown) {
        self.runs += o.runs;
        self.wall += o.wall;
        self.boot += o.boot;
        self.msitrace_start += o.msitrace_start;
        self.sleep += o.sleep;
        self.steps += o.steps;
        self.between += o.between;
        self.outside += o.outside;
        self.cpu += o.cpu;
        self.cpu_runs += o.cpu_runs;
        let (c, oc) = (&mut self.cpu_split, &o.cpu_split);
        c.boot += oc.boot;
        c.start += oc.start;
        c.stop += oc.stop;
        c.sleep += oc.sleep;
        c.rest += oc.rest;
    }

    pub fn render(&self, series: &str) -> String {
        // A guest mostly waits (the steps' sleeps, the settle windows): QEMU's CPU time against
        // its wall time says how many runs the host's cores can take at once.
        let cpu = if self.cpu_runs == self.runs && self.wall > 0.0 {
            let c = &self.cpu_split;
            let split = if c.boot + c.start + c.stop + c.sleep + c.rest > 0.0 {
                format!(
                    " (boot {:.0}, msitrace start {:.0}, its stop {:.0}, hibernations {:.0}, \
                     the rest of the steps {:.0})",
                    c.boot, c.start, c.stop, c.sleep, c.rest
                )
            } else {
                String::new()
            };
            format!(
                "; QEMU busy {:.0} s of CPU{split}, {:.0} % of one core",
                self.cpu,
                100.0 * self.cpu / self.wall
            )
        } else {
            String::new()
        };
        format!(
            "{series}: {} run(s), {:.0} s in QEMU: boot {:.0}, msitrace start {:.0}, \
             hibernation images {:.0}, the steps' own work {:.0}, between steps {:.0}, \
             outside the guest's clock {:.0}{cpu}",
            self.runs,
            self.wall,
            self.boot,
            self.msitrace_start,
            self.sleep,
            self.steps,
            self.between,
            self.outside,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as a 6.12 guest printed them in CI (hibernate.buggy with `live`, then the burst).
    const CONSOLE: &str = "\
[    8.6] VMT ready uptime=8.60 e1000e=1 swap=/dev/vdb out=/dev/vdc msitrace=1 plan=x
VMT step hibernate.buggy begin uptime=8.68
VMT recording step=hibernate.buggy front=live after=5.2s
VMT action step=hibernate.buggy uptime=28.66
VMT hibernating step=hibernate.buggy uptime=28.93
VMT resumed step=hibernate.buggy rc=0 uptime=55.75
VMT step hibernate.buggy end uptime=64.78
VMT step burst.fixed begin uptime=64.88
VMT recording step=burst.fixed front=record after=4.2s
VMT burst step=burst.fixed rounds=7000 from=73.16 to=85.06
VMT step burst.fixed end uptime=90.36
VMT done uptime=90.50
";

    #[test]
    fn splits_a_run_by_the_guests_own_clock() {
        let b = of_run(CONSOLE, Duration::from_secs_f64(100.0), None);
        let near = |a: f64, e: f64| (a - e).abs() < 1e-6;
        assert!(near(b.boot, 8.68));
        assert!(near(b.msitrace_start, 9.4));
        assert!(near(b.sleep, 26.82));
        // In steps: 56.10 + 25.48 = 81.58, less the start and the sleep.
        assert!(near(b.steps, 81.58 - 9.4 - 26.82), "{b:?}");
        assert!(near(b.between, 90.50 - 8.68 - 81.58), "{b:?}");
        assert!(near(b.outside, 100.0 - 90.50));
        let sum = b.boot + b.msitrace_start + b.sleep + b.steps + b.between + b.outside;
        assert!(
            near(sum, b.wall),
            "the parts add up to the wall time: {sum}"
        );
    }

    // The host's lines for the same kind of run: wall, QEMU's CPU, the guest's line.
    const TIMELINE: &str = "\
10.00 7.00 boot kernel=6.12 uptime=6.8
12.00 8.00 ready uptime=8.60
12.10 8.10 step hibernate.buggy begin uptime=8.68
12.20 8.20 vectors step=hibernate.buggy control=37 test=38,39 plain=40
20.00 14.20 recording step=hibernate.buggy front=live after=5.2s
30.00 15.00 action step=hibernate.buggy uptime=28.66
30.20 15.20 hibernating step=hibernate.buggy uptime=28.93
45.00 25.20 boot kernel=6.12 uptime=7.1
46.00 26.20 resume-image dev=254:0 uptime=8.0
52.00 30.20 resumed step=hibernate.buggy rc=0 uptime=55.75
60.00 33.20 live step=hibernate.buggy phase=after vector=0
63.00 35.20 recorded step=hibernate.buggy front=live rc=0 bytes=1
64.00 35.70 step hibernate.buggy end uptime=64.78
64.10 nan step burst.fixed begin uptime=64.88
";

    #[test]
    fn splits_the_cpu_by_the_line_each_phase_ends_on() {
        let b = of_run(
            CONSOLE,
            Duration::from_secs(100),
            Some(Duration::from_secs(40)),
        )
        .with_timeline(TIMELINE);
        let c = &b.cpu_split;
        let near = |a: f64, e: f64| (a - e).abs() < 1e-6;
        assert!(near(c.boot, 8.10), "{c:?}");
        assert!(near(c.start, 6.0), "{c:?}");
        assert!(near(c.sleep, 15.0), "{c:?}");
        assert!(near(c.stop, 2.0), "{c:?}");
        // vectors 0.1, action 0.8, hibernating 0.2, live 3.0, end 0.5; the NaN line is skipped.
        assert!(near(c.rest, 4.6), "{c:?}");
        assert!(near(c.boot + c.start + c.sleep + c.stop + c.rest, 35.7));
        let line = b.render("6.12");
        assert!(
            line.contains(
                "QEMU busy 40 s of CPU (boot 8, msitrace start 6, its stop 2, hibernations 15, \
                 the rest of the steps 5), 40 % of one core"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_run_that_never_reached_a_step_is_all_outside() {
        let b = of_run("garbage\n[ 1.0] no VMT lines", Duration::from_secs(7), None);
        assert_eq!(b.outside, 7.0);
        assert_eq!(b.boot + b.steps + b.sleep, 0.0);
    }

    #[test]
    fn runs_add_up_per_kernel() {
        let mut k = of_run(
            CONSOLE,
            Duration::from_secs(100),
            Some(Duration::from_secs(30)),
        );
        k.add(&of_run(
            CONSOLE,
            Duration::from_secs(100),
            Some(Duration::from_secs(50)),
        ));
        assert_eq!(k.runs, 2);
        let line = k.render("6.12");
        assert!(
            line.starts_with("6.12: 2 run(s), 200 s in QEMU: boot 17,"),
            "{line}"
        );
        assert!(
            line.ends_with("; QEMU busy 80 s of CPU, 40 % of one core"),
            "{line}"
        );
        // One run whose CPU time was not read: no figure rather than a short one.
        k.add(&of_run(CONSOLE, Duration::from_secs(100), None));
        assert!(!k.render("6.12").contains("busy"));
    }
}

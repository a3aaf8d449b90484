//! The live source of events: loads the eBPF object with this kernel's layout, lets the probe
//! manager attach what it can, drains the ring buffer into typed [`Event`]s, and turns the
//! per-CPU loss counters and the per-IRQ handler counts into in-band events, so that what a
//! trace file holds is everything the live engine saw.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
};
use tokio::io::unix::AsyncFd;
use tracer_common::{NUM_PROBES, ProbeId, names};

use crate::{
    btf_layout::{self, ResolvedLayout},
    event::{Event, EventKind, NameCache},
    irq_counts::{IrqCountMode, IrqCountSource, IrqCounters, KernelCounts},
    kernel::{self, KernelSymbols},
    probe_manager::ProbeManager,
    probes::ProbeStatus,
};

#[derive(Clone, Debug)]
pub struct CollectorOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    pub irq_counts: IrqCountMode,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        CollectorOptions {
            ring_bytes: tracer_common::DEFAULT_RING_BYTES,
            irq_counts: IrqCountMode::default(),
        }
    }
}

/// Where the time of starting went. On an emulated guest starting takes seconds (15-19 s
/// under QEMU TCG) where it takes one on real hardware; `probes --timings` says which part.
#[derive(Clone, Debug, Default)]
pub struct StartupTimes {
    /// Resolving the programs' struct layout from the kernel's BTF (vmlinux and modules).
    pub btf: Duration,
    /// Parsing the eBPF object and creating its maps.
    pub object: Duration,
    /// Reading the kernel's symbol table (/proc/kallsyms or its stand-ins).
    pub symbols: Duration,
    /// The kernel's verifier, over `programs` program loads.
    pub verify: Duration,
    /// Attaching (kprobe and tracepoint creation), without the verifier.
    pub attach: Duration,
    pub programs: usize,
}

impl std::fmt::Display for StartupTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let total = self.btf + self.object + self.symbols + self.verify + self.attach;
        write!(
            f,
            "started in {}: BTF layout {}, eBPF object {}, kernel symbols {}, verifier {} ({} programs), attaching {}",
            s(total),
            s(self.btf),
            s(self.object),
            s(self.symbols),
            s(self.verify),
            self.programs,
            s(self.attach)
        )
    }
}

pub struct Collector {
    startup: StartupTimes,
    ebpf: Ebpf,
    manager: ProbeManager,
    layout: ResolvedLayout,
    ring: AsyncFd<RingBuf<MapData>>,
    hits: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    irq_counts: IrqCountSource,
    /// As of the last [`Collector::refresh_counters`].
    counters: Vec<ProbeCounters>,
    lost_reported: [u64; NUM_PROBES as usize],
    modules: Vec<String>,
    decode_errors: u64,
    ring_bytes: u32,
    names: NameCache,
    /// When the last drain that found records ended ([`Collector::readable`]'s pacing).
    last_drain: Option<tokio::time::Instant>,
}

/// The shortest time between two drains that found records. The ring buffer wakes its
/// reader (an irq_work, then the reader's wake-up) for a record only when the reader has
/// consumed everything before it; a reader that drains at every wake-up has always caught
/// up, so a burst paid one wake-up per record or two, inside the probes and on the other
/// CPU. Waiting this long after a drain lets a burst collect in the ring instead (one
/// wake-up per gap), while the first record after a quiet spell still wakes the reader at
/// once. In the 6.12 guest's stream step the recorder woke 33 times per 1,000 events
/// without the gap and 1.3 times with it. The 16 MiB default ring holds some 116,000
/// records: a million a second for a gap.
const DRAIN_GAP: Duration = Duration::from_millis(100);

/// Counters of one probe: what it saw (hits) and what it could not write (lost), and what
/// its program cost in the kernel by the kernel's own accounting (`kernel.bpf_stats_enabled`;
/// both stay 0 while that is off, which is its default: the accounting itself costs).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProbeCounters {
    pub probe: ProbeId,
    pub hits: u64,
    pub lost: u64,
    pub run_ns: u64,
    pub runs: u64,
}

impl Collector {
    /// Resolve the layout from BTF, load the programs and attach every hook that can be.
    /// Must run inside a tokio runtime (the ring buffer is registered with its reactor).
    pub fn start(opts: &CollectorOptions) -> Result<Collector> {
        if !kernel::is_root() {
            bail!(
                "loading eBPF programs needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN for tracepoints): run msitrace with sudo"
            );
        }
        let t0 = Instant::now();
        let layout = btf_layout::resolve_running()?;
        let t_btf = t0.elapsed();
        // RLIMIT_MEMLOCK only matters before 5.11 (memcg accounting replaced it); some
        // containers refuse to raise it, which is harmless on a newer kernel.
        raise_memlock();
        let t1 = Instant::now();
        let mut ebpf = EbpfLoader::new()
            .override_global(names::LAYOUT, &layout.layout, true)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .load(crate::ebpf_object::bytes())
            .context("cannot load msitrace's eBPF object into this kernel")?;
        let t_object = t1.elapsed();
        // Checked before anything attaches: a kernel without the counters is told what to do.
        let kernel_counts = match opts.irq_counts {
            IrqCountMode::Kernel => Some(KernelCounts::new()?),
            IrqCountMode::Bpf => None,
        };
        let mut manager = ProbeManager::new(&layout, opts.irq_counts);
        let t2 = Instant::now();
        let symbols = KernelSymbols::read();
        let t_symbols = t2.elapsed();
        let t3 = Instant::now();
        manager.attach_all(&mut ebpf, &symbols);
        let (programs, verify) = manager.verified();
        let startup = StartupTimes {
            btf: t_btf,
            object: t_object,
            symbols: t_symbols,
            verify,
            attach: t3.elapsed().saturating_sub(verify),
            programs,
        };

        let ring = RingBuf::try_from(take(&mut ebpf, names::EVENTS)?)?;
        // SAFETY: the ring buffer's fd is owned by `ring`, which the AsyncFd owns for its whole
        // life, so the registered fd cannot be closed or reused behind the reactor's back.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("cannot register the ring buffer with the event loop")?;
        let hits = PerCpuArray::try_from(take(&mut ebpf, names::HITS)?)?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, names::LOST)?)?;
        let irq_counts = match kernel_counts {
            Some(k) => IrqCountSource::Kernel(k),
            None => IrqCountSource::Bpf(Box::new(IrqCounters::new(
                take(&mut ebpf, names::IRQ_COUNTS)?,
                take(&mut ebpf, names::IRQ_SPILL)?,
            )?)),
        };
        Ok(Collector {
            ebpf,
            manager,
            layout,
            ring,
            hits,
            lost,
            irq_counts,
            counters: Vec::new(),
            lost_reported: [0; NUM_PROBES as usize],
            modules: kernel::loaded_modules().unwrap_or_default(),
            decode_errors: 0,
            ring_bytes: opts.ring_bytes,
            names: NameCache::default(),
            last_drain: None,
            startup,
        })
    }

    /// How long each part of [`Collector::start`] took.
    pub fn startup(&self) -> &StartupTimes {
        &self.startup
    }

    pub fn statuses(&self) -> &[ProbeStatus] {
        self.manager.statuses()
    }

    pub fn layout(&self) -> &ResolvedLayout {
        &self.layout
    }

    pub fn irq_count_mode(&self) -> IrqCountMode {
        self.irq_counts.mode()
    }

    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// Records the kernel wrote that this build could not decode (a layout mismatch).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Wait until the ring buffer has data (or spuriously), but not sooner than
    /// [`DRAIN_GAP`] after the last drain that found records; cancel-safe.
    pub async fn readable(&self) -> Result<()> {
        if let Some(t) = self.last_drain {
            tokio::time::sleep_until(t + DRAIN_GAP).await;
        }
        let mut guard = self.ring.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Move every record now in the ring buffer to `out`.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let ring = self.ring.get_mut();
        let mut found = false;
        while let Some(item) = ring.next() {
            found = true;
            match Event::decode_named(&item, &mut self.names) {
                Ok(ev) => out.push(ev),
                Err(_) => self.decode_errors += 1,
            }
        }
        self.last_drain = found.then(tokio::time::Instant::now);
    }

    /// Sum a per-CPU counter of one probe.
    fn sum(map: &PerCpuArray<MapData, u64>, probe: ProbeId) -> u64 {
        map.get(&(probe as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Read the attached probes' counters from the kernel: two system calls per probe, plus one per
    /// program with `with_stats` (the BPF statistics, only worth it for the trailer). Called
    /// once per sample, so the idle service makes no more calls than it needs.
    pub fn refresh_counters(&mut self, with_stats: bool) {
        let previous = std::mem::take(&mut self.counters);
        self.counters = ProbeId::ALL
            .iter()
            .map(|&p| {
                // A program that is not attached does not run, so its counters cannot have
                // moved: most hooks of a host are absent, and skipping them is most of the
                // idle daemon's system calls. The final refresh reads every one regardless.
                if !with_stats
                    && self.manager.status(p).status != crate::probes::Status::Attached
                    && let Some(c) = previous.iter().find(|c| c.probe == p)
                {
                    return c.clone();
                }
                let info = with_stats
                    .then(|| self.ebpf.program(p.program())?.info().ok())
                    .flatten();
                let lost = Self::sum(&self.lost, p);
                // The handler counter bumps no hit counter (it is the hottest hook): each of
                // its runs is one count, or one loss. With the kernel's counters it never runs.
                let hits = if p == ProbeId::IrqHandlerEntry {
                    match &self.irq_counts {
                        IrqCountSource::Bpf(b) => b.read().values().sum::<u64>() + lost,
                        IrqCountSource::Kernel(_) => 0,
                    }
                } else {
                    Self::sum(&self.hits, p)
                };
                ProbeCounters {
                    probe: p,
                    hits,
                    lost,
                    run_ns: info.as_ref().map_or(0, |i| i.run_time().as_nanos() as u64),
                    runs: info.as_ref().map_or(0, |i| i.run_count()),
                }
            })
            .collect();
    }

    /// The counters as of the last [`Collector::refresh_counters`].
    pub fn counters(&self) -> &[ProbeCounters] {
        &self.counters
    }

    /// In-band loss events for what was lost up to the last refresh and not yet reported,
    /// stamped `now`.
    pub fn new_losses(&mut self, now_ns: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for c in &self.counters {
            let (p, total) = (c.probe, c.lost);
            let prev = &mut self.lost_reported[p as usize];
            if total > *prev {
                out.push(Event {
                    ts_ns: now_ns,
                    cpu: 0,
                    tgid: 0,
                    kind: EventKind::Lost {
                        probe: p,
                        count: total - *prev,
                    },
                });
                *prev = total;
            }
        }
        out
    }

    /// Cumulative handler counts per IRQ (summed over CPUs) as an in-band event.
    pub fn irq_counts(&self, now_ns: u64) -> Event {
        let counts = self.irq_counts.read();
        Event {
            ts_ns: now_ns,
            cpu: 0,
            tgid: 0,
            kind: EventKind::IrqCounts {
                counts: counts.into_iter().collect(),
            },
        }
    }

    /// Attach what waits for a module once /proc/modules changed. Returns the probes whose
    /// status changed.
    pub fn rescan_modules(&mut self) -> Vec<ProbeId> {
        if !self.manager.has_pending() {
            return Vec::new();
        }
        let Ok(now) = kernel::loaded_modules() else {
            return Vec::new();
        };
        if now == self.modules {
            return Vec::new();
        }
        self.modules = now;
        self.manager
            .attach_all(&mut self.ebpf, &KernelSymbols::read())
    }

    /// Re-attach every kprobe (after a resume where attached kprobes went silent).
    pub fn reattach_kprobes(&mut self) -> Vec<ProbeId> {
        self.manager
            .reattach_kprobes(&mut self.ebpf, &KernelSymbols::read())
    }

    /// Attached probes, for a one-line coverage summary.
    pub fn attached_count(&self) -> (usize, usize) {
        crate::probes::coverage(self.manager.statuses())
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} is not in the eBPF object (build mismatch)"))
}

fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// `--ring-mib`: the BPF ring buffer's size must be a power of two pages; a MiB bound keeps
/// it between what survives a burst and what a guest can spare.
pub fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{s} is not a whole number of MiB"))?;
    if !v.is_power_of_two() || !(1..=1024).contains(&v) {
        return Err(format!(
            "{v} MiB: the ring size must be a power of two from 1 to 1024"
        ));
    }
    Ok(v)
}

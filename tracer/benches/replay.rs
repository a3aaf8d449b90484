//! Replay benchmark: events per second through the trace-file reader and the state engine,
//! and heap bytes per vector, for 10,000 vectors × 100 events (a hibernation cycle with the
//! traffic around it). Prints `figure:` lines that `cargo xtask bench` collects; divan then
//! runs the same work for its statistics. Nothing here asserts a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tracer::engine::{Engine, EngineConfig, RuleTiming};
use tracer::event::{Event, EventKind, MsiMsg, VectorSnap};
use tracer::replayer::{DelayOverrides, Replayer, Step};
use tracer::seed::{Seed, SeedVector};
use tracer::trace_file::{Record, TraceHeader, TraceReader, TraceWriter};

/// Counts live heap bytes, to measure what the engine holds per vector.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const VECTORS: u32 = 10_000;
const PER_DEVICE: u32 = 10;
const FIRST_IRQ: u32 = 100;

struct Workload {
    header: TraceHeader,
    events: Vec<Event>,
    path: PathBuf,
}

fn dev(i: u32) -> String {
    let d = i / PER_DEVICE;
    format!("{:04x}:{:02x}:{:02x}.0", d >> 13, (d >> 5) & 0xff, d & 0x1f)
}

fn snap(i: u32, masked: bool) -> VectorSnap {
    VectorSnap {
        irq: FIRST_IRQ + i,
        hwirq: (i % PER_DEVICE) as u64,
        device: Some(dev(i).into()),
        msi_index: Some(i % PER_DEVICE),
        msix: Some(true),
        cache_masked: Some(masked),
        irqd_masked: Some(false),
        irqd_disabled: Some(false),
        managed: Some(false),
        managed_shutdown: Some(false),
        chip_data: Some(0xffff_8880_0000_0000 + i as u64),
        in_migration: false,
    }
}

fn msg(i: u32) -> MsiMsg {
    MsiMsg {
        address_lo: 0xfee0_0000 | ((i % 2) << 12),
        address_hi: 0,
        data: 0x20 + (i % 200),
    }
}

/// 100 events per vector: nine rounds of ordinary traffic (compose, mask/unmask, affinity
/// changes, message writes) and one hibernation cycle (migration, re-compose, restore), plus
/// the PM events and a handler-count sample every 100,000 events.
fn build() -> Workload {
    let vectors: Vec<SeedVector> = (0..VECTORS)
        .map(|i| SeedVector {
            irq: FIRST_IRQ + i,
            device: Some(dev(i)),
            driver: Some("bench".into()),
            kind: Some("msix".into()),
            chip: Some(format!("PCI-MSIX-{}", dev(i))),
            actions: Some(format!("bench-{i}")),
            count: 10,
            cpus_fired: vec![i % 2],
            effective_cpus: Some(vec![i % 2]),
            msi_index: Some(i % PER_DEVICE),
            hv_bus: None,
            debugfs: None,
        })
        .collect();
    let seed = Seed {
        taken_ns: 1_000_000_000,
        online_cpus: vec![0, 1],
        vectors,
    };
    let header = TraceHeader {
        kernel_release: "6.12.117+deb12-amd64".into(),
        probes: EngineConfig::all_probes_attached(),
        seed,
        // As every recording since the header kept them: without, the replayer reads the
        // whole file once more looking for them in the trailer.
        rule_timing: Some(RuleTiming::default()),
        ..Default::default()
    };
    let mut events = Vec::with_capacity((VECTORS * 100) as usize + 64);
    let mut ts = 1_000_000_000u64;
    let mut push = |events: &mut Vec<Event>, cpu: u32, kind: EventKind| {
        ts += 500;
        events.push(Event {
            ts_ns: ts,
            cpu,
            tgid: 1,
            kind,
        });
        if events.len().is_multiple_of(100_000) && events.len() < (VECTORS * 100) as usize {
            let counts = (0..VECTORS)
                .map(|i| (FIRST_IRQ + i, 10 + events.len() as u64 / 100_000))
                .collect();
            ts += 500;
            events.push(Event {
                ts_ns: ts,
                cpu: 0,
                tgid: 1,
                kind: EventKind::IrqCounts { counts },
            });
        }
    };
    let pm = |events: &mut Vec<Event>,
              push: &mut dyn FnMut(&mut Vec<Event>, u32, EventKind),
              a: &str,
              val: u32| {
        for start in [true, false] {
            push(
                events,
                0,
                EventKind::SuspendResume {
                    action: a.into(),
                    val,
                    start,
                },
            );
        }
    };
    for _round in 0..9 {
        for i in 0..VECTORS {
            let irq = FIRST_IRQ + i;
            let cpu = i % 2;
            push(&mut events, cpu, EventKind::ComposeEnter(snap(i, false)));
            push(
                &mut events,
                cpu,
                EventKind::ComposeExit {
                    v: snap(i, false),
                    msg: Some(msg(i)),
                },
            );
            push(&mut events, cpu, EventKind::MaskEnter(snap(i, false)));
            push(&mut events, cpu, EventKind::MaskExit(snap(i, true)));
            push(&mut events, cpu, EventKind::UnmaskEnter(snap(i, true)));
            push(&mut events, cpu, EventKind::UnmaskExit(snap(i, false)));
            push(
                &mut events,
                cpu,
                EventKind::SetAffinityEnter {
                    irq,
                    in_migration: false,
                },
            );
            push(
                &mut events,
                cpu,
                EventKind::VectorUpdate {
                    irq,
                    vector: 0x20 + i % 200,
                    cpu,
                    prev_vector: 0x20 + i % 200,
                    prev_cpu: cpu,
                },
            );
            push(
                &mut events,
                cpu,
                EventKind::SetAffinityExit {
                    irq,
                    ret: 0,
                    in_migration: false,
                },
            );
            push(
                &mut events,
                cpu,
                EventKind::WriteMsiMsg {
                    v: snap(i, false),
                    msg: msg(i),
                    in_restore: false,
                    power_state: Some(0),
                },
            );
        }
    }
    // The hibernation cycle.
    for a in [
        "freeze_processes",
        "dpm_prepare",
        "dpm_suspend",
        "dpm_suspend_late",
        "dpm_suspend_noirq",
    ] {
        pm(&mut events, &mut push, a, 1);
    }
    push(
        &mut events,
        0,
        EventKind::SuspendResume {
            action: "CPU_OFF".into(),
            val: 1,
            start: true,
        },
    );
    push(&mut events, 1, EventKind::MigrateAllOffEnter);
    for i in (0..VECTORS).filter(|i| i % 2 == 1) {
        let irq = FIRST_IRQ + i;
        let mut s = snap(i, true);
        s.in_migration = true;
        push(&mut events, 1, EventKind::MaskEnter(s.clone()));
        push(&mut events, 1, EventKind::MaskExit(s.clone()));
        push(
            &mut events,
            1,
            EventKind::VectorUpdate {
                irq,
                vector: 0x30,
                cpu: 0,
                prev_vector: 0x20,
                prev_cpu: 1,
            },
        );
        push(&mut events, 1, EventKind::UnmaskEnter(s.clone()));
        s.cache_masked = Some(false);
        push(&mut events, 1, EventKind::UnmaskExit(s));
    }
    push(&mut events, 1, EventKind::MigrateAllOffExit);
    push(
        &mut events,
        0,
        EventKind::SuspendResume {
            action: "CPU_OFF".into(),
            val: 1,
            start: false,
        },
    );
    pm(&mut events, &mut push, "machine_suspend", 4);
    pm(&mut events, &mut push, "CPU_ON", 1);
    push(
        &mut events,
        0,
        EventKind::SuspendResume {
            action: "dpm_resume_noirq".into(),
            val: 0x40,
            start: true,
        },
    );
    for i in 0..VECTORS {
        push(&mut events, 0, EventKind::ComposeEnter(snap(i, false)));
        // The host's reply: without it, rule H1 flags every restored vector, and the
        // benchmark would measure 10,000 divergences' reports instead of a clean cycle.
        push(
            &mut events,
            0,
            EventKind::ComposeCompl {
                irq: Some(FIRST_IRQ + i),
                status: Some(0),
                resp_size: 36,
            },
        );
        push(
            &mut events,
            0,
            EventKind::ComposeExit {
                v: snap(i, false),
                msg: Some(msg(i)),
            },
        );
    }
    for d in 0..VECTORS / PER_DEVICE {
        push(
            &mut events,
            0,
            EventKind::RestoreEnter {
                device: dev(d * PER_DEVICE),
                msi_enabled: Some(false),
                msix_enabled: Some(true),
                power_state: Some(0),
            },
        );
        for i in d * PER_DEVICE..(d + 1) * PER_DEVICE {
            push(
                &mut events,
                0,
                EventKind::WriteMsiMsg {
                    v: snap(i, false),
                    msg: msg(i),
                    in_restore: true,
                    power_state: Some(0),
                },
            );
        }
        push(
            &mut events,
            0,
            EventKind::RestoreExit {
                device: dev(d * PER_DEVICE),
            },
        );
    }
    for a in [
        "dpm_resume_early",
        "dpm_resume",
        "dpm_complete",
        "thaw_processes",
    ] {
        pm(&mut events, &mut push, a, 0x40);
    }
    // Top up to exactly 100 events per vector with ordinary traffic.
    let target = (VECTORS * 100) as usize;
    let mut i = 0;
    while events.len() < target {
        let cpu = 0;
        push(
            &mut events,
            cpu,
            EventKind::UnmaskEnter(snap(i % VECTORS, true)),
        );
        i += 1;
    }
    // `cargo xtask bench` keeps the file (MSITRACE_BENCH_KEEP) to measure the daemon on it.
    let path = match std::env::var_os("MSITRACE_BENCH_KEEP") {
        Some(p) => PathBuf::from(p),
        None => std::env::temp_dir().join(format!("msitrace-bench-{}.trace", std::process::id())),
    };
    let mut w = TraceWriter::create(&path, &header).expect("create the benchmark trace file");
    for ev in &events {
        w.append(ev).expect("write the benchmark trace file");
    }
    w.finish(&serde_json::json!({}))
        .expect("finish the benchmark trace file");
    Workload {
        header,
        events,
        path,
    }
}

fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(build)
}

fn config(h: &TraceHeader) -> EngineConfig {
    EngineConfig {
        kernel_release: h.kernel_release.clone(),
        probes: h.probes.clone(),
        seed: h.seed.clone(),
        timing: RuleTiming::default(),
        btf_facts: h.btf_facts.clone(),
    }
}

/// Replay the file as `msitrace replay` does; returns the engine and the events applied.
fn replay_file(w: &Workload) -> (Engine, u64) {
    let replayer = Replayer::open(std::slice::from_ref(&w.path), DelayOverrides::default())
        .expect("open the benchmark trace file");
    let mut n = 0u64;
    let done = replayer.run(|step, _| {
        if let Step::Event(..) = step {
            n += 1;
        }
    });
    (done.engine, n)
}

/// Read and decode the file only: the reader's share of a replay.
fn read_file(w: &Workload) -> u64 {
    let reader = TraceReader::open(&w.path).expect("open the benchmark trace file");
    reader.filter(|r| matches!(r, Ok(Record::Event(_)))).count() as u64
}

fn replay_memory(w: &Workload) -> (Engine, u64) {
    let mut engine = Engine::new(config(&w.header));
    for e in &w.events {
        engine.apply(e);
    }
    let end = engine.state().now_ns;
    engine.finish(end);
    (engine, w.events.len() as u64)
}

/// Rounds of the interleaved comparison: each round runs every measurement once, in turn, so
/// that a burst of load from other processes lands on all of them rather than on one.
const ROUNDS: usize = 7;

/// Events per second of one run of `f`.
fn rate(f: &dyn Fn() -> u64) -> (f64, u64) {
    let t = Instant::now();
    let n = f();
    (n as f64 / t.elapsed().as_secs_f64(), n)
}

/// "median [min–max]" of rates, in millions per second.
fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:.2} [{:.2}–{:.2}] million events/s",
        v[v.len() / 2] / 1e6,
        v[0] / 1e6,
        v[v.len() - 1] / 1e6
    )
}

fn figures() {
    let w = workload();
    let file_bytes = std::fs::metadata(&w.path).map(|m| m.len()).unwrap_or(0);
    let runs: [&dyn Fn() -> u64; 3] = [
        &|| std::hint::black_box(replay_file(w)).1,
        &|| std::hint::black_box(replay_memory(w)).1,
        &|| std::hint::black_box(read_file(w)),
    ];
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut n = 0;
    for _ in 0..ROUNDS {
        for (f, r) in runs.iter().zip(&mut rates) {
            let (x, got) = rate(*f);
            r.push(x);
            n = got;
        }
    }
    let [file_rate, mem_rate, read_rate] = rates;

    let before = LIVE.load(Ordering::Relaxed);
    let (engine, _) = replay_memory(w);
    let after = LIVE.load(Ordering::Relaxed);
    let per_vector = (after - before) as f64 / VECTORS as f64;
    let vectors = engine.state().vectors.len();
    let divergences = engine.divergences().len();
    drop(engine);

    println!(
        "figure: workload: {VECTORS} vectors x 100 events = {n} events, native file {file_bytes} bytes ({:.1} bytes/event) [exact: the same on every machine]",
        file_bytes as f64 / n as f64
    );
    println!(
        "figure: replay from the native file, one core: {} (median [range] of {ROUNDS} interleaved runs; target >= 10) [absolute: this machine only]",
        spread(file_rate)
    );
    println!(
        "figure: engine alone, decoded events: {} ({ROUNDS} runs) [absolute]",
        spread(mem_rate)
    );
    println!(
        "figure: trace-file reader alone (decode, no engine): {} ({ROUNDS} runs) [absolute]",
        spread(read_rate)
    );
    println!(
        "figure: engine memory after replay: {per_vector:.0} bytes per vector ({vectors} vectors, {divergences} divergences; target <= 1024) [exact]"
    );
}

fn main() {
    // `cargo test --benches` runs this binary with no `--bench`: keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        figures();
        divan::main();
    }
    if std::env::var_os("MSITRACE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_file(&workload().path);
    }
}

#[divan::bench(sample_count = 10)]
fn replay_native_file(b: divan::Bencher) {
    let w = workload();
    b.counter(divan::counter::ItemsCount::new(w.events.len()))
        .bench(|| replay_file(w));
}

#[divan::bench(sample_count = 10)]
fn read_native_file(b: divan::Bencher) {
    let w = workload();
    b.counter(divan::counter::ItemsCount::new(w.events.len()))
        .bench(|| read_file(w));
}

#[divan::bench(sample_count = 10)]
fn engine_only(b: divan::Bencher) {
    let w = workload();
    b.counter(divan::counter::ItemsCount::new(w.events.len()))
        .bench(|| replay_memory(w));
}

//! TUI benchmark: the time of one `msitrace live` frame with 10,000 vectors — the app state
//! rebuilt from the engine (what a redraw after new events does) and the frame drawn at
//! 200x50 and 80x24 — printed as `figure:` lines for `cargo xtask bench`; divan then runs the
//! same work for its statistics. Nothing here asserts a time.

use std::time::Instant;

use ratatui::{Terminal, backend::TestBackend};
use tracer::engine::{Engine, EngineConfig};
use tracer::event::{Event, EventKind};
use tracer::live::{
    app::{App, Source},
    ui,
};
use tracer::seed::{Seed, SeedVector};

const VECTORS: u32 = 10_000;

fn engine() -> Engine {
    let vectors = (0..VECTORS)
        .map(|i| SeedVector {
            irq: 100 + i,
            device: Some(format!("0000:{:02x}:{:02x}.0", i / 320, (i / 10) % 32)),
            driver: Some("nvme".into()),
            msi_index: Some(i % 10),
            kind: Some("PCI-MSIX".into()),
            count: u64::from(i),
            ..SeedVector::default()
        })
        .collect();
    let seed = Seed {
        vectors,
        ..Seed::default()
    };
    Engine::new(EngineConfig::new(
        "6.12",
        EngineConfig::all_probes_attached(),
        seed,
    ))
}

fn app(engine: &Engine) -> App {
    let mut app = App::new(Source::default(), None);
    for i in 0..5_000u64 {
        app.push_event(&Event {
            ts_ns: i * 1000,
            cpu: 0,
            tgid: 0,
            kind: EventKind::MigrateOneIrq {
                irq: 100 + (i as u32 % VECTORS),
            },
        });
    }
    app.refresh(engine);
    app
}

fn draw(term: &mut Terminal<TestBackend>, app: &mut App) {
    term.draw(|f| ui::draw(f, app)).expect("TestBackend draws");
}

fn per_iter(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
}

fn figures() {
    let engine = engine();
    let mut app = app(&engine);
    let refresh = per_iter(50, || app.refresh(&engine));
    let mut big = Terminal::new(TestBackend::new(200, 50)).expect("TestBackend");
    let mut small = Terminal::new(TestBackend::new(80, 24)).expect("TestBackend");
    let draw_big = per_iter(200, || draw(&mut big, &mut app));
    let draw_small = per_iter(200, || draw(&mut small, &mut app));
    println!(
        "figure: render {VECTORS} vectors: {:.2} ms/frame at 200x50 (engine to rows {refresh:.2} ms + draw {draw_big:.2} ms; target <= 5 ms)",
        refresh + draw_big
    );
    println!("figure: render {VECTORS} vectors: draw only at 80x24 {draw_small:.2} ms/frame");
}

fn main() {
    // `cargo test --benches` runs this binary with no `--bench`: keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        figures();
        divan::main();
    }
}

#[divan::bench(sample_count = 20)]
fn frame_200x50(b: divan::Bencher) {
    let engine = engine();
    let mut app = app(&engine);
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("TestBackend");
    b.bench_local(|| {
        app.refresh(&engine);
        draw(&mut term, &mut app);
    });
}

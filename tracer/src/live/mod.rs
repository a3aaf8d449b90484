//! `msitrace live`: the TUI. [`app`] is its state and keys, [`ui`] draws it, [`source`] feeds
//! it (the live session, or a file at the user's pace), [`terminal`] keeps the terminal sane.
//! This module is the two loops. The live loop drains the ring buffer whenever it is readable
//! and redraws at most ten times a second, only when something changed: the screen never
//! holds events back.

pub mod app;
pub mod source;
pub mod terminal;
pub mod ui;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{Event as TermEvent, KeyEventKind};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::replayer::DelayOverrides;
use crate::session::{Session, SessionOptions, StopReason};

use app::{Action, App, ReplayInfo, Source};
use source::{LiveFeed, Player};
use terminal::TerminalGuard;

const REDRAW: Duration = Duration::from_millis(100);

/// Keys and resizes, read on their own thread: crossterm's read blocks, the loop must not.
fn spawn_input() -> mpsc::UnboundedReceiver<TermEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = crossterm::event::read() {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

/// Why the TUI ended, for the line printed after the terminal is restored.
fn ended(reason: &str) -> String {
    format!("msitrace: live ended ({reason})")
}

/// What a key or resize did: `Some(action)` for a key, `None` for anything else.
fn input_action(app: &mut App, ev: TermEvent) -> Option<Action> {
    match ev {
        // Key releases (kitty protocol, Windows) would act twice.
        TermEvent::Key(k) if k.kind != KeyEventKind::Release => Some(app.key(k)),
        _ => None,
    }
}

/// Live: attach, then run the TUI until q, SIGTERM, SIGINT or SIGHUP; the file (if any) is
/// finished with its trailer in every case.
pub async fn run_live(opts: &SessionOptions, output: Option<&Path>, color: bool) -> Result<()> {
    terminal::check()?;
    // Attaching first: root, BTF and kernel errors print as one plain line, before the
    // terminal is touched.
    let mut session = Session::start(opts, output)?;
    let mut app = App::new(
        Source {
            name: "live".into(),
            kernel: session.engine().kernel_release().to_string(),
            hooks: session.collector().statuses().to_vec(),
        },
        None,
    );
    app.color = color;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut input = spawn_input();
    let tick = |d: Duration| tokio::time::interval_at(tokio::time::Instant::now() + d, d);
    let mut flush = tick(Duration::from_millis(250));
    let mut sample = tick(Duration::from_secs(1));
    let mut redraw = tick(REDRAW);

    let mut guard = TerminalGuard::enter()?;
    let mut dirty = true;
    let mut pending = false;
    let mut last_rate = (Instant::now(), 0u64);
    let result: Result<StopReason> = async {
        loop {
            if dirty {
                app.refresh(session.engine());
                // A terminal that went away ends the UI, not the recording's integrity.
                guard
                    .term
                    .draw(|f| ui::draw(f, &mut app))
                    .context("cannot draw on the terminal")?;
                dirty = false;
            }
            // Between draws, events keep flowing: each branch drains before the next redraw.
            let mut feed = LiveFeed {
                app: &mut app,
                dirty: false,
            };
            let (mut tick_now, mut key) = (false, false);
            tokio::select! {
                r = session.readable() => {
                    r?;
                    session.pump(&mut feed)?;
                }
                _ = flush.tick() => {
                    session.pump(&mut feed)?;
                    session.flush(&mut feed)?;
                }
                _ = sample.tick() => {
                    session.sample(&mut feed)?;
                    let events = session.engine().state().events;
                    let dt = last_rate.0.elapsed().as_secs_f64();
                    if dt > 0.0 {
                        feed.app.events_per_s = events.saturating_sub(last_rate.1) as f64 / dt;
                    }
                    last_rate = (Instant::now(), events);
                }
                _ = redraw.tick() => tick_now = true,
                ev = input.recv() => match ev {
                    Some(ev) => {
                        if input_action(feed.app, ev) == Some(Action::Quit) {
                            break Ok(StopReason::Done);
                        }
                        key = true;
                    }
                    None => break Ok(StopReason::Signal("end of terminal input")),
                },
                _ = sigterm.recv() => break Ok(StopReason::Signal("SIGTERM")),
                _ = sigint.recv() => break Ok(StopReason::Signal("SIGINT")),
                _ = sighup.recv() => break Ok(StopReason::Signal("SIGHUP")),
            }
            // New events are drawn at the next redraw tick; keys and resizes at once.
            pending |= feed.dirty;
            if key || (tick_now && pending) {
                dirty = true;
                pending = false;
            }
        }
    }
    .await;
    drop(guard);
    // Whatever ended the UI, what the ring holds still goes to the file.
    let mut feed = LiveFeed {
        app: &mut app,
        dirty: false,
    };
    let tail = session
        .pump(&mut feed)
        .and_then(|()| session.flush(&mut feed));
    let outcome = session.finish()?;
    let reason = result?;
    tail?;
    let why = match &reason {
        StopReason::Signal(s) => format!("stopped by {s}"),
        _ => "quit".into(),
    };
    match output {
        Some(p) => eprintln!("msitrace: {}", outcome.closing_line(&reason, p)),
        None => eprintln!(
            "{}; {} divergences",
            ended(&why),
            outcome.engine.divergences().len()
        ),
    }
    Ok(())
}

/// Replay: browse a recorded file in the same screen. It opens at the end of the file (the
/// state a report would give) unless `from_start`; `r` rewinds, `p` plays, `n` steps, `d`
/// goes to the next divergence.
pub async fn run_replay(
    files: &[PathBuf],
    delays: DelayOverrides,
    from_start: bool,
    color: bool,
) -> Result<()> {
    // Opening reads the headers only (a bad path says so first); the terminal is checked
    // before the events are replayed, which would be wasted without one.
    let mut player = Player::open(files, delays)?;
    terminal::check()?;
    let mut app = App::new(
        player.source.clone(),
        Some(ReplayInfo {
            file: files
                .iter()
                .map(|f| {
                    f.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| f.display().to_string())
                })
                .collect::<Vec<_>>()
                .join(" "),
            playing: false,
            ended: false,
            speed: 64,
        }),
    );
    app.color = color;
    if !from_start {
        player.run_to_end(&mut app);
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut input = spawn_input();
    let mut play = tokio::time::interval(REDRAW);
    let mut guard = TerminalGuard::enter()?;
    let mut dirty = true;
    let result: Result<()> = async {
        loop {
            if let Some(r) = &mut app.replay {
                r.ended = player.ended;
                if r.ended {
                    r.playing = false;
                }
            }
            if dirty {
                app.refresh(player.engine());
                guard
                    .term
                    .draw(|f| ui::draw(f, &mut app))
                    .context("cannot draw on the terminal")?;
                dirty = false;
            }
            tokio::select! {
                _ = play.tick() => {
                    let speed = app.replay.as_ref().filter(|r| r.playing).map(|r| r.speed);
                    if let Some(n) = speed {
                        player.step(n as usize, &mut app);
                        dirty = true;
                    }
                }
                ev = input.recv() => {
                    let Some(ev) = ev else { break Ok(()) };
                    dirty = true;
                    match input_action(&mut app, ev) {
                        Some(Action::Quit) => break Ok(()),
                        Some(Action::PlayPause) => {
                            if let Some(r) = &mut app.replay {
                                r.playing = !r.playing && !player.ended;
                            }
                        }
                        Some(Action::Step) => {
                            player.step(1, &mut app);
                        }
                        Some(Action::NextDivergence) => {
                            if player.next_divergence(&mut app) {
                                app.refresh(player.engine());
                                let newest = player
                                    .engine()
                                    .divergences()
                                    .iter()
                                    .max_by_key(|d| d.first_ts_ns)
                                    .and_then(|d| d.irq);
                                if let Some(irq) = newest {
                                    app.select_irq(irq);
                                }
                            }
                        }
                        Some(Action::Rewind) => {
                            player.rewind()?;
                            app.clear_log();
                            if let Some(r) = &mut app.replay {
                                r.playing = false;
                            }
                        }
                        Some(Action::None) | None => {}
                    }
                }
                _ = sigterm.recv() => break Ok(()),
                _ = sigint.recv() => break Ok(()),
                _ = sighup.recv() => break Ok(()),
            }
        }
    }
    .await;
    drop(guard);
    for w in &player.warnings {
        eprintln!("msitrace: {w}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{Terminal, backend::TestBackend};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/traces")
            .join(name)
    }

    fn screen(app: &mut App, w: u16, h: u16) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| ui::draw(f, app)).unwrap();
        let buf = term.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    fn row_of(lines: &[String], irq: u32) -> Option<&String> {
        lines.iter().find(|l| {
            l.trim_start_matches(|c: char| !c.is_ascii_digit())
                .split_whitespace()
                .next()
                == Some(irq.to_string().as_str())
        })
    }

    fn key(app: &mut App, c: KeyCode) -> Action {
        app.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn opened(name: &str, from_start: bool) -> (Player, App) {
        // The guests record about 5 s after the resume, so G5 is judged over 4 s
        // (tests/fixtures/traces/README.md), not the live run's 10 s.
        let silence = DelayOverrides {
            g5_silence_ns: Some(4_000_000_000),
            ..Default::default()
        };
        let mut player = Player::open(&[fixture(name)], silence).unwrap();
        // As `run_replay` opens it: the header then names the file.
        let replay = ReplayInfo {
            file: name.to_string(),
            playing: false,
            ended: false,
            speed: 64,
        };
        let mut app = App::new(player.source.clone(), Some(replay));
        if !from_start {
            player.run_to_end(&mut app);
        }
        app.refresh(player.engine());
        (player, app)
    }

    #[test]
    fn a_buggy_hibernation_shows_its_dead_vectors_on_the_first_80x24_screen() {
        let (_, mut app) = opened("6.12-hibernate-buggy.msit", false);
        let lines = screen(&mut app, 80, 24);
        let text = lines.join("\n");
        for irq in [38, 39] {
            let row =
                row_of(&lines, irq).unwrap_or_else(|| panic!("irq {irq} not on screen:\n{text}"));
            assert!(row.contains("DIVERGED"), "irq {irq}: {row}\n{text}");
        }
        assert!(text.contains("H1") && text.contains("G5"), "{text}");
        assert!(lines[0].contains("kernel 6.12"), "{text}");
        // Every line fits: nothing wraps off an 80-column terminal.
        assert!(lines.iter().all(|l| l.chars().count() == 80));

        // The control vector (37) is not among the problems.
        key(&mut app, KeyCode::Char('f'));
        let problems: Vec<u32> = app.visible().map(|r| r.irq).collect();
        assert_eq!(problems, [38, 39]);
        key(&mut app, KeyCode::Char('f'));
        key(&mut app, KeyCode::Char('f'));
        key(&mut app, KeyCode::Char('f'));
        // Enter on the first row (sorted diverged first) is the evidence.
        assert_eq!(key(&mut app, KeyCode::Enter), Action::None);
        let detail = screen(&mut app, 80, 24).join("\n");
        assert!(detail.contains("evidence:"), "{detail}");
        assert!(detail.contains("irq 38 DIVERGED"), "{detail}");
        // CPU1 went offline for the hibernation and the kernel moved it to CPU0 (issue #13).
        assert!(
            detail.contains("cpu 0  vector ? (from migration)"),
            "{detail}"
        );
    }

    #[test]
    fn a_fixed_hibernation_shows_no_divergence() {
        let (_, mut app) = opened("6.12-hibernate-fixed.msit", false);
        let text = screen(&mut app, 80, 24).join("\n");
        assert!(!text.contains("DIVERGED"), "{text}");
        assert!(
            text.contains("none: every vector's state is consistent"),
            "{text}"
        );
    }

    #[test]
    fn replay_steps_and_jumps_to_each_divergence_in_order() {
        let (mut player, mut app) = opened("6.12-hibernate-buggy.msit", true);
        assert_eq!(app.divergences.len(), 0);
        assert_eq!(player.step(3, &mut app), 0);
        assert_eq!(
            app.log.len() + 1,
            3,
            "the first handler-count sample is not logged"
        );
        let mut seen = 0;
        while player.next_divergence(&mut app) {
            app.refresh(player.engine());
            assert!(app.divergences.len() > seen, "each jump finds a new one");
            seen = app.divergences.len();
        }
        assert!(player.ended);
        let (_, full) = opened("6.12-hibernate-buggy.msit", false);
        let rules = |a: &App| {
            let mut v: Vec<(String, Option<u32>)> = a
                .divergences
                .iter()
                .map(|d| (d.rule.clone(), d.irq))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            rules(&app),
            rules(&full),
            "stepping ends where the whole file does"
        );
        player.rewind().unwrap();
        app.clear_log();
        app.refresh(player.engine());
        assert!(app.divergences.is_empty() && !player.ended);
    }

    /// Every screen a user can reach, each as the buffer ratatui would send.
    fn every_screen(app: &mut App) -> Vec<ratatui::buffer::Buffer> {
        let mut frames = Vec::new();
        let mut draw = |app: &mut App| {
            let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
            term.draw(|f| ui::draw(f, app)).unwrap();
            frames.push(term.backend().buffer().clone());
        };
        draw(app);
        for k in ['/', 'h', 'v'] {
            key(app, KeyCode::Char(k));
        }
        draw(app);
        key(app, KeyCode::Esc);
        key(app, KeyCode::Tab);
        draw(app);
        key(app, KeyCode::Tab);
        for overlay in ['?', 'c'] {
            key(app, KeyCode::Char(overlay));
            draw(app);
            key(app, KeyCode::Esc);
        }
        key(app, KeyCode::Enter);
        assert!(matches!(app.mode, app::Mode::Detail(_)));
        draw(app);
        key(app, KeyCode::Esc);
        frames
    }

    #[test]
    fn without_colour_no_cell_has_one_and_the_cursor_stays_visible() {
        use ratatui::style::{Color, Modifier};
        let coloured = |b: &ratatui::buffer::Buffer| {
            b.content
                .iter()
                .any(|c| c.fg != Color::Reset || c.bg != Color::Reset)
        };
        let (_, mut app) = opened("6.12-hibernate-buggy.msit", false);
        // The same screens with colour have some: the check below is not vacuous.
        assert!(every_screen(&mut app).iter().all(coloured));

        app.color = false;
        let frames = every_screen(&mut app);
        for (i, b) in frames.iter().enumerate() {
            let bad: Vec<_> = b
                .content
                .iter()
                .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
                .take(3)
                .collect();
            assert!(bad.is_empty(), "screen {i}: {bad:?}");
            assert!(
                b.content
                    .iter()
                    .any(|c| c.modifier.contains(Modifier::BOLD)),
                "screen {i} lost its bold"
            );
        }
        // The cursor's row is reverse video from edge to edge of the table; a DIVERGED status
        // elsewhere (white on red with colour) is reverse video too, on its own.
        let table = &frames[0];
        let row = |y: u16| (1..99).map(move |x| &table[(x, y)]);
        let cursor = (0..30)
            .find(|&y| row(y).all(|c| c.modifier.contains(Modifier::REVERSED)))
            .expect("a reversed cursor row");
        let line = |y: u16| row(y).map(|c| c.symbol()).collect::<String>();
        assert!(line(cursor).contains("DIVERGED"), "{}", line(cursor));
        let other = (cursor + 1..30)
            .find(|&y| line(y).contains("DIVERGED"))
            .expect("a second DIVERGED row");
        assert!(!row(other).all(|c| c.modifier.contains(Modifier::REVERSED)));
        assert!(row(other).any(|c| c.modifier.contains(Modifier::REVERSED)));
        // And the footer, grey with colour, is still a bar.
        assert!(
            (0..100).all(|x| frames[0][(x, 29)].modifier.contains(Modifier::REVERSED)),
            "{}",
            (0..100)
                .map(|x| frames[0][(x, 29)].symbol())
                .collect::<String>()
        );
    }

    #[test]
    fn resize_to_a_tiny_terminal_does_not_panic() {
        let (_, mut app) = opened("6.12-hibernate-buggy.msit", false);
        for (w, h) in [(20, 5), (1, 1), (200, 60), (80, 24)] {
            screen(&mut app, w, h);
            key(&mut app, KeyCode::Char('?'));
            screen(&mut app, w, h);
            key(&mut app, KeyCode::Esc);
        }
    }
}

//! Where the TUI's events come from: the running kernel through a [`Session`] (the
//! [`LiveFeed`] observer hands the app each event as the engine applies it), or a recorded
//! file through a [`Player`] that feeds the same engine at the user's pace — play, pause,
//! one event, up to the next divergence.

use std::path::PathBuf;

use anyhow::Result;

use crate::collector::Collector;
use crate::engine::{Change, DivergenceUpdate, Engine};
use crate::event::Event;
use crate::replayer::{DelayOverrides, Replayer, Step};
use crate::session::Observer;

use super::app::{App, Source};

/// The live session's observer: every event and divergence into the app, and the
/// once-a-second sample marks the app for a redraw.
pub struct LiveFeed<'a> {
    pub app: &'a mut App,
    pub dirty: bool,
}

impl Observer for LiveFeed<'_> {
    fn event(&mut self, ev: &Event, _engine: &Engine) {
        self.app.push_event(ev);
        self.dirty = true;
    }

    fn update(&mut self, _u: &DivergenceUpdate, _engine: &Engine) {
        self.dirty = true;
    }

    fn sampled(&mut self, _collector: &Collector, _engine: &Engine) {
        self.dirty = true;
    }

    fn file_stopped(&mut self, why: &str, engine: &Engine) {
        self.app.file_stopped(why, engine.state().now_ns);
        self.dirty = true;
    }
}

/// A recorded file, replayed through a fresh engine one event at a time.
pub struct Player {
    files: Vec<PathBuf>,
    delays: DelayOverrides,
    replayer: Replayer,
    pub source: Source,
    /// The end of the file was reached and the engine settled its pending rules there.
    pub ended: bool,
    /// Damage the reader stepped over, a read error that ended the file early, and what the
    /// end of the file showed (no trailer, a live verdict not reproduced).
    pub warnings: Vec<String>,
}

impl Player {
    pub fn open(files: &[PathBuf], delays: DelayOverrides) -> Result<Player> {
        let replayer = Replayer::open(files, delays)?;
        let header = replayer.header();
        let name = replayer
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Player {
            files: files.to_vec(),
            delays,
            source: Source {
                name,
                kernel: header.kernel_release.clone(),
                hooks: header.probes.clone(),
            },
            replayer,
            ended: false,
            warnings: Vec::new(),
        })
    }

    /// Back to the first event.
    pub fn rewind(&mut self) -> Result<()> {
        *self = Player::open(&self.files, self.delays)?;
        Ok(())
    }

    pub fn engine(&self) -> &Engine {
        self.replayer.engine()
    }

    /// Apply up to `n` events, each handed to `app`; returns the new divergences found.
    pub fn step(&mut self, n: usize, app: &mut App) -> usize {
        let mut found = 0;
        for _ in 0..n {
            match self.next(app) {
                Some(new) => found += new,
                None => break,
            }
        }
        found
    }

    /// Apply events until one brings a new divergence (or the file ends); true if found.
    pub fn next_divergence(&mut self, app: &mut App) -> bool {
        while let Some(new) = self.next(app) {
            if new > 0 {
                return true;
            }
        }
        false
    }

    /// Play to the end.
    pub fn run_to_end(&mut self, app: &mut App) {
        while self.next(app).is_some() {}
    }

    /// One event: `Some(new divergences)`, or `None` at the end.
    fn next(&mut self, app: &mut App) -> Option<usize> {
        match self.replayer.step()? {
            Step::Event(ev, updates) => {
                app.push_event(&ev);
                Some(count_new(&updates))
            }
            Step::End(updates) => {
                self.ended = true;
                self.warnings = self.replayer.input_warnings();
                Some(count_new(&updates))
            }
        }
    }
}

fn count_new(updates: &[DivergenceUpdate]) -> usize {
    updates.iter().filter(|u| u.change == Change::New).count()
}

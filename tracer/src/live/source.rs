//! Where the TUI's events come from: the running kernel through a [`Session`] (the
//! [`LiveFeed`] observer hands the app each event as the engine applies it), or a recorded
//! file through a [`Player`] that feeds the same engine at the user's pace — play, pause,
//! one event, up to the next divergence.

use std::path::PathBuf;

use anyhow::Result;

use crate::cmd::replay::engine_config;
use crate::collector::Collector;
use crate::engine::{Change, DivergenceUpdate, Engine, RuleTiming};
use crate::event::Event;
use crate::session::Observer;
use crate::trace_file::{Record, TraceReader};

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
}

/// A recorded file, replayed through a fresh engine one event at a time.
pub struct Player {
    files: Vec<PathBuf>,
    timing: RuleTiming,
    reader: TraceReader,
    engine: Engine,
    pub source: Source,
    /// The end of the file was reached and the engine settled its pending rules there.
    pub ended: bool,
    /// Damage the reader stepped over, and a read error that ended the file early.
    pub warnings: Vec<String>,
}

impl Player {
    pub fn open(files: &[PathBuf], timing: RuleTiming) -> Result<Player> {
        let files = crate::trace_file::rotate::expand(files)?;
        let reader = TraceReader::open_many(&files)?;
        let header = reader.header().clone();
        let engine = Engine::new(engine_config(&header, timing));
        let name = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Player {
            files,
            timing,
            reader,
            engine,
            source: Source {
                name,
                kernel: header.kernel_release.clone(),
                hooks: header.probes.clone(),
            },
            ended: false,
            warnings: Vec::new(),
        })
    }

    /// Back to the first event.
    pub fn rewind(&mut self) -> Result<()> {
        *self = Player::open(&self.files, self.timing)?;
        Ok(())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
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
        if self.ended {
            return None;
        }
        loop {
            match self.reader.next() {
                Some(Ok(Record::Event(ev))) => {
                    let updates = self.engine.apply(&ev);
                    app.push_event(&ev);
                    return Some(count_new(&updates));
                }
                Some(Ok(Record::Trailer(_))) => continue,
                Some(Err(e)) => {
                    self.warnings.push(format!("{e}"));
                    return Some(self.settle());
                }
                None => {
                    self.warnings
                        .extend(self.reader.warnings().iter().map(|w| w.to_string()));
                    return Some(self.settle());
                }
            }
        }
    }

    /// The end of the recording: the delayed rules settle at the last event's time, as
    /// `msitrace replay` settles them.
    fn settle(&mut self) -> usize {
        self.ended = true;
        let end = self.engine.state().now_ns;
        count_new(&self.engine.finish(end))
    }
}

fn count_new(updates: &[DivergenceUpdate]) -> usize {
    updates.iter().filter(|u| u.change == Change::New).count()
}

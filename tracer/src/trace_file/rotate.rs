//! The flight recorder: trace files rotated in a state directory, capped in size and count.
//! Each file is complete — its own header, its own trailer once rotated away from — and the
//! header of each new file carries the state read when it was opened, so the newest files
//! replay on their own after the oldest were deleted. Names sort by time, oldest first, so a
//! set reads as one with `msitrace replay DIR` (or the files in `ls` order).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::Event;
use crate::seed::Seed;

use super::{TraceHeader, TraceWriter, WriterStats};

const PREFIX: &str = "msitrace-";
const SUFFIX: &str = ".msit";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightConfig {
    pub dir: PathBuf,
    /// A file is closed and a new one started once it holds this many bytes.
    pub max_file_bytes: u64,
    /// The oldest files are deleted beyond this many (the one being written included).
    pub max_files: usize,
}

/// The state a new file starts from; `None` keeps the previous file's seed.
pub type Reseed = Box<dyn FnMut() -> Option<Seed> + Send>;

pub struct FlightRecorder {
    cfg: FlightConfig,
    header: TraceHeader,
    current: TraceWriter,
    last_name_ns: u128,
    reseed: Reseed,
    /// Counters of the files already closed.
    closed: WriterStats,
    pub rotations: u64,
}

/// The files of a flight-recorder directory, oldest first.
pub fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Trace paths as given, with a directory standing for its flight-recorder files.
pub fn expand(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let files = files_in(p)?;
            if files.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} holds no {PREFIX}*{SUFFIX} files: give a trace file or a flight-recorder directory",
                        p.display()
                    ),
                ));
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

impl FlightRecorder {
    /// Create the directory (0700) if needed and open the first file.
    pub fn create(cfg: FlightConfig, header: TraceHeader, reseed: Reseed) -> io::Result<Self> {
        if cfg.max_files == 0 || cfg.max_file_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the flight recorder needs at least one file of at least one byte",
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create state directory {}: {e}", cfg.dir.display()),
                )
            })?;
        let mut last_name_ns = 0;
        let path = next_name(&cfg.dir, &mut last_name_ns);
        let current = TraceWriter::create(&path, &header)?;
        let mut fr = FlightRecorder {
            cfg,
            header,
            current,
            last_name_ns,
            reseed,
            closed: WriterStats::default(),
            rotations: 0,
        };
        fr.prune()?;
        Ok(fr)
    }

    pub fn path(&self) -> &Path {
        self.current.path()
    }

    pub fn stats(&self) -> WriterStats {
        let c = self.current.stats();
        WriterStats {
            events: self.closed.events + c.events,
            chunks: self.closed.chunks + c.chunks,
            bytes: self.closed.bytes + c.bytes,
            dropped_events: self.closed.dropped_events + c.dropped_events,
        }
    }

    pub fn append(&mut self, ev: &Event) -> io::Result<()> {
        self.current.append(ev)?;
        // Chunks reach the disk only at a flush (or every 64 KiB): the cap counts the pending
        // chunk too, or a small cap would let a file grow to a whole chunk.
        if self.current.len_with_pending() >= self.cfg.max_file_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.current.flush()
    }

    pub fn finish(self, trailer: &serde_json::Value) -> io::Result<WriterStats> {
        let closed = self.closed;
        let c = self.current.finish(trailer)?;
        Ok(WriterStats {
            events: closed.events + c.events,
            chunks: closed.chunks + c.chunks,
            bytes: closed.bytes + c.bytes,
            dropped_events: closed.dropped_events + c.dropped_events,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(seed) = (self.reseed)() {
            self.header.seed = seed;
        }
        let path = next_name(&self.cfg.dir, &mut self.last_name_ns);
        let next = TraceWriter::create(&path, &self.header)?;
        let old = std::mem::replace(&mut self.current, next);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let s = old.finish(&serde_json::json!({ "rotated_to": name }))?;
        self.closed.events += s.events;
        self.closed.chunks += s.chunks;
        self.closed.bytes += s.bytes;
        self.closed.dropped_events += s.dropped_events;
        self.rotations += 1;
        self.prune()
    }

    /// Delete the oldest files beyond the cap; never the one being written.
    fn prune(&mut self) -> io::Result<()> {
        let files = files_in(&self.cfg.dir)?;
        let excess = files.len().saturating_sub(self.cfg.max_files);
        for f in files.iter().take(excess) {
            if f != self.current.path() {
                fs::remove_file(f)?;
            }
        }
        Ok(())
    }
}

/// `msitrace-<ns since the epoch, 20 digits>.msit`: sorts by time, and a restarted daemon never
/// reuses (and so never truncates) a name.
fn next_name(dir: &Path, last: &mut u128) -> PathBuf {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    *last = now.max(*last + 1);
    dir.join(format!("{PREFIX}{:020}{SUFFIX}", *last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::trace_file::{Record, TraceReader};

    fn header() -> TraceHeader {
        TraceHeader::for_this_host(Vec::new(), None, Seed::default())
    }

    fn ev(i: u64) -> Event {
        Event {
            ts_ns: i,
            cpu: 0,
            tgid: 0,
            kind: EventKind::MigrateOneIrq { irq: i as u32 },
        }
    }

    #[test]
    fn rotates_by_size_keeps_the_newest_files_and_reads_back_as_one() {
        let dir = std::env::temp_dir().join(format!("msitrace-flight-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let cfg = FlightConfig {
            dir: dir.clone(),
            max_file_bytes: 4096,
            max_files: 3,
        };
        let mut n = 0u32;
        let reseed: Reseed = Box::new(move || {
            n += 1;
            Some(Seed {
                taken_ns: u64::from(n),
                ..Seed::default()
            })
        });
        let mut fr = FlightRecorder::create(cfg, header(), reseed).unwrap();
        for i in 0..20_000 {
            fr.append(&ev(i)).unwrap();
        }
        let rotations = fr.rotations;
        let stats = fr.finish(&serde_json::json!({"end": true})).unwrap();
        assert!(rotations >= 3, "{rotations} rotations");
        assert_eq!(stats.events, 20_000);
        let files = files_in(&dir).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        // A rotated file ends at the first event past the cap, plus its trailer.
        for f in &files[..2] {
            let len = fs::metadata(f).unwrap().len();
            assert!(
                (4096..4096 + 256).contains(&len),
                "{} is {len} bytes",
                f.display()
            );
        }
        assert_eq!(expand(std::slice::from_ref(&dir)).unwrap(), files);
        // The newest files alone: each starts from the seed read at its rotation, the set
        // reads as one stream in order, and ends with the last file's trailer.
        let r = TraceReader::open_many(&files).unwrap();
        assert_eq!(r.headers()[0].seed.taken_ns, rotations - 2);
        assert_eq!(r.headers()[2].seed.taken_ns, rotations);
        let mut last = None;
        let mut count = 0;
        let mut trailers = Vec::new();
        for rec in r {
            match rec.unwrap() {
                Record::Event(e) => {
                    assert!(last.is_none_or(|l| e.ts_ns == l + 1), "events in order");
                    last = Some(e.ts_ns);
                    count += 1;
                }
                Record::Trailer(t) => trailers.push(t),
            }
        }
        assert_eq!(last, Some(19_999));
        assert!(count < 20_000 && count > 0);
        assert_eq!(trailers.last(), Some(&serde_json::json!({"end": true})));
        assert!(trailers[0].get("rotated_to").is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_directory_is_a_clear_error() {
        let dir =
            std::env::temp_dir().join(format!("msitrace-flight-empty-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let e = expand(std::slice::from_ref(&dir)).unwrap_err();
        assert!(
            e.to_string().contains("holds no msitrace-*.msit files"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

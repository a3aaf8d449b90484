//! The flight recorder: trace files rotated in a state directory, capped in size and count.
//! Each file is complete — its own header, its own trailer once rotated away from — and the
//! header of each new file carries the state read when it was opened, so the newest files
//! replay on their own after the oldest were deleted. Names sort by time, oldest first, so a
//! set reads as one with `msitrace replay DIR` (or the files in `ls` order).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
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
    /// The state directory's lock, released when the recorder goes.
    _lock: fs::File,
}

/// Whether a name is one the flight recorder gives its files.
fn recorder_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
}

/// The files of a flight-recorder directory, oldest first. Only regular files: a directory or
/// a link that happens to carry such a name is not the recorder's, and is neither read nor
/// deleted ([`others_in`] names them).
pub fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| recorder_name(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Entries of `dir` named like recorder files that are not regular files.
pub fn others_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut others: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| recorder_name(p))
        .collect();
    others.sort();
    Ok(others)
}

/// Trace paths as given, with a directory standing for its flight-recorder files.
pub fn expand(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    expand_noting(paths, &mut Vec::new())
}

/// [`expand`], saying in `notes` what of a directory it left out. A directory is what the
/// daemon left, not a list the user chose, so it is read as well as it can be: a file that
/// cannot be read (an empty one an older version left at a failed start, a damaged header) is
/// skipped, and of the files of several boots (the daemon ran before a reboot) only the newest
/// boot's are read, since times of two boots do not compare. Files named one by one are read
/// as given, and fail loudly.
pub fn expand_noting(paths: &[PathBuf], notes: &mut Vec<String>) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        for other in others_in(p)? {
            notes.push(format!(
                "{} is named like a flight-recorder file but is not a regular file: skipped",
                other.display()
            ));
        }
        let mut readable = Vec::new();
        for f in files_in(p)? {
            match super::TraceReader::open(&f) {
                Ok(r) => {
                    let h = r.header();
                    readable.push((f, (h.kernel_release.clone(), h.boot_id.clone())));
                }
                Err(e) => notes.push(format!("{e}: skipped")),
            }
        }
        let Some((_, newest)) = readable.last().cloned() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} holds no readable {PREFIX}*{SUFFIX} files: give a trace file or a flight-recorder directory",
                    p.display()
                ),
            ));
        };
        let (this_boot, earlier): (Vec<_>, Vec<_>) =
            readable.into_iter().partition(|(_, b)| *b == newest);
        if let Some((first, _)) = earlier.first() {
            notes.push(format!(
                "{} holds {} files of an earlier boot or kernel than its newest, from {}: read only the newest boot's; replay the others by name",
                p.display(),
                earlier.len(),
                first.display()
            ));
        }
        out.extend(this_boot.into_iter().map(|(f, _)| f));
    }
    Ok(out)
}

impl FlightRecorder {
    /// Check the state directory (creating it, 0700, when missing), take its lock and open
    /// the first file. The lock is held until the recorder is finished or dropped.
    pub fn create(cfg: FlightConfig, header: TraceHeader, reseed: Reseed) -> io::Result<Self> {
        if cfg.max_files == 0 || cfg.max_file_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the flight recorder needs at least one file of at least one byte",
            ));
        }
        check_state_dir(&cfg.dir, true)?;
        let lock = lock_state_dir(&cfg.dir)?;
        // Room for the new file first: what fails here (a file that cannot be deleted) then
        // fails before a file is created, not after, leaving one more behind at each try.
        prune(&cfg.dir, cfg.max_files - 1, None)?;
        let mut last_name_ns = 0;
        let path = next_name(&cfg.dir, &mut last_name_ns);
        let current = TraceWriter::create(&path, &header)?;
        Ok(FlightRecorder {
            cfg,
            header,
            current,
            last_name_ns,
            reseed,
            closed: WriterStats::default(),
            rotations: 0,
            _lock: lock,
        })
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
        prune(&self.cfg.dir, self.cfg.max_files, Some(self.current.path()))
    }
}

/// Delete the oldest recorder files of `dir` beyond `keep`, except `current`.
fn prune(dir: &Path, keep: usize, current: Option<&Path>) -> io::Result<()> {
    let files = files_in(dir)?;
    let excess = files.len().saturating_sub(keep);
    for f in files.iter().take(excess) {
        if Some(f.as_path()) != current {
            fs::remove_file(f).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot delete the old flight-recorder file {}: {e}",
                        f.display()
                    ),
                )
            })?;
        }
    }
    Ok(())
}

/// The lock file of a state directory: not named like a recorder file, so never read,
/// rotated or deleted. It holds the pid of the daemon that holds the lock.
pub const LOCK_NAME: &str = "msitrace.lock";

/// Check that `dir` is fit to hold root's flight recorder, creating it (0700) when missing
/// and `create` says so (a missing one passes otherwise):
/// a directory, not a link (a link can be re-pointed by whoever owns it), owned by this user
/// and writable by no other (who could otherwise swap the files a root daemon writes and
/// deletes). Refused, not repaired: tightening the mode of a shared directory such as /tmp
/// would break everyone else. The messages do not name `dir`: the caller does.
pub fn check_state_dir(dir: &Path, create: bool) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let refuse = |kind, msg: String| Err(io::Error::new(kind, msg));
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot be created: {e}")))?;
            fs::symlink_metadata(dir)?
        }
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(dir)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return if fs::metadata(dir).is_err() {
            refuse(
                io::ErrorKind::NotFound,
                format!(
                    "is a symbolic link to {target}, which does not exist: give the path of a real directory"
                ),
            )
        } else {
            refuse(
                io::ErrorKind::InvalidInput,
                format!(
                    "is a symbolic link to {target}: give the real directory (a link can be re-pointed by whoever owns it)"
                ),
            )
        };
    }
    if kind.is_file() {
        return refuse(
            io::ErrorKind::AlreadyExists,
            "is a regular file, not a directory: move it away or give another state directory"
                .into(),
        );
    }
    if !kind.is_dir() {
        return refuse(
            io::ErrorKind::InvalidInput,
            "is not a directory: give another state directory".into(),
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "is owned by uid {}, not by the daemon's user (uid {me}): chown it or give another state directory",
                meta.uid()
            ),
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "is writable by other users (mode {mode:04o}), who could swap the files the daemon writes and deletes: chmod 0700 it or give another state directory"
            ),
        );
    }
    Ok(())
}

/// Take the state directory's lock (flock on [`LOCK_NAME`]) for as long as the returned file
/// is open: a second daemon on the same directory would delete the first one's live file as
/// "old" while the first still reports it.
pub fn lock_state_dir(dir: &Path) -> io::Result<fs::File> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_NAME);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open its lock file {}: {e}", path.display()),
            )
        })?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot lock {}: {e}", path.display()),
            ));
        }
        let mut text = String::new();
        let _ = (&file).take(32).read_to_string(&mut text);
        let holder = match text.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        };
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "is in use by another msitrace daemon{holder}: stop that one first, or give this one another state directory"
            ),
        ));
    }
    // Ours now: say who holds it, for the next one to name.
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)?;
    Ok(file)
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
            e.to_string()
                .contains("holds no readable msitrace-*.msit files"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

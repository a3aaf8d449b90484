//! Writing a trace file: the header at creation, then one chunk per `flush` (or per 64 KiB),
//! each with a single positioned write, so that whatever stops the recorder leaves a file
//! that reads up to its last whole chunk.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::codec::ChunkEncoder;
use super::{FLUSH_BYTES, FRAME_LEN, MAX_CHUNK_PAYLOAD, TraceHeader};
use crate::event::Event;

/// What a writer has put on disk so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Events in whole chunks on disk.
    pub events: u64,
    pub chunks: u64,
    /// File size: the end of the last whole chunk.
    pub bytes: u64,
    /// Events whose chunk could not be written (the error was returned by that call).
    pub dropped_events: u64,
}

/// Streams events into a trace file. Dropping it without [`TraceWriter::finish`] still writes
/// the pending events (best effort), but no trailer: readers then see an unfinished recording.
pub struct TraceWriter {
    file: File,
    path: PathBuf,
    enc: ChunkEncoder,
    stats: WriterStats,
    finished: bool,
}

/// Wrap an I/O error into one line naming the file and what to check; the kind is kept so
/// that callers can still match on it (a full disk, say).
fn with_path(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.display().to_string();
    let what = what.to_string();
    move |e| {
        let hint = match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                "free space on its file system"
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                "choose a path you may write"
            }
            io::ErrorKind::NotFound => "create its directory first",
            _ => "check the path and its file system",
        };
        io::Error::new(e.kind(), format!("cannot {what} {path}: {e}: {hint}"))
    }
}

impl TraceWriter {
    /// Create (or replace) `path` with mode 0600 and write the header. An existing file keeps
    /// neither its content nor a more permissive mode; a symbolic link or anything but a
    /// regular file is refused: the recorder often runs as root.
    pub fn create(path: impl AsRef<Path>, header: &TraceHeader) -> io::Result<TraceWriter> {
        let path = path.as_ref();
        // No O_TRUNC: a FIFO or device must be refused before anything is done to it, and
        // O_NONBLOCK keeps a FIFO without a reader from blocking the open.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is a symbolic link: refusing to write a trace through it; give the real path",
                            path.display()
                        ),
                    )
                } else {
                    with_path(path, "create trace file")(e)
                }
            })?;
        let meta = file
            .metadata()
            .map_err(with_path(path, "inspect trace file"))?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file: give a file path for the trace",
                    path.display()
                ),
            ));
        }
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(with_path(path, "set mode 0600 on"))?;
        file.set_len(0)
            .map_err(with_path(path, "truncate trace file"))?;
        let bytes = header.encode().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot encode the trace header: {e}"),
            )
        })?;
        file.write_all_at(&bytes, 0)
            .map_err(with_path(path, "write the header of"))?;
        Ok(TraceWriter {
            file,
            path: path.to_path_buf(),
            enc: ChunkEncoder::new(),
            stats: WriterStats {
                bytes: bytes.len() as u64,
                ..WriterStats::default()
            },
            finished: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// What the file will hold once the pending events are written: its size on disk plus the
    /// pending chunk, frame included.
    pub fn len_with_pending(&self) -> u64 {
        let pending = self.enc.payload_len();
        self.stats.bytes
            + if pending == 0 {
                0
            } else {
                (pending + FRAME_LEN) as u64
            }
    }

    /// Queue one event; writes a chunk when the pending records pass 64 KiB.
    pub fn append(&mut self, ev: &Event) -> io::Result<()> {
        self.enc.push_event(ev).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot encode event: {e}"),
            )
        })?;
        if self.enc.payload_len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the pending events as one chunk (nothing when there are none). On error the
    /// chunk's events are dropped (counted in [`WriterStats::dropped_events`]) and the file is
    /// cut back to its last whole chunk, so later chunks still follow a clean one.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.enc.is_empty() {
            return Ok(());
        }
        let events = self.enc.events();
        let payload = self.enc.payload_len();
        let chunk = self.enc.take_chunk();
        if payload > MAX_CHUNK_PAYLOAD {
            self.stats.dropped_events += events;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a chunk of {payload} bytes exceeds the format's {MAX_CHUNK_PAYLOAD}-byte limit"
                ),
            ));
        }
        let at = self.stats.bytes;
        if let Err(e) = self.file.write_all_at(&chunk, at) {
            self.stats.dropped_events += events;
            let _ = self.file.set_len(at);
            return Err(with_path(&self.path, "write to")(e));
        }
        self.stats.bytes += chunk.len() as u64;
        self.stats.chunks += 1;
        self.stats.events += events;
        Ok(())
    }

    /// Write the pending events, then the trailer (the recorder's summary) in a chunk of its
    /// own, and fsync.
    pub fn finish(mut self, trailer: &serde_json::Value) -> io::Result<WriterStats> {
        self.flush()?;
        let json = serde_json::to_string(trailer).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot encode the trailer: {e}"),
            )
        })?;
        self.enc.push_trailer(&json).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot encode the trailer: {e}"),
            )
        })?;
        self.flush()?;
        self.file
            .sync_all()
            .map_err(with_path(&self.path, "sync"))?;
        self.finished = true;
        Ok(self.stats)
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.flush();
        }
    }
}

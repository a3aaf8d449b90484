//! Writing a trace file: the header at creation, then one chunk per `flush` (or per 64 KiB),
//! each with a single positioned write, so that whatever stops the recorder leaves a file
//! that reads up to its last whole chunk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::ChunkEncoder;
use super::{FLUSH_BYTES, FRAME_LEN, MAX_CHUNK_PAYLOAD, TraceHeader};
use crate::event::Event;
use crate::private_file::PrivateFile;

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

fn with_path(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| crate::private_file::io_error(&path, &what, e)
}

impl TraceWriter {
    /// Create (or replace) `path` with mode 0600 and write the header, through
    /// [`PrivateFile`]: a symbolic link or anything but a regular file is refused (the
    /// recorder often runs as root), and an existing file is replaced only once the new one
    /// has its header.
    pub fn create(path: impl AsRef<Path>, header: &TraceHeader) -> io::Result<TraceWriter> {
        let path = path.as_ref();
        let bytes = header.encode().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot encode the trace header: {e}"),
            )
        })?;
        let new = PrivateFile::create(path, &[])?;
        new.file()
            .write_all_at(&bytes, 0)
            .map_err(with_path(path, "write the header of"))?;
        // In place from the start: a recorder that is killed leaves a file that reads up to
        // its last chunk, under the name the user gave.
        let file = new.persist()?;
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

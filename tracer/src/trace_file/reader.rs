//! Reading trace files: check the header, then walk the chunks, stepping over damage with a
//! [`TraceWarning`] instead of failing. Nothing in a file can make the reader panic or
//! allocate more than one chunk's worth (≤ 16 MiB) at a time.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::codec::{ChunkDecoder, RecordError};
use super::window::Window;
use super::{
    CHUNK_TAG, FORMAT_VERSION, FRAME_LEN, MAGIC, MAX_CHUNK_PAYLOAD, MAX_HEADER_LEN, PREAMBLE_LEN,
    Record, TraceFileError, TraceHeader, TraceWarning,
};
use crate::event::Event;

/// Reads one trace file, or several as one stream (a rotated flight-recorder set, oldest
/// first). Iterate it for the records; [`TraceReader::warnings`] says what damage was skipped
/// so far. An `Err` item is an I/O error and ends the iteration.
///
/// ```no_run
/// # fn main() -> Result<(), tracer::trace_file::TraceFileError> {
/// let mut reader = tracer::trace_file::TraceReader::open("cycle.trace")?;
/// for record in reader.by_ref() {
///     println!("{:?}", record?);
/// }
/// for w in reader.warnings() {
///     eprintln!("warning: {w}");
/// }
/// # Ok(()) }
/// ```
pub struct TraceReader {
    files: Vec<FileCursor>,
    headers: Vec<TraceHeader>,
    current: usize,
    warnings: Vec<TraceWarning>,
}

/// A whole file (or set) read into memory.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceContents {
    /// The first file's header.
    pub header: TraceHeader,
    pub events: Vec<Event>,
    /// The last trailer read; `None` when the recording did not finish.
    pub trailer: Option<serde_json::Value>,
    pub warnings: Vec<TraceWarning>,
}

struct FileCursor {
    path: PathBuf,
    file: File,
    /// Size when opened: a file still being written is read up to there.
    len: u64,
    pos: u64,
    events: u64,
    window: Window,
    /// Device and inode: the same file under two names is still one file.
    id: (u64, u64),
    /// The chunk whose records are being handed out.
    open: Option<OpenChunk>,
}

struct OpenChunk {
    records: ChunkDecoder,
    /// Where the chunk starts in the file, for warnings.
    offset: u64,
    /// Where it ends.
    end: u64,
    /// Bytes the frame promised, for a chunk the file cuts short: its records are unverified,
    /// and the first that does not decode ends it without a warning of its own.
    cut: Option<u64>,
    /// The trailer was among its records.
    finished: bool,
}

impl TraceReader {
    /// Open one file and check its header.
    pub fn open(path: impl AsRef<Path>) -> Result<TraceReader, TraceFileError> {
        Self::open_many([path])
    }

    /// Open several files to read as one stream, in the order given. Every header is checked
    /// here; a file from another boot or kernel than the first, or one given twice, is refused.
    pub fn open_many<P: AsRef<Path>>(
        paths: impl IntoIterator<Item = P>,
    ) -> Result<TraceReader, TraceFileError> {
        let mut reader = TraceReader {
            files: Vec::new(),
            headers: Vec::new(),
            current: 0,
            warnings: Vec::new(),
        };
        for path in paths {
            let (cursor, header) = open_one(path.as_ref(), &mut reader.warnings)?;
            // The same file twice (by another name, or a directory and a file in it) would
            // play its events twice, silently.
            if let Some(first) = reader.files.iter().find(|f| f.id == cursor.id) {
                return Err(TraceFileError::Repeated {
                    path: cursor.path,
                    first: first.path.clone(),
                });
            }
            // Timestamps are CLOCK_MONOTONIC of one boot, and the rules judge one kernel's
            // behaviour: another boot's events merged in would sit at meaningless times
            // under the first file's kernel.
            if let (Some(first), Some(first_header)) =
                (reader.files.first(), reader.headers.first())
                && let Some(what) = other_boot(first_header, &header)
            {
                return Err(TraceFileError::OtherBoot {
                    path: cursor.path,
                    first: first.path.clone(),
                    what,
                });
            }
            reader.files.push(cursor);
            reader.headers.push(header);
        }
        if reader.files.is_empty() {
            return Err(TraceFileError::NoFiles);
        }
        Ok(reader)
    }

    /// The first file's header.
    pub fn header(&self) -> &TraceHeader {
        &self.headers[0]
    }

    /// Every file's header, in reading order.
    pub fn headers(&self) -> &[TraceHeader] {
        &self.headers
    }

    /// Damage skipped so far (and header oddities found at open).
    pub fn warnings(&self) -> &[TraceWarning] {
        &self.warnings
    }

    /// Bytes read from the disk so far, over all files: the reader's work, which is linear
    /// in the files' sizes whatever they hold (tests and the fuzzer check it).
    pub fn bytes_read(&self) -> u64 {
        self.files.iter().map(|f| f.window.bytes_read).sum()
    }

    /// Read everything that is left.
    pub fn read_to_end(mut self) -> Result<TraceContents, TraceFileError> {
        let mut events = Vec::new();
        let mut trailer = None;
        for rec in self.by_ref() {
            match rec? {
                Record::Event(e) => events.push(e),
                Record::Trailer(t) => trailer = Some(t),
            }
        }
        Ok(TraceContents {
            header: self.headers.swap_remove(0),
            events,
            trailer,
            warnings: self.warnings,
        })
    }

    /// Hand every remaining record to `each`, in the order iterating gives them. The same
    /// records as `for r in reader`, but an ordinary event goes from the decoder to `each`
    /// without passing through the iterator's layers, each of which copied its 112 bytes: a
    /// replay spent more instructions moving events than decoding them.
    pub fn read_each(&mut self, mut each: impl FnMut(Result<Record, TraceFileError>)) {
        loop {
            if let Some(FileCursor {
                open: Some(open),
                events,
                ..
            }) = self.files.get_mut(self.current)
            {
                while let Some(ev) = open.records.common_event() {
                    *events += 1;
                    each(Ok(Record::Event(ev)));
                }
            }
            // Table entries, trailers, damage and chunk boundaries: one record the usual way.
            match self.next() {
                Some(r) => each(r),
                None => return,
            }
        }
    }
}

impl Iterator for TraceReader {
    type Item = Result<Record, TraceFileError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let cursor = self.files.get_mut(self.current)?;
            if let Some(r) = cursor.next_record(&mut self.warnings) {
                return Some(Ok(r));
            }
            match cursor.next_chunk(&mut self.warnings) {
                Ok(true) => {}
                Ok(false) => self.current += 1,
                Err(e) => {
                    self.current = self.files.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// How `next`'s header says it comes from another boot or kernel than `first`, if it does.
fn other_boot(first: &TraceHeader, next: &TraceHeader) -> Option<String> {
    if first.kernel_release != next.kernel_release {
        return Some(format!(
            "kernel {} after kernel {}",
            next.kernel_release, first.kernel_release
        ));
    }
    match (&first.boot_id, &next.boot_id) {
        (Some(a), Some(b)) if a != b => Some(format!("boot {b} after boot {a}")),
        _ => None,
    }
}

fn open_one(
    path: &Path,
    warnings: &mut Vec<TraceWarning>,
) -> Result<(FileCursor, TraceHeader), TraceFileError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TraceFileError::Missing { path: p() },
        _ => TraceFileError::Open {
            path: p(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(TraceFileError::Directory { path: p() });
    }
    if !meta.is_file() {
        return Err(TraceFileError::NotRegular { path: p() });
    }
    let file = File::open(path).map_err(|e| TraceFileError::Open {
        path: p(),
        source: e,
    })?;
    let opened = file.metadata().map_err(|e| TraceFileError::Open {
        path: p(),
        source: e,
    })?;
    let len = opened.len();
    let mut cursor = FileCursor {
        path: p(),
        file,
        len,
        pos: 0,
        events: 0,
        window: Window::new(),
        id: (opened.dev(), opened.ino()),
        open: None,
    };
    if len == 0 {
        return Err(TraceFileError::Empty { path: p() });
    }
    let pre = cursor.read_at(0, len.min(PREAMBLE_LEN) as usize)?;
    let magic_len = pre.len().min(MAGIC.len());
    if pre[..magic_len] != MAGIC[..magic_len] {
        return Err(TraceFileError::NotATrace { path: p() });
    }
    let truncated = |offset| TraceFileError::TruncatedHeader { path: p(), offset };
    if pre.len() < 10 {
        return Err(truncated(len));
    }
    let version = u16::from_le_bytes([pre[8], pre[9]]);
    if version == 0 {
        return Err(TraceFileError::BadHeader {
            path: p(),
            offset: 8,
            detail: "format version 0 does not exist".into(),
        });
    }
    let v1 = if pre.len() < PREAMBLE_LEN as usize {
        Err(truncated(len))
    } else {
        read_v1_header(&mut cursor, &pre)
    };
    if version > FORMAT_VERSION {
        // A damaged version field in a v1 file is not a newer file: say which it is.
        if let Ok((h, _)) = &v1
            && h.format_version <= FORMAT_VERSION
        {
            return Err(TraceFileError::BadHeader {
                path: p(),
                offset: 8,
                detail: format!(
                    "the version field says v{version} but the header inside says v{}",
                    h.format_version
                ),
            });
        }
        return Err(TraceFileError::NewerVersion {
            path: p(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (header, body) = v1?;
    if header.format_version != version {
        warnings.push(TraceWarning::VersionMismatch {
            path: p(),
            in_preamble: version,
            in_header: header.format_version,
        });
    }
    cursor.pos = body;
    Ok((cursor, header))
}

/// The v1 header after the 18-byte preamble; returns it and where the body starts.
fn read_v1_header(
    cursor: &mut FileCursor,
    pre: &[u8],
) -> Result<(TraceHeader, u64), TraceFileError> {
    let file_path = cursor.path.clone();
    let path = || file_path.clone();
    let hlen = u32::from_le_bytes([pre[10], pre[11], pre[12], pre[13]]);
    let crc = u32::from_le_bytes([pre[14], pre[15], pre[16], pre[17]]);
    if hlen > MAX_HEADER_LEN {
        return Err(TraceFileError::BadHeader {
            path: path(),
            offset: 10,
            detail: format!("header length {hlen} is beyond any real header"),
        });
    }
    let end = PREAMBLE_LEN + u64::from(hlen);
    if end > cursor.len {
        return Err(TraceFileError::TruncatedHeader {
            path: path(),
            offset: cursor.len,
        });
    }
    let json = cursor.read_at(PREAMBLE_LEN, hlen as usize)?;
    if crc32fast::hash(&json) != crc {
        return Err(TraceFileError::HeaderChecksum {
            path: path(),
            offset: PREAMBLE_LEN,
        });
    }
    let header = serde_json::from_slice(&json).map_err(|e| TraceFileError::BadHeader {
        path: path(),
        offset: PREAMBLE_LEN,
        detail: format!("not a header ({e})"),
    })?;
    Ok((header, end))
}

struct Frame {
    tag: u8,
    len: usize,
    crc: u32,
}

impl Frame {
    fn parse(b: &[u8]) -> Frame {
        Frame {
            tag: b[0],
            len: u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as usize,
            crc: u32::from_le_bytes([b[5], b[6], b[7], b[8]]),
        }
    }

    /// Why these bytes cannot start a chunk, if they cannot.
    fn invalid(&self) -> Option<String> {
        if self.tag != CHUNK_TAG {
            Some(format!("byte {:#04x} is not a chunk tag", self.tag))
        } else if self.len == 0 || self.len > MAX_CHUNK_PAYLOAD {
            Some(format!("chunk length {} is impossible", self.len))
        } else {
            None
        }
    }
}

impl FileCursor {
    fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, TraceFileError> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| TraceFileError::Read {
                path: self.path.clone(),
                offset,
                source: e,
            })?;
        self.window.bytes_read += len as u64;
        Ok(buf)
    }

    /// Make `[from, to)` readable with [`Window::bytes`] and [`Window::crc`].
    fn hold(&mut self, from: u64, to: u64) -> Result<(), TraceFileError> {
        self.window.hold(&self.file, &self.path, from, to, self.len)
    }

    /// The next record of the open chunk; at its end, the warnings its end calls for, and
    /// `None`.
    // The event case inline, the rest out of line: a replay's every event comes through here,
    // and a call that returns a 112-byte record by value copies it once more.
    #[inline]
    fn next_record(&mut self, warnings: &mut Vec<TraceWarning>) -> Option<Record> {
        let open = self.open.as_mut()?;
        match open.records.next() {
            Some(Ok(Record::Event(e))) => {
                self.events += 1;
                Some(Record::Event(e))
            }
            first => self.next_record_slow(first, warnings),
        }
    }

    #[inline(never)]
    fn next_record_slow(
        &mut self,
        first: Option<Result<Record, RecordError>>,
        warnings: &mut Vec<TraceWarning>,
    ) -> Option<Record> {
        let open = self.open.as_mut()?;
        let mut next = first;
        loop {
            match next {
                Some(Ok(r)) => {
                    match r {
                        Record::Event(_) => self.events += 1,
                        Record::Trailer(_) => open.finished = true,
                    }
                    return Some(r);
                }
                // The decoder ends the chunk after an error: without a length per record
                // there is no next one.
                Some(Err(e)) => {
                    if open.cut.is_none() {
                        warnings.push(TraceWarning::BadRecord {
                            path: self.path.clone(),
                            offset: open.offset,
                            index: e.index,
                            detail: e.detail,
                        });
                    }
                }
                None => break,
            }
            next = open.records.next();
        }
        let open = self.open.take()?;
        if let Some(expected) = open.cut {
            warnings.push(TraceWarning::Truncated {
                path: self.path.clone(),
                offset: open.offset,
                present: self.len - open.offset,
                expected,
                events_read: self.events,
            });
        } else if open.finished && open.end < self.len {
            // The recording ended at its trailer: what follows (a preallocated tail of zeros,
            // a file appended to by hand) is no part of it, and scanning it only costs time.
            warnings.push(TraceWarning::AfterTrailer {
                path: self.path.clone(),
                offset: open.end,
                bytes: self.len - open.end,
            });
            self.pos = self.len;
        }
        None
    }

    /// Open the chunk at `pos` for [`FileCursor::next_record`] and move past it. `Ok(false)` at
    /// the end of the file; damage moves `pos` to the next valid chunk (or the end) with a
    /// warning.
    fn next_chunk(&mut self, warnings: &mut Vec<TraceWarning>) -> Result<bool, TraceFileError> {
        let pos = self.pos;
        if pos >= self.len {
            return Ok(false);
        }
        let avail = self.len - pos;
        if avail < FRAME_LEN as u64 {
            warnings.push(TraceWarning::Truncated {
                path: self.path.clone(),
                offset: pos,
                present: avail,
                expected: FRAME_LEN as u64,
                events_read: self.events,
            });
            self.pos = self.len;
            return Ok(true);
        }
        self.hold(pos, pos + FRAME_LEN as u64)?;
        let frame = Frame::parse(self.window.bytes(pos, pos + FRAME_LEN as u64));
        if let Some(why) = frame.invalid() {
            let resync = self.find_chunk(pos + 1)?;
            warnings.push(TraceWarning::NotAChunk {
                path: self.path.clone(),
                offset: pos,
                why,
                resync,
            });
            self.pos = resync.unwrap_or(self.len);
            return Ok(true);
        }
        let body = pos + FRAME_LEN as u64;
        let end = body + frame.len as u64;
        if end > self.len {
            // Either the file was cut inside this chunk (its last one), or its length field
            // is damaged; a valid chunk further on tells the two apart.
            if let Some(at) = self.find_chunk(pos + 1)? {
                warnings.push(TraceWarning::NotAChunk {
                    path: self.path.clone(),
                    offset: pos,
                    why: format!("its length {} runs past the end of the file", frame.len),
                    resync: Some(at),
                });
                self.pos = at;
                return Ok(true);
            }
            // The checksum covers the whole chunk, so these records are unverified; a cut
            // record never decodes (postcard reads fields in order), so whole ones are kept.
            self.hold(body, self.len)?;
            self.open = Some(OpenChunk {
                records: ChunkDecoder::new(self.window.bytes(body, self.len).to_vec()),
                offset: pos,
                end: self.len,
                cut: Some(FRAME_LEN as u64 + frame.len as u64),
                finished: false,
            });
            self.pos = self.len;
            return Ok(true);
        }
        self.hold(pos, end)?;
        if self.window.crc(body, end) != frame.crc {
            let resync = self.find_chunk(pos + 1)?;
            warnings.push(TraceWarning::BadChecksum {
                path: self.path.clone(),
                offset: pos,
                resync,
            });
            self.pos = resync.unwrap_or(self.len);
            return Ok(true);
        }
        self.open = Some(OpenChunk {
            records: ChunkDecoder::new(self.window.bytes(body, end).to_vec()),
            offset: pos,
            end,
            cut: None,
            finished: false,
        });
        self.pos = end;
        Ok(true)
    }

    /// The offset of the first whole, checksum-valid chunk at or after `from`. Linear: the
    /// window reads each byte once and checks each candidate in constant time.
    fn find_chunk(&mut self, from: u64) -> Result<Option<u64>, TraceFileError> {
        let mut at = from;
        while at < self.len {
            let to = (at + SCAN_BLOCK as u64).min(self.len);
            self.hold(at, to)?;
            let Some(i) = self
                .window
                .bytes(at, to)
                .iter()
                .position(|b| *b == CHUNK_TAG)
            else {
                at = to;
                continue;
            };
            let candidate = at + i as u64;
            if self.valid_chunk_at(candidate)? {
                return Ok(Some(candidate));
            }
            at = candidate + 1;
        }
        Ok(None)
    }

    fn valid_chunk_at(&mut self, at: u64) -> Result<bool, TraceFileError> {
        // A frame and at least one payload byte.
        if self.len - at <= FRAME_LEN as u64 {
            return Ok(false);
        }
        let body = at + FRAME_LEN as u64;
        self.hold(at, body + 1)?;
        let frame = Frame::parse(self.window.bytes(at, body));
        if frame.invalid().is_some()
            || body + frame.len as u64 > self.len
            || !ChunkDecoder::plausible_start(self.window.bytes(body, body + 1))
        {
            return Ok(false);
        }
        let end = body + frame.len as u64;
        self.hold(at, end)?;
        Ok(self.window.crc(body, end) == frame.crc)
    }
}

/// How far a resynchronisation scan looks for a tag at a time.
const SCAN_BLOCK: usize = 64 << 10;

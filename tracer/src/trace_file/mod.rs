//! The trace file: a versioned, self-describing header, then checksummed chunks of compact
//! records, so that a file cut short by a crash, `kill -9` or a full disk still reads up to its
//! last whole record, and a damaged byte costs one chunk, not the file.
//!
//! The recorder writes with [`TraceWriter`]; replay, `dump` and the daemon read with
//! [`TraceReader`]. Both speak [`Record`]: an [`Event`] (loss, IRQ counts and gaps are events
//! too, in-band, so a replay sees them where they happened) or the closing trailer.
//!
//! # Layout, format version 1
//!
//! ```text
//! offset 0    "MSITRACE"                 magic
//!        8    u16 LE  format version      read before anything else is trusted
//!       10    u32 LE  header length N
//!       14    u32 LE  CRC32 of the N header bytes
//!       18    N bytes of JSON             TraceHeader (unknown fields ignored)
//!   18 + N    chunks, to the end of the file
//!
//! chunk       u8 0xC7 | u32 LE payload length | u32 LE CRC32 of the payload | payload
//! payload     postcard records, back to back (see `codec`)
//! ```
//!
//! Each chunk decodes on its own: its string and integer tables and its timestamp base start
//! empty, so a reader that skips a damaged chunk resynchronises on the next tag whose length and
//! checksum hold. The writer writes a chunk with a single `pwrite`, on `flush` (the recorder
//! calls it once a second), past 64 KiB of pending records, and at `finish`.
//!
//! The on-disk record types in `codec` mirror [`EventKind`](crate::event::EventKind) field by
//! field instead of serialising it directly: a change to the event type then fails to compile
//! there, and whoever makes it decides how the file format follows (a new variant at the end is
//! compatible for new readers; anything else needs a new format version).

mod codec;
mod header;
mod reader;
mod window;
mod writer;

use std::path::PathBuf;

use serde::Serialize;

use crate::event::Event;

pub(crate) use header::rfc3339_ns;
pub use header::{ClockOffsets, TraceHeader};
pub use reader::{TraceContents, TraceReader};
pub use writer::{TraceWriter, WriterStats};

pub mod rotate;

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

pub(crate) const MAGIC: &[u8; 8] = b"MSITRACE";
/// Magic, version, header length, header CRC.
pub(crate) const PREAMBLE_LEN: u64 = 18;
/// Tag, payload length, payload CRC.
pub(crate) const FRAME_LEN: usize = 9;
pub(crate) const CHUNK_TAG: u8 = 0xC7;
/// The writer closes a chunk once its payload reaches this size.
pub(crate) const FLUSH_BYTES: usize = 64 << 10;
/// Larger lengths are damage, not data: bounds what a reader allocates for one chunk.
pub(crate) const MAX_CHUNK_PAYLOAD: usize = 16 << 20;
/// Larger header lengths are damage or a crafted file. A seed of the most vectors a header may
/// list ([`crate::seed::MAX_SEED_VECTORS`]), every field filled as on a large host, takes
/// 28.8 MB (`header::tests` measures it); tens of thousands of real vectors, about half. It
/// bounds what opening a file allocates.
pub(crate) const MAX_HEADER_LEN: u32 = 32 << 20;

/// One record of the body, in file order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    Event(Event),
    /// Written once by [`TraceWriter::finish`]: the recorder's live summary (what it reported),
    /// opaque here, so that a replay can be compared with the live run. A file without one was
    /// not finished (killed, crashed, or still being written).
    Trailer(serde_json::Value),
}

/// Why a trace file cannot be read at all. Every message is one line: what is wrong, where,
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error("{}: no such file: check the path", path.display())]
    Missing { path: PathBuf },
    #[error(
        "{} is a directory, not a trace file: give the path of a file written by `msitrace record`",
        path.display()
    )]
    Directory { path: PathBuf },
    #[error(
        "{} is not a regular file: give the path of a file written by `msitrace record`",
        path.display()
    )]
    NotRegular { path: PathBuf },
    #[error("{} is empty (0 bytes): nothing was recorded into it; record again", path.display())]
    Empty { path: PathBuf },
    #[error(
        "{} is not an msitrace trace file (no MSITRACE magic at offset 0): give a file written by `msitrace record`",
        path.display()
    )]
    NotATrace { path: PathBuf },
    #[error(
        "{} was written by a newer msitrace (format v{found}, this one reads up to v{supported}): upgrade msitrace",
        path.display()
    )]
    NewerVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error(
        "{}: file ends inside the header at offset {offset}: it was cut before its first event; record again",
        path.display()
    )]
    TruncatedHeader { path: PathBuf, offset: u64 },
    #[error(
        "{}: the header at offset {offset} fails its checksum: the file is damaged; record again",
        path.display()
    )]
    HeaderChecksum { path: PathBuf, offset: u64 },
    #[error("{}: damaged header at offset {offset}: {detail}; record again", path.display())]
    BadHeader {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error(
        "cannot open {}: {source}: check that it exists and that you may read it (trace files are mode 0600)",
        path.display()
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {} at offset {offset}: {source}: check the disk", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error("no trace file given: name at least one file written by `msitrace record`")]
    NoFiles,
    #[error(
        "{} is {}: give each file once",
        path.display(),
        if path == first { "given twice".to_string() } else { format!("the same file as {}", first.display()) }
    )]
    Repeated { path: PathBuf, first: PathBuf },
    #[error(
        "{} is from another boot than {} ({what}): their times do not compare; replay each boot's files on their own",
        path.display(),
        first.display()
    )]
    OtherBoot {
        path: PathBuf,
        first: PathBuf,
        what: String,
    },
}

/// Damage the reader stepped over. Reading goes on; these say what was lost and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceWarning {
    #[error(
        "{}: file ends inside a chunk at offset {offset} ({present} of {expected} bytes present): truncated; read {events_read} events up to the last whole record",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        present: u64,
        expected: u64,
        events_read: u64,
    },
    #[error(
        "{}: chunk at offset {offset} fails its checksum: skipped, {}",
        path.display(),
        resync_text(.resync)
    )]
    BadChecksum {
        path: PathBuf,
        offset: u64,
        resync: Option<u64>,
    },
    #[error(
        "{}: no valid chunk starts at offset {offset} ({why}): skipped, {}",
        path.display(),
        resync_text(.resync)
    )]
    NotAChunk {
        path: PathBuf,
        offset: u64,
        why: String,
        resync: Option<u64>,
    },
    #[error(
        "{}: record {index} of the chunk at offset {offset} does not decode ({detail}): skipped the rest of that chunk",
        path.display()
    )]
    BadRecord {
        path: PathBuf,
        offset: u64,
        index: usize,
        detail: String,
    },
    #[error(
        "{}: {bytes} bytes after the trailer at offset {offset} ignored: the recording ended there",
        path.display()
    )]
    AfterTrailer {
        path: PathBuf,
        offset: u64,
        bytes: u64,
    },
    #[error(
        "{}: the header says format v{in_header} but the file is marked v{in_preamble}: read as v{in_preamble}",
        path.display()
    )]
    VersionMismatch {
        path: PathBuf,
        in_preamble: u16,
        in_header: u16,
    },
}

fn resync_text(resync: &Option<u64>) -> String {
    match *resync {
        Some(at) => format!("resynchronised at offset {at}"),
        None => "no whole chunk after it up to the end of the file".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::seed::Seed;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "msitrace-trace-file-unit-{}-{name}.trace",
            std::process::id()
        ))
    }

    fn ev(i: u32) -> Event {
        Event {
            ts_ns: 1_000 + u64::from(i),
            cpu: i % 2,
            tgid: 100 + i,
            kind: EventKind::SuspendResume {
                action: format!("phase{}", i % 3),
                val: i,
                start: i.is_multiple_of(2),
            },
        }
    }

    /// Three chunks of four events; returns the file bytes and where each chunk starts.
    fn three_chunks(path: &std::path::Path) -> (Vec<u8>, Vec<u64>) {
        let h = TraceHeader::for_this_host(Vec::new(), None, Seed::default());
        let mut w = TraceWriter::create(path, &h).unwrap();
        let mut starts = Vec::new();
        for c in 0..3 {
            starts.push(w.stats().bytes);
            for i in 0..4 {
                w.append(&ev(c * 4 + i)).unwrap();
            }
            w.flush().unwrap();
            w.flush().unwrap();
        }
        let stats = w.finish(&serde_json::json!("done")).unwrap();
        assert_eq!((stats.events, stats.chunks), (12, 4));
        (std::fs::read(path).unwrap(), starts)
    }

    #[test]
    fn trace_file_resynchronises_after_a_damaged_chunk() {
        let path = temp("resync");
        let (mut bytes, starts) = three_chunks(&path);
        let middle = starts[1] as usize + FRAME_LEN + 3;
        bytes[middle] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
        let _ = std::fs::remove_file(&path);
        let want: Vec<Event> = (0..4).chain(8..12).map(ev).collect();
        assert_eq!(got.events, want);
        assert_eq!(got.trailer, Some(serde_json::json!("done")));
        assert_eq!(
            got.warnings,
            [TraceWarning::BadChecksum {
                path: path.clone(),
                offset: starts[1],
                resync: Some(starts[2]),
            }]
        );
        assert_eq!(
            got.warnings[0].to_string(),
            format!(
                "{}: chunk at offset {} fails its checksum: skipped, resynchronised at offset {}",
                path.display(),
                starts[1],
                starts[2]
            )
        );
    }

    #[test]
    fn trace_file_cut_inside_a_chunk_keeps_its_whole_records() {
        let path = temp("cut");
        let (bytes, starts) = three_chunks(&path);
        // Into the third chunk's payload, past its first records.
        let cut = starts[2] as usize + FRAME_LEN + 20;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let got = TraceReader::open(&path).unwrap().read_to_end().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            got.events.len() > 8 && got.events.len() < 12,
            "{}",
            got.events.len()
        );
        assert_eq!(
            got.events[..],
            (0..got.events.len() as u32).map(ev).collect::<Vec<_>>()[..]
        );
        assert_eq!(got.trailer, None);
        let [
            TraceWarning::Truncated {
                offset,
                events_read,
                ..
            },
        ] = got.warnings[..]
        else {
            panic!("{:?}", got.warnings);
        };
        assert_eq!((offset, events_read), (starts[2], got.events.len() as u64));
    }

    /// Damage built to be slow: a tag, a plausible length of 1 MiB, a wrong checksum and a
    /// plausible first payload byte, every 10 bytes for 2 MiB, then the whole chunks of a
    /// real file. Each tag claimed up to a MiB of hashing: about 200 GB for this file.
    #[test]
    fn crafted_damage_is_read_in_linear_work_and_the_chunks_after_it_are_found() {
        let path = temp("crafted");
        let (bytes, starts) = three_chunks(&path);
        let body = starts[0] as usize;
        let mut crafted = bytes[..body].to_vec();
        let decoy_len: u32 = 1 << 20;
        while crafted.len() < body + (2 << 20) {
            crafted.push(CHUNK_TAG);
            crafted.extend_from_slice(&decoy_len.to_le_bytes());
            crafted.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
            crafted.push(0);
        }
        crafted.extend_from_slice(&bytes[body..]);
        std::fs::write(&path, &crafted).unwrap();
        let mut reader = TraceReader::open(&path).unwrap();
        let events = reader
            .by_ref()
            .filter(|r| matches!(r, Ok(Record::Event(_))))
            .count();
        let read = reader.bytes_read();
        let warnings = reader.warnings().to_vec();
        let _ = std::fs::remove_file(&path);
        assert_eq!(events, 12, "{warnings:?}");
        // Each byte from the disk once, give or take the header and a read-ahead block.
        assert!(
            read <= crafted.len() as u64 + (128 << 10),
            "{read} bytes read for a file of {}",
            crafted.len()
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    /// `read_each` (a replay's path) and the iterator (everything else) hand out the same
    /// records and warnings, for ordinary events (the decoder's fast path), others, damage
    /// and a cut.
    #[test]
    fn read_each_gives_what_iterating_gives() {
        use crate::event::{MsiMsg, VectorSnap};
        let path = temp("read-each");
        let h = TraceHeader::for_this_host(Vec::new(), None, Seed::default());
        let mut w = TraceWriter::create(&path, &h).unwrap();
        let mut starts = Vec::new();
        for c in 0..3u32 {
            starts.push(w.stats().bytes);
            for i in 0..6 {
                let v = VectorSnap {
                    irq: 30 + i % 2,
                    device: Some(format!("0000:00:0{}.0", i % 2).into()),
                    msi_index: Some(i),
                    msix: Some(true),
                    ..Default::default()
                };
                let kind = match i % 3 {
                    0 => EventKind::MaskEnter(v),
                    1 => EventKind::ComposeExit {
                        v,
                        msg: Some(MsiMsg {
                            address_lo: 0xfee0_0000,
                            address_hi: 0,
                            data: 0x41,
                        }),
                    },
                    _ => ev(c * 6 + i).kind,
                };
                w.append(&Event {
                    ts_ns: 1_000 + u64::from(c * 6 + i),
                    cpu: i % 2,
                    tgid: 1,
                    kind,
                })
                .unwrap();
            }
            w.flush().unwrap();
        }
        w.finish(&serde_json::json!("done")).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let mut damaged = whole.clone();
        damaged[starts[1] as usize + FRAME_LEN + 3] ^= 0x55;
        let cut = whole[..starts[2] as usize + FRAME_LEN + 30].to_vec();
        for (name, bytes) in [("whole", whole), ("damaged", damaged), ("cut", cut)] {
            std::fs::write(&path, &bytes).unwrap();
            let mut iterated = TraceReader::open(&path).unwrap();
            let by_iter: Vec<String> = iterated.by_ref().map(|r| format!("{r:?}")).collect();
            let mut each = TraceReader::open(&path).unwrap();
            let mut by_each = Vec::new();
            each.read_each(|r| by_each.push(format!("{r:?}")));
            assert_eq!(by_each, by_iter, "{name}");
            assert_eq!(each.warnings(), iterated.warnings(), "{name}");
            assert!(by_iter.len() > 6, "{name}: {by_iter:?}");
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reading_stops_at_the_trailer_with_one_warning() {
        let path = temp("tail");
        let (mut bytes, _) = three_chunks(&path);
        let end = bytes.len() as u64;
        // A preallocated tail, as `fallocate` or `truncate -s +4G` leave it.
        bytes.resize(bytes.len() + (8 << 20), 0);
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = TraceReader::open(&path).unwrap();
        let n = reader.by_ref().count();
        let read = reader.bytes_read();
        let warnings = reader.warnings().to_vec();
        let _ = std::fs::remove_file(&path);
        assert_eq!(n, 13);
        assert!(read <= end + (64 << 10), "{read} bytes read");
        assert_eq!(
            warnings,
            [TraceWarning::AfterTrailer {
                path: path.clone(),
                offset: end,
                bytes: 8 << 20,
            }]
        );
    }
}

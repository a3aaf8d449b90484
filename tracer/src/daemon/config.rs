//! The daemon's settings: built-in defaults, then /etc/msitrace/msitrace.toml when present,
//! then flags. Everything is checked at start; a bad value stops the daemon with one line that
//! names the file, the key and what is allowed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

use crate::engine::RuleTiming;

pub const DEFAULT_CONFIG: &str = "/etc/msitrace/msitrace.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/msitrace";

/// Where entries go: the journal when stderr is connected to it (auto), or always one or the
/// other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    Auto,
    Journal,
    Stderr,
}

/// Which findings the live daemon also writes to the kernel log (/dev/kmsg), for when the
/// journal's disk or the log shipper's network is the device that went dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KmsgLevel {
    Off,
    Error,
}

/// The file's keys; every one optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub max_file_mib: Option<u64>,
    pub max_files: Option<usize>,
    pub ring_mib: Option<u32>,
    /// Where handler counts come from (see `msitrace record --help`).
    pub irq_counts: Option<crate::irq_counts::IrqCountMode>,
    pub silence_secs: Option<f64>,
    pub grace_secs: Option<f64>,
    pub log_target: Option<LogTarget>,
    /// false: no flight recorder, journal entries only.
    pub record: Option<bool>,
    pub kmsg: Option<KmsgLevel>,
    /// false: no metrics file for node_exporter.
    pub metrics: Option<bool>,
    /// node_exporter's textfile directory, where `msitrace.prom` is rewritten.
    pub metrics_dir: Option<PathBuf>,
}

/// The settings the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub ring_mib: u32,
    pub irq_counts: crate::irq_counts::IrqCountMode,
    pub timing: RuleTiming,
    pub log_target: LogTarget,
    pub record: bool,
    pub kmsg: KmsgLevel,
    /// Where `msitrace.prom` goes; `None` with `metrics = false`.
    pub metrics_dir: Option<PathBuf>,
}

/// A settings file is a few hundred bytes; anything past this is not one.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of a settings file: a regular file of at most [`MAX_CONFIG_BYTES`], or /dev/null
/// (the usual way to say "no settings file"). A FIFO would block the start forever, /dev/zero
/// would fill the memory and opening some devices acts on them: none of these is opened.
fn read_settings(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let not_regular = || {
        Error::new(
            ErrorKind::InvalidInput,
            "not a regular file: give the path of a TOML settings file (or /dev/null for none)",
        )
    };
    let meta = std::fs::metadata(path)?;
    if meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        return Ok(String::new());
    }
    if !meta.is_file() {
        return Err(not_regular());
    }
    // O_NONBLOCK and a second look: the path may have been swapped for a FIFO since.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than a settings file's limit of {MAX_CONFIG_BYTES}: give the path of a TOML settings file",
                meta.len()
            ),
        ));
    }
    // The size can change between the check and the read (a file being written): the read
    // is capped as well.
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("grew past {MAX_CONFIG_BYTES} bytes while being read"),
        ));
    }
    Ok(text)
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {} (the keys are documented in README.md, \"Running as a service\")",
                path.display(),
                e.message()
            )
        })
    }

    /// The file at `path`; a missing default file is no error, a missing named one is.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let (path, named) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        match read_settings(path) {
            Ok(text) => FileConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
                Ok(FileConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Flags (`over`) win over the file, the file over the defaults.
    pub fn merge(self, over: FileConfig) -> Result<Config> {
        let max_file_mib = over.max_file_mib.or(self.max_file_mib).unwrap_or(64);
        let max_files = over.max_files.or(self.max_files).unwrap_or(8);
        let ring_mib = over
            .ring_mib
            .or(self.ring_mib)
            .unwrap_or(tracer_common::DEFAULT_RING_BYTES >> 20);
        let silence = over.silence_secs.or(self.silence_secs);
        let grace = over.grace_secs.or(self.grace_secs);
        ensure!(
            (1..=1 << 20).contains(&max_file_mib),
            "max_file_mib = {max_file_mib}: give a size from 1 to 1048576 MiB"
        );
        ensure!(
            (1..=100_000).contains(&max_files),
            "max_files = {max_files}: keep from 1 to 100000 files"
        );
        if let Err(e) = crate::collector::parse_ring_mib(&ring_mib.to_string()) {
            bail!("ring_mib = {ring_mib}: {e}");
        }
        let secs = |v: Option<f64>, key: &str, default: u64| -> Result<u64> {
            match v {
                None => Ok(default),
                Some(s) => match crate::duration::check_delay_secs(s) {
                    Ok(s) => Ok((s * 1e9) as u64),
                    Err(e) => bail!("{key} = {s}: {e}"),
                },
            }
        };
        let d = RuleTiming::default();
        let state_dir = over
            .state_dir
            .or(self.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        ensure!(
            !state_dir.as_os_str().is_empty(),
            "state_dir is empty: give the flight recorder's directory (default {DEFAULT_STATE_DIR})"
        );
        let metrics_dir = over
            .metrics_dir
            .or(self.metrics_dir)
            .unwrap_or_else(|| PathBuf::from(super::metrics::DEFAULT_METRICS_DIR));
        ensure!(
            !metrics_dir.as_os_str().is_empty(),
            "metrics_dir is empty: give node_exporter's textfile directory (default {}), or set metrics = false",
            super::metrics::DEFAULT_METRICS_DIR
        );
        let metrics = over.metrics.or(self.metrics).unwrap_or(true);
        Ok(Config {
            metrics_dir: metrics.then_some(metrics_dir),
            state_dir,
            max_file_bytes: max_file_mib << 20,
            max_files,
            ring_mib,
            irq_counts: over.irq_counts.or(self.irq_counts).unwrap_or_default(),
            timing: RuleTiming {
                g5_silence_ns: secs(silence, "silence_secs", d.g5_silence_ns)?,
                g1_grace_ns: secs(grace, "grace_secs", d.g1_grace_ns)?,
                ..d
            },
            log_target: over
                .log_target
                .or(self.log_target)
                .unwrap_or(LogTarget::Auto),
            record: over.record.or(self.record).unwrap_or(true),
            kmsg: over.kmsg.or(self.kmsg).unwrap_or(KmsgLevel::Error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<FileConfig> {
        FileConfig::parse(t, Path::new("/etc/msitrace/msitrace.toml"))
    }

    #[test]
    fn defaults_file_and_flags_in_that_order() {
        let file = parse("state_dir = \"/srv/msi\"\nmax_files = 3\nsilence_secs = 4.5\n").unwrap();
        let flags = FileConfig {
            max_files: Some(5),
            ..FileConfig::default()
        };
        let c = file.merge(flags).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/msi"));
        assert_eq!(c.max_files, 5);
        assert_eq!(c.max_file_bytes, 64 << 20);
        assert_eq!(c.timing.g5_silence_ns, 4_500_000_000);
        assert_eq!(c.log_target, LogTarget::Auto);
        assert!(c.record);
        assert_eq!(c.kmsg, KmsgLevel::Error);
        let off = parse("kmsg = \"off\"\n").unwrap();
        assert_eq!(
            off.merge(FileConfig::default()).unwrap().kmsg,
            KmsgLevel::Off
        );
        assert_eq!(
            c.metrics_dir.as_deref(),
            Some(Path::new("/var/lib/prometheus/node-exporter"))
        );
        let c = parse("metrics_dir = \"/run/textfiles\"\n")
            .unwrap()
            .merge(FileConfig::default())
            .unwrap();
        assert_eq!(c.metrics_dir.as_deref(), Some(Path::new("/run/textfiles")));
        let off = FileConfig {
            metrics: Some(false),
            ..FileConfig::default()
        };
        let c = parse("metrics_dir = \"/run/textfiles\"\n")
            .unwrap()
            .merge(off)
            .unwrap();
        assert_eq!(c.metrics_dir, None);
        let e = parse("metrics_dir = \"\"\n")
            .unwrap()
            .merge(FileConfig::default())
            .unwrap_err();
        assert!(e.to_string().starts_with("metrics_dir is empty"), "{e}");
    }

    #[test]
    fn bad_files_and_values_say_what_and_where() {
        let e = parse("max_flies = 3\n").unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/msitrace/msitrace.toml: unknown field `max_flies`"),
            "{e}"
        );
        let e = parse("max_files = \"many\"\n").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = parse("log_target = \"syslog\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown variant `syslog`"), "{e}");
        let e = parse("max_files = 0")
            .unwrap()
            .merge(FileConfig::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "max_files = 0: keep from 1 to 100000 files");
        let e = parse("ring_mib = 3")
            .unwrap()
            .merge(FileConfig::default())
            .unwrap_err();
        assert!(e.to_string().starts_with("ring_mib = 3: "), "{e}");
        let e = parse("grace_secs = -1")
            .unwrap()
            .merge(FileConfig::default())
            .unwrap_err();
        assert!(e.to_string().contains("grace_secs = -1"), "{e}");
        assert!(FileConfig::load(Some(Path::new("/nonexistent/msitrace.toml"))).is_err());
    }
}

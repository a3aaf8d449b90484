//! `msitrace fleet`: the daemon's entries from many machines' journals (as
//! systemd-journal-remote writes them), read through `journalctl -o json`, as one table.
//! Exit 0 with a report, 2 when the journals cannot be read.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

use crate::fleet::{Fleet, JournalEntry};
use crate::output::print_stdout;

#[derive(clap::Args)]
pub struct Args {
    /// The directory of journal files to read, e.g. what systemd-journal-remote writes
    /// (its --output, /var/log/journal/remote by default).
    #[arg(long, value_name = "DIR")]
    pub journal_dir: PathBuf,
    /// Only entries from T on, in any form journalctl's --since takes ("2026-12-01 08:00",
    /// "yesterday", "-2h").
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Print the table as one JSON object (docs/schema/fleet.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// journalctl -D reads the files in DIR and in its subdirectories (one per machine id under
/// a local /var/log/journal): a directory with none of them is a wrong path, not a fleet
/// with nothing to say.
fn has_journal_files(dir: &Path) -> anyhow::Result<bool> {
    let is_journal = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
    };
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if is_journal(&p) {
            return Ok(true);
        }
        if p.is_dir()
            && let Ok(sub) = std::fs::read_dir(&p)
            && sub.flatten().any(|s| is_journal(&s.path()))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.journal_dir;
    if !dir.is_dir() {
        bail!(
            "fleet: {} is not a directory: give --journal-dir the directory systemd-journal-remote writes to (its --output)",
            dir.display()
        );
    }
    if !has_journal_files(dir)? {
        bail!(
            "fleet: no journal files (*.journal) in {}: give --journal-dir the directory systemd-journal-remote writes to (its --output)",
            dir.display()
        );
    }
    let mut cmd = Command::new("journalctl");
    cmd.arg("--directory")
        .arg(dir)
        .args(["--output", "json", "--all", "--no-pager", "--quiet"]);
    if let Some(since) = &args.since {
        cmd.arg(format!("--since={since}"));
    }
    cmd.arg("SYSLOG_IDENTIFIER=msitrace");
    // Streamed: a collector's journals can hold far more than one wants in memory as text;
    // only the few fields of each entry the table needs are kept.
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "fleet: journalctl is not installed: install systemd (`apt-get install systemd`) to read journals"
        ),
        Err(e) => return Err(e).context("fleet: cannot run journalctl"),
    };
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    let mut entries = Vec::new();
    let mut bad = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("fleet: cannot read journalctl's output")?;
            if line.trim().is_empty() {
                continue;
            }
            match JournalEntry::from_json_line(&line) {
                Ok(e) => entries.extend(e),
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
    }
    if bad.is_some() {
        let _ = child.kill();
    }
    let status = child.wait().context("fleet: cannot wait for journalctl")?;
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if let Some(e) = bad {
        bail!("fleet: journalctl printed {e}");
    }
    if !status.success() {
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "fleet: journalctl could not read {} ({status}): {first}",
            dir.display()
        );
    }
    let fleet = Fleet::build(&entries, args.since.as_deref());
    if args.json {
        let text =
            serde_json::to_string_pretty(&fleet).context("cannot format the table as JSON")?;
        print_stdout(&format!("{text}\n"))?;
    } else {
        print_stdout(&fleet.to_text())?;
    }
    Ok(ExitCode::SUCCESS)
}

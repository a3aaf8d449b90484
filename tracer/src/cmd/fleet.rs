//! `msitrace fleet`: the daemon's entries from many machines' journals (as
//! systemd-journal-remote writes them), read through `journalctl -o json`, as one table.
//! Exit 0 with a report, 2 when the journals cannot be read.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "fleet: journalctl is not installed: install systemd (`apt-get install systemd`) to read journals"
        ),
        Err(e) => return Err(e).context("fleet: cannot run journalctl"),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "fleet: journalctl could not read {} ({}): {first}",
            dir.display(),
            out.status
        );
    }
    let mut entries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = JournalEntry::from_json_line(line)
            .map_err(|e| anyhow::anyhow!("fleet: journalctl printed {e}"))?;
        entries.extend(parsed);
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

//! msitrace on both sides of the rig: built once on the host (`cargo build --release -p
//! tracer`, eBPF object embedded), copied into each initramfs with the shared libraries it
//! links, run as `record` and `probes` in the guest and as `replay` and `dump` on the host on
//! the files the guest brings back.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    checks::json::{DumpLine, Event, Header, Trailer},
    run_output,
};

pub struct Msitrace {
    pub bin: PathBuf,
    /// Subcommands that exist and take the arguments the rig passes.
    pub record: bool,
    pub probes: bool,
    pub replay: bool,
    pub dump: bool,
    /// The front-ends some steps record with.
    pub live: bool,
    pub daemon: bool,
}

impl Msitrace {
    /// Recording in the guest and the report on the host both work: the rig can assert on
    /// msitrace's outputs.
    pub fn usable(&self) -> bool {
        self.record && self.probes && self.replay && self.dump && self.live && self.daemon
    }

    /// What is missing, for the table.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("record -o --silence", self.record),
            ("probes --json", self.probes),
            ("replay --json", self.replay),
            ("dump --json", self.dump),
            ("live --output --silence", self.live),
            ("daemon --state-dir --silence", self.daemon),
        ]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect()
    }
}

pub fn build(repo: &Path) -> Result<Msitrace> {
    println!("vm: building msitrace (cargo build --release -p tracer)");
    let bin = crate::util::build_release(repo, "tracer", "msitrace")?;
    // A subcommand counts once its help shows the option the rig uses: a placeholder that
    // only exists in the command list does not.
    let help = |sub: &str| {
        Command::new(&bin)
            .args([sub, "--help"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    Ok(Msitrace {
        record: {
            let h = help("record");
            h.contains("--output") && h.contains("--silence")
        },
        probes: help("probes").contains("--json"),
        replay: help("replay").contains("--json"),
        dump: help("dump").contains("--json"),
        live: {
            let h = help("live");
            h.contains("--output") && h.contains("--silence")
        },
        daemon: {
            let h = help("daemon");
            h.contains("--state-dir") && h.contains("--silence")
        },
        bin,
    })
}

/// Put msitrace (debug info stripped: the guest's RAM is also its hibernation image) and the
/// shared libraries `ldd` lists into the initramfs tree at `root`.
pub fn stage(m: &Msitrace, root: &Path) -> Result<()> {
    let dest = root.join("vmt/bin/msitrace");
    fs::create_dir_all(dest.parent().unwrap_or(root))?;
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&m.bin)
        .arg(&dest)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(&m.bin, &dest).with_context(|| format!("cannot copy {}", m.bin.display()))?;
    }
    let ldd = run_output(Command::new("ldd").arg(&m.bin))?;
    for lib in ldd_paths(&ldd) {
        let to = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(to.parent().unwrap_or(root))?;
        // fs::copy follows the symlinks the loader paths often are.
        fs::copy(&lib, &to).with_context(|| format!("cannot copy {}", lib.display()))?;
    }
    Ok(())
}

/// The files of `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and the loader line.
fn ldd_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `msitrace replay FILE... --json --silence S`: its exit code (0 no error-level divergence,
/// 1 an error, 2 unusable; the default `--fail-on error`) and the report, when it printed one.
pub fn replay_json(
    m: &Msitrace,
    traces: &[PathBuf],
    silence_s: u64,
) -> Result<(i32, Option<Value>, String)> {
    let out = Command::new(&m.bin)
        .arg("replay")
        .args(traces)
        .arg("--json")
        .arg("--silence")
        .arg(silence_s.to_string())
        .output()
        .context("cannot run msitrace replay")?;
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&out.stdout).ok();
    Ok((
        code,
        report,
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// `msitrace replay FILE --silence S`: the report as people read it.
pub fn replay_text(m: &Msitrace, trace: &Path, silence_s: u64) -> Result<(i32, String)> {
    let out = Command::new(&m.bin)
        .arg("replay")
        .arg(trace)
        .arg("--silence")
        .arg(silence_s.to_string())
        .output()
        .context("cannot run msitrace replay")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// `msitrace dump FILE... --json`, run once for what each reader below takes from it.
fn dump_json(m: &Msitrace, traces: &[PathBuf]) -> Result<std::process::Output> {
    Command::new(&m.bin)
        .arg("dump")
        .args(traces)
        .arg("--json")
        .output()
        .context("cannot run msitrace dump")
}

/// The events of `msitrace dump FILE... --json` (the header and trailer lines are left out).
pub fn dump_events(m: &Msitrace, traces: &[PathBuf]) -> Result<Vec<Event>> {
    let out = dump_json(m, traces)?;
    if !out.status.success() {
        bail!(
            "msitrace dump failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<DumpLine>(l).ok())
        .filter_map(|l| l.event)
        .collect())
}

/// The header of a recording (`msitrace dump --json`'s first line).
pub fn header(m: &Msitrace, trace: &Path) -> Result<Header> {
    let out = dump_json(m, &[trace.to_path_buf()])?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<DumpLine>(l).ok())
        .and_then(|l| l.header)
        .with_context(|| {
            format!(
                "msitrace dump {} gave no header: {}",
                trace.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// The trailer of a recording (`msitrace dump --json`'s last line), if it has one.
pub fn trailer(m: &Msitrace, traces: &[PathBuf]) -> Result<Option<Trailer>> {
    let out = dump_json(m, traces)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<DumpLine>(l).ok())
        .find_map(|l| l.trailer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        let p = ldd_paths(text);
        assert_eq!(
            p,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}

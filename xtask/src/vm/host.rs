//! What vm-test needs from the host and from Debian's archive: the packages it installs when
//! they are missing (QEMU from bookworm-backports, busybox-static, cpio, the decompressors, the module
//! toolchain), and the guest kernels, resolved from Debian's metapackages and downloaded into
//! the work directory, never installed.
//!
//! All apt calls go through a private configuration (`APT_CONFIG`) under the work directory:
//! the stock sources plus bookworm-backports, its own lists and its own archive cache, so
//! /etc/apt is never edited and other apt users on the machine are not disturbed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::plan::Plan;
use super::{run_output, run_status};
use crate::util::is_root;

/// Packages the rig runs or builds with, and the suite to take them from when not the default.
const PACKAGES: &[(&str, Option<&str>)] = &[
    // bookworm's own QEMU 7.2 conflicts with the backports qemu-utils these images carry.
    ("qemu-system-x86", Some("bookworm-backports")),
    ("busybox-static", None),
    ("cpio", None),
    ("xz-utils", None),
    // With xz, the unpackers of the payloads of Debian's bzImages (zstd on 6.12 and 7.x, LZ4
    // on the cloud flavour), for the guests' PVH boot (kernel::extract_pvh).
    ("zstd", None),
    ("lz4", None),
    ("gzip", None),
    ("kmod", None),
    ("make", None),
    // Debian builds both guest kernels with gcc-12; a module must be built with the same.
    ("gcc-12", None),
    ("binutils", None),
    // 6.12's kbuild makes each module's BTF with pahole (CONFIG_DEBUG_INFO_BTF_MODULES) and
    // fails without it; 6.1's skips it with a warning.
    ("dwarves", None),
    // The systemd guest's root disk: a Debian system made from Debian's packages, and its
    // ext4 image made without mounting anything.
    ("mmdebstrap", None),
    ("e2fsprogs", None),
];

/// Lists older than this are refreshed (kernels get security updates every few weeks).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    dir: PathBuf,
    conf: PathBuf,
}

/// One Debian package pinned to a version (`None`: the candidate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkg {
    pub name: String,
    pub version: Option<String>,
}

/// A guest kernel as Debian ships it: the image and what building a module against it needs.
#[derive(Clone, Debug)]
pub struct KernelPkgs {
    /// The series the user names (`6.1`, `6.1-cloud`, `7.x`).
    pub series: String,
    /// The ABI name: `6.12.117+deb12-amd64` (`uname -r` in the guest).
    pub abi: String,
    pub version: String,
    /// The image package, and where it is only a metapackage (Debian's 7.x), the packages
    /// holding the kernel and its modules.
    pub images: Vec<Pkg>,
    /// linux-headers-<abi>, its -common and linux-kbuild.
    pub headers: Vec<Pkg>,
    /// The Debian release the kernel was built for: its compiler and C library build modules
    /// for it (a build root of that release where it is not this machine's).
    pub release: &'static str,
    pub plan: super::plan::Plan,
}

/// One kernel of the matrix: which metapackage names it, in which release.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub name: &'static str,
    /// Metapackages that depend on the current image (highest version wins).
    pub metas: &'static [&'static str],
    /// The image version's prefix (`6.1.`): a metapackage of another series is skipped.
    pub version_prefix: &'static str,
    pub release: &'static str,
    /// Every scenario and front-end, or the core of the plan (with or without the service).
    pub plan: super::plan::Plan,
}

/// The kernels vm-test boots, from the oldest in fleets to the newest Debian ships. Each is
/// resolved from Debian's metapackages at run time, never pinned to an ABI.
pub const MATRIX: &[Series] = &[
    Series {
        name: "5.10",
        plan: Plan::Core,
        metas: &["linux-image-amd64"],
        version_prefix: "5.10.",
        release: "bullseye",
    },
    Series {
        name: "6.1",
        plan: Plan::Full,
        metas: &["linux-image-amd64"],
        version_prefix: "6.1.",
        release: "bookworm",
    },
    // The flavour Debian's Azure images boot: pci-hyperv as a module, no e1000e driver (hv_stub
    // binds the device itself), no pm_test, an LZ4 vmlinuz, a smaller struct device.
    Series {
        name: "6.1-cloud",
        plan: Plan::Core,
        metas: &["linux-image-cloud-amd64"],
        version_prefix: "6.1.",
        release: "bookworm",
    },
    Series {
        name: "6.12",
        plan: Plan::FullAndLate,
        metas: &["linux-image-amd64", "linux-image-6.12-amd64"],
        version_prefix: "6.12.",
        release: "bookworm",
    },
    // The newest series Debian ships (trixie-backports): pci-hyperv built in, its own MSI
    // parent domain (6.17), per-device MSI domains everywhere.
    Series {
        name: "7.x",
        // The service too: the newest kernel is where a fleet's next image comes from.
        plan: Plan::CoreAndService,
        metas: &["linux-image-amd64"],
        version_prefix: "7.",
        release: "trixie",
    },
];

/// The suites a release's kernels come from, by the stock entry each is derived from: the
/// main archive or the security archive.
fn release_suites(release: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match release {
        "bullseye" => (&["bullseye"], &["bullseye-security"]),
        "trixie" => (&["trixie", "trixie-backports"], &["trixie-security"]),
        _ => (&[], &[]),
    }
}

impl Apt {
    /// Write the private configuration: the stock sources, and bookworm-backports made from
    /// the stock Debian entry with its suite changed (so the mirror is whatever the machine
    /// already uses).
    pub fn new(work: &Path) -> Result<Apt> {
        let dir = work.join("apt");
        let parts = dir.join("sources.list.d");
        for d in [
            parts.clone(),
            dir.join("lists/partial"),
            dir.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut backports = None;
        if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut entries: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            entries.sort();
            for src in entries {
                let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !(name.ends_with(".sources") || name.ends_with(".list")) {
                    continue;
                }
                let text = fs::read_to_string(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                // Only Debian's own archive: a third-party source that is unreachable from CI
                // would fail the update.
                if !text.contains("/debian") {
                    continue;
                }
                if backports.is_none() {
                    backports = backports_entry(&text, name.ends_with(".sources"));
                }
                fs::write(parts.join(name), &text)?;
            }
        }
        let stock_list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        if backports.is_none() {
            backports = backports_entry(&stock_list, false);
        }
        fs::write(dir.join("sources.list"), &stock_list)?;
        let Some((file, entry)) = backports else {
            bail!(
                "no Debian bookworm entry in /etc/apt/sources.list{{,.d}}: vm-test needs bookworm and bookworm-backports sources"
            );
        };
        fs::write(parts.join(file), entry)?;
        let conf = write_conf(&dir, "DPkg::Lock::Timeout \"600\";\n")?;
        Ok(Apt { dir, conf })
    }

    /// A second private configuration for the kernels of another Debian release (bullseye's
    /// 5.10, trixie's 7.x): made from the machine's own Debian entries with the suites
    /// changed, used only to resolve and download, never to install on this machine.
    pub fn for_release(work: &Path, release: &str) -> Result<Apt> {
        let dir = work.join(format!("apt-{release}"));
        let parts = dir.join("sources.list.d");
        for d in [
            parts.clone(),
            dir.join("lists/partial"),
            dir.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let (main, security) = release_suites(release);
        let stock = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").context(
            "vm-test derives other releases' sources from /etc/apt/sources.list.d/debian.sources",
        )?;
        let mut out = Vec::new();
        for stanza in stock.split("\n\n").filter(|s| s.contains("Suites:")) {
            let is_security = stanza
                .lines()
                .any(|l| l.starts_with("Suites:") && l.contains("-security"));
            let suites = if is_security { security } else { main };
            if suites.is_empty() {
                continue;
            }
            out.push(
                stanza
                    .lines()
                    .map(|l| {
                        if l.starts_with("Suites:") {
                            format!("Suites: {}", suites.join(" "))
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        if out.is_empty() {
            bail!("no Debian entry to derive {release}'s sources from");
        }
        fs::write(
            parts.join(format!("vm-{release}.sources")),
            out.join("\n\n") + "\n",
        )?;
        fs::write(dir.join("sources.list"), "")?;
        let conf = write_conf(
            &dir,
            &format!("Dir::State::Status \"{}/status\";\n", dir.display()),
        )?;
        // An empty dpkg status: what this machine has installed says nothing of another release.
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        Ok(Apt { dir, conf })
    }

    /// The Debian source files of the private configuration (the machine's own entries and
    /// bookworm-backports), for tools that take sources files rather than an APT_CONFIG.
    pub fn debian_sources(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.join("sources.list.d"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0));
        files.sort();
        files
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.conf)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `apt-get update` when the private lists are missing or a day old; with lists already
    /// there, a failed update is a warning (the cache still resolves the kernels it has).
    pub fn update_if_stale(&self) -> Result<()> {
        // apt stamps list files with the archive's own dates, so the age is our own stamp's.
        let stamp = self.dir.join("updated");
        let have_lists = fs::read_dir(self.dir.join("lists"))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"));
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age < LISTS_MAX_AGE)
            });
        if fresh && have_lists {
            return Ok(());
        }
        println!(
            "vm: apt-get update (private lists in {})",
            self.dir.join("lists").display()
        );
        if run_status(self.cmd("apt-get").args(["update", "-qq"]))? {
            fs::write(&stamp, "")?;
            return Ok(());
        }
        if have_lists {
            println!("vm: warning: apt-get update failed; using the lists from the last run");
            return Ok(());
        }
        bail!(
            "apt-get update failed and there are no package lists yet: vm-test needs Debian's archive once"
        )
    }

    /// Install what is missing; never upgrade or replace what is there.
    pub fn ensure_installed(&self) -> Result<()> {
        for (pkg, suite) in PACKAGES {
            if installed(pkg)? {
                continue;
            }
            if !is_root() {
                bail!("{pkg} is missing and only root can install it: run vm-test as root once");
            }
            println!(
                "vm: installing {pkg}{}",
                suite.map(|s| format!(" from {s}")).unwrap_or_default()
            );
            let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
            if let Some(s) = suite {
                args.extend(["-t", s]);
            }
            args.push(pkg);
            // One retry: a concurrent dpkg run on the machine can make the first attempt fail.
            if !run_status(self.cmd("apt-get").args(&args))?
                && !run_status(self.cmd("apt-get").args(&args))?
            {
                bail!("could not install {pkg}: see apt-get's output above");
            }
        }
        Ok(())
    }

    pub fn series(name: &str) -> Option<&'static Series> {
        MATRIX.iter().find(|s| s.name == name)
    }

    fn show(&self, pkgs: &[&str]) -> Result<Vec<Stanza>> {
        let mut out = Vec::new();
        for p in pkgs {
            // A metapackage missing from this mirror is not an error: another one resolves.
            if let Ok(text) = run_output(self.cmd("apt-cache").args(["show", p])) {
                out.extend(parse_stanzas(&text));
            }
        }
        Ok(out)
    }

    /// The current kernel of `series`: the highest version among its metapackages, the image
    /// it depends on (with, for a metapackage image, the packages that hold the kernel and its
    /// modules), and the headers a module build needs.
    pub fn resolve(&self, series: &Series) -> Result<KernelPkgs> {
        let metas = self.show(series.metas)?;
        let mut best: Option<(&Stanza, Pkg)> = None;
        for st in &metas {
            let Some(ver) = st.get("Version") else {
                continue;
            };
            if !ver.starts_with(series.version_prefix) {
                continue;
            }
            let Some(image) = st
                .depends()
                .into_iter()
                .find(|d| d.name.starts_with("linux-image-"))
            else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((b, _)) => version_gt(ver, b.get("Version").unwrap_or_default())?,
            };
            if better {
                best = Some((st, image));
            }
        }
        let Some((meta, image)) = best else {
            bail!(
                "no Debian {} kernel found in the metapackages ({}) of {}: check that its suites are reachable",
                series.name,
                series.metas.join(", "),
                series.release
            );
        };
        let version = image
            .version
            .clone()
            .or_else(|| meta.get("Version").map(str::to_string))
            .context("metapackage without a version")?;
        let abi = image
            .name
            .strip_prefix("linux-image-")
            .unwrap_or(&image.name)
            .to_string();
        let image = Pkg {
            name: image.name,
            version: Some(version.clone()),
        };
        // Debian's 7.x image package is itself a metapackage: the kernel is in
        // linux-binary-<abi>, the modules in linux-modules-<abi>, and the base files (the
        // config, the list of built-in modules) in linux-base-<abi>.
        let mut images = vec![image.clone()];
        if let Some(st) = self
            .show(&[&format!("{}={version}", image.name)])?
            .into_iter()
            .next()
        {
            images.extend(st.depends().into_iter().filter(|d| {
                [
                    format!("linux-binary-{abi}"),
                    format!("linux-modules-{abi}"),
                    format!("linux-base-{abi}"),
                ]
                .contains(&d.name)
            }));
        }
        let headers_name = format!("linux-headers-{abi}");
        let hdr = self
            .show(&[&format!("{headers_name}={version}")])?
            .into_iter()
            .next()
            .with_context(|| format!("{headers_name} {version} is not in the archive"))?;
        let mut headers = vec![Pkg {
            name: headers_name,
            version: Some(version.clone()),
        }];
        headers.extend(hdr.depends().into_iter().filter(|d| {
            (d.name.starts_with("linux-headers-") && d.name.ends_with("-common"))
                || d.name.starts_with("linux-kbuild-")
        }));
        Ok(KernelPkgs {
            series: series.name.to_string(),
            abi,
            version,
            images,
            headers,
            release: series.release,
            plan: series.plan,
        })
    }

    /// The .deb of `pkg` in `dir`, downloaded unless a previous run left it there.
    pub fn download(&self, pkg: &Pkg, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir)?;
        if let Some(f) = cached_deb(dir, pkg)? {
            return Ok(f);
        }
        let spec = match &pkg.version {
            Some(v) => format!("{}={v}", pkg.name),
            None => pkg.name.clone(),
        };
        println!("vm: downloading {spec}");
        let mut cmd = self.cmd("apt-get");
        cmd.args(["download", "-q", &spec]).current_dir(dir);
        if !run_status(&mut cmd)? {
            bail!("apt-get download {spec} failed: see its output above");
        }
        cached_deb(dir, pkg)?
            .with_context(|| format!("apt-get download {spec} left no .deb in {}", dir.display()))
    }
}

/// A private apt configuration in `dir`: its own sources, lists and archive cache, and
/// `extra` settings.
fn write_conf(dir: &Path, extra: &str) -> Result<PathBuf> {
    let conf = dir.join("apt.conf");
    fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/sources.list.d\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::Cache \"{d}/cache\";\n\
             APT::Sandbox::User \"root\";\n{extra}",
            d = dir.display()
        ),
    )?;
    Ok(conf)
}

fn installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", pkg])
        .output()
        .context("cannot run dpkg-query: vm-test needs a Debian host")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ii"))
}

/// `dpkg --compare-versions a gt b`.
fn version_gt(a: &str, b: &str) -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("cannot run dpkg")?
        .success())
}

/// The backports entry made from the first bookworm entry of a sources file: a deb822 stanza
/// (`Suites: bookworm …`) or a one-line `deb URI bookworm COMPONENTS`.
fn backports_entry(text: &str, deb822: bool) -> Option<(&'static str, String)> {
    if deb822 {
        for stanza in text.split("\n\n") {
            let Some(suites) = stanza.lines().find_map(|l| l.strip_prefix("Suites:")) else {
                continue;
            };
            if suites.split_whitespace().any(|s| s == "bookworm") {
                let entry: Vec<String> = stanza
                    .lines()
                    .map(|l| {
                        if l.starts_with("Suites:") {
                            "Suites: bookworm-backports".to_string()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                return Some(("vm-backports.sources", entry.join("\n") + "\n"));
            }
        }
        None
    } else {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == "bookworm")?;
            (f.first() == Some(&"deb")).then(|| {
                let mut f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
                f[at] = "bookworm-backports".into();
                ("vm-backports.list", f.join(" ") + "\n")
            })
        })
    }
}

fn cached_deb(dir: &Path, pkg: &Pkg) -> Result<Option<PathBuf>> {
    // apt names files name_version_arch.deb, with an epoch's colon written as %3a.
    let prefix = match &pkg.version {
        Some(v) => format!("{}_{}_", pkg.name, v.replace(':', "%3a")),
        None => format!("{}_", pkg.name),
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// One `apt-cache show` stanza.
#[derive(Debug)]
struct Stanza(Vec<(String, String)>);

impl Stanza {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first alternative of each dependency, with its version when pinned with `=`.
    fn depends(&self) -> Vec<Pkg> {
        let Some(deps) = self.get("Depends") else {
            return Vec::new();
        };
        deps.split(',')
            .filter_map(|d| {
                let first = d.split('|').next()?.trim();
                let (name, rest) = first.split_once(' ').unwrap_or((first, ""));
                let version = rest
                    .trim()
                    .strip_prefix("(=")
                    .and_then(|v| v.strip_suffix(')'))
                    .map(|v| v.trim().to_string());
                (!name.is_empty()).then(|| Pkg {
                    name: name.to_string(),
                    version,
                })
            })
            .collect()
    }
}

fn parse_stanzas(text: &str) -> Vec<Stanza> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let mut fields: Vec<(String, String)> = Vec::new();
            for line in s.lines() {
                if line.starts_with(' ') {
                    if let Some(last) = fields.last_mut() {
                        last.1.push('\n');
                        last.1.push_str(line.trim());
                    }
                } else if let Some((k, v)) = line.split_once(':') {
                    fields.push((k.to_string(), v.trim().to_string()));
                }
            }
            Stanza(fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-headers-6.12.117+deb12-amd64\nVersion: 6.12.117-1~deb12u1\n\
Depends: linux-base (>= 4.12~), linux-headers-6.12.117+deb12-common (= 6.12.117-1~deb12u1), \
linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1) | linux-image-6.12.117+deb12-amd64-unsigned (= 6.12.117-1~deb12u1), \
linux-kbuild-6.12.117+deb12, gcc-12\nDescription: headers\n more text\n\n\
Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n";

    #[test]
    fn parses_stanzas_and_pinned_depends() {
        let st = parse_stanzas(SHOW);
        assert_eq!(st.len(), 2);
        let deps = st[0].depends();
        let names: Vec<&str> = deps.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "linux-base",
                "linux-headers-6.12.117+deb12-common",
                "linux-image-6.12.117+deb12-amd64",
                "linux-kbuild-6.12.117+deb12",
                "gcc-12"
            ]
        );
        assert_eq!(deps[0].version, None);
        assert_eq!(deps[1].version.as_deref(), Some("6.12.117-1~deb12u1"));
        assert_eq!(deps[3].version, None);
        assert_eq!(st[1].get("Version"), Some("6.1.192-2"));
        assert_eq!(st[0].get("Description"), Some("headers\nmore text"));
    }

    #[test]
    fn backports_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let (_, e) = backports_entry(deb822, true).unwrap();
        assert!(e.contains("Suites: bookworm-backports\n"));
        assert!(e.contains("URIs: http://deb.debian.org/debian\n"));
        assert!(!e.contains("security"));
        let (_, l) = backports_entry("deb http://m/debian bookworm main contrib\n", false).unwrap();
        assert_eq!(l, "deb http://m/debian bookworm-backports main contrib\n");
        assert!(backports_entry("deb http://m/debian trixie main\n", false).is_none());
    }
}

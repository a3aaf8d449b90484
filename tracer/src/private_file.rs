//! Every file msitrace writes (trace files, the flight recorder's, exports) is created here.
//! It runs as root, often in directories others may write to, on paths a user typed: so a
//! file is never opened through a symbolic link or onto a device or FIFO, never replaces one
//! of the files being read, and never exists under its final name half-written or with a
//! mode from the umask. The content goes to a new file (O_EXCL, 0600) beside the target and
//! is renamed onto it; an existing file stays whole until then, and a failed run leaves it
//! as it was. A file meant for another user (the daemon's metrics, read by node_exporter)
//! asks for its mode with [`PrivateFile::create_with_mode`]; everything else is 0600.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A new 0600 file that [`PrivateFile::persist`] renames onto its target; dropped before
/// that, it is removed.
pub struct PrivateFile {
    file: File,
    target: PathBuf,
    temp: Option<PathBuf>,
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} {why}", path.display()),
    )
}

/// One line naming the file and what to check; the kind is kept so that callers can still
/// match on it (a full disk, say).
pub fn io_error(path: &Path, what: &str, e: io::Error) -> io::Error {
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
    io::Error::new(
        e.kind(),
        format!("cannot {what} {}: {e}: {hint}", path.display()),
    )
}

/// Whether `target` may be written: absent, or a regular file that is none of `inputs`
/// (compared by device and inode, so another name or a hard link of an input is caught too).
/// Commands call it before attaching probes or reading anything, to fail early;
/// [`PrivateFile::create`] calls it again.
pub fn check_target(target: &Path, inputs: &[PathBuf]) -> io::Result<()> {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(target, "inspect", e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(refused(
            target,
            "is a symbolic link: refusing to write through it; give the real path",
        ));
    }
    if !kind.is_file() {
        return Err(refused(
            target,
            "is not a regular file (a directory, device or FIFO): give a file path to write",
        ));
    }
    for input in inputs {
        if let Ok(m) = fs::metadata(input)
            && (m.dev(), m.ino()) == (meta.dev(), meta.ino())
        {
            return Err(refused(
                target,
                &format!(
                    "is the input {}: writing it would destroy what is being read; give another output path",
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A name for the new file beside `target`, unique within this process; O_EXCL settles
/// a clash with anyone else's.
fn temp_name(target: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

impl PrivateFile {
    /// A new file beside `target`, to hold what will replace it. Refused when `target` is a
    /// symbolic link, not a regular file, or one of `inputs`.
    pub fn create(target: &Path, inputs: &[PathBuf]) -> io::Result<PrivateFile> {
        PrivateFile::create_with_mode(target, inputs, 0o600)
    }

    /// [`PrivateFile::create`] with another mode, set exactly (the umask cannot take bits off
    /// it). For files others must read: the content is still written under a private
    /// temporary name first, so nobody reads it half-written.
    pub fn create_with_mode(
        target: &Path,
        inputs: &[PathBuf],
        mode: u32,
    ) -> io::Result<PrivateFile> {
        check_target(target, inputs)?;
        if target.file_name().is_none() {
            return Err(refused(target, "names no file: give a file path to write"));
        }
        let mut tries = 0;
        let (file, temp) = loop {
            let temp = temp_name(target);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp);
            match opened {
                Ok(f) => break (f, temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
                Err(e) => return Err(io_error(target, "create", e)),
            }
        };
        let new = PrivateFile {
            file,
            target: target.to_path_buf(),
            temp: Some(temp),
        };
        // The umask may have taken bits off 0600 (never added any): say it exactly. The file
        // is created 0600 whatever `mode` is and widened only here, on the open descriptor.
        new.file
            .set_permissions(Permissions::from_mode(mode))
            .map_err(|e| io_error(target, &format!("set mode {mode:04o} on"), e))?;
        Ok(new)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Put the file under its target's name (replacing what was there) and hand it back, still
    /// open, for a writer that goes on appending. The target is checked once more: it may have
    /// become a link or a device since `create`, and rename would replace that entry, not write
    /// through it, but a user would not expect a FIFO to vanish.
    pub fn persist(mut self) -> io::Result<File> {
        check_target(&self.target, &[])?;
        let Some(temp) = self.temp.take() else {
            return Err(refused(&self.target, "was already put in place"));
        };
        if let Err(e) = fs::rename(&temp, &self.target) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(&self.target, "put in place", e));
        }
        let file = self.file.try_clone()?;
        Ok(file)
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("msitrace-pf-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_a_file_only_once_persisted_and_leaves_nothing_on_failure() {
        let d = dir("replace");
        let target = d.join("out.json");
        fs::write(&target, b"old").unwrap();
        let mut f = PrivateFile::create(&target, &[]).unwrap();
        f.file_mut().write_all(b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"old");
        f.persist().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(PrivateFile::create(&target, &[]).unwrap());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "no temporary left");
        let shared = d.join("shared.prom");
        PrivateFile::create_with_mode(&shared, &[], 0o644)
            .unwrap()
            .persist()
            .unwrap();
        let mode = fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn refuses_links_devices_and_its_own_inputs() {
        let d = dir("refuse");
        let victim = d.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = PrivateFile::create(&link, &[]).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = PrivateFile::create(Path::new("/dev/null"), &[])
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = PrivateFile::create(&victim, std::slice::from_ref(&link))
            .err()
            .unwrap();
        assert!(e.to_string().contains("is the input"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        fs::remove_dir_all(d).unwrap();
    }
}

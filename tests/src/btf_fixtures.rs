//! The BTF fixtures (tests/fixtures/btf/<release>/*.btf.xz): real Debian kernels' and modules'
//! `.BTF` sections, xz-compressed (a full vmlinux BTF is 3.5–5 MB raw, about 1 MB xz).

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// The fixture directory shipped with the repository.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/btf")
}

/// `file` (e.g. `vmlinux.btf.xz`) of `kernel` (e.g. `6.12.117+deb12-amd64`).
pub fn path(kernel: &str, file: &str) -> PathBuf {
    root().join(kernel).join(file)
}

/// The decompressed bytes of an xz fixture.
pub fn unxz(path: &Path) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut BufReader::new(file), &mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(out)
}

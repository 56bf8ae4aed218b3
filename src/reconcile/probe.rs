//! The HTTP health probe (`probe/cm-probe.c`, built static by `build.rs`): embedded in the
//! server, written to `DATA_DIR/probe/cm-probe` at start-up, and bind-mounted read-only at
//! [`TARGET`] into containers whose health check is `http`, where Docker runs it as the
//! `HEALTHCHECK` (`["CMD", "/.cm-probe", "<port>", "<path>"]`). It needs nothing from the
//! image (no shell, no curl, no libc), no DNS, and nothing outside the container: it talks
//! to the container's own loopback, so egress rules and gVisor's network change nothing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The probe's bytes.
pub static PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cm-probe"));

/// Where containers see it.
pub const TARGET: &str = "/.cm-probe";

/// Where the server keeps it.
pub fn path(config: &Config) -> PathBuf {
    config.data_dir.join("probe").join("cm-probe")
}

/// Writes the probe to [`path`] (mode 0555) unless the same bytes are there: a temporary
/// file renamed into place, so a container never sees half of it.
pub fn install(config: &Config) -> std::io::Result<PathBuf> {
    let target = path(config);
    let dir = target.parent().expect("the probe's path has a folder");
    std::fs::create_dir_all(dir)?;
    // Containers of any user read it through the bind mount; nothing secret is in it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    if std::fs::read(&target).is_ok_and(|b| b == PROBE) {
        return Ok(target);
    }
    write_new(dir, &target)?;
    Ok(target)
}

fn write_new(dir: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = dir.join(".cm-probe.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(PROBE)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o555))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded probe is a static ELF executable, installed once and again after a change.
    #[test]
    fn the_probe_is_static_and_installed() {
        assert_eq!(&PROBE[..4], b"\x7fELF");
        // No program interpreter (PT_INTERP): it runs in images without a libc.
        assert!(!PROBE.windows(11).any(|w| w == b"/lib64/ld-l"));
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path());
        let p = install(&config).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), PROBE);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o555);
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"old").unwrap();
        install(&config).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), PROBE);
    }
}

//! The first start on a machine: when no credentials are configured at all (neither
//! `APP_USER` nor `APP_PASS`, in the environment or in `.env`), a strong password is made,
//! stored in `.env` (mode 0600) and printed once, the way Jupyter prints its token. Later
//! starts read `.env` like any other setting, so nothing is printed again. A half-configured
//! pair (only one of them set) or the placeholder password is still refused: those are
//! mistakes to fix, not a first start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore;

use crate::config::ConfigError;

/// User name written on a first start.
pub const FIRST_USER: &str = "admin";

/// Credentials made on this start.
#[derive(Debug, Clone)]
pub struct Generated {
    pub user: String,
    pub pass: String,
    pub env_file: PathBuf,
}

fn unset(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.trim().is_empty())
}

/// Makes and stores credentials when none are configured; `None` when some are.
pub fn prepare(env_file: &Path) -> Result<Option<Generated>, ConfigError> {
    if !(unset("APP_USER") && unset("APP_PASS")) {
        return Ok(None);
    }
    // 24 bytes from the OS: 192 bits, 32 characters of URL-safe base64 (no ':' to upset
    // Basic auth, nothing a shell or .env parser reads specially).
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let pass = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    store(env_file, FIRST_USER, &pass).map_err(|e| {
        ConfigError(format!(
            "no credentials are configured and {} cannot be written to store new ones: {e}",
            env_file.display()
        ))
    })?;
    Ok(Some(Generated {
        user: FIRST_USER.into(),
        pass,
        env_file: env_file.to_path_buf(),
    }))
}

/// Appends the pair to `.env` (made with mode 0600; an existing file is set to 0600 since it
/// now holds a password). Empty `APP_USER=` / `APP_PASS=` lines are dropped: `.env` is read
/// first-line-wins, and an empty one would hide the new value.
fn store(env_file: &Path, user: &str, pass: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(env_file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let is_empty_credential = |line: &str| {
        let l = line.trim();
        ["APP_USER", "APP_PASS"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|r| r.trim_start().strip_prefix('='))
                .is_some_and(|v| matches!(v.trim(), "" | "\"\"" | "''"))
        })
    };
    let mut text = String::new();
    if let Some(existing) = &existing {
        for line in existing.lines().filter(|l| !is_empty_credential(l)) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "# Generated on the first start ({}); change them here and restart.\nAPP_USER={user}\nAPP_PASS={pass}\n",
        crate::store::now()
    ));
    // Written next to the file and renamed over it: a crash leaves the old file or the new
    // one, never half of it.
    let tmp = env_file.with_extension("env.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, env_file)
}

/// What the first start prints on stdout, once.
pub fn banner(g: &Generated, addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    format!(
        "First start: no credentials were configured, so these were made and saved in {} (mode 0600).\n\
         They are not shown again.\n\
         \x20 user:     {}\n\
         \x20 password: {}\n\
         \x20 API:      http://{host}/  (try: curl -u {}:<password> http://{host}/healthz)",
        g.env_file.display(),
        g.user,
        g.pass,
        g.user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_the_pair_with_mode_0600_and_drops_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(&file, "LISTEN_ADDR=127.0.0.1:9\nAPP_USER=\nAPP_PASS=\"\"").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        store(&file, "admin", "pw").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("LISTEN_ADDR=127.0.0.1:9\n"), "{text}");
        assert!(text.ends_with("APP_USER=admin\nAPP_PASS=pw\n"), "{text}");
        assert_eq!(text.matches("APP_USER").count(), 1, "{text}");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

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

/// Opens `.env` for reading without following a link. `Ok(None)` when there is none. A link
/// or anything but a regular file there is refused: whoever planted a link at `.env` would
/// choose which file the server reads its settings from and where a new password goes.
/// (`O_NONBLOCK` so a FIFO planted there cannot hang the start; it is refused by type.)
pub fn open_env_file(env_file: &Path) -> Result<Option<std::fs::File>, ConfigError> {
    let refuse = |why: &str| {
        ConfigError(format!(
            "{} {why}: refusing to read settings from it (replace it with a regular file)",
            env_file.display()
        ))
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(env_file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse("is a symbolic link"))
        }
        Err(e) => {
            return Err(ConfigError(format!(
                "cannot read {}: {e}",
                env_file.display()
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", env_file.display())))?;
    if !meta.file_type().is_file() {
        return Err(refuse("is not a regular file"));
    }
    Ok(Some(file))
}

/// Loads `.env` of the working directory into the process environment (variables already
/// set win), through [`open_env_file`]. A line dotenvy cannot parse ends the loading there,
/// as it always has; a link at `.env` is a start-up error.
pub fn load_env_file(env_file: &Path) -> Result<(), ConfigError> {
    if let Some(file) = open_env_file(env_file)? {
        let _ = dotenvy::from_read(std::io::BufReader::new(file));
    }
    Ok(())
}

/// Appends the pair to `.env` (made with mode 0600; an existing file is set to 0600 since it
/// now holds a password). Empty `APP_USER=` / `APP_PASS=` lines are dropped: `.env` is read
/// first-line-wins, and an empty one would hide the new value.
fn store(env_file: &Path, user: &str, pass: &str) -> std::io::Result<()> {
    let existing = match open_env_file(env_file) {
        Ok(Some(mut f)) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)?;
            Some(text)
        }
        Ok(None) => None,
        Err(e) => return Err(std::io::Error::other(e.0)),
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
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    write_replacing(env_file, text.as_bytes())
}

/// Writes `bytes` to a new file next to `target` and renames it over `target`: a crash
/// leaves the old file or the new one, never half of it. The temporary file has a random
/// name and is made with `O_CREAT|O_EXCL|O_NOFOLLOW` (mode 0600 from the start): a link or
/// file planted at a predictable name can neither receive the password nor become `.env`.
fn write_replacing(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".env".into());
    let mut tries = 0;
    let (tmp, mut f) = loop {
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let tmp = dir.join(format!(
            "{name}.{}.tmp",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
        // The umask may have cleared bits of 0600, never added any; set it exactly anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // `rename` replaces the name `target`; it never follows a link there.
        std::fs::rename(&tmp, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

    #[test]
    fn a_link_at_the_old_temporary_name_never_receives_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("stolen");
        std::fs::write(&target, "untouched\n").unwrap();
        let file = dir.path().join(".env");
        // The name the old code wrote to, followed a link at, and renamed over `.env`.
        std::os::unix::fs::symlink(&target, dir.path().join(".env.env.tmp")).unwrap();
        store(&file, "admin", "secret-pw").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.file_type().is_file(), ".env is a regular file");
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("APP_PASS=secret-pw\n"));
        // Nothing but `.env` and the planted link: no temporary file left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".env", ".env.env.tmp"]);
    }

    #[test]
    fn a_link_at_env_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "LISTEN_ADDR=127.0.0.1:1\n").unwrap();
        let file = dir.path().join(".env");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let err = open_env_file(&file).unwrap_err();
        assert!(err.0.contains("symbolic link"), "{}", err.0);
        assert!(load_env_file(&file).is_err());
        assert!(store(&file, "admin", "pw").is_err());
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "LISTEN_ADDR=127.0.0.1:1\n"
        );
        assert!(std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_fifo_at_env_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &file,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = open_env_file(&file).unwrap_err();
        assert!(err.0.contains("not a regular file"), "{}", err.0);
    }
}

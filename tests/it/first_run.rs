//! The first start on a new machine: no credentials anywhere, so the server makes a
//! password, stores it in `.env` (mode 0600), prints it once, and a user signs in with it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Starts the binary in `dir` with no credentials in its environment; returns the child
/// and the lines it printed up to (and including) its banner, if any, once it listens.
fn start_in(dir: &std::path::Path) -> (Child, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_container-manager"));
    cmd.env_clear()
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    for key in ["PATH", "HOME", "DOCKER_HOST"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("LISTEN_ADDR", "127.0.0.1:0")
        .env("INSTANCE_TAG", "test");
    let mut child = cmd.spawn().expect("start server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first line says where it listens; a banner, when there is one, follows at once
    // (it is printed right after, before any request can be served).
    let mut lines = vec![rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server printed nothing")];
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    (child, lines)
}

fn field<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(str::trim)
}

async fn healthz(addr: &str, user: &str, pass: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .header("authorization", basic_auth(user, pass))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test]
async fn first_start_makes_prints_and_stores_credentials_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, lines) = start_in(dir.path());
    let addr = lines[0]
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {lines:?}"))
        .to_owned();
    let user = field(&lines, "user:").unwrap_or_else(|| panic!("no user in {lines:?}"));
    let pass = field(&lines, "password:").unwrap_or_else(|| panic!("no password in {lines:?}"));
    let api = field(&lines, "API:").unwrap_or_else(|| panic!("no address in {lines:?}"));
    assert!(api.contains(&addr), "{api} vs {addr}");
    assert!(pass.len() >= 24, "a strong password: {pass:?}");

    assert_eq!(healthz(&addr, user, pass).await, 200);
    assert_eq!(healthz(&addr, user, "wrong").await, 401);

    let env = dir.path().join(".env");
    let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, ".env must be private");
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(text.contains(&format!("APP_PASS={pass}\n")), "{text}");
    stop(child);

    // A second start reads .env: no new password, nothing printed but the address.
    let (child, lines) = start_in(dir.path());
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(pass) || l.contains("password")),
        "{lines:?}"
    );
    let addr = lines[0].strip_prefix("listening on ").unwrap().to_owned();
    assert_eq!(healthz(&addr, user, pass).await, 200);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        text,
        ".env unchanged"
    );
    stop(child);
}

#[test]
fn half_configured_or_placeholder_credentials_are_still_refused() {
    let (status, err) = run_to_exit(&[("APP_USER", "admin")]);
    assert!(!status.success());
    assert!(err.contains("APP_PASS"), "{err}");
    let (status, err) =
        run_to_exit(&[("APP_USER", "a"), ("APP_PASS", "your_secure_password_here")]);
    assert!(!status.success());
    assert!(err.contains("placeholder"), "{err}");
}

/// A link planted at `.env` would choose where settings are read from and where a new
/// password is written: the server refuses to start (exit code 2) and leaves its target alone.
#[test]
fn a_link_at_env_is_refused_and_its_target_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere");
    std::fs::write(&target, "SOMETHING=1\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".env")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_container-manager"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("INSTANCE_TAG", "test")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that accepted the link prints where it listens (and would run on): stop it
    // and fail, rather than wait for an exit that never comes.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    if first.starts_with("listening on") {
        stop(child);
        panic!("the server started with .env a link: {first}");
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "SOMETHING=1\n");
    assert!(std::fs::symlink_metadata(dir.path().join(".env"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The old writer opened `.env.env.tmp` following links and renamed it over `.env`: a link
/// planted there received the password and `.env` became that link.
#[tokio::test]
async fn a_link_at_the_old_temporary_name_never_receives_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("stolen");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".env.env.tmp")).unwrap();
    let (child, lines) = start_in(dir.path());
    let pass = field(&lines, "password:")
        .unwrap_or_else(|| panic!("no password in {lines:?}"))
        .to_owned();
    let addr = lines[0].strip_prefix("listening on ").unwrap().to_owned();
    assert_eq!(healthz(&addr, "admin", &pass).await, 200);
    stop(child);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "",
        "the link's target got nothing"
    );
    let env = dir.path().join(".env");
    let meta = std::fs::symlink_metadata(&env).unwrap();
    assert!(
        meta.file_type().is_file(),
        ".env is a regular file, not the link"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&env)
        .unwrap()
        .contains(&format!("APP_PASS={pass}\n")));
}

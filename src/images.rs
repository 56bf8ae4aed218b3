//! Images from registries: the pull policy, registry credentials (a Docker `config.json`
//! named by `REGISTRY_AUTH_FILE`), pulls with progress, and what a failed pull is called.
//!
//! A pull is one Engine API call (`POST /images/create`) streaming progress lines; the
//! reconciler makes it before `compose up` (which itself never pulls), and `POST /images/pull`
//! makes it on request. Progress of the pulls under way lives in memory ([`Pulls`]), keyed
//! by image reference, and shows in the representation of the containers that wait for it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use serde::Serialize;

use crate::lifecycle::ErrorCode;
use crate::step_error::StepError;

pub use crate::config::{PullPolicy, RegistryAllowlist};
pub use crate::image_ref::{normalize, registry_of};

/// The refusal of a pull from a registry `REGISTRY_ALLOWLIST` does not name.
pub fn not_allowed(reference: &str) -> StepError {
    StepError::new(
        ErrorCode::RegistryNotAllowed,
        format!(
            "cannot pull {reference}: its registry {} is not in REGISTRY_ALLOWLIST",
            registry_of(reference)
        ),
    )
}

/// The credentials for `reference`'s registry from a Docker `config.json`
/// (`auths.<registry>.auth`, base64 `user:password`). `Ok(None)`: no entry for it. The
/// error never holds the file's content.
pub fn credentials_for(
    auth_file: &Path,
    reference: &str,
) -> Result<Option<DockerCredentials>, String> {
    let text = std::fs::read_to_string(auth_file).map_err(|e| {
        format!(
            "cannot read REGISTRY_AUTH_FILE {}: {}",
            auth_file.display(),
            e.kind()
        )
    })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        format!(
            "REGISTRY_AUTH_FILE {} is not a Docker config.json",
            auth_file.display()
        )
    })?;
    let registry = registry_of(reference);
    let Some(auths) = config["auths"].as_object() else {
        return Ok(None);
    };
    // Docker Hub's entry is keyed by its old v1 URL; other registries by host[:port], with
    // or without a scheme.
    let entry = auths.iter().find_map(|(key, v)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let same = host == registry
            || (registry == "docker.io"
                && matches!(host, "index.docker.io" | "registry-1.docker.io"));
        same.then_some(v)
    });
    let Some(auth) = entry.and_then(|v| v["auth"].as_str()) else {
        return Ok(None);
    };
    let bad = || {
        format!(
            "REGISTRY_AUTH_FILE has an unreadable auth entry for {registry} (want base64 user:password)"
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(DockerCredentials {
        username: Some(user.to_owned()),
        password: Some(pass.to_owned()),
        serveraddress: Some(registry.to_owned()),
        ..Default::default()
    }))
}

/// Progress of one pull, as shown in the representation (`pull`) and `POST /images/pull`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PullProgress {
    pub image: String,
    /// RFC 3339 (UTC).
    pub started_at: String,
    pub layers_done: u64,
    pub layers_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    #[serde(skip)]
    layers: HashMap<String, Layer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Layer {
    done: bool,
    current: u64,
    total: u64,
}

impl PullProgress {
    fn new(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            started_at: crate::store::now(),
            ..Default::default()
        }
    }

    /// Folds one progress line of the Engine's stream in. Lines with an `id` are about a
    /// layer ("Pulling fs layer", "Downloading" with bytes, "Pull complete"); others are
    /// about the whole image.
    fn update(&mut self, status: &str, id: Option<&str>, current: u64, total: u64) {
        let Some(id) = id else { return };
        if status.starts_with("Pulling from") {
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_default();
        match status {
            "Pull complete" | "Already exists" => {
                layer.done = true;
                layer.current = layer.total;
            }
            s if s.starts_with("Downloading") => {
                layer.current = current;
                layer.total = total.max(layer.total);
            }
            _ => {}
        }
        self.layers_total = self.layers.len() as u64;
        self.layers_done = self.layers.values().filter(|l| l.done).count() as u64;
        self.bytes_done = self.layers.values().map(|l| l.current).sum();
        self.bytes_total = self.layers.values().map(|l| l.total).sum();
    }
}

/// The pulls under way, by image reference as asked for, each with the number of pulls of
/// it running (two containers of one image pull at once; the progress stays until both end).
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Pulls(Arc<Mutex<HashMap<String, (usize, PullProgress)>>>);

impl Pulls {
    pub fn get(&self, image: &str) -> Option<PullProgress> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(image)
            .map(|(_, p)| p.clone())
    }

    fn begin(&self, p: &PullProgress) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(p.image.clone()).or_insert_with(|| (0, p.clone()));
        entry.0 += 1;
    }

    fn set(&self, p: &PullProgress) {
        if let Some(entry) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&p.image)
        {
            entry.1 = p.clone();
        }
    }

    fn end(&self, image: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(image) {
            entry.0 -= 1;
            if entry.0 == 0 {
                map.remove(image);
            }
        }
    }
}

/// Removes a pull's progress however the pull ends (done, failed, its future dropped).
struct Clear<'a>(&'a Pulls, &'a str);

impl Drop for Clear<'_> {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}

/// Pulls `image` (with a tag added when it has none), recording progress in `pulls`.
pub async fn pull(
    docker: &bollard::Docker,
    image: &str,
    auth_file: Option<&Path>,
    allowlist: &RegistryAllowlist,
    pulls: &Pulls,
) -> Result<(), StepError> {
    let reference = normalize(image);
    if !allowlist.allows(&reference) {
        return Err(not_allowed(&reference));
    }
    let credentials = match auth_file {
        Some(file) => credentials_for(file, &reference)
            .map_err(|m| StepError::new(ErrorCode::RegistryAuthFailed, m))?,
        None => None,
    };
    let options = CreateImageOptions {
        from_image: Some(reference.clone()),
        ..Default::default()
    };
    let mut progress = PullProgress::new(image);
    pulls.begin(&progress);
    let _clear = Clear(pulls, image);
    let mut stream = docker.create_image(Some(options), None, credentials);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| classify(&reference, &e))?;
        let (current, total) = info
            .progress_detail
            .as_ref()
            .map(|d| {
                (
                    d.current.unwrap_or(0).max(0) as u64,
                    d.total.unwrap_or(0).max(0) as u64,
                )
            })
            .unwrap_or((0, 0));
        progress.update(
            info.status.as_deref().unwrap_or_default(),
            info.id.as_deref(),
            current,
            total,
        );
        pulls.set(&progress);
    }
    Ok(())
}

/// The repository of a reference, as `RepoDigests` spell it: `127.0.0.1:5000/app:1` →
/// `127.0.0.1:5000/app`, `docker.io/library/python:3` → `python`.
pub fn repository_of(reference: &str) -> String {
    let r = normalize(reference);
    let r = r.split('@').next().unwrap_or_default();
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_owned(),
        _ => r.to_owned(),
    }
}

/// Whether `reference` names a tag (not a digest): what the update checks look up.
pub fn is_tag(reference: &str) -> bool {
    !reference.contains('@')
}

/// The registry digest (`sha256:…`) among an image's `RepoDigests` for the repository of
/// `reference`; `None` for an image that never came from (or went to) its registry.
pub fn digest_for(repo_digests: &[String], reference: &str) -> Option<String> {
    let repo = repository_of(reference);
    repo_digests.iter().find_map(|d| {
        let (r, digest) = d.split_once('@')?;
        (repository_of(r) == repo).then(|| digest.to_owned())
    })
}

/// The registry digest (for `reference`'s repository) of the image the Docker container
/// `container` was made from: `Ok(None)` when there is no such container or its image
/// never came from that registry.
pub async fn container_digest(
    docker: &bollard::Docker,
    container: &str,
    reference: &str,
) -> Result<Option<String>, DockerError> {
    let gone = |e: DockerError| match e {
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => Ok(None),
        e => Err(e),
    };
    let info = match docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(info) => info,
        Err(e) => return gone(e),
    };
    let Some(image) = info.image else {
        return Ok(None);
    };
    match docker.inspect_image(&image).await {
        Ok(i) => Ok(digest_for(&i.repo_digests.unwrap_or_default(), reference)),
        Err(e) => gone(e),
    }
}

/// The digest the registry has for the tag `reference` now, asked through the Docker
/// daemon's distribution endpoint (`GET /distribution/{name}/json`): the daemon resolves
/// the tag with a manifest `HEAD` (and reads the manifest for its platforms) using its own
/// registry mirrors, proxies and TLS settings, and `REGISTRY_AUTH_FILE`'s credentials for
/// the registry; no layer is fetched. `REGISTRY_ALLOWLIST` is checked first, so a refused
/// registry is never contacted. Failures are named as pulls' are (never the daemon's text).
pub async fn registry_digest(
    docker: &bollard::Docker,
    reference: &str,
    auth_file: Option<&Path>,
    allowlist: &RegistryAllowlist,
) -> Result<String, StepError> {
    let reference = normalize(reference);
    if !allowlist.allows(&reference) {
        return Err(not_allowed(&reference));
    }
    let credentials = match auth_file {
        Some(file) => credentials_for(file, &reference)
            .map_err(|m| StepError::new(ErrorCode::RegistryAuthFailed, m))?,
        None => None,
    };
    let answer = docker
        .inspect_registry_image(&reference, credentials)
        .await
        .map_err(|e| classify(&reference, &e))?;
    answer.descriptor.digest.ok_or_else(|| {
        StepError::new(
            ErrorCode::RegistryUnavailable,
            format!(
                "the registry {} named no digest for {reference}",
                registry_of(&reference)
            ),
        )
    })
}

/// What a failed pull is called, and what it says. The daemon's error text is never passed
/// on: it quotes whatever the other end answered (a pull of `127.0.0.1:<port>/x` makes the
/// daemon fetch a service on the host's loopback, and its body came back in the message) and
/// names the daemon's DNS resolver. The answer carries the code and a fixed sentence per code;
/// a closed port and a service that does not speak the registry protocol read the same.
///
/// The code comes from the daemon's own status (`404`: the registry said the manifest does
/// not exist) or its own words, looked for only in the part of the message before any
/// quoted response body, so no foreign body can choose the code either.
pub fn classify(reference: &str, e: &DockerError) -> StepError {
    let (status, message) = match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => (Some(*status_code), message.as_str()),
        DockerError::DockerStreamError { error } => (None, error.as_str()),
        other => {
            tracing::warn!(image = %reference, error = %other, "pull: the Docker daemon did not answer");
            return StepError::new(
                ErrorCode::DockerUnavailable,
                format!("cannot pull {reference}: the Docker daemon did not answer"),
            );
        }
    };
    let own = daemon_words(message);
    let any = |words: &[&str]| words.iter().any(|w| own.contains(w));
    let code = if status == Some(404) || any(&["manifest unknown", "not found", "name unknown"]) {
        ErrorCode::ImageNotFound
    } else if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "incorrect username or password",
    ]) {
        ErrorCode::RegistryAuthFailed
    } else {
        // Cannot connect, DNS, TLS, timeouts, a registry answering 5xx, something that is
        // not a registry: it cannot be reached in a useful way. (The daemon itself answered,
        // so Docker is not what is down.)
        ErrorCode::RegistryUnavailable
    };
    let registry = registry_of(reference);
    // The log gets a fixed word for what went wrong, never the daemon's text.
    tracing::warn!(image = %reference, status, code = %code, reason = reason(&own), "pull failed");
    let message = match code {
        ErrorCode::ImageNotFound => {
            format!("cannot pull {reference}: the registry {registry} has no such repository or tag")
        }
        ErrorCode::RegistryAuthFailed => format!(
            "cannot pull {reference}: the registry {registry} refused the credentials or wants some"
        ),
        _ => format!(
            "cannot pull {reference}: the registry {registry} could not be reached or did not answer as a registry"
        ),
    };
    StepError::new(code, message)
}

/// The daemon's own part of an error message, lower-cased: everything before the point where
/// it starts quoting what the other end answered (`error parsing HTTP 404 response body: …
/// "<body>"`), without quoted parts (URLs, which hold the user's own reference).
fn daemon_words(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let own = match lower.find("response body") {
        Some(at) => &lower[..at],
        None => &lower,
    };
    own.split('"').step_by(2).collect::<Vec<_>>().join(" ")
}

/// A fixed word for the server log about why a registry could not be used.
fn reason(own: &str) -> &'static str {
    let table: &[(&str, &str)] = &[
        ("connection refused", "connection refused"),
        ("no such host", "name not resolved"),
        ("lookup ", "name not resolved"),
        ("timeout", "timed out"),
        ("deadline exceeded", "timed out"),
        ("x509", "tls"),
        ("tls", "tls"),
        ("http response to https client", "not https"),
        ("error parsing http", "answer not understood"),
        ("unexpected http status", "unexpected status"),
        ("content-type", "answer not understood"),
        ("eof", "connection closed"),
        ("connection reset", "connection closed"),
        ("manifest unknown", "manifest unknown"),
        ("not found", "not found"),
        ("unauthorized", "unauthorized"),
        ("no basic auth credentials", "credentials wanted"),
        ("denied", "denied"),
    ];
    table
        .iter()
        .find(|(needle, _)| own.contains(needle))
        .map_or("other", |(_, word)| word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_repo_tags() {
        assert_eq!(normalize("python"), "python:latest");
        assert_eq!(normalize("docker.io/library/python:3.12"), "python:3.12");
        assert_eq!(
            normalize("127.0.0.1:5000/team/app"),
            "127.0.0.1:5000/team/app:latest"
        );
        assert_eq!(normalize("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        let digest = format!("app@sha256:{}", "a".repeat(64));
        assert_eq!(normalize(&digest), digest);
    }

    #[test]
    fn repositories_and_digests_are_matched() {
        assert_eq!(repository_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app");
        assert_eq!(repository_of("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
        assert_eq!(repository_of("docker.io/library/python:3"), "python");
        assert_eq!(repository_of("app@sha256:abc"), "app");
        let digests = vec![
            "127.0.0.1:5000/other@sha256:111".to_owned(),
            "127.0.0.1:5000/app@sha256:222".to_owned(),
        ];
        assert_eq!(
            digest_for(&digests, "127.0.0.1:5000/app:1").as_deref(),
            Some("sha256:222")
        );
        assert_eq!(digest_for(&digests, "python:3"), None);
        assert!(is_tag("a:1") && !is_tag("a@sha256:1"));
    }

    #[test]
    fn registries_are_found() {
        assert_eq!(registry_of("python:3"), "docker.io");
        assert_eq!(registry_of("team/app"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("ghcr.io/o/app:1"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn credentials_come_from_the_auth_file_and_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret-pw");
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let c = credentials_for(&file, "127.0.0.1:5000/app:1")
            .unwrap()
            .unwrap();
        assert_eq!(c.username.as_deref(), Some("bob"));
        assert_eq!(c.password.as_deref(), Some("s3cret-pw"));
        assert!(credentials_for(&file, "python:3").unwrap().is_some());
        assert!(credentials_for(&file, "ghcr.io/x/y:1").unwrap().is_none());
        std::fs::write(&file, r#"{"auths":{"127.0.0.1:5000":{"auth":"!!s3cret"}}}"#).unwrap();
        let e = credentials_for(&file, "127.0.0.1:5000/app:1").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = credentials_for(&dir.path().join("none"), "x").unwrap_err();
        assert!(e.contains("REGISTRY_AUTH_FILE"), "{e}");
    }

    #[test]
    fn pull_failures_are_named() {
        let server = |status_code, message: &str| DockerError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        let cases = [
            (
                server(404, "manifest for x:nope not found: manifest unknown"),
                ErrorCode::ImageNotFound,
            ),
            (
                server(
                    500,
                    "Get \"http://127.0.0.1:1/v2/\": dial tcp: connection refused",
                ),
                ErrorCode::RegistryUnavailable,
            ),
            (
                server(
                    500,
                    "Head \"http://r/v2/x/manifests/latest\": no basic auth credentials",
                ),
                ErrorCode::RegistryAuthFailed,
            ),
            (
                DockerError::DockerStreamError {
                    error: "unauthorized: authentication required".into(),
                },
                ErrorCode::RegistryAuthFailed,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(classify("x", &e).code, want, "{e}");
        }
    }

    #[test]
    fn pull_failures_never_repeat_the_daemons_text() {
        let server = |status_code, message: &str| DockerError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        let cases = [
            // A service that is no registry: its body is quoted, and words in it (`not
            // found`, `denied`) choose nothing.
            server(
                500,
                r#"error parsing HTTP 404 response body: invalid character 'd' looking for beginning of value: "db_password=s3cret not found denied\n""#,
            ),
            server(
                500,
                r#"Get "https://nowhere.invalid/v2/": dial tcp: lookup nowhere.invalid on 10.255.255.53:53: no such host"#,
            ),
            server(
                500,
                r#"Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused"#,
            ),
        ];
        let messages: Vec<String> = cases
            .iter()
            .map(|e| {
                let f = classify("127.0.0.1:1/x:1", e);
                assert_eq!(f.code, ErrorCode::RegistryUnavailable, "{e}");
                f.message
            })
            .collect();
        assert!(messages.iter().all(|m| m == &messages[0]), "{messages:?}");
        assert!(!messages[0].contains("s3cret") && !messages[0].contains("10.255"));
        // A registry's own 404 for a manifest stays a missing image.
        let f = classify(
            "127.0.0.1:1/x:1",
            &server(
                404,
                "manifest for x not found: manifest unknown: manifest unknown",
            ),
        );
        assert_eq!(f.code, ErrorCode::ImageNotFound);
    }

    #[test]
    fn the_allowlist_names_registries() {
        let any = RegistryAllowlist::parse("").unwrap();
        assert!(any.allows("127.0.0.1:1/x:1") && any.allows("python:3"));
        let list = RegistryAllowlist::parse(" GHCR.io , index.docker.io,127.0.0.1:5731").unwrap();
        assert!(list.allows("ghcr.io/o/app:1"));
        assert!(list.allows("python:3.12") && list.allows("docker.io/team/app"));
        assert!(list.allows("127.0.0.1:5731/x:1"));
        assert!(!list.allows("127.0.0.1:5732/x:1"));
        assert!(!list.allows("127.0.0.1/x:1"));
        assert!(!list.allows("localhost:5731/x:1"));
        assert!(RegistryAllowlist::parse("ghcr.io/org").is_err());
    }

    #[tokio::test]
    async fn a_refused_registry_is_never_asked() {
        // A daemon socket that never answers: a pull that reached it would end as
        // DOCKER_UNAVAILABLE.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let _silent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let docker = bollard::Docker::connect_with_unix(
            socket.to_str().unwrap(),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let list = RegistryAllowlist::parse("ghcr.io").unwrap();
        let e = pull(
            &docker,
            "127.0.0.1:5732/x:1",
            None,
            &list,
            &Pulls::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::RegistryNotAllowed);
    }

    #[test]
    fn progress_stays_until_the_last_pull_of_an_image_ends() {
        let pulls = Pulls::default();
        let p = PullProgress::new("x");
        pulls.begin(&p);
        pulls.begin(&p);
        pulls.end("x");
        assert!(pulls.get("x").is_some());
        pulls.end("x");
        assert!(pulls.get("x").is_none());
    }

    #[test]
    fn progress_counts_layers_and_bytes() {
        let mut p = PullProgress::new("x");
        p.update("Pulling from x", Some("latest"), 0, 0);
        p.update("Pulling fs layer", Some("a"), 0, 0);
        p.update("Pulling fs layer", Some("b"), 0, 0);
        p.update("Downloading", Some("a"), 50, 100);
        assert_eq!((p.layers_done, p.layers_total), (0, 2));
        assert_eq!((p.bytes_done, p.bytes_total), (50, 100));
        p.update("Pull complete", Some("a"), 0, 0);
        p.update("Already exists", Some("b"), 0, 0);
        assert_eq!((p.layers_done, p.layers_total), (2, 2));
        assert_eq!(p.bytes_done, 100);
    }
}

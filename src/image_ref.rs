//! Image references (`registry:5000/team/app:1`, `python`) as Docker reads them: the pure
//! rules both the settings (`REGISTRY_ALLOWLIST`) and pulls need. A leaf: it imports nothing
//! of the server.

/// A reference as Docker stores it in `RepoTags`: a tag is added when there is neither tag
/// nor digest (a pull without one would fetch every tag), and Docker Hub's implicit
/// `docker.io/library/` prefix is dropped, so `python` and `docker.io/library/python:latest`
/// compare equal.
pub fn normalize(reference: &str) -> String {
    let mut r = reference;
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
    ] {
        if let Some(rest) = r.strip_prefix(prefix) {
            r = rest;
            break;
        }
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if r.contains('@') || last.contains(':') {
        r.to_owned()
    } else {
        format!("{r}:latest")
    }
}

/// The registry host a reference names (`docker.io` when its first component is not a host).
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Host names compare without case; Docker Hub answers to several names.
pub fn canonical_registry(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

//! What a webhook URL may be and where it may lead (docs/API.md §14, "Where a webhook may
//! point"): `http://host[:port]/path?query` only; its host resolved once per delivery, every
//! address it resolves to checked, and the connection made to the checked address (so a
//! name cannot resolve to an allowed address at the check and another at the connection).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::cidr::Cidr;
use crate::config::WebhookAllowlist;

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A parsed webhook URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header: as written (a name, an address, `[v6]`), with `:port` when not 80.
    pub authority: String,
}

/// Why a URL is refused before anything is contacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not an `http://` URL of the accepted shape (the message says why).
    Invalid(String),
    /// The host is an address the rules refuse (the message says which rule).
    Forbidden(String),
}

/// Networks a webhook may not reach unless `WEBHOOK_ALLOWLIST` names them, with the reason
/// given: this host, private and internal networks (Docker's bridges among them), link-local
/// (cloud metadata at 169.254.169.254), and addresses that are no single host.
const REFUSED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "an unspecified address (this host)"),
    ("127.0.0.0/8", "a loopback address (this host)"),
    ("10.0.0.0/8", "a private address"),
    (
        "172.16.0.0/12",
        "a private address (Docker's bridge networks are here)",
    ),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    (
        "169.254.0.0/16",
        "a link-local address (cloud metadata lives here)",
    ),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved or broadcast address"),
    ("::/128", "an unspecified address (this host)"),
    ("::1/128", "a loopback address (this host)"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("ff00::/8", "a multicast address"),
    (
        "64:ff9b::/96",
        "a NAT64 address (it may map to any IPv4 address)",
    ),
    (
        "2002::/16",
        "a 6to4 address (it may map to any IPv4 address)",
    ),
];

/// Why the rules refuse `ip` (without the allowlist), if they do.
pub fn refused(ip: IpAddr, listen: IpAddr) -> Option<&'static str> {
    let ip = crate::cidr::canonical(ip);
    if !listen.is_unspecified() && ip == crate::cidr::canonical(listen) {
        return Some("the server's own listen address");
    }
    REFUSED
        .iter()
        .find(|(net, _)| net.parse::<Cidr>().is_ok_and(|n| n.contains(ip)))
        .map(|(_, why)| *why)
}

/// Checks one address the URL's host stands for.
pub fn check(
    allow: &WebhookAllowlist,
    host: &Host,
    ip: IpAddr,
    listen: IpAddr,
) -> Result<(), String> {
    if let Host::Name(name) = host {
        if allow.hosts.iter().any(|h| h == name) {
            return Ok(());
        }
    }
    if allow.networks.iter().any(|n| n.contains(ip)) {
        return Ok(());
    }
    match refused(ip, listen) {
        Some(why) => Err(format!(
            "{ip} is {why}; a webhook may reach it only if WEBHOOK_ALLOWLIST names it"
        )),
        None => Ok(()),
    }
}

/// Parses a webhook URL. Only `http`: this build has no TLS client, so `https` is refused
/// (put a TLS-terminating relay you trust in front of an https receiver).
pub fn parse(url: &str) -> Result<Target, UrlError> {
    let bad = |why: &str| UrlError::Invalid(why.to_owned());
    if url.len() > MAX_URL {
        return Err(bad("the URL is longer than 2048 characters"));
    }
    if url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(bad(
            "the URL holds spaces, control or non-ASCII characters (percent-encode them)",
        ));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(bad(
            "https URLs are not supported: this server has no TLS client; use http:// (to a relay that adds TLS, if the receiver needs it)",
        ));
    }
    if !lower.starts_with("http://") {
        return Err(bad("the URL must start with http://"));
    }
    let rest = &url["http://".len()..];
    if rest.contains('#') {
        return Err(bad("the URL may not have a fragment (#…)"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad(
            "the URL may not carry credentials (user@host): use the secret",
        ));
    }
    let (host_text, port) = split_port(authority).ok_or_else(|| bad("the port must be 1-65535"))?;
    let host = if let Some(v6) = host_text
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
    {
        Host::Ip(
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("the bracketed host is not an IPv6 address"))?
                .into(),
        )
    } else if let Ok(ip) = host_text.parse::<std::net::Ipv4Addr>() {
        Host::Ip(ip.into())
    } else {
        let name = host_text.to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name.trim_end_matches('.').split('.').all(label_ok)
            // A last label that starts with a digit is no top-level domain: it is an
            // address in another form (`127.1`, `2130706433`, `0x7f000001`), which the
            // resolver would read as one.
            && !name
                .trim_end_matches('.')
                .rsplit('.')
                .next()
                .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_digit()));
        if !name_ok {
            return Err(bad("the host is not a host name or an address"));
        }
        Host::Name(name.trim_end_matches('.').to_owned())
    };
    let path = match tail {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    Ok(Target {
        host,
        port,
        path,
        authority: authority.to_owned(),
    })
}

fn split_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = match authority.rfind(':') {
        // `[v6]` without a port has its colons inside the brackets.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
    };
    Some((host, port))
}

/// Checks a URL at create or patch time: its shape, and the addresses of a literal host. A
/// name is resolved (within `within`) and refused when an address it has is refused; a name
/// that does not resolve now is accepted (it is checked again at every delivery).
pub async fn check_url(
    url: &str,
    allow: &WebhookAllowlist,
    listen: IpAddr,
    within: Duration,
) -> Result<Target, UrlError> {
    let target = parse(url)?;
    match resolve(&target, allow, listen, within).await {
        Err(Resolve::Refused(why)) => Err(UrlError::Forbidden(why)),
        _ => Ok(target),
    }
}

/// Why a delivery found no address to connect to.
#[derive(Debug)]
pub enum Resolve {
    /// The name did not resolve (or not in time).
    Failed(String),
    /// An address the rules refuse.
    Refused(String),
}

impl std::fmt::Display for Resolve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolve::Failed(m) | Resolve::Refused(m) => f.write_str(m),
        }
    }
}

/// The one address a delivery connects to: the host resolved once, every address checked
/// (one refused address refuses them all: a name that mixes a public and an internal
/// address is not trusted with either), the first one taken.
pub async fn resolve(
    target: &Target,
    allow: &WebhookAllowlist,
    listen: IpAddr,
    within: Duration,
) -> Result<SocketAddr, Resolve> {
    let addrs: Vec<SocketAddr> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => {
            match tokio::time::timeout(
                within,
                tokio::net::lookup_host((name.as_str(), target.port)),
            )
            .await
            {
                Err(_) => return Err(Resolve::Failed(format!("resolving {name} timed out"))),
                Ok(Err(e)) => return Err(Resolve::Failed(format!("cannot resolve {name}: {e}"))),
                Ok(Ok(a)) => a.collect(),
            }
        }
    };
    for a in &addrs {
        check(allow, &target.host, a.ip(), listen).map_err(Resolve::Refused)?;
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| Resolve::Failed("the host resolved to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unspecified() -> IpAddr {
        IpAddr::from([0, 0, 0, 0])
    }

    #[test]
    fn urls() {
        let t = parse("http://example.com:8080/hook?a=1").unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 8080);
        assert_eq!(t.path, "/hook?a=1");
        assert_eq!(t.authority, "example.com:8080");
        let t = parse("HTTP://[::1]/").unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.port, 80);
        assert_eq!(parse("http://1.2.3.4").unwrap().path, "/");
        assert_eq!(parse("http://1.2.3.4?x").unwrap().path, "/?x");
        for bad in [
            "https://example.com/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "http://example.com/#f",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://exa mple.com/",
            "http:///x",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://[zz]/",
        ] {
            assert!(
                matches!(parse(bad), Err(UrlError::Invalid(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn address_rules() {
        let none = WebhookAllowlist::default();
        let name = Host::Name("example.com".into());
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1",
            "fd00::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check(&none, &name, ip, unspecified()).is_err(), "{ip}");
        }
        assert!(check(
            &none,
            &name,
            "93.184.216.34".parse().unwrap(),
            unspecified()
        )
        .is_ok());
        // The server's own address, when it listens on one.
        let own: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(check(&none, &name, own, own).is_err());
        // The allowlist: by network, and by name.
        let allow = WebhookAllowlist::parse("127.0.0.1/32, hooks.internal").unwrap();
        assert!(check(&allow, &name, "127.0.0.1".parse().unwrap(), unspecified()).is_ok());
        assert!(check(&allow, &name, "127.0.0.2".parse().unwrap(), unspecified()).is_err());
        let internal = Host::Name("hooks.internal".into());
        assert!(check(
            &allow,
            &internal,
            "10.0.0.5".parse().unwrap(),
            unspecified()
        )
        .is_ok());
        assert!(WebhookAllowlist::parse("a/b").is_err());
    }

    #[tokio::test]
    async fn literal_hosts_are_checked_at_once() {
        let none = WebhookAllowlist::default();
        let within = Duration::from_secs(2);
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:9/",
            "http://[::1]/",
        ] {
            assert!(
                matches!(
                    check_url(url, &none, unspecified(), within).await,
                    Err(UrlError::Forbidden(_))
                ),
                "{url}"
            );
        }
        // `localhost` resolves to loopback.
        assert!(matches!(
            check_url("http://localhost:9/", &none, unspecified(), within).await,
            Err(UrlError::Forbidden(_))
        ));
    }
}

//! `network`: what a container may reach. `{"egress": "internet" | "none" | "allowlist",
//! "allow": ["10.1.2.0/24:5432", "192.0.2.7:443"]}`. Whatever the policy, the reconciler
//! blocks the host's own services, the cloud metadata address and the other containers;
//! an `allow` entry lifts that for its network and port.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{reject_unknown, Invalid, Rule};

/// Most `allow` entries of one container (each is two rules: TCP and UDP).
pub const MAX_ALLOW: usize = 64;

/// What a container may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Anywhere but the always-blocked destinations.
    #[default]
    Internet,
    /// Nothing: only answers to connections made to its published ports.
    None,
    /// Only the `allow` entries (TCP and UDP), DNS included only if listed.
    Allowlist,
}

impl Egress {
    pub const ALL: [Egress; 3] = [Egress::Internet, Egress::None, Egress::Allowlist];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internet => "internet",
            Self::None => "none",
            Self::Allowlist => "allowlist",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// One `allow` entry: an IPv4 network (host bits clear) and a port, TCP and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allow {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub port: u16,
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.addr, self.prefix, self.port)
    }
}

impl Allow {
    /// The network as iptables prints it (`10.1.2.0/24`, `192.0.2.7/32`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// `a.b.c.d[/n]:port`. A bare address is a /32. The error says which part is wrong.
pub fn parse_allow(s: &str) -> Result<Allow, (Rule, &'static str)> {
    let Some((net, port)) = s.rsplit_once(':') else {
        return Err((
            Rule::InvalidAllowEntry,
            "an allow entry is CIDR:port, e.g. 10.1.2.0/24:5432 or 192.0.2.7:443",
        ));
    };
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (net, None),
    };
    let bad_cidr = (
        Rule::InvalidAllowCidr,
        "the network must be an IPv4 address or a.b.c.d/n with the host bits clear",
    );
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad_cidr)?;
    let prefix = match prefix {
        None => 32,
        Some(p) if !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().map_err(|_| bad_cidr)?
        }
        Some(_) => return Err(bad_cidr),
    };
    if prefix > 32 {
        return Err(bad_cidr);
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    if u32::from(addr) & !mask != 0 {
        return Err(bad_cidr);
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('0') && !port.starts_with('+') => p,
        _ => return Err((Rule::InvalidAllowPort, "the port must be 1 to 65535")),
    };
    Ok(Allow { addr, prefix, port })
}

/// A container's network policy as stored and shown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Network {
    pub egress: Egress,
    /// `CIDR:port` entries (only with `allowlist`), as the client wrote them.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl Network {
    pub fn with_egress(egress: Egress) -> Self {
        Self {
            egress,
            allow: Vec::new(),
        }
    }

    /// The parsed entries (all valid: they were checked when stored).
    pub fn allowed(&self) -> Vec<Allow> {
        self.allow
            .iter()
            .filter_map(|s| parse_allow(s).ok())
            .collect()
    }
}

/// `network` of a create or patch body; `null` is `default`. Replaces the whole policy.
pub(super) fn parse_network(v: Value, default: Egress) -> Result<Network, Invalid> {
    let mut map: Map<String, Value> = match v {
        Value::Null => return Ok(Network::with_egress(default)),
        Value::Object(m) => m,
        v => {
            return Err(Invalid::field(
                Rule::InvalidNetwork,
                "network",
                v,
                "network must be an object: {\"egress\": \"internet\" | \"none\" | \"allowlist\", \"allow\": [\"CIDR:port\"]}",
            ))
        }
    };
    reject_unknown(&map, &["egress", "allow"], "network.")?;
    let egress = match map.remove("egress") {
        None | Some(Value::Null) => default,
        Some(Value::String(s)) if Egress::parse(&s).is_some() => {
            Egress::parse(&s).unwrap_or_default()
        }
        Some(v) => {
            return Err(Invalid::field(
                Rule::InvalidEgress,
                "network.egress",
                v,
                "egress must be internet, none or allowlist",
            ))
        }
    };
    let items = match map.remove("allow") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(Invalid::field(
                Rule::InvalidAllowEntry,
                "network.allow",
                v,
                "allow must be a list of CIDR:port strings",
            ))
        }
    };
    if !items.is_empty() && egress != Egress::Allowlist {
        return Err(Invalid::field(
            Rule::AllowWithoutAllowlist,
            "network.allow",
            Value::Array(items),
            "allow is only for egress allowlist",
        ));
    }
    if items.len() > MAX_ALLOW {
        return Err(Invalid::field(
            Rule::TooManyAllowEntries,
            "network.allow",
            json!(items.len()),
            format!("at most {MAX_ALLOW} allow entries"),
        ));
    }
    let mut allow: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: Vec<Allow> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("network.allow[{i}]");
        let Value::String(s) = item else {
            return Err(Invalid::field(
                Rule::InvalidAllowEntry,
                field,
                item,
                "an allow entry is a CIDR:port string",
            ));
        };
        let parsed = match parse_allow(&s) {
            Ok(a) => a,
            Err((rule, message)) => {
                return Err(Invalid::field(rule, field, Value::String(s), message))
            }
        };
        if seen.contains(&parsed) {
            return Err(Invalid::field(
                Rule::InvalidAllowEntry,
                field,
                Value::String(s),
                "an allow entry may appear once",
            ));
        }
        seen.push(parsed);
        allow.push(s);
    }
    Ok(Network { egress, allow })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_or_say_what_is_wrong() {
        let ok = |s: &str| parse_allow(s).unwrap().to_string();
        assert_eq!(ok("10.1.2.0/24:5432"), "10.1.2.0/24:5432");
        assert_eq!(ok("192.0.2.7:443"), "192.0.2.7/32:443");
        assert_eq!(ok("0.0.0.0/0:53"), "0.0.0.0/0:53");
        let rule = |s: &str| parse_allow(s).unwrap_err().0;
        for s in [
            "10.1.2.3/24:1",
            "10.1.2.0/33:1",
            "10.1.2:1",
            "::1:80",
            "x:1",
            "1.2.3.4/:1",
            "1.2.3.4/024:1",
        ] {
            assert_eq!(rule(s), Rule::InvalidAllowCidr, "{s}");
        }
        for s in [
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.4:",
            "1.2.3.4:+1",
            "1.2.3.4:08",
            "1.2.3.4:a",
        ] {
            assert_eq!(rule(s), Rule::InvalidAllowPort, "{s}");
        }
        assert_eq!(rule("1.2.3.4"), Rule::InvalidAllowEntry);
    }

    #[test]
    fn network_bodies() {
        let p = |v: Value| parse_network(v, Egress::Internet).map_err(|e| e.rule);
        assert_eq!(p(Value::Null).unwrap(), Network::default());
        assert_eq!(
            parse_network(json!({}), Egress::None).unwrap().egress,
            Egress::None
        );
        let n = p(json!({"egress": "allowlist", "allow": ["10.0.0.0/8:53"]})).unwrap();
        assert_eq!(n.allowed(), [parse_allow("10.0.0.0/8:53").unwrap()]);
        assert_eq!(p(json!("none")), Err(Rule::InvalidNetwork));
        assert_eq!(p(json!({"egres": "none"})), Err(Rule::UnknownField));
        assert_eq!(p(json!({"egress": "all"})), Err(Rule::InvalidEgress));
        assert_eq!(
            p(json!({"egress": "none", "allow": ["1.2.3.4:5"]})),
            Err(Rule::AllowWithoutAllowlist)
        );
        assert_eq!(
            p(json!({"allow": ["1.2.3.4:5"]})),
            Err(Rule::AllowWithoutAllowlist)
        );
        assert_eq!(
            p(json!({"egress": "allowlist", "allow": [5]})),
            Err(Rule::InvalidAllowEntry)
        );
        assert_eq!(
            p(json!({"egress": "allowlist", "allow": ["1.2.3.4:5", "1.2.3.4/32:5"]})),
            Err(Rule::InvalidAllowEntry)
        );
        let many: Vec<String> = (1..=65).map(|p| format!("1.2.3.4:{p}")).collect();
        assert_eq!(
            p(json!({"egress": "allowlist", "allow": many})),
            Err(Rule::TooManyAllowEntries)
        );
        // An allowlist without entries is allowed: it reaches nothing.
        assert!(p(json!({"egress": "allowlist", "allow": []})).is_ok());
    }
}

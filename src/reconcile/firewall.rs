//! The egress firewall's decisions: which iptables rules a container needs for its
//! `network` policy, whether the rules in place are still those, and the batch that makes
//! them so. Pure functions of text: the commands are run by [`super::iptables`], through the
//! [`super::backend::Backend`].
//!
//! Layout, in the `filter` table. Two chains per server instance, hooked first from
//! `DOCKER-USER` (forwarded traffic: what a container sends off the host) and `INPUT` (what
//! it sends to the host itself):
//! - `CMF-<id>`: per container, matched by its address on the server's network and the
//!   network's bridge (`-s A/32 -i br-…`): answers on connections made to it (its published
//!   ports) pass; then `allowlist` entries are accepted (TCP and UDP), `internet` drops the
//!   metadata address and returns to Docker's own rules (which keep containers apart), and
//!   `none`/`allowlist` drop the rest. Last, for the whole bridge: drop (a container whose
//!   rules are not in place yet reaches nothing).
//! - `CMI-<id>`: per container, `allowlist` entries that name the host; last, for the whole
//!   bridge: answers pass, the rest is dropped (the host's own services, the control plane's
//!   port among them, whatever the policy).
//!
//! Every rule of a container carries the comment `cm:<cuid>:<digest>`, the digest covering
//! all of its rules in order: a rule deleted or altered behind the server's back shows as a
//! set whose digest no longer matches (see [`intact`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::spec::{Egress, Network};

/// The cloud metadata address, blocked whatever the policy unless allowlisted.
pub const METADATA: &str = "169.254.169.254/32";
/// The comment of the bridge-wide rules at the end of both chains.
const BASE: &str = "cm:base";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Chain {
    /// Hooked from `DOCKER-USER`.
    Forward,
    /// Hooked from `INPUT`.
    Input,
}

/// The chains of one server instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chains {
    pub forward: String,
    pub input: String,
}

impl Chains {
    /// `CMF-`/`CMI-` and the first 12 characters of the instance id (iptables allows 28).
    pub fn of(instance_id: &str) -> Self {
        let short: String = instance_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        Self {
            forward: format!("CMF-{short}"),
            input: format!("CMI-{short}"),
        }
    }

    fn name(&self, chain: Chain) -> &str {
        match chain {
            Chain::Forward => &self.forward,
            Chain::Input => &self.input,
        }
    }

    /// The built-in chain that jumps to ours.
    fn hook(chain: Chain) -> &'static str {
        match chain {
            Chain::Forward => "DOCKER-USER",
            Chain::Input => "INPUT",
        }
    }
}

/// Where a running container is: its address on the server's network and that network's
/// bridge interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub address: Ipv4Addr,
    pub bridge: String,
}

/// One rule: its chain and its text as `iptables -S` prints it after `-A <chain>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub chain: Chain,
    pub text: String,
}

/// The rules of `cuid` for `network`, placed at `at`, in order.
pub fn rules(cuid: &str, network: &Network, at: &Placement) -> Vec<Rule> {
    let src = format!("-s {}/32", at.address);
    let br = format!("-i {}", at.bridge);
    let mut out: Vec<(Chain, String)> = Vec::new();
    // Answers on connections made to the container (its published ports).
    out.push((
        Chain::Forward,
        format!("{src} {br} -m conntrack --ctstate RELATED,ESTABLISHED"),
    ));
    let mut targets: Vec<(Chain, String, &str)> = Vec::new();
    if network.egress == Egress::Allowlist {
        for a in network.allowed() {
            for proto in ["tcp", "udp"] {
                // `iptables-save` writes no `-d` for `0.0.0.0/0` (any address): neither may
                // the wanted rule, or it would never read back as intact.
                let dst = if a.prefix == 0 {
                    String::new()
                } else {
                    format!(" -d {}", a.cidr())
                };
                let m = format!("{src}{dst} {br} -p {proto} -m {proto} --dport {}", a.port);
                // Forwarded: accepted, past Docker's isolation of containers, since it was
                // asked for by name. To the host: returned to the host's own rules.
                targets.push((Chain::Forward, m.clone(), "ACCEPT"));
                targets.push((Chain::Input, m, "RETURN"));
            }
        }
    }
    let tagged = |v: Vec<(Chain, String, &str)>, comment: &str| -> Vec<Rule> {
        v.into_iter()
            .map(|(chain, m, target)| Rule {
                chain,
                text: format!("{m} -m comment --comment \"{comment}\" -j {target}"),
            })
            .collect()
    };
    let mut all: Vec<(Chain, String, &str)> =
        out.into_iter().map(|(c, m)| (c, m, "RETURN")).collect();
    all.extend(targets);
    match network.egress {
        Egress::Internet => {
            all.push((Chain::Forward, format!("{src} -d {METADATA} {br}"), "DROP"));
            all.push((Chain::Forward, format!("{src} {br}"), "RETURN"));
        }
        Egress::None | Egress::Allowlist => {
            all.push((Chain::Forward, format!("{src} {br}"), "DROP"));
        }
    }
    // Each chain's rules together, in order: as `iptables-save` lists them back.
    all.sort_by_key(|(chain, _, _)| *chain);
    let plain = tagged(all.clone(), &format!("cm:{cuid}"));
    tagged(all, &format!("cm:{cuid}:{}", digest(&plain)))
}

/// The bridge-wide rules at the end of both chains.
pub fn base(bridge: &str) -> Vec<Rule> {
    let br = format!("-i {bridge}");
    let c = format!("-m comment --comment \"{BASE}\"");
    vec![
        Rule {
            chain: Chain::Forward,
            text: format!("{br} {c} -j DROP"),
        },
        Rule {
            chain: Chain::Input,
            text: format!("{br} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j RETURN"),
        },
        Rule {
            chain: Chain::Input,
            text: format!("{br} {c} -j DROP"),
        },
    ]
}

/// FNV-1a of the rules' chains and texts, 8 hex digits.
fn digest(rules: &[Rule]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for r in rules {
        let bytes = format!("{:?} {}\n", r.chain, r.text);
        for b in bytes.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

/// What is in place: this instance's chains as `iptables-save` shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    pub forward_exists: bool,
    pub input_exists: bool,
    pub forward_hooked: bool,
    pub input_hooked: bool,
    /// Each container's rules, in chain order (the forward chain's first).
    pub by_cuid: BTreeMap<String, Vec<Rule>>,
    pub base: Vec<Rule>,
    /// Rules of ours that carry no comment of ours (someone else's, left alone).
    pub foreign: usize,
}

/// Reads `iptables-save -t filter` output.
pub fn parse(save: &str, chains: &Chains) -> Current {
    let mut cur = Current::default();
    let mut by_cuid: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    for line in save.lines() {
        if line == format!(":{} - [0:0]", chains.forward)
            || line.starts_with(&format!(":{} ", chains.forward))
        {
            cur.forward_exists = true;
        } else if line.starts_with(&format!(":{} ", chains.input)) {
            cur.input_exists = true;
        } else if line == format!("-A DOCKER-USER -j {}", chains.forward) {
            cur.forward_hooked = true;
        } else if line == format!("-A INPUT -j {}", chains.input) {
            cur.input_hooked = true;
        }
        let (chain, text) = if let Some(t) = line.strip_prefix(&format!("-A {} ", chains.forward)) {
            (Chain::Forward, t)
        } else if let Some(t) = line.strip_prefix(&format!("-A {} ", chains.input)) {
            (Chain::Input, t)
        } else {
            continue;
        };
        let rule = Rule {
            chain,
            text: text.to_owned(),
        };
        match comment(text) {
            Some(BASE) => cur.base.push(rule),
            Some(c) if c.starts_with("cm:") => {
                let cuid = c[3..].split(':').next().unwrap_or_default().to_owned();
                by_cuid.entry(cuid).or_default().push(rule);
            }
            _ => cur.foreign += 1,
        }
    }
    // Forward rules first, each chain in its own order: the order `rules` makes them.
    for list in by_cuid.values_mut() {
        list.sort_by_key(|r| r.chain);
    }
    cur.by_cuid = by_cuid;
    cur
}

fn comment(text: &str) -> Option<&str> {
    let rest = text.split_once("--comment ")?.1;
    let rest = rest.trim_start_matches('"');
    Some(rest.split([' ', '"']).next().unwrap_or_default())
}

/// Whether `have`, a container's rules in place, are a whole set as [`rules`] made it
/// (no rule deleted or altered) for a container at `address`.
pub fn intact(have: &[Rule], address: Ipv4Addr) -> bool {
    let Some(first) = have.first() else {
        return false;
    };
    let Some(tag) = comment(&first.text) else {
        return false;
    };
    let Some((prefix, digest_then)) = tag.rsplit_once(':') else {
        return false;
    };
    let src = format!("-s {address}/32 ");
    if !have.iter().all(|r| r.text.starts_with(&src)) {
        return false;
    }
    let plain: Vec<Rule> = have
        .iter()
        .map(|r| Rule {
            chain: r.chain,
            text: r.text.replace(tag, prefix),
        })
        .collect();
    digest(&plain) == digest_then
}

/// The lines that make the chains, their hooks and the bridge-wide rules of `bridge` exist
/// (none when they do).
fn frame(chains: &Chains, cur: &Current, bridge: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if !cur.forward_exists {
        lines.push(format!(":{} - [0:0]", chains.forward));
    }
    if !cur.input_exists {
        lines.push(format!(":{} - [0:0]", chains.input));
    }
    for (chain, hooked) in [
        (Chain::Forward, cur.forward_hooked),
        (Chain::Input, cur.input_hooked),
    ] {
        if !hooked {
            lines.push(format!(
                "-I {} 1 -j {}",
                Chains::hook(chain),
                chains.name(chain)
            ));
        }
    }
    let want_base = base(bridge);
    if cur.base != want_base {
        for r in &cur.base {
            lines.push(format!("-D {} {}", chains.name(r.chain), r.text));
        }
        for r in &want_base {
            lines.push(format!("-A {} {}", chains.name(r.chain), r.text));
        }
    }
    lines
}

/// The batch that makes the chains, hooks and bridge-wide rules of `bridge` exist, before
/// any container runs on it (so the first one is held until its own rules are in place);
/// `None` when they do.
pub fn frame_batch(chains: &Chains, cur: &Current, bridge: &str) -> Option<String> {
    let lines = frame(chains, cur, bridge);
    (!lines.is_empty()).then(|| format!("*filter\n{}\nCOMMIT\n", lines.join("\n")))
}

/// The `iptables-restore --noflush` batch that makes `cuid`'s rules exactly `want` (and,
/// when it has any, the chains, hooks and base rules of `bridge` exist); `None` when
/// nothing is to change.
pub fn batch(
    chains: &Chains,
    cur: &Current,
    cuid: &str,
    want: &[Rule],
    bridge: Option<&str>,
) -> Option<String> {
    let have = cur.by_cuid.get(cuid).map(Vec::as_slice).unwrap_or_default();
    let mut lines: Vec<String> = match bridge.filter(|_| !want.is_empty()) {
        Some(bridge) => frame(chains, cur, bridge),
        None => Vec::new(),
    };
    if have != want {
        for r in have {
            lines.push(format!("-D {} {}", chains.name(r.chain), r.text));
        }
        // Inserted at the top, last first: in order, ahead of the base rules.
        for r in want.iter().rev() {
            lines.push(format!("-I {} 1 {}", chains.name(r.chain), r.text));
        }
    }
    if lines.is_empty() {
        return None;
    }
    Some(format!("*filter\n{}\nCOMMIT\n", lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Placement {
        Placement {
            address: "172.18.0.5".parse().unwrap(),
            bridge: "br-0123456789ab".into(),
        }
    }

    fn texts(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| {
                let t = r.text.split(" -m comment").next().unwrap();
                let target = r.text.rsplit(' ').next().unwrap();
                format!("{:?} {t} {target}", r.chain)
            })
            .collect()
    }

    #[test]
    fn each_policy_gets_its_rules() {
        let internet = rules("c1", &Network::with_egress(Egress::Internet), &at());
        assert_eq!(
            texts(&internet),
            [
                "Forward -s 172.18.0.5/32 -i br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED RETURN",
                "Forward -s 172.18.0.5/32 -d 169.254.169.254/32 -i br-0123456789ab DROP",
                "Forward -s 172.18.0.5/32 -i br-0123456789ab RETURN",
            ]
        );
        let none = rules("c1", &Network::with_egress(Egress::None), &at());
        assert_eq!(
            texts(&none),
            [
                "Forward -s 172.18.0.5/32 -i br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED RETURN",
                "Forward -s 172.18.0.5/32 -i br-0123456789ab DROP",
            ]
        );
        let list = Network {
            egress: Egress::Allowlist,
            allow: vec!["10.1.2.0/24:5432".into(), "169.254.169.254:80".into()],
        };
        let allow = rules("c1", &list, &at());
        let t = texts(&allow);
        assert_eq!(t.len(), 1 + 8 + 1);
        assert_eq!(
            t[1],
            "Forward -s 172.18.0.5/32 -d 10.1.2.0/24 -i br-0123456789ab -p tcp -m tcp --dport 5432 ACCEPT"
        );
        assert_eq!(
            t[2],
            "Forward -s 172.18.0.5/32 -d 10.1.2.0/24 -i br-0123456789ab -p udp -m udp --dport 5432 ACCEPT"
        );
        assert_eq!(
            t[6],
            "Input -s 172.18.0.5/32 -d 10.1.2.0/24 -i br-0123456789ab -p tcp -m tcp --dport 5432 RETURN"
        );
        // The metadata address, named explicitly, is reachable; nothing else.
        assert!(t.contains(&"Forward -s 172.18.0.5/32 -d 169.254.169.254/32 -i br-0123456789ab -p tcp -m tcp --dport 80 ACCEPT".to_owned()));
        assert_eq!(t[5], "Forward -s 172.18.0.5/32 -i br-0123456789ab DROP");
        // Every rule carries the container's tag with one digest.
        let tag = comment(&allow[0].text).unwrap().to_owned();
        assert!(tag.starts_with("cm:c1:"), "{tag}");
        assert!(allow.iter().all(|r| comment(&r.text) == Some(tag.as_str())));
        // Another policy, another digest.
        assert_ne!(comment(&none[0].text), comment(&internet[0].text));
    }

    fn save_of(chains: &Chains, rules: &[Rule], extra: &str) -> String {
        let mut s = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n:{} - [0:0]\n:{} - [0:0]\n-A INPUT -j {}\n-A DOCKER-USER -j {}\n-A DOCKER-USER -j RETURN\n",
            chains.forward, chains.input, chains.input, chains.forward
        );
        for r in rules {
            let name = if r.chain == Chain::Forward {
                &chains.forward
            } else {
                &chains.input
            };
            s.push_str(&format!("-A {name} {}\n", r.text));
        }
        s.push_str(extra);
        s.push_str("COMMIT\n");
        s
    }

    /// `iptables-save` writes a rule to any address (`-d 0.0.0.0/0`) without its `-d`: the
    /// wanted rule must be written the same way, or it never reads back as intact and every
    /// resync would put it back again.
    #[test]
    fn an_allow_entry_to_any_address_has_no_destination() {
        let any = Network {
            egress: Egress::Allowlist,
            allow: vec!["0.0.0.0/0:53".into(), "10.0.0.2:53".into()],
        };
        let texts: Vec<String> = rules("c1", &any, &at())
            .into_iter()
            .map(|r| r.text)
            .collect();
        let dns: Vec<&String> = texts.iter().filter(|t| t.contains("--dport 53")).collect();
        assert_eq!(dns.len(), 8, "{texts:?}");
        assert_eq!(
            dns.iter().filter(|t| t.contains(" -d ")).count(),
            4,
            "{texts:?}"
        );
        assert!(!texts.iter().any(|t| t.contains("0.0.0.0/0")), "{texts:?}");
    }

    #[test]
    fn in_place_rules_are_read_back_and_checked_whole() {
        let chains = Chains::of("0123456789abcdef0123");
        assert_eq!(chains.forward, "CMF-0123456789ab");
        let list = Network {
            egress: Egress::Allowlist,
            allow: vec!["10.1.2.0/24:5432".into()],
        };
        let want = rules("c1", &list, &at());
        let mut all = want.clone();
        all.extend(base("br-0123456789ab"));
        let cur = parse(&save_of(&chains, &all, ""), &chains);
        assert!(cur.forward_exists && cur.input_exists && cur.forward_hooked && cur.input_hooked);
        let sorted = want.clone();
        assert_eq!(cur.by_cuid["c1"], sorted);
        assert_eq!(cur.base, base("br-0123456789ab"));
        assert!(intact(&cur.by_cuid["c1"], at().address));
        // In sync: nothing to do.
        assert_eq!(
            batch(&chains, &cur, "c1", &sorted, Some("br-0123456789ab")),
            None
        );
        // Another address (the container was recreated): not intact.
        assert!(!intact(&cur.by_cuid["c1"], "172.18.0.6".parse().unwrap()));
        // One rule deleted behind our back: not intact, and the batch puts the set back.
        let mut short = cur.by_cuid["c1"].clone();
        short.remove(1);
        assert!(!intact(&short, at().address));
        let cur2 = parse(&save_of(&chains, &short, ""), &chains);
        let b = batch(&chains, &cur2, "c1", &sorted, Some("br-0123456789ab")).unwrap();
        assert_eq!(b.matches("\n-D ").count(), short.len(), "{b}");
        assert_eq!(b.matches("\n-I CM").count(), sorted.len(), "{b}");
        // The base rules were missing too: appended; the hooks were there.
        assert_eq!(b.matches("\n-A ").count(), 3, "{b}");
        assert!(!b.contains("DOCKER-USER"), "{b}");
        // Altered (a target changed): not intact.
        let mut altered = cur.by_cuid["c1"].clone();
        altered[1].text = altered[1].text.replace("ACCEPT", "DROP");
        assert!(!intact(&altered, at().address));
    }

    #[test]
    fn a_fresh_host_gets_chains_hooks_base_then_rules_and_removal_leaves_only_others() {
        let chains = Chains::of("abc");
        let want = rules("c1", &Network::with_egress(Egress::None), &at());
        let b = batch(&chains, &Current::default(), "c1", &want, Some("br-x")).unwrap();
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines[1], ":CMF-abc - [0:0]");
        assert_eq!(lines[2], ":CMI-abc - [0:0]");
        assert_eq!(lines[3], "-I DOCKER-USER 1 -j CMF-abc");
        assert_eq!(lines[4], "-I INPUT 1 -j CMI-abc");
        assert!(lines[5].starts_with("-A CMF-abc -i br-x"));
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        // The container's rules inserted last first, so they end up in order.
        assert_eq!(
            lines[lines.len() - 2],
            format!("-I CMF-abc 1 {}", want[0].text)
        );

        // The frame alone (before any container runs): chains, hooks, base; then nothing.
        let f = frame_batch(&chains, &Current::default(), "br-x").unwrap();
        assert_eq!(f.lines().count(), 2 + 4 + 3, "{f}");
        let mut framed = base("br-x");
        framed.sort_by_key(|r| r.chain);
        let cur = parse(&save_of(&chains, &framed, ""), &chains);
        assert_eq!(frame_batch(&chains, &cur, "br-x"), None);
        // Another bridge (the network was made again): the old base goes, the new comes.
        let f = frame_batch(&chains, &cur, "br-y").unwrap();
        assert_eq!(
            (f.matches("\n-D ").count(), f.matches("\n-A ").count()),
            (3, 3),
            "{f}"
        );

        // Removal: only c1's rules go; another container's stay.
        let other = rules("c2", &Network::default(), &at());
        let mut all = want.clone();
        all.extend(other);
        let cur = parse(&save_of(&chains, &all, "-A CMF-abc -j ACCEPT\n"), &chains);
        assert_eq!(cur.foreign, 1);
        let b = batch(&chains, &cur, "c1", &[], None).unwrap();
        assert_eq!(b.matches("-D CMF-abc").count(), want.len());
        assert!(!b.contains("c2"));
        assert_eq!(batch(&chains, &cur, "c3", &[], None), None);
    }
}

//! Egress policy (issue 18): what a container may reach, enforced with the server's own
//! iptables chains. Listeners on the host's address on the server's network play the host's
//! services; the server itself listens on every address, so its own port is one of them.
//! Connections are made from inside the containers with busybox `nc` (`-w 2`: a dropped
//! SYN fails after two seconds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// A TCP listener on every address of the host that counts the connections it accepts.
struct HostService {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HostService {
    /// On a thread of its own: the test's runtime blocks on `docker exec`.
    async fn start() -> Self {
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Self { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Whether `cuid` can open a TCP connection to `addr:port` within two seconds.
fn connects(cuid: &str, addr: &str, port: u16) -> bool {
    let script = format!("timeout 5 nc -w 2 {addr} {port} </dev/null");
    sh_in(cuid, "0:0", &script).0
}

/// A server listening on every address (so its port is on the host's bridge address too),
/// resyncing every second.
async fn server() -> Server {
    Server::start_with(Options {
        env: vec![
            ("LISTEN_ADDR".into(), "0.0.0.0:0".into()),
            ("RESYNC_INTERVAL".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await
}

/// The container's rules in the forward chain (`iptables -S` lines with its tag).
fn rules_of(chain: &str, cuid: &str) -> Vec<String> {
    let (ok, out) = iptables(&["-S", chain]);
    assert!(ok, "{out}");
    out.lines()
        .filter(|l| l.contains(&format!("cm:{cuid}:")))
        .map(str::to_owned)
        .collect()
}

/// `egress: none`: the host's services, the control plane's port included, are out of
/// reach, while the container's published port still answers. Its rules, deleted or
/// flushed behind the server's back, are put back by the resync.
#[tokio::test]
async fn none_reaches_nothing_but_its_published_port_answers_and_deleted_rules_come_back() {
    let s = server().await;
    let service = HostService::start().await;
    let published = free_port();
    let r = s
        .post_json(
            "/containers",
            &json!({
                "image": BUSYBOX,
                "command": ["sh", "-c", "echo hi > /app/index.html && exec httpd -f -p 8080 -h /app"],
                "ports": [{"host": published, "container": 8080, "host_ip": "127.0.0.1"}],
                "network": {"egress": "none"},
                "start": true,
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["network"], json!({"egress": "none", "allow": []}));
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let gateway = network_gateway(&s.instance_id);
    assert!(!gateway.is_empty());

    // The published port answers (the rules let answers out).
    let url = format!("http://127.0.0.1:{published}/index.html");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match reqwest::get(&url).await {
            Ok(resp) if resp.status() == 200 => {
                assert_eq!(resp.text().await.unwrap().trim(), "hi");
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "the published port never answered: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server answers on the bridge address from the host: the block below is the
    // container's, not a closed port.
    let own = s.addr.port();
    let health = reqwest::get(format!("http://{gateway}:{own}/healthz")).await;
    assert!(health.is_ok(), "{health:?}");

    assert!(
        !connects(&cuid, &gateway, service.port),
        "host service reached"
    );
    assert!(!connects(&cuid, &gateway, own), "control plane reached");
    assert_eq!(service.accepted(), 0);

    // One rule deleted behind the server's back comes back as it was.
    let (forward, _) = firewall_chains(&s.instance_id);
    let before = rules_of(&forward, &cuid);
    assert!(!before.is_empty(), "no rules for {cuid}");
    let last = before.last().unwrap().replacen("-A ", "-D ", 1);
    let args: Vec<String> = shell_words(&last);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = iptables(&args);
    assert!(ok, "{out}");
    assert_ne!(rules_of(&forward, &cuid), before);
    wait_until(Duration::from_secs(20), "the deleted rule is back", || {
        rules_of(&forward, &cuid) == before
    })
    .await;

    // The whole chain flushed: everything is back, and the container is still held.
    let (ok, out) = iptables(&["-F", &forward]);
    assert!(ok, "{out}");
    wait_until(
        Duration::from_secs(20),
        "the flushed rules are back",
        || rules_of(&forward, &cuid) == before,
    )
    .await;
    assert!(
        !connects(&cuid, &gateway, service.port),
        "host service reached"
    );
    assert_eq!(service.accepted(), 0);

    // At rest, the resync finds the rules whole and changes nothing (what it reads back is
    // what it wrote, to the byte).
    let applied = |s: &Server| s.server_log().matches("applying egress rules").count();
    let applies = applied(&s);
    let first = resyncs(&s).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while resyncs(&s).await < first + 2.0 {
        assert!(std::time::Instant::now() < deadline, "no resync ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(applied(&s), applies);

    // Deleted with the container.
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert!(r.status < 300, "{}", r.text);
    wait_until(
        Duration::from_secs(30),
        "rules removed with the container",
        || rules_of(&forward, &cuid).is_empty(),
    )
    .await;
}

/// `allowlist`: the listed `CIDR:port` connects, the port next to it does not; an `internet`
/// container reaches neither the host's services nor the control plane. The policy is set
/// by a patch (the host's address is known once the network exists).
#[tokio::test]
async fn an_allowlisted_address_and_port_connects_and_its_neighbour_does_not() {
    let s = server().await;
    let allowed = HostService::start().await;
    let neighbour = HostService::start().await;
    let internet = s.running_sleeper().await;
    let gateway = network_gateway(&s.instance_id);
    assert!(!gateway.is_empty());

    let listed = s
        .create_started(&json!({
            "image": BUSYBOX,
            "command": SLEEPER,
            "network": {"egress": "allowlist", "allow": ["192.0.2.0/24:443"]},
        }))
        .await;
    let r = s
        .patch_json(
            &format!("/containers/{listed}"),
            &json!({"network": {"egress": "allowlist",
                                "allow": [format!("{gateway}:{}", allowed.port)]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["network"]["allow"],
        json!([format!("{gateway}:{}", allowed.port)]),
        "{}",
        r.text
    );
    let (forward, input) = firewall_chains(&s.instance_id);
    wait_until(
        Duration::from_secs(30),
        "the patched rules are in place",
        || {
            iptables(&["-S", &input])
                .1
                .contains(&format!("--dport {}", allowed.port))
        },
    )
    .await;

    assert!(
        connects(&listed, &gateway, allowed.port),
        "allowed port refused"
    );
    assert_eq!(allowed.accepted(), 1);
    assert!(
        !connects(&listed, &gateway, neighbour.port),
        "neighbour reached"
    );
    assert!(
        !connects(&listed, &gateway, s.addr.port()),
        "control plane reached"
    );

    // `internet`: the host's services are blocked whatever the policy.
    assert!(
        !connects(&internet, &gateway, allowed.port),
        "host service reached"
    );
    assert!(
        !connects(&internet, &gateway, s.addr.port()),
        "control plane reached"
    );
    assert_eq!(allowed.accepted(), 1);
    assert_eq!(neighbour.accepted(), 0);
    assert!(!rules_of(&forward, &internet).is_empty());

    // The rules follow the container: after the patch's recreate, and after a restart
    // behind the server's back (Docker may hand out another address), they are for the
    // address it has now.
    let for_its_address = |cuid: &str| {
        let ip = container_ip(&s, cuid);
        let rules = rules_of(&forward, cuid);
        !ip.is_empty()
            && !rules.is_empty()
            && rules.iter().all(|r| r.contains(&format!("-s {ip}/32 ")))
    };
    assert!(for_its_address(&listed));
    docker(&["restart", "-t", "0", &internet]);
    wait_until(
        Duration::from_secs(30),
        "rules for the restarted container",
        || for_its_address(&internet),
    )
    .await;
    assert!(
        !connects(&internet, &gateway, allowed.port),
        "host service reached after a restart"
    );

    // Bad input gets its code.
    for (network, code) in [
        (json!({"egress": "everything"}), "INVALID_EGRESS"),
        (
            json!({"egress": "none", "allow": ["10.0.0.0/8:53"]}),
            "ALLOW_WITHOUT_ALLOWLIST",
        ),
        (
            json!({"egress": "allowlist", "allow": ["10.0.0.1/8:53"]}),
            "INVALID_ALLOW_CIDR",
        ),
        (
            json!({"egress": "allowlist", "allow": ["10.0.0.0/8:0"]}),
            "INVALID_ALLOW_PORT",
        ),
    ] {
        let r = s
            .post_json(
                "/containers",
                &json!({"image": BUSYBOX, "network": network}),
            )
            .await;
        r.assert_error(400, "validation_error", code);
    }
}

/// The container's address on the server's network (empty while it has none).
fn container_ip(s: &Server, cuid: &str) -> String {
    let format = format!(
        "{{{{(index .NetworkSettings.Networks \"cm-{}\").IPAddress}}}}",
        s.instance_id
    );
    docker(&["inspect", "-f", &format, cuid]).trim().to_owned()
}

/// Resyncs run so far (`cm_resync_duration_seconds_count`).
async fn resyncs(s: &Server) -> f64 {
    let r = s.get("/metrics").await;
    r.text
        .lines()
        .find_map(|l| l.strip_prefix("cm_resync_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resync count in {}", r.text))
}

/// Splits an `iptables -S` line into arguments (double quotes group, as the shell would).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

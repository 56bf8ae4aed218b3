//! Node loss on `BACKEND=swarm` (docs/API.md "Node loss", RELIABILITY.md): against the
//! three-node Swarm of scripts/setup-swarm.sh, a node killed or cut off ends the terminals
//! open on it (`NODE_LOST`, close code 4001), the container runs on another node with its
//! `/app` and the move is an event; the control plane restarted mid-loss converges; tenants
//! and quotas hold across nodes. Without the lab these tests say why and pass without running.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::swarm::*;

const SECRET: &str = "a-webhook-secret-0123456789";

/// A running container that only the two workers may run (node 1, the manager, stays up),
/// with a file in its `/app`; and the node it runs on.
async fn on_a_worker(s: &Server) -> (String, String) {
    let cuid = s
        .create_started(&json!({
            "image": BUSYBOX, "command": SLEEPER,
            "placement": {"constraints": ["node.role==worker"]},
        }))
        .await;
    let r = s
        .upload_zip(&cuid, "", zip_of(&[("keep.txt", b"kept across nodes")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let node = task_node(&cuid).expect("a running task");
    (cuid, node)
}

/// An exec'd session on `cuid` whose process runs (it printed `ready`).
async fn open_session(s: &Server, cuid: &str) -> Term {
    let cmd = url_encode("echo ready; exec sleep 3600");
    let mut t = Term::open(s, &format!("/ws/{cuid}?main=false&cmd={cmd}")).await;
    t.until(LONG, "ready", |t| t.out().contains("ready")).await;
    t
}

/// The session ends within `limit` with an `error` frame `NODE_LOST` naming `node`, no
/// `exit`, and the close code 4001.
async fn ends_node_lost(t: &mut Term, node: &str, limit: Duration) {
    t.until_closed(limit).await;
    let e = t
        .errors
        .last()
        .unwrap_or_else(|| panic!("no error frame; exit {:?}", t.exit));
    assert_eq!(e["error"]["code"], "NODE_LOST", "{e}");
    assert_eq!(e["error"]["status"], 503, "{e}");
    assert_eq!(e["error"]["details"]["node"], node, "{e}");
    assert_eq!(t.exit, None);
    assert_eq!(t.close_code, Some(4001));
}

/// It runs on `to` now (for the API and the manager), and a new terminal there reads the
/// `/app` it had.
async fn works_on(s: &Server, cuid: &str, to: &str) {
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(60),
        |r| {
            r.json["status"] == "running"
                && r.json["node"] == to
                && task_node(cuid).as_deref() == Some(to)
        },
    )
    .await;
    let cmd = url_encode("cat /app/keep.txt");
    let mut t = Term::open(s, &format!("/ws/{cuid}?main=false&cmd={cmd}")).await;
    assert_eq!(t.until_exit(LONG).await, 0);
    assert!(t.out().contains("kept across nodes"), "{}", t.out());
}

/// The `moved` event about `cuid` after event `after`, and the `container` events before it.
async fn moved_event(
    s: &Server,
    cuid: &str,
    after: u64,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let events =
        read_events_until(s, after, |_, kind, d| kind == "moved" && d["cuid"] == cuid).await;
    let (_, kind, moved) = events.last().expect("events").clone();
    assert_eq!(kind, "moved", "{events:?}");
    let reps = events
        .into_iter()
        .filter(|(_, k, d)| k == "container" && d["cuid"] == cuid)
        .map(|(_, _, d)| d["container"].clone())
        .collect();
    (moved, reps)
}

/// Polls the manager until `node` is no longer Ready.
async fn until_not_ready(node: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ls = docker_on(
            Some(MANAGER),
            &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        );
        if ls
            .lines()
            .any(|l| l.starts_with(node) && !l.ends_with("Ready"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{node} still Ready: {ls}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_killed_node_ends_its_terminals_and_its_container_moves_with_an_event() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server_with(vec![
        lab_nodes(),
        ("WEBHOOK_ALLOWLIST".into(), "127.0.0.1/32".into()),
        ("WEBHOOK_BACKOFF_MAX".into(), "2".into()),
    ])
    .await;
    let rx = Receiver::start().await;
    let r = s
        .post_json(
            "/webhooks",
            &json!({"url": rx.url("/moved"), "events": ["moved"], "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (cuid, from) = on_a_worker(&s).await;
    let to = other_worker(&from);
    let mut shell = open_session(&s, &cuid).await;
    // The console's view: the main output and input to the main process.
    let mut attached = Term::open(&s, &format!("/ws/{cuid}?attach=true")).await;
    let after = newest_event_id(&s).await;

    let killed = Instant::now();
    let _lost = LostNode::kill(node_number(&from));
    // The daemon's death breaks the streams: no wait for the Swarm to call the node down.
    ends_node_lost(&mut shell, &from, Duration::from_secs(15)).await;
    ends_node_lost(&mut attached, &from, Duration::from_secs(15)).await;
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "{:?}",
        killed.elapsed()
    );

    let (moved, reps) = moved_event(&s, &cuid, after).await;
    assert_eq!(
        (&moved["from"], &moved["to"], &moved["reason"]),
        (&json!(from), &json!(to), &json!("node_down")),
        "{moved}"
    );
    assert!(
        moved["at"].as_str().is_some_and(|a| a.ends_with('Z')),
        "{moved}"
    );
    // The container event just before it shows the same move.
    let last = reps.last().expect("a container event");
    assert_eq!(last["node"], to, "{last}");
    assert_eq!(last["last_move"]["from"], from, "{last}");
    assert_eq!(last["last_move"]["at"], moved["at"], "{last}");

    // A durable webhook event `moved`, with the representation.
    let got = rx
        .wait_for(Duration::from_secs(30), "a moved delivery", |g| {
            !g.is_empty()
        })
        .await;
    assert_eq!(got[0].header("x-cm-event"), "moved");
    let body = got[0].json();
    assert_eq!(body["event"], "moved");
    assert_eq!(body["cuid"], cuid);
    assert_eq!(body["container"]["last_move"]["to"], to, "{body}");

    // A new terminal works, on the new node, with the files.
    works_on(&s, &cuid, to).await;

    // While the node is down a new container is made and runs: the dead node's engine is
    // not asked for the image.
    let another = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER}))
        .await;
    assert_ne!(task_node(&another).as_deref(), Some(from.as_str()));
}

#[tokio::test]
async fn a_node_cut_off_ends_its_terminals_once_the_swarm_sees_it_down() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    let (cuid, from) = on_a_worker(&s).await;
    let to = other_worker(&from);
    let mut shell = open_session(&s, &cuid).await;
    let after = newest_event_id(&s).await;

    // Its daemon runs on (the server still reaches it through its socket, and the session's
    // stream stays open): only the Swarm's view says the node is lost.
    let _lost = LostNode::cut(node_number(&from));
    ends_node_lost(&mut shell, &from, Duration::from_secs(30)).await;
    let (moved, _) = moved_event(&s, &cuid, after).await;
    assert_eq!(
        (&moved["from"], &moved["to"], &moved["reason"]),
        (&json!(from), &json!(to), &json!("node_down")),
        "{moved}"
    );
    works_on(&s, &cuid, to).await;
}

#[tokio::test]
async fn a_control_plane_restarted_mid_loss_converges_elsewhere_once() {
    let Some(_lab) = lab().await else { return };
    let (mut s, _services) = swarm_server().await;
    let (cuid, from) = on_a_worker(&s).await;
    let to = other_worker(&from);

    let _lost = LostNode::kill(node_number(&from));
    assert!(s.stop().success());
    // The Swarm sees the node down while no control plane runs.
    until_not_ready(&from, Duration::from_secs(30)).await;
    s.start_again().await;

    works_on(&s, &cuid, to).await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["last_move"]["from"], from, "{}", r.text);
    assert_eq!(r.json["last_move"]["to"], to, "{}", r.text);
    // One service, with one task meant to run.
    let services = docker_on(
        Some(MANAGER),
        &["service", "ls", "-q", "--filter", &format!("name={cuid}")],
    );
    assert_eq!(services.lines().count(), 1, "{services}");
    let tasks = docker_on(
        Some(MANAGER),
        &[
            "service",
            "ps",
            &cuid,
            "-q",
            "--filter",
            "desired-state=running",
        ],
    );
    assert_eq!(tasks.lines().count(), 1, "{tasks}");
}

/// A container of `who`'s, pinned to the node of `zone` (a, b, c: nodes 1, 2, 3).
async fn create_pinned(who: &Bearer<'_>, zone: &str) -> String {
    let r = who
        .post_json(
            "/containers",
            &json!({
                "image": BUSYBOX, "command": SLEEPER,
                "placement": {"constraints": [format!("node.labels.zone=={zone}")]},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["cuid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tenants_and_quotas_hold_across_nodes() {
    let Some(_lab) = lab().await else { return };
    let (s, _services) = swarm_server().await;
    s.put_tenant("team-a", &json!({"max_running": 2})).await;
    s.put_tenant("team-b", &json!({})).await;
    let a = s.token("write", Some("team-a")).await;
    let b = s.token("write", Some("team-b")).await;
    // Team a: one container running on node 2, one on node 3: its max_running is reached,
    // whichever node a third would run on.
    let on_2 = create_pinned(&a, "b").await;
    let on_3 = create_pinned(&a, "c").await;
    for cuid in [&on_2, &on_3] {
        let r = a.post(&format!("/containers/{cuid}/start")).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(task_node(&on_2).as_deref(), Some("cm-swarm-2"));
    assert_eq!(task_node(&on_3).as_deref(), Some("cm-swarm-3"));
    let on_1 = create_pinned(&a, "a").await;
    let r = a.post(&format!("/containers/{on_1}/start")).await;
    r.assert_error(403, "forbidden", "QUOTA_EXCEEDED");
    assert_eq!(r.json["details"]["quota"], "max_running", "{}", r.text);
    assert_eq!(task_node(&on_1), None);

    // Team b sees none of them and touches none, on any node; its own runs beside them.
    for cuid in [&on_2, &on_3] {
        b.get(&format!("/containers/{cuid}")).await.assert_error(
            404,
            "not_found",
            "CONTAINER_NOT_FOUND",
        );
        b.post(&format!("/containers/{cuid}/stop"))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
        b.get(&format!("/containers/{cuid}/logs"))
            .await
            .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    }
    let list = b.get("/containers").await;
    assert_eq!(list.json["containers"], json!([]), "{}", list.text);
    let theirs = create_pinned(&b, "c").await;
    let r = b.post(&format!("/containers/{theirs}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(task_node(&theirs).as_deref(), Some("cm-swarm-3"));
    a.get(&format!("/containers/{theirs}")).await.assert_error(
        404,
        "not_found",
        "CONTAINER_NOT_FOUND",
    );
    assert_eq!(task_node(&on_3).as_deref(), Some("cm-swarm-3"), "untouched");

    // Team a stops one (on node 2): its third starts, on node 1.
    let r = a.post(&format!("/containers/{on_2}/stop")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a.post(&format!("/containers/{on_1}/start")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["node"], "cm-swarm-1", "{}", r.text);
}

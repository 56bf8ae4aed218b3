//! Operability: Prometheus metrics, container stats, JSON logs, online backup, OpenAPI.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Parses exposition text into `series (name + labels as written) → value`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of `name` whose labels contain all of `want`.
fn sum(s: &HashMap<String, f64>, name: &str, want: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            let (n, labels) = k.split_once('{').unwrap_or((k, ""));
            n == name && want.iter().all(|w| labels.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(s: &Server) -> HashMap<String, f64> {
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    samples(&r.text)
}

pub async fn create_running(s: &Server, command: &[&str]) -> String {
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": command, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(60),
        |r| r.json["status"] == "running",
    )
    .await;
    cuid
}

#[tokio::test]
async fn metrics_move_after_a_create_and_start() {
    let s = Server::start().await;
    // Without credentials, like every route.
    let r = s.send(s.client.get(format!("{}/metrics", s.base))).await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");

    let before = scrape(&s).await;
    let cuid = create_running(&s, &["sleep", "3600"]).await;
    s.get(&format!("/containers/{cuid}")).await;
    s.get("/containers/cnope/status").await;
    let after = scrape(&s).await;

    let route = |r: &str| format!("route=\"{r}\"");
    let created = sum(
        &after,
        "cm_http_requests_total",
        &[&route("/containers"), "method=\"POST\"", "status=\"201\""],
    );
    assert_eq!(created, 1.0, "{after:#?}");
    assert!(
        sum(
            &after,
            "cm_http_requests_total",
            &[
                &route("/containers/{cuid}"),
                "method=\"GET\"",
                "status=\"200\""
            ]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &after,
            "cm_http_requests_total",
            &[&route("/containers/{cuid}/status"), "status=\"404\""]
        ),
        1.0
    );
    assert!(
        sum(
            &after,
            "cm_http_request_duration_seconds_count",
            &[&route("/containers")]
        ) >= 1.0
    );
    let passes =
        |m: &HashMap<String, f64>| sum(m, "cm_reconcile_passes_total", &["outcome=\"ok\""]);
    assert!(passes(&after) > passes(&before), "{after:#?}");
    assert!(sum(&after, "cm_reconcile_pass_duration_seconds_count", &[]) >= 1.0);
    let ups =
        |m: &HashMap<String, f64>| sum(m, "cm_compose_invocations_total", &["subcommand=\"up\""]);
    assert!(ups(&after) > ups(&before), "{after:#?}");
    assert!(
        sum(
            &after,
            "cm_compose_duration_seconds_count",
            &["subcommand=\"up\""]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &after,
            "cm_containers",
            &["desired_state=\"running\"", "status=\"running\""]
        ),
        1.0
    );
    assert!(
        sum(&after, "cm_docker_events_total", &[]) >= 1.0,
        "{after:#?}"
    );
    assert!(sum(&after, "cm_resync_duration_seconds_count", &[]) >= 1.0);
    for name in [
        "cm_reconcile_queue_depth",
        "cm_reconcile_queue_oldest_age_seconds",
        "cm_terminal_sessions_open",
        "cm_upload_bytes_total",
        "cm_download_bytes_total",
    ] {
        assert!(after.contains_key(name), "{name} missing: {after:#?}");
    }
}

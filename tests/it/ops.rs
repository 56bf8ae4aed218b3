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

#[tokio::test]
async fn metrics_move_after_a_create_and_start() {
    let s = Server::start().await;
    // Without credentials, like every route.
    let r = s.send(s.client.get(format!("{}/metrics", s.base))).await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");

    let before = scrape(&s).await;
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": ["sleep", "3600"]}))
        .await;
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

/// A container that fills 50 MB of its tmpfs `/dev/shm` (charged to its memory) and then
/// keeps one CPU busy.
const BURNER: &[&str] = &[
    "sh",
    "-c",
    "dd if=/dev/zero of=/dev/shm/fill bs=1M count=50 2>/dev/null; while :; do :; done",
];

#[tokio::test]
async fn stats_show_a_busy_container_and_refuse_a_stopped_one() {
    let s = Server::start().await;
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": BURNER}))
        .await;
    let path = format!("/containers/{cuid}/stats");
    // Each answer covers the last second; wait until the burner is in its loop.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let j = r.json;
        if j["cpu_percent"].as_f64().unwrap() > 50.0
            && j["memory"]["used_bytes"].as_u64().unwrap() > 45 * 1024 * 1024
        {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the burner never showed: {j}"
        );
    };
    assert_eq!(body["cuid"], cuid.as_str());
    assert!(body["memory"]["limit_bytes"].as_u64().unwrap() > 50 * 1024 * 1024);
    assert!(body["pids"]["current"].as_u64().unwrap() >= 1);
    assert!(body["online_cpus"].as_u64().unwrap() >= 1);
    for key in ["rx_bytes", "tx_bytes"] {
        assert!(body["network"][key].is_u64(), "{body}");
    }
    for key in ["read_bytes", "write_bytes"] {
        assert!(body["block_io"][key].is_u64(), "{body}");
    }

    // The stream: one event per second, each a whole sample.
    use futures_util::StreamExt;
    let resp = s
        .request(reqwest::Method::GET, &format!("{path}?stream=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream")));
    let mut chunks = resp.bytes_stream();
    let mut text = String::new();
    let started = std::time::Instant::now();
    while text.matches("event: stats").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), chunks.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "{text}");
    let first = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let sample: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(sample["cuid"], cuid.as_str());
    drop(chunks);

    let r = s.post(&format!("/containers/{cuid}/stop")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.get(&path)
        .await
        .assert_error(409, "state_error", "CONTAINER_NOT_RUNNING");
    s.get(&format!("{path}?stream=true")).await.assert_error(
        409,
        "state_error",
        "CONTAINER_NOT_RUNNING",
    );
    s.get("/containers/c00000000-0000-4000-8000-000000000000/stats")
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    s.get(&format!("{path}?stream=maybe")).await.assert_error(
        400,
        "validation_error",
        "INVALID_QUERY",
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let s = Server::start_with(Options {
        env: vec![("LOG_FORMAT".into(), "json".into())],
        ..Default::default()
    })
    .await;
    let r = s
        .send(
            s.request(reqwest::Method::GET, "/containers")
                .header("x-request-id", "log-probe-42"),
        )
        .await;
    assert_eq!(r.status, 200);
    let want = |l: &serde_json::Value| l["span"]["request_id"] == "log-probe-42";
    // The line is written after the response: wait for it rather than sleep.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let log = s.server_log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        if lines.iter().any(want) || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!lines.is_empty());
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "{key} missing in {l}");
        }
    }
    let line = lines.iter().find(|l| want(l)).expect("the request's line");
    assert_eq!(line["path"], "/containers");
    assert_eq!(line["status"], 200);

    // A bad value is refused at start-up, not silently ignored.
    let (status, stderr) = run_to_exit(&[
        ("APP_USER", USER),
        ("APP_PASS", PASS),
        ("LOG_FORMAT", "xml"),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");
}

#[tokio::test]
async fn backup_during_a_churn_of_writes_is_a_consistent_copy() {
    use sqlx::ConnectOptions;
    let s = Server::start().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let client = s.client.clone();
        let base = s.base.clone();
        tokio::spawn(async move {
            let mut writes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(format!("{base}/containers"))
                    .header("authorization", basic_auth(USER, PASS))
                    .json(&json!({"image": BUSYBOX, "env": {"N": writes.to_string()}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let c: serde_json::Value = r.json().await.unwrap();
                let cuid = c["cuid"].as_str().unwrap();
                let r = client
                    .patch(format!("{base}/containers/{cuid}"))
                    .header("authorization", basic_auth(USER, PASS))
                    .json(&json!({"tags": ["churn"], "env": {"M": "x"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                writes += 2;
            }
            writes
        })
    };
    // Back up while the writes go on (after some have landed).
    s.wait_for("/containers?limit=500", Duration::from_secs(30), |r| {
        r.json["containers"]
            .as_array()
            .is_some_and(|a| a.len() >= 5)
    })
    .await;
    let copy = s.dir.path().join("backup.db");
    let db = s.data_dir().join("state.db");
    run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_container-manager"))
            .arg("backup")
            .arg(&copy)
            .env_clear()
            .current_dir(s.dir.path())
            .env("DATABASE_URL", format!("sqlite://{}", db.display())),
    );
    // Let more writes land after the copy, then stop the churn.
    let after = s.count_containers().await;
    s.wait_for("/containers?limit=500", Duration::from_secs(30), |r| {
        r.json["containers"]
            .as_array()
            .is_some_and(|a| a.len() > after)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = churn.await.unwrap();
    assert!(writes >= 10, "{writes}");

    // A second backup to the same path is refused, not overwritten.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_container-manager"))
        .arg("backup")
        .arg(&copy)
        .env_clear()
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(!again.status.success());

    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&copy)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let (rows, untagged): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE tags NOT LIKE '%churn%') FROM containers",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(rows >= 5, "{rows}");
    // Each create is followed by its patch; a snapshot holds at most the one in between.
    assert!(untagged <= 1, "{untagged} of {rows}");
    assert!(
        (rows as usize) < s.count_containers().await,
        "the copy is of an earlier moment"
    );
    let id: String = sqlx::query_scalar("SELECT instance_id FROM instance")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(id, s.instance_id);
}

/// The API operations of the router: all its routes but the console's pages, which are not
/// in the OpenAPI document (README: the web console).
fn router_routes() -> Vec<(String, String)> {
    router_routes_all()
        .into_iter()
        .filter(|(path, _)| path != "/" && !path.starts_with("/ui"))
        .collect()
}

/// Every `.route("path", get(..).post(..))` of the router, read from its source: the one
/// place routes are declared, so a route added there and not documented fails here.
fn router_routes_all() -> Vec<(String, String)> {
    let src = include_str!("../../src/http/mod.rs");
    let mut out = Vec::new();
    for piece in src.split(".route(").skip(1) {
        let piece = piece.trim_start();
        let Some(rest) = piece.strip_prefix('"') else {
            continue;
        };
        let (path, rest) = rest.split_once('"').unwrap();
        // axum's catch-all `{*name}` is OpenAPI's `{name}`.
        let path = path.replace("{*", "{");
        let path = path.as_str();
        // The method routers up to the end of this `.route(...)` call.
        let mut depth = 1;
        let mut end = rest.len();
        for (i, ch) in rest.char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let methods = &rest[..end];
        for m in ["get", "post", "patch", "delete", "put"] {
            let called = methods.contains(&format!(" {m}("))
                || methods.contains(&format!("\n{m}("))
                || methods.contains(&format!(",{m}("))
                || methods.contains(&format!(".{m}("))
                || methods
                    .trim_start_matches([',', ' ', '\n'])
                    .starts_with(&format!("{m}("));
            if called {
                out.push((path.to_owned(), m.to_owned()));
            }
        }
    }
    out
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let s = Server::start().await;
    let r = s
        .send(s.client.get(format!("{}/openapi.json", s.base)))
        .await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = r.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let routes = router_routes();
    assert!(
        routes.len() >= 20,
        "the router's source was not read: {routes:?}"
    );
    for (path, method) in &routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let responses = op["responses"].as_object().unwrap();
        // The error body is documented wherever a 401 can come back: all but the two public
        // operations that never refuse (`/livez`, and sign-out, which always clears the cookie).
        let never_401 = path == "/livez" || (path == "/session" && method == "delete");
        if !never_401 {
            let unauthorized = &responses["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                unauthorized, "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
        }
        // Path parameters are declared.
        if path.contains("{cuid}") {
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "cuid" && p["in"] == "path"),
                "{method} {path}"
            );
        }
    }
    // And nothing documented that the router does not serve.
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, routes.len(), "{routes:?}");
    let kinds = &doc["components"]["schemas"]["ErrorKind"]["enum"];
    for k in [
        "validation_error",
        "not_found",
        "state_error",
        "compose_error",
    ] {
        assert!(kinds.as_array().unwrap().iter().any(|v| v == k), "{kinds}");
    }
    // Every code a client can receive is enumerated, as the body spells it.
    let codes: Vec<&str> = doc["components"]["schemas"]["ApiCode"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("ApiCode is not an enum: {}", doc["components"]["schemas"]))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = container_manager::error::ApiCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes, all);
    assert!(codes.contains(&"CONTAINER_NOT_FOUND"), "{codes:?}");
    assert_eq!(
        doc["components"]["securitySchemes"]["basic"]["scheme"],
        "basic"
    );
}

/// The written contract names every route the router serves, and no other: its route index
/// (`docs/API.md` §12) is compared with the router's source both ways.
#[test]
fn api_md_lists_every_route_of_the_router() {
    let doc = include_str!("../../docs/API.md");
    let index = doc
        .split("\n## ")
        .find(|s| s.contains("Every route\n"))
        .expect("docs/API.md has a section \"Every route\"");
    let documented: std::collections::BTreeSet<String> = index
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_owned())
        .collect();
    let served: std::collections::BTreeSet<String> = router_routes_all()
        .into_iter()
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(served.len() >= 30, "the router was not read: {served:?}");
    let missing: Vec<_> = served.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "not in docs/API.md: {missing:?}; in docs/API.md but not served: {stale:?}"
    );
}

/// schemathesis (from `scripts/setup-python-tools.sh`) against the live server and its own
/// document: a bounded number of examples per operation, no 5xx, no answer that breaks the
/// document. The ZIP upload gets real archives of generated content (the hook in
/// `tests/it/schemathesis/hooks.py`); the streams are read up to a few events. Left out:
/// the WebSocket route (not HTTP after the upgrade) and image pulls and removals (they reach
/// registries and the host's images; `images.rs` covers them).
#[tokio::test]
async fn fuzzed_against_its_own_document() {
    let st = std::env::var("CM_SCHEMATHESIS").unwrap_or_else(|_| "/opt/cm-venv/bin/st".to_owned());
    assert!(
        std::path::Path::new(&st).exists(),
        "{st} is missing: run scripts/setup-python-tools.sh"
    );
    let s = Server::start_with(Options {
        env: vec![
            // Fuzzed starts of images that do not exist must not hold a case for a minute.
            ("ACTION_TIMEOUT".into(), "3".into()),
            // Generated bodies must not trip the failed-login throttle of the fuzzer itself.
            ("AUTH_MAX_FAILURES".into(), "100000".into()),
        ],
        ..Default::default()
    })
    .await;
    // A real container for the operations on `{cuid}`: random cuids only ever reach the 404.
    let cuid = s
        .create_started(&json!({"image": BUSYBOX, "command": ["sleep", "3600"]}))
        .await;
    let config = s.dir.path().join("schemathesis.toml");
    // The streams (`/events`, `logs?follow=true`, `stats?stream=true`) only end when the
    // client leaves: each read stops after two events or a short timeout, on a few examples.
    // The data checks of the full run (`-c all`) are told which answers to a well-formed
    // request depend on state rather than on the request: 408 (ACTION_TIMEOUT is 3 s here),
    // 412 (any generation but the current one; a malformed `If-Match` is 412 too, as
    // docs/API.md says), 422 (a transition the current state forbids, an image not on the
    // host), for the listing 400 `INVALID_CURSOR` (a cursor is signed: no generated string
    // is one), and for the port list 400 `DUPLICATE_PORT` (a schema cannot say "unique by
    // host port and protocol"). Resource availability is not checked: the pinned `cuid` replaces the
    // links' own, so a scenario's "created" container is the pinned one another step deleted.
    std::fs::write(
        &config,
        format!(
            r#"max-stream-events = 2
[parameters]
"path.cuid" = "{cuid}"
[checks.positive_data_acceptance]
expected-statuses = [{positive}]
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429", "5xx"]
[checks.ensure_resource_availability]
enabled = false
[[operations]]
include-path-regex = "^/events$|/logs$|/stats$"
request-timeout = 2
generation.max-examples = 3
phases.coverage.enabled = false
[[operations]]
include-name = "GET /containers"
checks.positive_data_acceptance.expected-statuses = [{positive}, "400"]
[[operations]]
include-name = "PATCH /containers/{{cuid}}/ports"
checks.positive_data_acceptance.expected-statuses = [{positive}, "400"]
"#,
            positive = r#""2xx", "3xx", "401", "403", "404", "408", "409", "412", "422", "429", "5xx""#
        ),
    )
    .unwrap();
    // `CM_SCHEMATHESIS_FULL=1`: the full run of the issue (every check, more examples, a
    // longer limit), by hand; the suite's run keeps to what a build can afford.
    let full = std::env::var_os("CM_SCHEMATHESIS_FULL").is_some();
    let (checks, examples, limit) = if full {
        ("all", "100", 1800)
    } else {
        ("not_a_server_error,response_schema_conformance", "12", 240)
    };
    let report = s.dir.path().join("schemathesis.xml");
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", s.base))
        .args(["--auth", &format!("{USER}:{PASS}")])
        .args(["--max-examples", examples])
        .args(["--checks", checks])
        .args(["--exclude-checks", "ensure_resource_availability"])
        // Not fuzzed: the terminal (WebSocket), pulls and removals of images, and image
        // updates (they ask a registry, and the test host reaches none: `503`).
        .args(["--exclude-path-regex", "^/ws/|^/images/|/update$"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--request-timeout", "30", "--seed", "12"])
        // One worker: with two, hypothesis' shared AST cache races itself and the run fails
        // with "AST constructor recursion depth mismatch" (the tool's error, not the API's).
        .args(["--workers", "1"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&report)
        // Its caches (`.hypothesis`, `.schemathesis`) go to the test's directory, not the repo.
        .current_dir(s.dir.path())
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis"),
        )
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(limit), out)
        .await
        .expect("schemathesis finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    // It really ran operations (a broken document would test nothing and pass).
    assert!(stdout.contains("/containers"), "{stdout}");
}

/// The binary's command line, run as a user would: help, version, usage errors (exit 2 with
/// the usage on stderr), and `serve --help` lists every setting of the README's table.
#[test]
fn command_line_help_version_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_container-manager"))
            .args(args)
            .env_clear()
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Usage: container-manager [COMMAND]"), "{out}");
    assert!(out.contains("serve") && out.contains("backup"), "{out}");

    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("container-manager {}", env!("CARGO_PKG_VERSION"))
    );

    let (code, _, err) = run(&["backup"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Usage: container-manager backup <PATH>"),
        "{err}"
    );

    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    // Nothing was started or written on the way.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let (code, out, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0), "{out}");
    let readme = include_str!("../../README.md");
    let table = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let mut listed = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            assert!(
                out.contains(&format!("\n  {name}  ")),
                "{name} (README) is not in serve --help:\n{out}"
            );
            listed += 1;
        }
    }
    assert!(listed >= 30, "the README's table was not read: {listed}");
}

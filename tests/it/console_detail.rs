//! The console's detail page (issue 23), in a real headless Chromium against real Docker:
//! resource charts live from `/containers/{cuid}/stats?stream=true`, a CPU sparkline per
//! running row of the list (from `GET /stats?cuids=`), the Logs tab's timestamps, search,
//! download and "no output yet", and the detail page's words (wants/is, created, uptime,
//! local times, ports as links). Also `GET /stats` itself: several containers, one tenant's.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

/// A busybox container that keeps one CPU busy.
const CPU_LOOP: &[&str] = &["sh", "-c", "while :; do :; done"];

#[tokio::test]
async fn stats_of_several_containers_in_one_request_tenant_scoped() {
    let s = Server::start().await;
    s.put_tenant("team-a", &json!({})).await;
    let ours = s.running_sleeper().await;
    let stopped = s.create_sleeper().await;
    let theirs = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER, "tenant": "team-a"}))
        .await;
    let missing = "c123e4567-e89b-12d3-a456-426614174000";

    // The operator sees all: samples of the running ones, the rest named.
    let r = s
        .get(&format!(
            "/stats?cuids={ours},{stopped},{theirs},{missing},{ours}"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got: Vec<&str> = r.json["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cuid"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ours.as_str(), theirs.as_str()], "{}", r.text);
    for sample in r.json["stats"].as_array().unwrap() {
        assert!(sample["cpu_percent"].is_number(), "{sample}");
        assert!(sample["pids"]["current"].as_u64().unwrap() >= 1, "{sample}");
        assert!(
            sample["memory"]["used_bytes"].as_u64().unwrap() > 0,
            "{sample}"
        );
    }
    assert_eq!(r.json["not_running"], json!([stopped]), "{}", r.text);
    assert_eq!(r.json["not_found"], json!([missing]), "{}", r.text);

    // A tenant's token: the operator's containers do not exist for it.
    let team = s.token("read", Some("team-a")).await;
    let r = team
        .get(&format!("/stats?cuids={ours},{theirs},{stopped}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["stats"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.json["stats"][0]["cuid"], theirs.as_str());
    assert_eq!(r.json["not_running"], json!([]), "{}", r.text);
    assert_eq!(r.json["not_found"], json!([ours, stopped]), "{}", r.text);

    // Bad input is the contract's error body.
    for q in [
        "/stats".to_owned(),
        "/stats?cuids=".to_owned(),
        "/stats?cuids=nope".to_owned(),
        format!("/stats?cuids={ours}&stream=true"),
        format!(
            "/stats?cuids={}",
            (0..51)
                .map(|i| format!("c123e4567-e89b-12d3-a456-4266141740{i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        s.get(&q)
            .await
            .assert_error(400, "validation_error", "INVALID_QUERY");
    }
}

/// The `[data-now]` text of a chart.
async fn chart_now(b: &Browser, key: &str) -> String {
    b.js(
        "return document.querySelector(`[data-now=\"${arguments[0]}\"]`).textContent;",
        json!([key]),
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test]
async fn charts_sparklines_words_and_port_links() {
    let s = Server::start().await;
    let port = free_port();
    let busy = s
        .create_started(&json!({
            "image": BUSYBOX, "name": "busy-one", "command": CPU_LOOP,
            "resources": {"memory": "64m", "pids": 64},
            "ports": [{"host": port, "container": 8080}],
        }))
        .await;
    let idle = s
        .create(&json!({"image": BUSYBOX, "name": "idle-one", "command": SLEEPER}))
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;

    // The list: a CPU sparkline in the running row, a dash in the stopped one.
    let spark = b
        .wait_js(
            "sparkline of the running row",
            T,
            "const td = document.querySelector(`#list-body tr[data-cuid=\"${arguments[0]}\"] td[data-spark]`); \
             const p = td && td.querySelector('svg polyline'); \
             return p && p.getAttribute('points') && td.getAttribute('aria-label');"
                .replace("arguments[0]", &format!("'{busy}'"))
                .as_str(),
        )
        .await;
    let label = spark.as_str().unwrap();
    let figure: f64 = label
        .strip_prefix("CPU ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{label}"));
    // A busy loop uses a CPU (a share of it on a machine busy with builds).
    assert!(figure > 5.0, "{label}");
    let idle_cell = b
        .js(
            "const td = document.querySelector(`#list-body tr[data-cuid=\"${arguments[0]}\"] td[data-spark]`); \
             return [td.textContent, td.querySelectorAll('svg').length];",
            json!([idle]),
        )
        .await;
    assert_eq!(idle_cell, json!(["—", 0]));
    b.screenshot("detail-sparkline").await;

    // The detail page: four charts, live, each with its figure in words.
    b.goto(&format!("{}/ui/#/c/{busy}/logs", s.base)).await;
    b.wait_js(
        "two samples",
        T,
        "return Number(document.getElementById('res-charts').dataset.samples || 0) >= 2;",
    )
    .await;
    let cpu = chart_now(&b, "cpu").await;
    let n: f64 = cpu
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{cpu}"));
    assert!(n > 5.0 && cpu.contains("% of one CPU"), "{cpu}");
    let mem = chart_now(&b, "memory").await;
    assert!(mem.contains(" of 64.0 MiB ("), "{mem}");
    let pids = chart_now(&b, "pids").await;
    assert!(pids.ends_with(" of 64"), "{pids}");
    let net = chart_now(&b, "network").await;
    assert!(net.starts_with("in ") && net.contains(", out "), "{net}");
    // The drawings are for the eye only; the words are in the figure's caption.
    let a11y = b
        .js(
            "return [...document.querySelectorAll('#res-charts figure')].map((f) => \
               [f.querySelector('svg').getAttribute('aria-hidden'), f.querySelector('figcaption').textContent.length > 5]);",
            json!([]),
        )
        .await;
    assert_eq!(
        a11y,
        json!([
            ["true", true],
            ["true", true],
            ["true", true],
            ["true", true]
        ])
    );
    // Live: more samples come, and the CPU line moves with them.
    let before = b
        .js(
            "return [Number(document.getElementById('res-charts').dataset.samples), \
               document.querySelector('[data-line=cpu]').getAttribute('points')];",
            json!([]),
        )
        .await;
    b.wait_js(
        "the charts move",
        T,
        &format!(
            "return Number(document.getElementById('res-charts').dataset.samples) >= {} && \
               document.querySelector('[data-line=cpu]').getAttribute('points') !== {};",
            before[0].as_u64().unwrap() + 2,
            before[1]
        ),
    )
    .await;
    b.js(
        "document.getElementById('resources').scrollIntoView();",
        json!([]),
    )
    .await;
    b.screenshot("detail-charts").await;

    // Words a user knows, the raw values on hover.
    let words = b
        .js(
            "const q = (s) => document.querySelector(s); \
             return [q('#desired [data-k=state]').textContent, q('#desired [data-k=state]').title, \
                     q('#observed [data-k=status]').textContent, q('#observed [data-k=status]').title, \
                     q('#observed [data-k=\"spec applied\"]').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        words,
        json!([
            "wants running",
            "desired_state: running",
            "is running",
            "status: running",
            "version 1 (up to date)"
        ])
    );
    // Created and updated in local time without milliseconds; the uptime ticks.
    let r = s.get(&format!("/containers/{busy}")).await;
    let times = b
        .js(
            "const q = (s) => document.querySelector(s); \
             return [q('#desired [data-k=created]').textContent, q('#desired [data-k=created]').title, \
                     new Date(arguments[0]).toLocaleString(), q('#observed [data-k=updated]').textContent];",
            json!([r.json["created_at"]]),
        )
        .await;
    assert_eq!(times[0], times[2], "{times}");
    assert_eq!(times[1], r.json["created_at"], "{times}");
    for t in [&times[0], &times[3]] {
        let t = t.as_str().unwrap();
        assert!(
            !t.contains('T') && !t.contains('Z'),
            "local, not RFC 3339: {t}"
        );
        let fraction = t.as_bytes().windows(4).any(|w| {
            w[0] == b':' && w[1].is_ascii_digit() && w[2].is_ascii_digit() && w[3] == b'.'
        });
        assert!(!fraction, "no fractions of a second: {t}");
    }
    let up = b
        .wait_js(
            "uptime",
            T,
            "const t = document.querySelector('#observed [data-k=uptime]').textContent; \
             return t.startsWith('up ') && t;",
        )
        .await;
    assert!(up.as_str().unwrap().contains(" (since "), "{up}");
    // Published ports are links to this host, opened in a new tab without an opener.
    let link = b
        .js(
            "const a = document.querySelector('#desired [data-k=ports] a'); \
             return [a.href, a.target, a.rel, a.textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        link,
        json!([
            format!("http://127.0.0.1:{port}/"),
            "_blank",
            "noopener",
            format!("{port} → 8080")
        ])
    );

    // Leaving the page ends the stream.
    b.goto(&format!("{}/ui/#/", s.base)).await;
    b.wait_list().await;
    assert_eq!(b.js("return charts.abort === null;", json!([])).await, true);

    // A stopped container: no figures, and the page says so.
    b.goto(&format!("{}/ui/#/c/{idle}/logs", s.base)).await;
    let said = b
        .wait_js(
            "not running",
            T,
            "const st = document.getElementById('res-status'); \
             return document.getElementById('res-charts').hidden && st.textContent;",
        )
        .await;
    assert_eq!(said, "Not running — no live figures.");
    let words = b
        .js(
            "return [document.querySelector('#desired [data-k=state]').textContent, \
                     document.querySelector('#observed [data-k=status]').textContent, \
                     document.querySelector('#observed [data-k=uptime]').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(
        words,
        json!([
            "wants nothing yet (never started)",
            "is created, never started",
            "not running"
        ])
    );

    // Started from its page: the figures come, live.
    b.click("[data-action=start]").await;
    b.wait_js(
        "started: figures",
        Duration::from_secs(60),
        "return Number(document.getElementById('res-charts').dataset.samples || 0) >= 1 && \
           !document.getElementById('res-charts').hidden && \
           document.getElementById('res-status').textContent === '';",
    )
    .await;

    // A running one stopped from its page: the charts give way to the same words.
    b.goto(&format!("{}/ui/#/c/{busy}/logs", s.base)).await;
    b.wait_js(
        "samples again",
        T,
        "return Number(document.getElementById('res-charts').dataset.samples || 0) >= 1;",
    )
    .await;
    b.click("[data-action=stop]").await;
    b.wait_js(
        "stopped: no figures",
        Duration::from_secs(60),
        "return document.getElementById('observed').dataset.status === 'stopped' && \
           document.getElementById('res-status').textContent === 'Not running — no live figures.' && \
           charts.abort === null;",
    )
    .await;
}

/// The visible text of the log output (hidden timestamps and lines left out).
async fn logs_shown(b: &Browser) -> String {
    b.js(
        "return document.getElementById('logs-out').innerText;",
        json!([]),
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test]
async fn logs_timestamps_search_download_and_no_output() {
    let s = Server::start().await;
    let talker = s
        .create_started(&json!({
            "image": BUSYBOX, "name": "talker",
            "command": ["sh", "-c", "echo alpha one; echo beta two; echo ALPHA three; exec sleep 3600"],
        }))
        .await;
    let quiet = s
        .create_started(&json!({"image": BUSYBOX, "name": "quiet", "command": SLEEPER}))
        .await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;

    // An empty log says so (and keeps saying it while it is followed).
    b.goto(&format!("{}/ui/#/c/{quiet}/logs", s.base)).await;
    let empty = b
        .wait_js(
            "no output yet",
            T,
            "const e = document.getElementById('logs-empty'); return !e.hidden && e.textContent;",
        )
        .await;
    assert_eq!(empty, "No output yet.");
    assert_eq!(logs_shown(&b).await, "");

    b.goto(&format!("{}/ui/#/c/{talker}/logs", s.base)).await;
    b.wait_js(
        "three lines",
        T,
        "return document.querySelectorAll('#logs-out .line').length === 3;",
    )
    .await;
    assert_eq!(
        b.js(
            "return document.getElementById('logs-empty').hidden;",
            json!([])
        )
        .await,
        true
    );
    // Timestamps off: only the output.
    assert_eq!(
        logs_shown(&b).await.trim_end(),
        "alpha one\nbeta two\nALPHA three"
    );
    // On: each line starts with its local time (the RFC 3339 one on hover).
    b.click("#logs-timestamps").await;
    let stamped = b
        .js(
            "return [...document.querySelectorAll('#logs-out .line')].map((l) => { \
               const ts = l.querySelector('.ts'); \
               return [l.innerText, new Date(ts.title).toLocaleString() + ' ', ts.title]; });",
            json!([]),
        )
        .await;
    for line in stamped.as_array().unwrap() {
        let (shown, local, raw) = (
            line[0].as_str().unwrap(),
            line[1].as_str().unwrap(),
            line[2].as_str().unwrap(),
        );
        assert!(shown.starts_with(local), "{line}");
        assert!(chrono::DateTime::parse_from_rfc3339(raw).is_ok(), "{line}");
    }
    assert!(logs_shown(&b).await.contains("alpha one"));

    // Search narrows the lines shown (any case) and marks the text.
    b.click("#logs-timestamps").await;
    b.type_into("#logs-search", "alpha").await;
    let found = b
        .wait_js(
            "search",
            T,
            "const shown = document.getElementById('logs-out').innerText.trim(); \
             return shown.split('\\n').length === 2 && [shown, \
               [...document.querySelectorAll('#logs-out mark')].map((m) => m.textContent), \
               document.getElementById('logs-count').textContent];",
        )
        .await;
    assert_eq!(
        found,
        json!([
            "alpha one\nALPHA three",
            ["alpha", "ALPHA"],
            "2 of 3 lines match"
        ])
    );
    b.js(
        "document.getElementById('panel-logs').scrollIntoView();",
        json!([]),
    )
    .await;
    b.screenshot("detail-logs-search").await;
    b.clear("#logs-search").await;
    b.js(
        "document.getElementById('logs-search').dispatchEvent(new Event('input'));",
        json!([]),
    )
    .await;
    assert_eq!(
        logs_shown(&b).await.trim_end(),
        "alpha one\nbeta two\nALPHA three"
    );

    // Download: the whole log as a file, with timestamps when they are shown. The link the
    // console clicks is caught (headless Chromium would save it out of reach) and fetched.
    b.click("#logs-timestamps").await;
    b.js(
        "window.__dl = null; \
         HTMLAnchorElement.prototype.click = function () { window.__dl = [this.href, this.download]; };",
        json!([]),
    )
    .await;
    b.click("#logs-download").await;
    let dl = b.wait_js("download link", T, "return window.__dl;").await;
    assert_eq!(dl[1], "talker-logs.txt", "{dl}");
    let got = b
        .js_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0]).then((r) => r.text()).then(done, (e) => done(String(e)));",
            json!([dl[0]]),
        )
        .await;
    let got = got.as_str().unwrap();
    let api = s
        .get(&format!(
            "/containers/{talker}/logs?tail=all&timestamps=true"
        ))
        .await;
    assert_eq!(got, api.text);
    let bare: Vec<&str> = got
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|(ts, rest)| {
                    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{l}");
                    rest
                })
                .unwrap()
        })
        .collect();
    assert_eq!(bare, vec!["alpha one", "beta two", "ALPHA three"]);
}

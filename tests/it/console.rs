//! The web console's server side: sign-in sessions, the `GET /events` change feed, the
//! `/files` directory listing, the embedded pages; then the console itself in a real
//! headless Chromium (see [`crate::browser`]).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::*;

// ---------------------------------------------------------------- sessions

/// `GET /session` as the console asks it.
async fn session_of(s: &Server, signed: &Signed) -> Resp {
    s.send(with_session(s, reqwest::Method::GET, "/session", signed))
        .await
}

/// Sessions are written through to the store (issue 23): a restart, even `kill -9`, signs
/// nobody out; a signed-out session and one whose API token was revoked stay ended.
#[tokio::test]
async fn sessions_survive_a_restart_and_a_sign_out_survives_it_too() {
    let mut s = Server::start().await;
    let kept = console_sign_in(&s).await;
    let ended = console_sign_in(&s).await;
    let token = s.token("read", None).await.token;
    let (r, by_token) = sign_in_with_token(&s, &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let by_token = by_token.unwrap();
    assert_eq!(session_of(&s, &by_token).await.status, 200);
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::DELETE,
            "/session",
            &ended,
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let id = s.get("/tokens").await.json["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.delete(&format!("/tokens/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);

    s.kill9();
    s.start_again().await;
    let r = session_of(&s, &kept).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"], USER);
    session_of(&s, &ended)
        .await
        .assert_error(401, "auth_error", "NO_SESSION");
    assert_eq!(session_of(&s, &by_token).await.status, 401);
    // The file holds digests, never a token or a key.
    let db = std::fs::read(s.data_dir().join("state.db")).unwrap();
    let wal = std::fs::read(s.data_dir().join("state.db-wal")).unwrap_or_default();
    let value = kept.cookie.split_once('=').unwrap().1;
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(value) && !text.contains(&kept.key));
    }
}

#[tokio::test]
async fn session_sign_in_cookie_and_sign_out() {
    let s = Server::start().await;

    // Wrong password: the API's error body, no cookie, no Basic challenge.
    let (r, cookie) = sign_in(&s, USER, "wrong").await;
    r.assert_error(401, "auth_error", "INVALID_CREDENTIALS");
    assert!(cookie.is_none());
    assert!(r.header("www-authenticate").is_none());

    // Bad body.
    let r = s
        .send(s.client.post(format!("{}/session", s.base)).body("nope"))
        .await;
    r.assert_error(400, "validation_error", "INVALID_SIGN_IN");

    // Right password: a short-lived HttpOnly, SameSite=Strict cookie for the whole site.
    let (r, cookie) = sign_in(&s, USER, PASS).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"], USER);
    let set = r.header("set-cookie").unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    assert!(!set.contains(PASS));
    let cookie = cookie.unwrap();
    assert!(
        cookie.cookie.starts_with("cm_session=") && cookie.cookie.len() > 40,
        "{}",
        cookie.cookie
    );
    assert_eq!(cookie.key.len(), 64, "the session key: {}", r.text);
    assert!(!set.contains(&cookie.key), "the key is never in the cookie");

    // The cookie with its key authenticates API routes; no cookie and no Basic does not.
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::GET,
            "/containers",
            &cookie,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .send(with_session(&s, reqwest::Method::GET, "/session", &cookie))
        .await;
    assert_eq!(r.json["user"], USER, "{}", r.text);
    let r = s.send(s.client.get(format!("{}/containers", s.base))).await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");
    // Writes with the cookie work from the same origin and are refused from another.
    let r = s
        .send(
            with_session(&s, reqwest::Method::POST, "/containers", &cookie)
                .header("origin", &s.base)
                .json(&json!({"image": BUSYBOX})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .send(
            with_session(&s, reqwest::Method::POST, "/containers", &cookie)
                .header("origin", "http://evil.example")
                .json(&json!({"image": BUSYBOX})),
        )
        .await;
    r.assert_error(403, "forbidden", "ORIGIN_NOT_ALLOWED");
    // Sign-in itself is a write: another site cannot sign a browser in.
    let r = s
        .send(
            s.client
                .post(format!("{}/session", s.base))
                .header("origin", "http://evil.example")
                .json(&json!({"user": USER, "password": PASS})),
        )
        .await;
    r.assert_error(403, "forbidden", "ORIGIN_NOT_ALLOWED");
    assert!(r.header("set-cookie").is_none());

    // A form post signs in too.
    let r = s
        .send(
            s.client
                .post(format!("{}/session", s.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("user={USER}&password={}", url_encode(PASS))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Sign-out revokes the token server-side: the same cookie no longer works, and the
    // answer carries no Basic challenge (a browser would prompt over the console).
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::DELETE,
            "/session",
            &cookie,
        ))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::GET,
            "/containers",
            &cookie,
        ))
        .await;
    r.assert_error(401, "auth_error", "SESSION_EXPIRED");
    assert!(r.header("www-authenticate").is_none());
    let r = s
        .send(with_session(&s, reqwest::Method::GET, "/session", &cookie))
        .await;
    r.assert_error(401, "auth_error", "NO_SESSION");

    // Basic auth is unchanged for API clients.
    assert_eq!(s.get("/containers").await.status, 200);
}

#[tokio::test]
async fn console_pages_are_public_and_root_redirects() {
    let s = Server::start().await;
    let nofollow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = nofollow.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = s.send(s.client.get(format!("{}/ui/", s.base))).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    assert!(r.text.contains("app.js"));
    for asset in [
        "app.js",
        "style.css",
        "vendor/xterm.js",
        "vendor/addon-fit.js",
        "vendor/xterm.css",
    ] {
        let r = s.send(s.client.get(format!("{}/ui/{asset}", s.base))).await;
        assert_eq!(r.status, 200, "{asset}");
    }
    let r = s.send(s.client.get(format!("{}/ui/secret", s.base))).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn failed_sign_ins_count_against_the_throttle() {
    let s = Server::start_with(Options {
        env: vec![("AUTH_MAX_FAILURES".into(), "3".into())],
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let (r, _) = sign_in(&s, USER, "guess").await;
        r.assert_error(401, "auth_error", "INVALID_CREDENTIALS");
    }
    // Blocked: the right password is not even looked at, and Basic is blocked as well.
    let (r, cookie) = sign_in(&s, USER, PASS).await;
    r.assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
    assert!(cookie.is_none());
    s.get("/healthz")
        .await
        .assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
}

// ---------------------------------------------------------------- events

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// Reads `GET /events` as it arrives.
struct EventStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl EventStream {
    async fn open(s: &Server, last_id: Option<&str>) -> EventStream {
        let mut rb = s.request(reqwest::Method::GET, "/events");
        if let Some(id) = last_id {
            rb = rb.header("last-event-id", id);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        EventStream {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), within `limit`.
    async fn next(&mut self, limit: Duration) -> Sse {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                ev.data = serde_json::from_str(&data).unwrap();
                return ev;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no event in time")
                .expect("stream ended")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one satisfies `pred`; returns all of them, that one last.
    async fn until(&mut self, limit: Duration, pred: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self.next(left).await;
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn events_in_order_resumable_and_reset_past_the_window() {
    let s = Server::start_with(Options {
        env: vec![("EVENTS_WINDOW".into(), "4".into())],
        ..Default::default()
    })
    .await;
    let mut live = EventStream::open(&s, None).await;

    // Create with a hostile env value: it comes back verbatim (JSON text, never markup).
    let cuid = s
        .create(&json!({"image": BUSYBOX, "tags": ["a"], "env": {"X": "<script>x</script>"}}))
        .await;
    let created = live.until(T, |e| e.data["cuid"] == cuid.as_str()).await;
    let first = created.last().unwrap().clone();
    assert_eq!(first.event, "container");
    assert_eq!(first.data["generation"], 1);
    assert_eq!(first.data["status"], first.data["container"]["status"]);
    assert_eq!(first.data["container"]["env"]["X"], "<script>x</script>");

    // An edit: a later id, the new generation.
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["b"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let edited = live.until(T, |e| e.data["generation"] == 2).await;
    let second = edited.last().unwrap().clone();
    assert!(second.id > first.id);
    assert_eq!(second.data["container"]["tags"], json!(["b"]));

    // Deletion: a deleted event.
    let r = s.delete(&format!("/containers/{cuid}")).await;
    assert!(r.status < 300, "{}", r.text);
    let gone = live.until(T, |e| e.data["deleted"] == true).await;
    let third = gone.last().unwrap().clone();
    assert_eq!(third.data["cuid"], cuid.as_str());
    assert!(third.id > second.id);
    // Ids only grow along the stream.
    let ids: Vec<u64> = created
        .iter()
        .chain(&edited)
        .chain(&gone)
        .filter_map(|e| e.id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // Resuming after the first event replays what followed, in the same order.
    let after = (first.id.unwrap()).to_string();
    let mut resumed = EventStream::open(&s, Some(&after)).await;
    let replay = resumed.until(T, |e| e.id == third.id).await;
    let replay_ids: Vec<u64> = replay.iter().filter_map(|e| e.id).collect();
    let want: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|i| *i > first.id.unwrap())
        .collect();
    assert_eq!(replay_ids, want);
    assert!(replay.iter().all(|e| e.event == "container"));

    // Past the window (4 kept): make more changes, then resume from the first id.
    let r = s.post_json("/containers", &json!({"image": BUSYBOX})).await;
    let other = r.json["cuid"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let r = s
            .patch_json(
                &format!("/containers/{other}"),
                &json!({"tags": [format!("t{i}")]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    live.until(T, |e| e.data["generation"] == 6).await;
    let mut stale = EventStream::open(&s, Some(&after)).await;
    let ev = stale.next(T).await;
    assert_eq!(ev.event, "reset", "{ev:?}");
    // An id this server never gave (e.g. from before a restart) is a reset too.
    let mut future = EventStream::open(&s, Some("999999")).await;
    assert_eq!(future.next(T).await.event, "reset");
    // Events are behind auth.
    let r = s.send(s.client.get(format!("{}/events", s.base))).await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");
}

// ---------------------------------------------------------------- files listing

fn names(r: &Resp) -> Vec<String> {
    r.json["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn files_listing_is_confined_and_verbatim() {
    let s = Server::start().await;
    let cuid = s.create(&json!({"image": BUSYBOX})).await;
    let m = s.mount(&cuid);
    std::fs::create_dir_all(m.join("sub/deeper")).unwrap();
    std::fs::write(m.join("a.txt"), b"hello").unwrap();
    std::fs::set_permissions(m.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(m.join("<img src=x onerror=alert(1)>"), b"x").unwrap();
    std::fs::write(m.join("sub/inner.txt"), b"in").unwrap();
    std::os::unix::fs::symlink("/etc", m.join("etc")).unwrap();
    std::os::unix::fs::symlink("sub", m.join("inside")).unwrap();

    let base = format!("/containers/{cuid}/files");
    let r = s.get(&base).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["path"], "/app");
    let all = names(&r);
    for want in [
        "<img src=x onerror=alert(1)>",
        "a.txt",
        "etc",
        "inside",
        "sub",
    ] {
        assert!(all.contains(&want.to_owned()), "{want} not in {all:?}");
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "byte order");
    let entry = |name: &str| -> Value {
        r.json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    let a = entry("a.txt");
    assert_eq!(a["type"], "file");
    assert_eq!(a["size"], 5);
    assert_eq!(a["mode"], "0640");
    assert!(a["mtime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entry("sub")["type"], "dir");
    // A symlink is a link with its target text, never what it points at.
    let etc = entry("etc");
    assert_eq!(etc["type"], "symlink");
    assert_eq!(etc["target"], "/etc");
    assert_eq!(entry("inside")["target"], "sub");

    // Into a directory, in any of the API's path spellings.
    for p in ["sub", "/app/sub", "/sub/"] {
        let r = s.get(&format!("{base}?path={}", url_encode(p))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["path"], "/app/sub");
        assert_eq!(names(&r), ["deeper", "inner.txt"]);
    }
    // A symlink inside /app is followed like download does; out of /app it is refused.
    let r = s.get(&format!("{base}?path=inside")).await;
    assert_eq!(names(&r), ["deeper", "inner.txt"]);
    s.get(&format!("{base}?path=etc"))
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.get(&format!("{base}?path=..%2Fetc")).await.assert_error(
        400,
        "validation_error",
        "UNSAFE_PATH",
    );
    s.get(&format!("{base}?path=a.txt")).await.assert_error(
        400,
        "validation_error",
        "NOT_A_DIRECTORY",
    );
    s.get(&format!("{base}?path=missing"))
        .await
        .assert_error(404, "not_found", "FILE_NOT_FOUND");

    // Bounded pages, the cursor being the last name.
    let r = s.get(&format!("{base}?limit=2")).await;
    assert_eq!(names(&r), all[..2]);
    let cursor = r.json["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, all[1]);
    let r = s
        .get(&format!("{base}?limit=2&cursor={}", url_encode(&cursor)))
        .await;
    assert_eq!(names(&r), all[2..4]);
    let r = s.get(&format!("{base}?limit=1000")).await;
    assert!(r.json["next_cursor"].is_null());
    for bad in ["0", "1001", "x"] {
        s.get(&format!("{base}?limit={bad}")).await.assert_error(
            400,
            "validation_error",
            "INVALID_LIMIT",
        );
    }
    // Unknown container.
    s.get("/containers/c0000000000000000000000000/files")
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
}

// ---------------------------------------------------------------- in a real browser

/// The text xterm shows (its whole buffer), read through the page's terminal object.
const SCREEN: &str = "const b = window.__term && window.__term.buffer.active; if (!b) return ''; \
    const out = []; for (let i = 0; i < b.length; i++) { out.push(b.getLine(i).translateToString(true)); } \
    return out.join('\\n');";

async fn screen(b: &crate::browser::Browser) -> String {
    b.js(SCREEN, json!([]))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Types a line into the terminal (xterm's input element) and presses Enter.
async fn term_line(b: &crate::browser::Browser, line: &str) {
    use crate::browser::keys;
    b.type_into(".xterm-helper-textarea", &format!("{line}{}", keys::ENTER))
        .await;
}

/// Waits until the screen holds a line for which `pred` is true; returns that line.
async fn until_screen_line(
    b: &crate::browser::Browser,
    what: &str,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = screen(b).await;
        if let Some(l) = text.lines().find(|l| pred(l.trim())) {
            return l.trim().to_owned();
        }
        if Instant::now() > deadline {
            let shot = b.screenshot("failure-terminal").await;
            panic!(
                "{what}: not on screen within {limit:?}; screen:\n{text}\n({})",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `stty size` through a marker, so the answer is told apart from the command's echo.
async fn stty_size(b: &crate::browser::Browser, marker: &str) -> (u32, u32) {
    term_line(b, &format!("echo {marker}=$(stty size | tr ' ' x)")).await;
    let want = format!("{marker}=");
    let line = until_screen_line(b, "stty size", T, |l| {
        l.starts_with(&want) && l[want.len()..].contains('x')
    })
    .await;
    let (rows, cols) = line[want.len()..].split_once('x').unwrap();
    (rows.trim().parse().unwrap(), cols.trim().parse().unwrap())
}

/// A file name that would run script if it were ever put in the page as markup.
const HOSTILE: &str = "<img src=x onerror=window.__pwned=1>";

#[tokio::test]
async fn console_in_a_real_browser() {
    use crate::browser::{keys, Browser};
    let mut s = Server::start().await;
    let b = Browser::start().await;
    let long = Duration::from_secs(60);

    // `/` leads to the sign-in page. A wrong password: an error, and no data on the page.
    b.goto(&format!("{}/", s.base)).await;
    b.wait_js(
        "sign-in page",
        T,
        "return !document.getElementById('page-signin').hidden && location.pathname === '/ui/';",
    )
    .await;
    b.type_into("#signin-user", USER).await;
    b.type_into("#signin-password", "not-the-password").await;
    b.click("#signin-submit").await;
    let err = b
        .wait_js(
            "sign-in error",
            T,
            "return document.getElementById('signin-error').textContent;",
        )
        .await;
    assert!(err.as_str().unwrap().contains("Wrong"), "{err}");
    let shown = b
        .js(
            "return [document.getElementById('page-list').hidden, document.getElementById('list-body').children.length, document.cookie];",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([true, 0, ""]), "no data without signing in");
    b.screenshot("signin").await;

    // The right password: the container list.
    b.clear("#signin-password").await;
    b.type_into("#signin-password", PASS).await;
    b.click("#signin-submit").await;
    b.wait_js(
        "list page",
        T,
        "return !document.getElementById('page-list').hidden;",
    )
    .await;
    // The password is nowhere in the page or its URL; the cookie is HttpOnly (invisible).
    let leak = b
        .js("return document.documentElement.outerHTML.includes(arguments[0]) || location.href.includes(arguments[0]) || document.cookie.length > 0;", json!([PASS]))
        .await;
    assert_eq!(leak, false);

    // Create from the form.
    b.goto(&format!("{}/ui/#/new", s.base)).await;
    b.wait_js(
        "form page",
        T,
        "return !document.getElementById('page-form').hidden;",
    )
    .await;
    b.type_into("#f-image", BUSYBOX).await;
    b.type_into("#f-command", "sh -c \"echo hi; exec sleep 3600\"")
        .await;
    // "Start it now" is on by default; this one is made stopped.
    b.click("#f-start").await;
    // The API's own validation message lands next to its field, in plain words (the code
    // only as data-code), and the field is marked invalid for assistive technology.
    b.type_into("#f-tags", "console, bad tag!").await;
    b.click("#form-submit").await;
    let e = b
        .wait_js(
            "tag error",
            T,
            "const e = document.getElementById('e-tags'); return e.textContent && [e.textContent, e.dataset.code, document.getElementById('f-tags').getAttribute('aria-invalid'), document.getElementById('f-tags').getAttribute('aria-describedby')];",
        )
        .await;
    let text = e[0].as_str().unwrap();
    assert!(!text.contains("INVALID_TAG") && !text.contains('{'), "{e}");
    assert_eq!(e[1], "INVALID_TAG", "{e}");
    assert_eq!(e[2], "true", "{e}");
    assert_eq!(e[3], "e-tags", "{e}");
    // Progress text ("Creating and starting…") has its own element, not the error colour.
    let colours = b
        .js(
            "const c = (id) => getComputedStyle(document.getElementById(id)).color; return [c('form-status'), c('form-error')];",
            json!([]),
        )
        .await;
    assert_ne!(colours[0], colours[1], "{colours}");
    b.clear("#f-tags").await;
    b.type_into("#f-tags", "console, web").await;
    b.screenshot("create").await;
    b.click("#form-submit").await;
    let cuid = b
        .wait_js(
            "detail page",
            long,
            "const m = /^#\\/c\\/([^/]+)$/.exec(location.hash); return m && m[1];",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(
        r.json["command"],
        json!(["sh", "-c", "echo hi; exec sleep 3600"])
    );
    assert_eq!(r.json["tags"], json!(["console", "web"]));
    // Created, not started: Start applies, Pause and Unpause do not (the API says 422).
    let enabled = "return Object.fromEntries([...document.querySelectorAll('[data-action]')].map((b) => [b.dataset.action, !b.disabled]));";
    let states = b
        .wait_js(
            "created container's buttons",
            T,
            &format!("return document.getElementById('observed').dataset.status === 'created' && (() => {{ {enabled} }})();"),
        )
        .await;
    assert_eq!(
        [&states["start"], &states["pause"], &states["unpause"]],
        [true, false, false],
        "{states}"
    );

    // The list, live: the container is started from elsewhere (the API) and the row turns
    // `running` by itself; a marker on the page proves nothing reloaded it.
    b.goto(&format!("{}/ui/#/", s.base)).await;
    b.wait_js(
        "row",
        T,
        &format!("return document.querySelector('tr[data-cuid=\"{cuid}\"]');"),
    )
    .await;
    b.js("window.__marker = 'same page';", json!([])).await;
    let r = s
        .post(&format!("/containers/{cuid}/start?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    b.wait_js(
        "row running",
        long,
        &format!("return window.__marker === 'same page' && document.querySelector('tr[data-cuid=\"{cuid}\"] [data-status=\"running\"]');"),
    )
    .await;
    b.screenshot("list").await;

    // The server goes away: a banner says so (the live indicator in words too); when it is
    // back the stream reconnects by itself, the banner goes and the same page is still live.
    s.kill9();
    b.wait_js(
        "connection-lost banner",
        T,
        "const e = document.getElementById('conn-banner'); return !e.hidden && e.getAttribute('role') === 'status' && e.textContent.includes('reconnecting') && document.getElementById('live-text').textContent === 'offline';",
    )
    .await;
    b.screenshot("connection-lost").await;
    s.start_again_same_address().await;
    b.wait_js(
        "reconnected",
        long,
        &format!("return document.getElementById('conn-banner').hidden && document.getElementById('live-text').textContent === 'live' && window.__marker === 'same page' && document.querySelector('tr[data-cuid=\"{cuid}\"]');"),
    )
    .await;

    // Edit while someone else changes it: If-Match makes that a 412; what was typed stays,
    // the page says what they changed.
    b.goto(&format!("{}/ui/#/c/{cuid}/edit", s.base)).await;
    b.wait_js(
        "edit form",
        T,
        "return document.getElementById('f-tags').value === 'console, web';",
    )
    .await;
    b.clear("#f-tags").await;
    b.type_into("#f-tags", "mine").await;
    let r = s
        .patch_json(&format!("/containers/{cuid}"), &json!({"tags": ["theirs"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    b.click("#form-submit").await;
    b.wait_js(
        "conflict shown",
        T,
        "return document.getElementById('form-error').textContent.includes('Someone else changed') && document.getElementById('f-tags').value === 'mine';",
    )
    .await;
    b.screenshot("edit-conflict").await;
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(
        r.json["tags"],
        json!(["theirs"]),
        "the stale edit changed nothing"
    );

    // The terminal: a shell, arithmetic, Ctrl-C, resize.
    b.goto(&format!("{}/ui/#/c/{cuid}/terminal", s.base)).await;
    b.wait_js(
        "terminal connected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
    term_line(&b, "echo $((6*7))").await;
    until_screen_line(&b, "42", T, |l| l == "42").await;
    term_line(&b, "sleep 100").await;
    until_screen_line(&b, "sleep echoed", T, |l| l.ends_with("sleep 100")).await;
    b.type_into(
        ".xterm-helper-textarea",
        &format!("{}c{}", keys::CONTROL, keys::NULL),
    )
    .await;
    // The prompt is back: a new command runs at once (sleep 100 would hold it 100 s).
    term_line(&b, "echo back-$((1+1))").await;
    until_screen_line(&b, "prompt after Ctrl-C", T, |l| l == "back-2").await;
    // A font in which underscores show (one the browser has), and no keyboard trap: Escape
    // then Tab leaves the terminal.
    let font = b
        .js_async(
            "const done = arguments[arguments.length - 1]; const f = window.__term.options.fontFamily;
             document.fonts.load('14px \"DejaVu Sans Mono\"').then(() => done([f, document.fonts.check('14px \"DejaVu Sans Mono\"')]), (e) => done([f, String(e)]));",
            json!([]),
        )
        .await;
    assert!(
        font[0]
            .as_str()
            .unwrap()
            .starts_with("\"DejaVu Sans Mono\""),
        "{font}"
    );
    assert_eq!(font[1], true, "DejaVu Sans Mono is installed: {font}");
    b.type_into(
        ".xterm-helper-textarea",
        &format!("{}{}", keys::ESCAPE, keys::TAB),
    )
    .await;
    b.wait_js(
        "focus left the terminal",
        T,
        "return !document.getElementById('term').contains(document.activeElement);",
    )
    .await;
    b.screenshot("terminal").await;

    // Running: Pause applies, Start and Unpause do not; paused, only Unpause (and Stop,
    // Restart, Delete) does.
    let states = b.js(enabled, json!([])).await;
    assert_eq!(
        [&states["start"], &states["pause"], &states["unpause"]],
        [false, true, false],
        "{states}"
    );
    b.click("[data-action=pause]").await;
    let states = b
        .wait_js(
            "paused buttons",
            long,
            &format!("return document.getElementById('observed').dataset.status === 'paused' && !document.querySelector('[data-action=unpause]').disabled && (() => {{ {enabled} }})();"),
        )
        .await;
    assert_eq!(
        [
            &states["start"],
            &states["pause"],
            &states["unpause"],
            &states["stop"]
        ],
        [false, false, true, true],
        "{states}"
    );
    b.click("[data-action=unpause]").await;
    b.wait_js(
        "running again",
        long,
        "return document.getElementById('observed').dataset.status === 'running' && !document.querySelector('[data-action=pause]').disabled;",
    )
    .await;
    let before = stty_size(&b, "S1").await;
    b.set_window(760, 560).await;
    let deadline = Instant::now() + T;
    let mut n = 2;
    loop {
        let after = stty_size(&b, &format!("S{n}")).await;
        if after != before {
            assert!(
                after.1 < before.1,
                "narrower window, fewer columns: {before:?} → {after:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "stty size stayed {before:?}");
        n += 1;
    }
    b.set_window(1280, 900).await;

    // Files: upload a ZIP by the file input, see it listed, download it and compare.
    let content = b"hello from the console <script>\n".to_vec();
    let zip_path = s.dir.path().join("upload.zip");
    std::fs::write(
        &zip_path,
        zip_of(&[("hello.txt", &content), (HOSTILE, b"x")]),
    )
    .unwrap();
    b.goto(&format!("{}/ui/#/c/{cuid}/files", s.base)).await;
    b.wait_js(
        "files panel",
        T,
        "return !document.getElementById('panel-files').hidden;",
    )
    .await;
    b.type_into("#upload-input", zip_path.to_str().unwrap())
        .await;
    b.wait_js(
        "hello.txt listed",
        T,
        "return document.querySelector('#files-body tr[data-name=\"hello.txt\"]');",
    )
    .await;
    b.screenshot("files").await;
    // A hostile name is shown as text: no element made from it, no script run.
    let hostile = b
        .js(
            "const row = [...document.querySelectorAll('#files-body tr')].find(r => r.dataset.name === arguments[0]);
             return [row ? row.cells[0].textContent : null, document.querySelectorAll('#files-body img').length, window.__pwned === undefined];",
            json!([HOSTILE]),
        )
        .await;
    assert_eq!(hostile, json!([HOSTILE, 0, true]));
    // The cookie alone (what a page on another port of the host could replay) is refused;
    // the console's way, a ticket bought with the key in this origin's storage, works.
    let got = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             (async () => {
               const bare = await fetch(arguments[0]);
               if (bare.status !== 401) return done('cookie alone: ' + bare.status);
               const key = localStorage.getItem('cm_key');
               const t = await (await fetch('/session/ticket', { method: 'POST', headers: { 'x-session-key': key } })).json();
               const r = await fetch(arguments[0] + '&ticket=' + t.ticket);
               done(Array.from(new Uint8Array(await r.arrayBuffer())));
             })().catch(e => done(String(e)));",
            json!([format!("/containers/{cuid}/download?path=hello.txt")]),
        )
        .await;
    let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap_or_else(|_| panic!("{got}"));
    assert_eq!(got, content);

    // Logs of the main process.
    b.goto(&format!("{}/ui/#/c/{cuid}/logs", s.base)).await;
    b.wait_js(
        "logs",
        T,
        "return document.getElementById('logs-out').textContent.includes('hi');",
    )
    .await;
    b.screenshot("detail").await;

    // Stop, then delete (with its confirmation), from the page.
    b.click("[data-action=stop]").await;
    b.wait_js(
        "stopped",
        long,
        "return document.getElementById('observed').dataset.status === 'stopped';",
    )
    .await;
    // The terminal of a stopped container says what to do, not the raw error frame.
    b.goto(&format!("{}/ui/#/c/{cuid}/terminal", s.base)).await;
    b.wait_js(
        "terminal on a stopped container",
        T,
        "return document.getElementById('term-status').textContent === 'Start the container to open a shell.';",
    )
    .await;
    let text = screen(&b).await;
    assert!(
        text.contains("Start the container to open a shell") && !text.contains('{'),
        "{text}"
    );
    // A stopped container: the in-page dialog asks, no name to type.
    b.click("[data-action=delete]").await;
    b.wait_js(
        "delete dialog",
        T,
        "return document.getElementById('delete-dialog').open;",
    )
    .await;
    b.click("#delete-ok").await;
    b.wait_js(
        "back to the list",
        long,
        "return location.hash === '#/' && !document.getElementById('page-list').hidden;",
    )
    .await;
    s.wait_for(&format!("/containers/{cuid}"), long, |r| r.status == 404)
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    // Its page now says it was deleted; every action is off (no raw 404).
    b.goto(&format!("{}/ui/#/c/{cuid}", s.base)).await;
    let gone = b
        .wait_js(
            "deleted page",
            T,
            "const g = document.getElementById('detail-gone'); return !g.hidden && [g.textContent, [...document.querySelectorAll('[data-action]')].every((b) => b.disabled), document.getElementById('action-error').textContent];",
        )
        .await;
    assert!(gone[0].as_str().unwrap().contains("deleted"), "{gone}");
    assert_eq!(gone[1], true, "{gone}");
    assert_eq!(gone[2], "", "{gone}");

    // A crash loop is visible: a warning badge with the exit code and the restart count.
    let crash = s
        .create(
            &json!({"image": BUSYBOX, "name": "crashy", "restart": "always",
            "command": ["sh", "-c", "echo boom; exit 3"]}),
        )
        .await;
    let r = s
        .post(&format!("/containers/{crash}/start?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    s.wait_for(&format!("/containers/{crash}/status"), long, |r| {
        r.json["restart_count"].as_i64().unwrap_or(0) > 0
    })
    .await;
    b.goto(&format!("{}/ui/#/c/{crash}", s.base)).await;
    let badge = b
        .wait_js(
            "crash-loop badge",
            long,
            // The representation shows the exit at once; the restart count follows from
            // `/status`.
            "const e = document.querySelector('#detail-health [data-crash]'); \
             return e && e.textContent.includes('restarts') && e.textContent;",
        )
        .await;
    let badge = badge.as_str().unwrap();
    assert!(
        badge.starts_with("crash loop (exit 3, restarts ") && !badge.contains("restarts 0"),
        "{badge}"
    );
    b.screenshot("crash-loop").await;

    // A narrow window: the page reflows instead of scrolling sideways.
    b.set_window(480, 800).await;
    b.wait_js(
        "no sideways scroll",
        T,
        "return window.innerWidth < 600 && document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await;
    b.screenshot("narrow").await;

    // A favicon; then the session ends elsewhere (signed out by its key): the next
    // background request (the detail page's `/status` read after an event) gets a 401 and
    // the sign-in page shows by itself.
    let icon = b
        .js(
            "const l = document.querySelector('link[rel=icon]'); return l && l.href.slice(0, 19);",
            json!([]),
        )
        .await;
    assert_eq!(icon, "data:image/svg+xml,", "{icon}");
    b.goto(&format!("{}/ui/#/c/{crash}", s.base)).await;
    b.wait_js(
        "detail, live",
        T,
        "return !document.getElementById('page-detail').hidden && document.getElementById('observed').dataset.restarts && document.getElementById('live-text').textContent === 'live';",
    )
    .await;
    let r = b
        .js_async(
            "const done = arguments[arguments.length - 1];
             fetch('/session', { method: 'DELETE', headers: { 'x-session-key': localStorage.getItem('cm_key') } }).then((r) => done(r.status), (e) => done(String(e)));",
            json!([]),
        )
        .await;
    assert_eq!(r, 204, "{r}");
    let r = s
        .post(&format!("/containers/{crash}/stop?wait=false"))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    b.wait_js(
        "sign-in page after a background 401",
        long,
        "return !document.getElementById('page-signin').hidden && document.getElementById('signin-error').textContent.includes('sign in again');",
    )
    .await;
}

/// The console's terminal authenticates with the session cookie and a ticket (a browser
/// cannot send the key header on a WebSocket); a revoked session cannot open one.
#[tokio::test]
async fn websocket_accepts_the_session_cookie() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let (_, cookie) = sign_in(&s, USER, PASS).await;
    let cookie = cookie.unwrap();
    let server = &s;
    let ticket = |signed: &Signed| {
        let rb = with_session(server, reqwest::Method::POST, "/session/ticket", signed);
        async move {
            let r = server.send(rb).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["ticket"].as_str().unwrap().to_owned()
        }
    };
    let request = |cookie: &Signed, ticket: &str| {
        let mut req = format!("ws://{}/ws/{cuid}?main=false&ticket={ticket}", s.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("cookie", cookie.cookie.parse().unwrap());
        req.headers_mut().insert("origin", s.base.parse().unwrap());
        req
    };
    let t = ticket(&cookie).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(request(&cookie, &t))
        .await
        .expect("the cookie opens a terminal");
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(
        json!({"type": "stdin", "data": "echo cookie-$((3*5))\n", "encoding": "utf8"}).to_string(),
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let mut out = String::new();
    while !out.contains("cookie-15") {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no output; got {out:?}"))
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            out.push_str(f["data"].as_str().unwrap_or_default());
        }
    }
    let _ = ws.close(None).await;

    // Signed out: the same cookie no longer opens one.
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::DELETE,
            "/session",
            &cookie,
        ))
        .await;
    assert_eq!(r.status, 204);
    match tokio_tungstenite::connect_async(request(&cookie, &t)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!(
            "a revoked cookie opened a terminal: {:?}",
            other.map(|_| ())
        ),
    }
}

/// Finding 1 of the security review, in a real browser: an operator signed in to the console
/// opens a container's app published on another port of the same host. A real second
/// listener plays that app: the browser hands it the console's cookie (cookies are scoped by
/// host, not port), but the cookie replayed opens neither the API nor a terminal, and the
/// page cannot read the session key (storage is scoped by origin, port included).
#[tokio::test]
async fn a_container_app_on_another_port_gets_the_cookie_and_nothing_with_it() {
    use crate::browser::Browser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;

    // The "container's app": records the Cookie header of every request it gets.
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = app.local_addr().unwrap().port();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = app.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                for line in head.lines() {
                    if let Some(v) = line
                        .strip_prefix("cookie:")
                        .or_else(|| line.strip_prefix("Cookie:"))
                    {
                        let _ = seen_tx.send(v.trim().to_owned());
                    }
                }
                let page = "<!doctype html><title>app</title><p>a container's app</p>";
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                            page.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });

    // Sign in through the console.
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;

    // The operator opens the container's app.
    b.goto(&format!("http://127.0.0.1:{app_port}/")).await;
    let cookie = tokio::time::timeout(T, async {
        loop {
            let c = seen_rx.recv().await.expect("listener alive");
            if c.contains("cm_session=") {
                return c;
            }
        }
    })
    .await
    .expect("the browser sent the console's cookie to the other port");
    let leaked = b
        .js(
            "return [localStorage.getItem('cm_key'), location.port];",
            json!([]),
        )
        .await;
    assert_eq!(
        leaked,
        json!([null, app_port.to_string()]),
        "the app's page read the key"
    );

    // The app replays the cookie: nothing.
    let r = s
        .send(
            s.client
                .get(format!("{}/containers", s.base))
                .header("cookie", &cookie),
        )
        .await;
    r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
    let r = s
        .send(
            s.client
                .post(format!("{}/containers", s.base))
                .header("cookie", &cookie)
                .json(&json!({"image": BUSYBOX})),
        )
        .await;
    r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws/{cuid}?main=false", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!(
            "the replayed cookie opened a terminal: {:?}",
            other.map(|_| ())
        ),
    }

    // The app's page plants cookies of the same name for the console's paths (cookies ignore
    // the port; longer paths are sent first): the console must not be signed out by them.
    b.js(
        "for (const p of ['/containers', '/events', '/session', '/ws']) document.cookie = 'cm_session=junk; path=' + p; return document.cookie;",
        json!([]),
    )
    .await;

    // Back on the console's origin, the console still works with its key.
    b.goto(&format!("{}/ui/#/c/{cuid}/terminal", s.base)).await;
    b.wait_js(
        "terminal connected",
        T,
        "return document.getElementById('term-status').textContent === 'connected';",
    )
    .await;
}

/// A script of the page that fails to load (as Chromium's ERR_NETWORK_CHANGED does to every
/// request in flight when Docker adds a container's interface) is loaded again before the
/// console starts; one that never loads is named on the page, and the console does not
/// start half-loaded (it used to: "sparkCell is not defined" on the list, a detail page that
/// never opened because route() threw).
#[tokio::test]
async fn console_names_a_script_that_does_not_load_instead_of_starting_without_it() {
    let s = Server::start().await;
    let b = crate::browser::Browser::start().await;
    b.block_urls(&["*/ui/charts.js"]).await;
    b.goto(&format!("{}/ui/", s.base)).await;
    let said = b
        .wait_js(
            "the missing script named",
            Duration::from_secs(30),
            "const t = document.getElementById('flash').textContent; \
             return t.includes('could not load') && t;",
        )
        .await;
    assert!(said.as_str().unwrap().contains("/ui/charts.js"), "{said}");
    assert!(!said.as_str().unwrap().contains("list.js"), "{said}");
    let shown = b
        .js(
            "return ['signin', 'list', 'detail'].filter((p) => !document.getElementById('page-' + p).hidden);",
            json!([]),
        )
        .await;
    assert_eq!(shown, json!([]), "no page of a half-loaded console");

    // Once it loads again, a reload gives the whole console.
    b.block_urls(&[]).await;
    b.refresh().await;
    b.wait_js(
        "sign-in page",
        Duration::from_secs(30),
        "return !document.getElementById('page-signin').hidden && typeof sparkCell === 'function';",
    )
    .await;
}

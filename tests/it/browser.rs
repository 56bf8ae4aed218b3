//! A small W3C WebDriver client over reqwest: starts `chromedriver` on a free port, opens a
//! headless Chromium session, and offers the few commands the console's tests use
//! (navigate, find, type, click, run script, screenshot, window size, alerts).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::free_port;

/// How long a console page may take to show.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// axe-core's browser build, for [`Browser::assert_accessible`].
const AXE: &str = include_str!("../vendor/axe.min.js");

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// Special keys of WebDriver's key encoding.
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const CONTROL: &str = "\u{E009}";
    pub const TAB: &str = "\u{E004}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const SHIFT: &str = "\u{E008}";
    pub const ARROW_DOWN: &str = "\u{E015}";
    pub const END: &str = "\u{E010}";
    pub const HOME: &str = "\u{E011}";
    pub const LEFT: &str = "\u{E012}";
    pub const RIGHT: &str = "\u{E014}";
    /// Releases held modifier keys.
    pub const NULL: &str = "\u{E000}";
}

pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup-browser.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("cm-chromium-")
            .tempdir()
            .unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// A WebDriver command; `Err` says what the driver answered when it failed.
    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut rb = self.http.request(method, url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("webdriver request");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("webdriver {path}: {status} {v}"))
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// A Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Makes every request whose URL matches one of `patterns` (`*` wildcards) fail, as a
    /// network error, until called again (with none to let everything through).
    pub async fn block_urls(&self, patterns: &[&str]) {
        self.cdp("Network.enable", json!({})).await;
        self.cdp("Network.setBlockedURLs", json!({ "urls": patterns }))
            .await;
    }

    /// Reloads the page (the browser's Reload).
    pub async fn refresh(&self) {
        self.cmd(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await;
    }

    /// Goes back one entry in the tab's history (the browser's Back).
    pub async fn back(&self) {
        self.cmd(reqwest::Method::POST, "/back", Some(json!({})))
            .await;
    }

    /// The element `css` names (it must exist).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Types `text` into the element `css` names, retrying while the driver finds it not
    /// interactable yet (a page in a window just opened may not be laid out) up to `limit`.
    pub async fn type_into_when_ready(&self, css: &str, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let id = self.find(css).await;
            let typed = self
                .try_cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/value"),
                    Some(json!({ "text": text })),
                )
                .await;
            match typed {
                Ok(_) => return,
                Err(e) if e.contains("not interactable") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Opens a new browser window (a second page of the same profile: same cookies and
    /// storage) and returns its handle; the current window stays the one commands go to.
    pub async fn new_window(&self) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({"type": "window"})),
            )
            .await;
        v["handle"].as_str().expect("a window handle").to_owned()
    }

    /// The handle of the window commands go to.
    pub async fn window(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/window", None).await;
        v.as_str().expect("a window handle").to_owned()
    }

    /// Sends the next commands to the window `handle`.
    pub async fn switch_to(&self, handle: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    /// The id of the focused element ("" when it has none).
    pub async fn focused_id(&self) -> String {
        self.js(
            "return (document.activeElement && document.activeElement.id) || '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn clear(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks the element `css` names. The console re-renders lists as data arrives, so the
    /// element found may be replaced before the click lands: then it is found again.
    pub async fn click(&self, css: &str) {
        for attempt in 1.. {
            let id = self.find(css).await;
            let clicked = self
                .try_cmd(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await;
            match clicked {
                Ok(_) => return,
                Err(e) if e.contains("stale element reference") && attempt < 5 => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs an asynchronous script: it calls `arguments[arguments.length - 1]` with its value.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Polls `script` until it returns something truthy (not null/false/""), up to `limit`.
    pub async fn wait_js(&self, what: &str, limit: Duration, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.js(script, json!([])).await;
            let truthy = !(v.is_null() || v == false || v == "");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("failure").await;
                panic!(
                    "{what}: not within {limit:?} (screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the console at `base` and waits for its sign-in page.
    pub async fn open_sign_in(&self, base: &str) {
        self.goto(&format!("{base}/ui/")).await;
        self.wait_js(
            "sign-in page",
            PAGE_WAIT,
            "return !document.getElementById('page-signin').hidden;",
        )
        .await;
    }

    /// Waits for the console's list page.
    pub async fn wait_list(&self) {
        self.wait_js(
            "list page",
            PAGE_WAIT,
            "return !document.getElementById('page-list').hidden;",
        )
        .await;
    }

    /// Signs in to the console at `base` as a person would, and waits for the list.
    pub async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.open_sign_in(base).await;
        self.type_into("#signin-user", user).await;
        self.type_into("#signin-password", password).await;
        self.click("#signin-submit").await;
        self.wait_list().await;
    }

    /// Signs in to the console at `base` with an API token, and waits for the list.
    pub async fn sign_in_with_token(&self, base: &str, token: &str) {
        self.open_sign_in(base).await;
        self.click("#signin-mode").await;
        self.type_into("#signin-token", token).await;
        self.click("#signin-submit").await;
        self.wait_list().await;
    }

    /// Presses keys as a person would, on whatever has the focus (WebDriver actions: no
    /// element is named, nothing is clicked). Each character of `text` is one key press;
    /// [`keys`] holds the special ones.
    pub async fn press(&self, text: &str) {
        let mut actions = Vec::new();
        for ch in text.chars() {
            actions.push(json!({"type": "keyDown", "value": ch.to_string()}));
            actions.push(json!({"type": "keyUp", "value": ch.to_string()}));
        }
        self.key_actions(actions).await;
    }

    /// Shift+Tab.
    pub async fn press_shift_tab(&self) {
        self.key_actions(vec![
            json!({"type": "keyDown", "value": keys::SHIFT}),
            json!({"type": "keyDown", "value": keys::TAB}),
            json!({"type": "keyUp", "value": keys::TAB}),
            json!({"type": "keyUp", "value": keys::SHIFT}),
        ])
        .await;
    }

    async fn key_actions(&self, actions: Vec<Value>) {
        self.cmd(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
        self.cmd(reqwest::Method::DELETE, "/actions", None).await;
    }

    /// Presses Tab until `css` matches the focused element (at most `max` times); panics
    /// if it never does. Returns how many presses it took.
    pub async fn tab_to(&self, css: &str, max: usize) -> usize {
        for n in 0..=max {
            let here = self
                .js(
                    "return !!document.activeElement && document.activeElement.matches(arguments[0]);",
                    json!([css]),
                )
                .await;
            if here == true {
                return n;
            }
            self.press(keys::TAB).await;
        }
        let shot = self.screenshot("failure").await;
        panic!(
            "{css} not reached with {max} Tab presses (screenshot {})",
            shot.display()
        );
    }

    pub async fn accept_alert(&self) {
        self.cmd(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await;
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs axe-core (tests/vendor/axe.min.js, vendored by scripts/vendor-web.sh; the server
    /// never serves it) on the page as it is now and panics with a readable list of every
    /// serious or critical violation: rule, impact, what it means, and each element (CSS
    /// target) with axe's summary of how to fix it. `page` names the page in the message.
    ///
    /// axe is injected through WebDriver's execute-script, which runs in the page's context
    /// without being a `<script>` the console's CSP (`script-src 'self'`) would refuse.
    pub async fn assert_accessible(&self, page: &str) {
        let found = self
            .js(
                "return typeof window.axe === 'object' && typeof window.axe.run === 'function';",
                json!([]),
            )
            .await;
        if found != true {
            self.js(AXE, json!([])).await;
        }
        let v = self
            .js_async(
                "const done = arguments[arguments.length - 1];
                 window.axe.run(document, { resultTypes: ['violations'] }).then((r) => done(
                   r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({
                     id: v.id, impact: v.impact, help: v.help,
                     nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
                   }))), (e) => done({ error: String(e) }));",
                json!([]),
            )
            .await;
        assert!(v.get("error").is_none(), "axe on {page}: {v}");
        let violations = v.as_array().cloned().unwrap_or_default();
        if violations.is_empty() {
            return;
        }
        let shot = self
            .screenshot(&format!(
                "axe-{}",
                page.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            ))
            .await;
        let mut text = format!(
            "axe-core: {} serious or critical violation(s) on the {page} page (screenshot {}):\n",
            violations.len(),
            shot.display()
        );
        for v in &violations {
            text.push_str(&format!(
                "- {} ({}): {}\n",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or("?")
            ));
            for n in v["nodes"].as_array().into_iter().flatten() {
                let summary = n["summary"]
                    .as_str()
                    .unwrap_or("")
                    .replace('\n', "\n      ");
                text.push_str(&format!(
                    "    at {}\n      {summary}\n",
                    n["target"].as_str().unwrap_or("?")
                ));
            }
        }
        panic!("{text}");
    }

    /// A PNG of the viewport under `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium with the session (best effort, blocking: Drop cannot await), then
        // the driver this test started.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let _ = Command::new("curl")
                .args(["-s", "-m", "5", "-X", "DELETE", &url])
                .stdout(Stdio::null())
                .status();
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

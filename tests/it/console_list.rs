//! The console's list at scale and on small screens (issue 23), in a real headless Chromium:
//! 500 containers paged and searched; filters and page in the URL (reload and Back keep them);
//! the "no containers yet" and "no match — clear filters" states; bulk start, stop and delete
//! of a selection in real Docker; cells that never break inside a word, long errors cut short
//! with the full text on demand; stacked cards at phone width with nothing overflowing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::common::*;

const T: Duration = Duration::from_secs(30);

/// The names shown on the list's current page, in order.
const NAMES: &str =
    "return [...document.querySelectorAll('#list-body tr .col-name a')].map((a) => a.textContent);";

async fn names(b: &Browser) -> Vec<String> {
    let v = b.js(NAMES, json!([])).await;
    serde_json::from_value(v).unwrap()
}

/// Waits until the pager says `text` ("500 containers · page 3 of 20").
async fn wait_count(b: &Browser, text: &str) {
    b.wait_js(
        &format!("page count {text:?}"),
        T,
        &format!(
            "return document.getElementById('page-count').textContent === {};",
            json!(text)
        ),
    )
    .await;
}

async fn hash(b: &Browser) -> String {
    b.js("return location.hash;", json!([]))
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn console_list_pages_500_containers_and_keeps_filters_in_the_url() {
    let s = Server::start().await;
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;

    // Nothing yet: "no containers yet" (with Create), not the no-match state.
    let empty = b
        .wait_js(
            "no containers yet",
            T,
            "const e = document.getElementById('list-empty'); \
             return !e.hidden && document.getElementById('list-nomatch').hidden && e.textContent;",
        )
        .await;
    assert!(
        empty.as_str().unwrap().contains("No containers yet"),
        "{empty}"
    );

    // 500 containers, created through the API (not started), 16 requests at a time.
    let bodies: Vec<Value> = (0..500)
        .map(|i| {
            let name = if i < 250 {
                format!("alpha-{i:03}")
            } else {
                format!("beta-{i:03}")
            };
            let tag = if i % 2 == 0 { "even" } else { "odd" };
            json!({"image": BUSYBOX, "command": SLEEPER, "name": name, "tags": [tag]})
        })
        .collect();
    let t0 = Instant::now();
    let cuids = s.create_many(bodies, 16).await;
    eprintln!("500 containers created in {:?}", t0.elapsed());
    assert_eq!(cuids.len(), 500);

    // The list follows the creation events; every page of 25, each in the URL.
    wait_count(&b, "500 containers · page 1 of 20").await;
    assert_eq!(hash(&b).await, "#/");
    let mut seen = names(&b).await;
    assert_eq!(seen.len(), 25);
    for page in 2..=20 {
        b.click("#page-next").await;
        wait_count(&b, &format!("500 containers · page {page} of 20")).await;
        let h = hash(&b).await;
        assert!(h.starts_with(&format!("#/?page={page}&cursor=")), "{h}");
        let n = names(&b).await;
        assert_eq!(n.len(), 25, "page {page}");
        seen.extend(n);
    }
    assert_eq!(
        b.js(
            "return document.getElementById('page-next').disabled;",
            json!([])
        )
        .await,
        true
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 500, "every container once over the pages");

    // Back to the first page, then page 3; Previous goes one page back.
    b.click("#page-first").await;
    wait_count(&b, "500 containers · page 1 of 20").await;
    assert_eq!(hash(&b).await, "#/");
    b.click("#page-next").await;
    wait_count(&b, "500 containers · page 2 of 20").await;
    let page2 = names(&b).await;
    b.click("#page-next").await;
    wait_count(&b, "500 containers · page 3 of 20").await;
    b.click("#page-prev").await;
    wait_count(&b, "500 containers · page 2 of 20").await;
    assert_eq!(names(&b).await, page2);
    b.click("#page-next").await;
    wait_count(&b, "500 containers · page 3 of 20").await;
    let page3 = names(&b).await;

    // A search (a name prefix): 100 matches over 4 pages, in the URL.
    b.type_into("#filter-q", "beta-3").await;
    b.click("#filter-form button[type=submit]").await;
    wait_count(&b, "100 containers match · page 1 of 4").await;
    assert_eq!(hash(&b).await, "#/?q=beta-3");
    b.click("#page-next").await;
    wait_count(&b, "100 containers match · page 2 of 4").await;
    let found = names(&b).await;
    assert_eq!(found.len(), 25);
    assert!(found.iter().all(|n| n.starts_with("beta-3")), "{found:?}");

    // Reload: the same search, the same page, the same rows.
    b.refresh().await;
    b.wait_list().await;
    wait_count(&b, "100 containers match · page 2 of 4").await;
    assert_eq!(names(&b).await, found);
    assert_eq!(
        b.js(
            "return document.getElementById('filter-q').value;",
            json!([])
        )
        .await,
        "beta-3"
    );

    // Back: the search's first page, then the unfiltered page 3 (and an empty search box).
    b.back().await;
    wait_count(&b, "100 containers match · page 1 of 4").await;
    b.back().await;
    wait_count(&b, "500 containers · page 3 of 20").await;
    assert_eq!(names(&b).await, page3);
    assert_eq!(
        b.js(
            "return document.getElementById('filter-q').value;",
            json!([])
        )
        .await,
        ""
    );

    // A link with filters opens filtered: the odd ones of beta-4…
    b.goto(&format!("{}/ui/#/?q=beta-4&tag=odd", s.base)).await;
    wait_count(&b, "50 containers match · page 1 of 2").await;
    assert_eq!(
        b.js(
            "return [document.getElementById('filter-q').value, document.getElementById('filter-tag').value];",
            json!([])
        )
        .await,
        json!(["beta-4", "odd"])
    );

    // A live change that takes a shown container out of the search takes it off the page.
    let first = b
        .js(
            "return document.querySelector('#list-body tr').dataset.cuid;",
            json!([]),
        )
        .await;
    let first = first.as_str().unwrap();
    let r = s
        .patch_json(&format!("/containers/{first}"), &json!({"name": "gamma-1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_count(&b, "49 containers match · page 1 of 2").await;
    b.wait_js(
        "renamed row gone",
        T,
        &format!("return !document.querySelector('tr[data-cuid=\"{first}\"]');"),
    )
    .await;

    // No match: its own state, naming the filters, and a button that clears them.
    b.clear("#filter-tag").await;
    b.type_into("#filter-tag", "nope").await;
    b.click("#filter-form button[type=submit]").await;
    let none = b
        .wait_js(
            "no match",
            T,
            "const e = document.getElementById('list-nomatch'); \
             return !e.hidden && document.getElementById('list-empty').hidden && e.textContent;",
        )
        .await;
    let none = none.as_str().unwrap();
    assert!(
        none.contains("No container matches the search \"beta-4\" and tag nope"),
        "{none}"
    );
    assert!(none.contains("Clear filters"), "{none}");
    b.click("#clear-filters").await;
    wait_count(&b, "500 containers · page 1 of 20").await;
    assert_eq!(hash(&b).await, "#/");
    assert_eq!(
        b.js(
            "return [document.getElementById('filter-q').value, document.getElementById('filter-tag').value, document.getElementById('list-nomatch').hidden];",
            json!([])
        )
        .await,
        json!(["", "", true])
    );
    // The containers were never started: dropping the server removes its data directory and
    // whatever Docker objects carry its instance label.
}

/// A row's select box.
fn select(cuid: &str) -> String {
    format!("tr[data-cuid='{cuid}'] .row-select")
}

async fn wait_result(b: &Browser, starts: &str) -> String {
    b.wait_js(
        &format!("bulk result {starts:?}"),
        Duration::from_secs(120),
        &format!(
            "const t = document.getElementById('bulk-result').textContent; \
             return t.startsWith({}) && document.getElementById('bulk-progress').textContent === '' && t;",
            json!(starts)
        ),
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test]
async fn console_list_bulk_stop_start_and_delete_a_selection() {
    let s = Server::start().await;
    let mk = |name: &str| json!({"image": BUSYBOX, "command": SLEEPER, "name": name});
    let a = s.create_started(&mk("bulk-a")).await;
    let c2 = s.create_started(&mk("bulk-b")).await;
    let c3 = s.create_started(&mk("bulk-c")).await;
    let p = s.create_started(&mk("bulk-p")).await;
    let r = s.post(&format!("/containers/{p}/pause")).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.wait_js(
        "four rows",
        T,
        &format!(
            "return document.querySelectorAll('#list-body tr').length === 4 && \
             document.querySelector('tr[data-cuid=\"{p}\"] [data-status=\"paused\"]');"
        ),
    )
    .await;
    // Nothing selected: no action applies.
    assert_eq!(
        b.js(
            "return ['bulk-start', 'bulk-stop', 'bulk-delete'].map((id) => document.getElementById(id).disabled).concat([document.getElementById('bulk-count').textContent]);",
            json!([])
        )
        .await,
        json!([true, true, true, "None selected"])
    );
    // Every box has a label a screen reader reads.
    let labels = b
        .js(
            "return [...document.querySelectorAll('#list-table input[type=checkbox]')].map((i) => i.labels.length && i.labels[0].textContent);",
            json!([]),
        )
        .await;
    assert_eq!(labels[0], "Select all containers on this page", "{labels}");
    assert!(
        labels
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .all(|l| l.as_str().is_some_and(|t| t.starts_with("Select bulk-"))),
        "{labels}"
    );

    // Stop three: progress while it runs, then the result.
    for cuid in [&a, &c2, &c3] {
        b.click(&select(cuid)).await;
    }
    b.wait_js(
        "three selected",
        T,
        "return document.getElementById('bulk-count').textContent === '3 selected' && \
         !document.getElementById('bulk-stop').disabled;",
    )
    .await;
    b.js(
        "window.__progress = []; const e = document.getElementById('bulk-progress'); \
         new MutationObserver(() => window.__progress.push(e.textContent)) \
           .observe(e, {childList: true, characterData: true, subtree: true});",
        json!([]),
    )
    .await;
    b.click("#bulk-stop").await;
    let result = wait_result(&b, "Stopped").await;
    assert_eq!(result, "Stopped 3 of 3.");
    let progress = b.js("return window.__progress;", json!([])).await;
    assert!(
        progress.as_array().unwrap().iter().any(|t| {
            t.as_str()
                .is_some_and(|t| t.starts_with("Stopping ") && t.ends_with(" of 3…"))
        }),
        "{progress}"
    );
    for cuid in [&a, &c2, &c3] {
        let r = s.get(&format!("/containers/{cuid}")).await;
        assert_eq!(r.json["desired_state"], "stopped", "{}", r.text);
        assert_ne!(r.json["status"], "running", "{}", r.text);
    }
    b.wait_js(
        "selection cleared",
        T,
        "return document.getElementById('bulk-count').textContent === 'None selected';",
    )
    .await;

    // Select all on the page and start: the paused one cannot start; it is named, with why,
    // and stays selected.
    b.click("#select-page").await;
    b.wait_js(
        "four selected",
        T,
        "return document.getElementById('bulk-count').textContent === '4 selected' && \
         [...document.querySelectorAll('#list-body .row-select')].every((x) => x.checked);",
    )
    .await;
    b.click("#bulk-start").await;
    let result = wait_result(&b, "Started").await;
    assert!(result.starts_with("Started 3 of 4. 1 failed:"), "{result}");
    let failed = b
        .js(
            &format!(
                "const li = document.querySelector('#bulk-result li[data-cuid=\"{p}\"]'); \
                 return li && [li.textContent, li.dataset.code];"
            ),
            json!([]),
        )
        .await;
    assert!(
        failed[0].as_str().unwrap().starts_with("bulk-p: "),
        "{failed}"
    );
    assert!(
        !failed[0].as_str().unwrap().contains('{'),
        "plain words: {failed}"
    );
    assert_eq!(failed[1], "INVALID_TRANSITION", "{failed}");
    b.wait_js(
        "the failed one stays selected",
        T,
        &format!(
            "return document.getElementById('bulk-count').textContent === '1 selected' && \
             document.querySelector(\"tr[data-cuid='{p}'] .row-select\").checked;"
        ),
    )
    .await;
    for cuid in [&a, &c2, &c3] {
        let r = s.get(&format!("/containers/{cuid}")).await;
        assert_eq!(r.json["status"], "running", "{}", r.text);
    }
    b.screenshot("list-bulk").await;

    // Delete two: asked in the page, naming how many and which; Cancel deletes nothing.
    b.click(&select(&p)).await;
    b.click(&select(&a)).await;
    b.click(&select(&c2)).await;
    b.wait_js(
        "two selected",
        T,
        "return document.getElementById('bulk-count').textContent === '2 selected';",
    )
    .await;
    b.click("#bulk-delete").await;
    let ask = b
        .wait_js(
            "delete prompt",
            T,
            "const d = document.getElementById('bulk-confirm'); \
             return !d.hidden && [document.getElementById('bulk-confirm-title').textContent, \
               [...d.querySelectorAll('li')].map((li) => li.textContent), document.activeElement.id];",
        )
        .await;
    assert_eq!(
        ask,
        json!([
            "Delete 2 containers?",
            ["bulk-a", "bulk-b"],
            "bulk-confirm-no"
        ])
    );
    b.click("#bulk-confirm-no").await;
    b.wait_js(
        "prompt closed",
        T,
        "return document.getElementById('bulk-confirm').hidden;",
    )
    .await;
    assert_eq!(s.get(&format!("/containers/{a}")).await.status, 200);
    // Both run: Delete waits for the typed word, as for one running container.
    b.click("#bulk-delete").await;
    let gate = b
        .wait_js(
            "typed confirmation asked",
            T,
            "const r = document.getElementById('bulk-confirm-running');              return !r.hidden && [r.textContent.trim(), document.getElementById('bulk-confirm-yes').disabled];",
        )
        .await;
    assert_eq!(
        gate,
        json!(["2 of them are running: type delete to confirm.", true])
    );
    b.type_into("#bulk-confirm-typed", "delete").await;
    b.wait_js(
        "Delete enabled",
        T,
        "return !document.getElementById('bulk-confirm-yes').disabled;",
    )
    .await;
    b.click("#bulk-confirm-yes").await;
    let result = wait_result(&b, "Deleted").await;
    assert_eq!(result, "Deleted 2 of 2.");
    for cuid in [&a, &c2] {
        assert_eq!(s.get(&format!("/containers/{cuid}")).await.status, 404);
    }
    b.wait_js(
        "two rows left",
        T,
        "return document.querySelectorAll('#list-body tr').length === 2;",
    )
    .await;

    for cuid in [&c3, &p] {
        assert_eq!(s.delete(&format!("/containers/{cuid}")).await.status, 200);
    }
}

/// Whether the select column, the toolbar and each of its buttons show (rendered at all).
const BULK_SHOWN: &str = "const shown = (e) => e.getClientRects().length > 0; \
     return [shown(document.getElementById('select-page')), \
       shown(document.querySelector('#list-body .row-select')), \
       ...['bulk', 'bulk-start', 'bulk-stop', 'bulk-delete'].map((id) => shown(document.getElementById(id)))];";

#[tokio::test]
async fn console_list_offers_only_the_bulk_actions_of_the_scope() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let row = format!("return document.querySelector('tr[data-cuid=\"{cuid}\"]');");
    for (scope, expected) in [
        ("read", json!([false, false, false, false, false, false])),
        ("operate", json!([true, true, true, true, true, false])),
        ("write", json!([true, true, true, true, true, true])),
    ] {
        let token = s.token(scope, None).await;
        let b = Browser::start().await;
        b.sign_in_with_token(&s.base, &token.token).await;
        b.wait_js("the row", T, &row).await;
        assert_eq!(b.js(BULK_SHOWN, json!([])).await, expected, "scope {scope}");
    }
}

/// For every status, image, name and tag shown, where a line break falls between two letters
/// or digits (inside a word); an empty list means none does.
const MID_WORD_BREAKS: &str = r#"
const breaks = (root) => {
  const chars = [];
  const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    for (let i = 0; i < n.length; i++) {
      const r = document.createRange();
      r.setStart(n, i);
      r.setEnd(n, i + 1);
      const rect = r.getClientRects()[0];
      if (rect) chars.push({ c: n.data[i], top: rect.top });
    }
  }
  const bad = [];
  for (let i = 1; i < chars.length; i++) {
    if (chars[i].top > chars[i - 1].top + 2 && /\w/.test(chars[i - 1].c) && /\w/.test(chars[i].c)) {
      bad.push(i);
    }
  }
  return bad;
};
const bad = [];
for (const tr of document.querySelectorAll('#list-body tr')) {
  for (const sel of ['.col-name a', '.col-name .cuid', '.col-image', '.col-status .nowrap', '.col-tags .tag']) {
    for (const e of tr.querySelectorAll(sel)) {
      const b = breaks(e);
      if (b.length) bad.push(`${sel} "${e.textContent}" breaks at ${b.join(',')}`);
    }
  }
}
return bad;
"#;

#[tokio::test]
async fn console_list_keeps_words_whole_and_stacks_rows_on_a_phone() {
    let s = Server::start().await;
    // A long error: the start of an image that does not exist (the container is kept, its
    // status `error`).
    let r = s
        .post_json(
            "/containers",
            &json!({"image": "cm-test-missing-image-with-a-rather-long-name-so-the-error-is-long:latest",
                    "name": "broken-image", "command": SLEEPER, "start": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let broken = r.json["cuid"].as_str().unwrap().to_owned();
    let message = r.json["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.len() > 80, "a long error to cut short: {}", r.text);
    // A long image reference (created only) and a crash loop (`restarting`).
    s.create(
        &json!({"image": "registry.example.com:5000/team/tools/busybox-with-a-long-name:1.36.1",
                     "name": "long-image", "tags": ["frontend", "team-a", "production"],
                     "ports": [{"host_ip": "0.0.0.0", "host": 18080, "container": 80},
                               {"host": 18081, "container": 53, "protocol": "udp"}]}),
    )
    .await;
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
    s.running_sleeper().await;

    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    // A window just wide enough for the table: the columns are squeezed.
    b.set_window(760, 900).await;
    b.wait_js(
        "four rows",
        T,
        "return document.querySelectorAll('#list-body tr').length === 4;",
    )
    .await;

    // Every column's cell in every row, each labelled.
    let cells = b
        .js(
            "const n = document.querySelectorAll('#list-table thead th').length; \
             return [...document.querySelectorAll('#list-body tr')].every((tr) => \
               tr.cells.length === n && [...tr.cells].every((td) => td.dataset.label !== undefined && td.getClientRects().length > 0));",
            json!([]),
        )
        .await;
    assert_eq!(cells, true);
    // Status never wraps; nothing breaks inside a word.
    let nowrap = b
        .js(
            "return [...document.querySelectorAll('#list-body .col-status .nowrap')].every((e) => getComputedStyle(e).whiteSpace === 'nowrap');",
            json!([]),
        )
        .await;
    assert_eq!(nowrap, true);
    let bad = b.js(MID_WORD_BREAKS, json!([])).await;
    assert_eq!(bad, json!([]), "mid-word breaks at 760px");
    // Ports read as on the detail page; the raw `host_ip:host:container` is the hover title.
    let ports = b
        .js(
            "const td = [...document.querySelectorAll('#list-body .col-ports')].find((td) => td.title); \
             return td && [td.innerText, td.title];",
            json!([]),
        )
        .await;
    assert_eq!(
        ports,
        json!([
            "18080 → 80, 18081 → 53/udp",
            "0.0.0.0:18080:80, 0.0.0.0:18081:53/udp"
        ])
    );

    // The long error is cut short; its full text is one click away (not only a tooltip).
    let row = format!("tr[data-cuid='{broken}']");
    let short = b
        .wait_js(
            "short error",
            T,
            &format!(
                "const s = document.querySelector(\"{row} .col-error summary\"); \
                 const full = document.querySelector(\"{row} .err-full\"); \
                 return s && !full.checkVisibility() && s.innerText;"
            ),
        )
        .await;
    let short = short.as_str().unwrap();
    assert!(short.contains('…') && short.ends_with(" more"), "{short}");
    b.click(&format!("{row} .col-error summary")).await;
    let full = b
        .wait_js(
            "full error",
            T,
            &format!(
                "const full = document.querySelector(\"{row} .err-full\"); \
                 return full && full.checkVisibility() && full.textContent;"
            ),
        )
        .await;
    assert_eq!(full, message.as_str());

    // A phone: each row a card of labelled values, nothing wider than the screen.
    b.set_window(390, 844).await;
    let cards = b
        .wait_js(
            "cards",
            T,
            "const tr = document.querySelector('#list-body tr'); \
             return window.innerWidth <= 420 && tr && getComputedStyle(tr).display === 'block' && \
               document.documentElement.scrollWidth <= window.innerWidth && \
               [window.innerWidth, document.documentElement.scrollWidth];",
        )
        .await;
    eprintln!("phone: innerWidth, scrollWidth = {cards}");
    let labels = b
        .js(
            "const out = []; \
             for (const td of document.querySelectorAll('#list-body td')) { \
               if (!td.getClientRects().length) continue; \
               const before = getComputedStyle(td, '::before').content; \
               if (!td.dataset.label || before !== JSON.stringify(td.dataset.label)) out.push(td.className + ' ' + before); \
             } \
             return out;",
            json!([]),
        )
        .await;
    assert_eq!(labels, json!([]), "every visible value labelled");
    let wide = b
        .js(
            "return [...document.querySelectorAll('#list-body tr, #list-body td')] \
               .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5) \
               .map((e) => e.className || e.tagName);",
            json!([]),
        )
        .await;
    assert_eq!(wide, json!([]), "cards within the screen");
    let bad = b.js(MID_WORD_BREAKS, json!([])).await;
    assert_eq!(bad, json!([]), "mid-word breaks on a phone");
    b.screenshot("list-phone").await;
}

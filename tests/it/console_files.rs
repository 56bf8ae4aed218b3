//! The console's Files tab (issue 23), in a real headless Chromium: upload a file with
//! progress, preview it as text, rename it, make a folder, go into it (the folder is in the
//! URL: a reload stays, Back goes up), delete with the in-page confirmation, and cancel a
//! large upload, which leaves nothing behind.

use std::time::Duration;

use serde_json::json;

use crate::browser::{keys, Browser};
use crate::common::*;

const T: Duration = Duration::from_secs(30);

/// The row of `name` in the listing exists (or not).
fn row(name: &str) -> String {
    format!("return !!document.querySelector('#files-body tr[data-name=\"{name}\"]');")
}

fn no_row(name: &str) -> String {
    format!("return !document.querySelector('#files-body tr[data-name=\"{name}\"]');")
}

/// Records every text the upload progress line shows, and whether the bar ever moved.
const WATCH_PROGRESS: &str = "window.__progress = [];
    new MutationObserver(() => {
      const bar = document.getElementById('upload-bar');
      window.__progress.push([document.getElementById('upload-text').textContent, bar.value, bar.max]);
    }).observe(document.getElementById('upload-text'), { childList: true, characterData: true, subtree: true });";

#[tokio::test]
async fn console_uploads_previews_renames_makes_folders_deletes_and_cancels() {
    let s = Server::start_with(Options {
        env: vec![("UPLOAD_MAX_BYTES".into(), (4u64 << 30).to_string())],
        ..Options::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    let b = Browser::start().await;
    b.sign_in(&s.base, USER, PASS).await;
    b.goto(&format!("{}/ui/#/c/{cuid}/files", s.base)).await;
    b.wait_js(
        "an empty /app says so",
        T,
        "return !document.getElementById('panel-files').hidden && !document.getElementById('files-empty').hidden;",
    )
    .await;

    // Upload a file by the file input: the progress line shows it going.
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let data_path = s.dir.path().join("data.bin");
    std::fs::write(&data_path, &data).unwrap();
    b.js(WATCH_PROGRESS, json!([])).await;
    b.type_into("#file-input", data_path.to_str().unwrap())
        .await;
    b.wait_js("data.bin listed", T, &row("data.bin")).await;
    let seen = b.js("return window.__progress;", json!([])).await;
    assert!(
        seen.as_array().unwrap().iter().any(|p| p[0]
            .as_str()
            .unwrap()
            .contains("uploading data.bin")
            && p[0].as_str().unwrap().contains("of 8.0 MiB")),
        "{seen}"
    );
    assert!(
        b.js(
            "return document.getElementById('upload-progress').hidden;",
            json!([])
        )
        .await
            == true
    );
    assert_eq!(std::fs::read(m.join("data.bin")).unwrap(), data);
    assert!(b
        .js(
            "return document.getElementById('files-empty').hidden;",
            json!([])
        )
        .await
        .as_bool()
        .unwrap());

    // A small text file, previewed as text: markup in it stays text.
    let text = "hello <b id=\"pwn\">bold</b>\n<img src=x id=\"pwn2\">\nsecond line\n";
    let notes = s.dir.path().join("notes.txt");
    std::fs::write(&notes, text).unwrap();
    b.type_into("#file-input", notes.to_str().unwrap()).await;
    b.wait_js("notes.txt listed", T, &row("notes.txt")).await;
    b.click("#files-body tr[data-name=\"notes.txt\"] [data-op=preview]")
        .await;
    let shown = b
        .wait_js(
            "preview",
            T,
            "const p = document.getElementById('preview-text'); return !document.getElementById('file-preview').hidden && p.textContent;",
        )
        .await;
    assert_eq!(shown, text);
    assert_eq!(
        b.js(
            "return [document.getElementById('pwn'), document.getElementById('pwn2')];",
            json!([])
        )
        .await,
        json!([null, null])
    );
    b.screenshot("files-preview").await;
    // The same name again asks before replacing; keeping the old one changes nothing.
    std::fs::write(&notes, "other").unwrap();
    b.type_into("#file-input", notes.to_str().unwrap()).await;
    b.wait_js(
        "asked to replace",
        T,
        "return !document.getElementById('replace-ask').hidden;",
    )
    .await;
    b.click("#replace-no").await;
    assert_eq!(std::fs::read_to_string(m.join("notes.txt")).unwrap(), text);

    // Rename in place: Enter saves.
    b.click("#files-body tr[data-name=\"notes.txt\"] [data-op=rename]")
        .await;
    b.clear("[data-op=new-name]").await;
    b.type_into("[data-op=new-name]", &format!("renamed.txt{}", keys::ENTER))
        .await;
    b.wait_js("renamed", T, &row("renamed.txt")).await;
    b.wait_js("old name gone", T, &no_row("notes.txt")).await;
    assert_eq!(
        std::fs::read_to_string(m.join("renamed.txt")).unwrap(),
        text
    );

    // A new folder, then into it: the folder is in the URL.
    b.click("#new-folder").await;
    b.type_into("#folder-name", "docs").await;
    b.click("#folder-create").await;
    b.wait_js("docs listed", T, &row("docs")).await;
    assert!(m.join("docs").is_dir());
    b.click("#files-body tr[data-name=\"docs\"] a.name").await;
    b.wait_js(
        "inside docs, empty",
        T,
        "return location.hash.endsWith('/files/docs') && !document.getElementById('files-empty').hidden \
         && document.getElementById('file-preview').hidden;",
    )
    .await;
    b.type_into("#file-input", data_path.to_str().unwrap())
        .await;
    b.wait_js("docs/data.bin listed", T, &row("data.bin")).await;
    assert!(m.join("docs/data.bin").is_file());
    // A reload stays in the folder.
    b.js("location.reload();", json!([])).await;
    b.wait_js(
        "still in docs after a reload",
        T,
        "return !document.getElementById('panel-files').hidden && location.hash.endsWith('/files/docs') \
         && document.querySelector('#crumbs [aria-current=page]')?.textContent === 'docs' \
         && !!document.querySelector('#files-body tr[data-name=\"data.bin\"]');",
    )
    .await;
    // Back goes up a folder.
    b.js("history.back();", json!([])).await;
    b.wait_js(
        "back in /app",
        T,
        "return location.hash.endsWith('/files') && !!document.querySelector('#files-body tr[data-name=\"docs\"]') \
         && !!document.querySelector('#files-body tr[data-name=\"renamed.txt\"]');",
    )
    .await;

    // Delete a file, then the folder with what is in it, each confirmed in the page.
    b.click("#files-body tr[data-name=\"renamed.txt\"] [data-op=delete]")
        .await;
    b.click("#files-body tr[data-name=\"renamed.txt\"] [data-op=confirm-delete]")
        .await;
    b.wait_js("renamed.txt deleted", T, &no_row("renamed.txt"))
        .await;
    assert!(!m.join("renamed.txt").exists());
    b.click("#files-body tr[data-name=\"docs\"] [data-op=delete]")
        .await;
    let ask = b
        .js(
            "return document.querySelector('#files-body tr[data-name=\"docs\"] .ask').textContent;",
            json!([]),
        )
        .await;
    assert!(ask.as_str().unwrap().contains("everything in it"), "{ask}");
    b.click("#files-body tr[data-name=\"docs\"] [data-op=confirm-delete]")
        .await;
    b.wait_js("docs deleted", T, &no_row("docs")).await;
    assert!(!m.join("docs").exists());

    // A large upload cancelled once it is under way leaves nothing behind.
    let big = s.dir.path().join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(3u64 << 30).unwrap(); // sparse: costs no disk here
    drop(f);
    b.js(
        "new MutationObserver((_, obs) => {
           if (document.getElementById('upload-bar').value > 0) {
             obs.disconnect();
             document.getElementById('upload-cancel').click();
           }
         }).observe(document.getElementById('upload-text'), { childList: true, characterData: true, subtree: true });",
        json!([]),
    )
    .await;
    b.type_into("#file-input", big.to_str().unwrap()).await;
    b.wait_js(
        "cancelled",
        T,
        "return document.getElementById('files-status').textContent.includes('cancelled');",
    )
    .await;
    assert!(b
        .js(
            "return document.getElementById('upload-progress').hidden;",
            json!([])
        )
        .await
        .as_bool()
        .unwrap());
    assert!(!m.join("big.bin").exists());
    wait_until(T, "the cancelled upload's staging is removed", || {
        staging_is_empty(&s)
    })
    .await;
    assert!(!m.join("big.bin").exists());
    // And the server takes the next upload at once.
    b.type_into("#file-input", notes.to_str().unwrap()).await;
    b.wait_js("notes.txt again", T, &row("notes.txt")).await;
}

/// An `operate` token uploads ZIPs and previews files; the single-file operations (scope
/// `write`) are not offered.
#[tokio::test]
async fn console_files_offer_only_what_the_scope_covers() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    assert_eq!(s.put_file(&cuid, "a.txt", "text").await.status, 201);
    let operate = s.token("operate", None).await;
    let b = Browser::start().await;
    b.sign_in_with_token(&s.base, &operate.token).await;
    b.goto(&format!("{}/ui/#/c/{cuid}/files", s.base)).await;
    b.wait_js("a.txt listed", T, &row("a.txt")).await;
    let shown: Vec<String> = serde_json::from_value(
        b.js(
            "return [...document.querySelectorAll('#panel-files button, #panel-files a, #panel-files label')]\
               .filter((e) => e.getClientRects().length > 0).map((e) => e.textContent.trim());",
            json!([]),
        )
        .await,
    )
    .unwrap();
    for there in [
        "Upload ZIP here",
        "Preview",
        "a.txt",
        "Download folder as ZIP",
    ] {
        assert!(
            shown.iter().any(|t| t == there),
            "{there} missing: {shown:?}"
        );
    }
    for gone in ["Upload a file here", "New folder", "Rename", "Delete"] {
        assert!(!shown.iter().any(|t| t == gone), "{gone} shown: {shown:?}");
    }
    b.click("#files-body tr[data-name=\"a.txt\"] [data-op=preview]")
        .await;
    b.wait_js(
        "preview",
        T,
        "return document.getElementById('preview-text').textContent === 'text';",
    )
    .await;
}

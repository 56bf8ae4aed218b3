//! Single-item file operations (docs/API.md §5, issue 23): upload one file, delete, move,
//! new folder; the hostile tree (symlinks leading out, a symlinked parent, `..`), the upload
//! bounds, a container writing meanwhile, scopes and another tenant's container.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// The audit line of the request answered with `rid`.
fn audit_of(s: &Server, rid: &str) -> serde_json::Value {
    s.audit_lines()
        .into_iter()
        .find(|l| l["request_id"] == rid)
        .unwrap_or_else(|| panic!("no audit line for {rid}"))
}

#[tokio::test]
async fn upload_replace_mkdir_move_and_delete() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);

    // A new file with its missing folders: 201, the container's user's, 0644.
    let r = s.put_file(&cuid, "notes/today.txt", "hello\n").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"path": "/app/notes/today.txt", "bytes": 6, "replaced": false})
    );
    let f = m.join("notes/today.txt");
    assert_eq!(std::fs::read(&f).unwrap(), b"hello\n");
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1000, 1000, 0o644)
    );
    let md = std::fs::metadata(m.join("notes")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (1000, 0o755));
    let line = audit_of(&s, r.header("x-request-id").unwrap());
    assert_eq!(line["file_op"], "put");
    assert_eq!(line["file_path"], "notes/today.txt");
    assert_eq!(line["bytes"], 6);

    // Replaced (200), keeping its permission bits; If-None-Match: * refuses to.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
    let r = s.put_file(&cuid, "/app/notes/today.txt", "v2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["replaced"], true);
    assert_eq!(std::fs::read(&f).unwrap(), b"v2");
    assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o750);
    let r = s
        .send(
            s.put_file_request(&cuid, "notes/today.txt", "v3")
                .header("if-none-match", "*"),
        )
        .await;
    r.assert_error(409, "conflict", "FILE_EXISTS");
    assert_eq!(std::fs::read(&f).unwrap(), b"v2");
    // A folder of that name: a conflict; a file on the way: not a folder.
    s.put_file(&cuid, "notes", "x")
        .await
        .assert_error(409, "conflict", "PATH_CONFLICT");
    s.put_file(&cuid, "notes/today.txt/x", "x")
        .await
        .assert_error(400, "validation_error", "NOT_A_DIRECTORY");
    s.put_file(&cuid, "/app", "x")
        .await
        .assert_error(400, "validation_error", "MISSING_PATH");
    s.send(
        s.request(reqwest::Method::PUT, &format!("/containers/{cuid}/files"))
            .body("x"),
    )
    .await
    .assert_error(400, "validation_error", "MISSING_PATH");
    // An empty file is a file.
    let r = s.put_file(&cuid, "empty", Vec::<u8>::new()).await;
    assert_eq!(
        (r.status, r.json["bytes"].clone()),
        (201, json!(0)),
        "{}",
        r.text
    );

    // New folders.
    let r = s.make_folder(&cuid, "data/cache").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json, json!({"path": "/app/data/cache"}));
    let md = std::fs::metadata(m.join("data/cache")).unwrap();
    assert!(md.is_dir());
    assert_eq!((md.uid(), md.mode() & 0o777), (1000, 0o755));
    s.make_folder(&cuid, "data/cache")
        .await
        .assert_error(409, "conflict", "FILE_EXISTS");
    s.make_folder(&cuid, "empty")
        .await
        .assert_error(409, "conflict", "FILE_EXISTS");
    s.make_folder(&cuid, "empty/sub").await.assert_error(
        400,
        "validation_error",
        "NOT_A_DIRECTORY",
    );
    let r = s
        .post_json(
            &format!("/containers/{cuid}/files/mkdir"),
            &json!({"path": "x", "mode": 7}),
        )
        .await;
    r.assert_error(400, "validation_error", "UNKNOWN_FIELD");

    // Moves: rename in place, into another folder; never over something.
    let r = s
        .move_file(&cuid, "notes/today.txt", "notes/done.txt")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"from": "/app/notes/today.txt", "to": "/app/notes/done.txt"})
    );
    assert!(!f.exists());
    assert_eq!(std::fs::read(m.join("notes/done.txt")).unwrap(), b"v2");
    assert_eq!(s.move_file(&cuid, "notes", "data/notes").await.status, 200);
    assert!(m.join("data/notes/done.txt").is_file());
    s.move_file(&cuid, "empty", "data/notes/done.txt")
        .await
        .assert_error(409, "conflict", "FILE_EXISTS");
    s.move_file(&cuid, "data", "data/cache/data")
        .await
        .assert_error(400, "validation_error", "MOVE_INTO_ITSELF");
    s.move_file(&cuid, "nope", "x")
        .await
        .assert_error(404, "not_found", "FILE_NOT_FOUND");
    s.move_file(&cuid, "empty", "nowhere/empty")
        .await
        .assert_error(404, "not_found", "FILE_NOT_FOUND");
    s.move_file(&cuid, "/", "x")
        .await
        .assert_error(400, "validation_error", "MISSING_PATH");

    // Deletes: a file; a folder only when empty or with recursive=true.
    let r = s.delete_file(&cuid, "empty", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"path": "/app/empty", "type": "file"}));
    assert!(!m.join("empty").exists());
    s.delete_file(&cuid, "data", "")
        .await
        .assert_error(409, "conflict", "DIRECTORY_NOT_EMPTY");
    assert!(m.join("data/notes/done.txt").is_file());
    s.delete_file(&cuid, "data", "&recursive=maybe")
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    assert_eq!(
        s.delete_file(&cuid, "data/cache", "").await.json["type"],
        "dir"
    );
    let r = s.delete_file(&cuid, "data", "&recursive=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"path": "/app/data", "type": "dir"}));
    assert!(!m.join("data").exists());
    let line = audit_of(&s, r.header("x-request-id").unwrap());
    assert_eq!(
        (line["file_op"].clone(), line["recursive"].clone()),
        (json!("delete"), json!(true))
    );
    s.delete_file(&cuid, "data", "&recursive=true")
        .await
        .assert_error(404, "not_found", "FILE_NOT_FOUND");
    s.delete_file(&cuid, "", "&recursive=true")
        .await
        .assert_error(400, "validation_error", "MISSING_PATH");
    assert!(m.is_dir(), "/app itself is never deleted");

    // The listing agrees, and nothing is left in staging.
    let r = s.get(&format!("/containers/{cuid}/files")).await;
    assert_eq!(r.json["entries"], json!([]), "{}", r.text);
    assert!(staging_is_empty(&s));
}

#[tokio::test]
async fn escapes_through_dotdot_and_symlinks_are_refused() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    let m = s.mount(&cuid);
    // What a container can plant in its own /app: symlinks to a host folder outside it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"host").unwrap();
    std::os::unix::fs::symlink(outside.path(), m.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), m.join("link")).unwrap();
    std::fs::write(m.join("a.txt"), b"a").unwrap();
    let untouched = |what: &str| {
        let names: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{what}");
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"host",
            "{what}"
        );
    };

    for p in ["../x", "a/../../x", "..", "a\\b"] {
        s.put_file(&cuid, p, "x")
            .await
            .assert_error(400, "validation_error", "UNSAFE_PATH");
        s.delete_file(&cuid, p, "&recursive=true")
            .await
            .assert_error(400, "validation_error", "UNSAFE_PATH");
        s.make_folder(&cuid, p)
            .await
            .assert_error(400, "validation_error", "UNSAFE_PATH");
        s.move_file(&cuid, "a.txt", p)
            .await
            .assert_error(400, "validation_error", "UNSAFE_PATH");
        s.move_file(&cuid, p, "stolen")
            .await
            .assert_error(400, "validation_error", "UNSAFE_PATH");
    }
    // An absolute path is relative to /app: it never reaches the host's /etc.
    let r = s.put_file(&cuid, "/etc/cm-files-ops-test", "x").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(m.join("etc/cm-files-ops-test").is_file());
    assert!(!std::path::Path::new("/etc/cm-files-ops-test").exists());

    // Through a symlinked parent: refused, whatever the operation.
    s.put_file(&cuid, "out/x", "x")
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.make_folder(&cuid, "out/d")
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.delete_file(&cuid, "out/secret", "").await.assert_error(
        400,
        "validation_error",
        "UNSAFE_PATH",
    );
    s.move_file(&cuid, "out/secret", "stolen")
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.move_file(&cuid, "a.txt", "out/a.txt").await.assert_error(
        400,
        "validation_error",
        "UNSAFE_PATH",
    );
    untouched("symlinked parent");
    assert!(!m.join("stolen").exists());

    // A symlink leading out, itself: written over as a name, deleted as a name, moved as a
    // name; never what it points to.
    let r = s.put_file(&cuid, "link", "mine").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!std::fs::symlink_metadata(m.join("link"))
        .unwrap()
        .is_symlink());
    assert_eq!(std::fs::read(m.join("link")).unwrap(), b"mine");
    untouched("upload over a symlink");
    assert_eq!(s.move_file(&cuid, "out", "moved").await.status, 200);
    assert!(std::fs::symlink_metadata(m.join("moved"))
        .unwrap()
        .is_symlink());
    let r = s.delete_file(&cuid, "moved", "&recursive=true").await;
    assert_eq!(
        (r.status, r.json["type"].clone()),
        (200, json!("file")),
        "{}",
        r.text
    );
    assert!(!m.join("moved").exists());
    untouched("delete of a symlink");
    s.make_folder(&cuid, "link")
        .await
        .assert_error(409, "conflict", "FILE_EXISTS");
    assert!(staging_is_empty(&s));
}

#[tokio::test]
async fn an_oversized_body_is_refused_and_leaves_nothing() {
    let s = Server::start_with(Options {
        env: vec![("UPLOAD_MAX_BYTES".into(), (1024 * 1024).to_string())],
        ..Options::default()
    })
    .await;
    let cuid = s.create_sleeper().await;
    let big = vec![7u8; 1024 * 1024 + 1];
    // Declared.
    let r = s.put_file(&cuid, "big.bin", big.clone()).await;
    r.assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");
    // Streamed (chunked, no Content-Length): cut at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = s.put_file(&cuid, "big.bin", body).await;
    r.assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");
    assert!(!s.mount(&cuid).join("big.bin").exists());
    // Exactly the limit fits.
    let r = s.put_file(&cuid, "big.bin", vec![7u8; 1024 * 1024]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(staging_is_empty(&s));
}

#[tokio::test]
async fn a_running_container_writing_meanwhile() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let m = s.mount(&cuid);
    let (ok, out) = sh_in(&cuid, "1000", "mkdir -p /app/busy");
    assert!(ok, "{out}");
    // The container keeps writing, renaming and deleting in /app/busy.
    docker(&[
        "exec",
        "-d",
        "-u",
        "1000",
        &cuid,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /app/busy/w$((i % 20)); \
         mv /app/busy/w$((i % 20)) /app/busy/m$((i % 7)) 2>/dev/null; \
         rm -f /app/busy/m$((i % 5)); done",
    ]);
    let m2 = m.clone();
    wait_until(Duration::from_secs(20), "the writer to start", move || {
        std::fs::read_dir(m2.join("busy")).is_ok_and(|mut d| d.next().is_some())
    })
    .await;

    for i in 0..20 {
        let body = format!("upload {i}");
        let r = s
            .put_file(&cuid, &format!("busy/u{i}.txt"), body.clone())
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(
            std::fs::read_to_string(m.join(format!("busy/u{i}.txt"))).unwrap(),
            body
        );
        let r = s.make_folder(&cuid, &format!("busy/d{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = s
            .move_file(
                &cuid,
                &format!("busy/u{i}.txt"),
                &format!("busy/d{i}/u.txt"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // The whole folder, while it is written into: gone at once, the writer's later writes
    // fail (it makes no folders).
    let r = s.delete_file(&cuid, "busy", "&recursive=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!m.join("busy").exists());
    assert!(staging_is_empty(&s));
    // The container sees the same.
    let (ok, _) = sh_in(&cuid, "1000", "test -e /app/busy");
    assert!(!ok);
}

#[tokio::test]
async fn scopes_tenants_and_an_idle_container() {
    let s = Server::start_with(Options {
        env: vec![
            ("IDLE_SAMPLE_INTERVAL".into(), "1".into()),
            ("UPLOAD_MAX_BYTES".into(), (1024 * 1024).to_string()),
        ],
        ..Options::default()
    })
    .await;
    s.put_tenant("a", &json!({})).await;
    s.put_tenant("b", &json!({})).await;
    let a = s.token("write", Some("a")).await;
    let b = s.token("write", Some("b")).await;
    let theirs = a
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER}),
        )
        .await
        .json["cuid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Another tenant's container does not exist, for every operation.
    let put = b
        .request(
            reqwest::Method::PUT,
            &format!("/containers/{theirs}/files?path=x"),
        )
        .body("x");
    s.send(put)
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    b.delete(&format!("/containers/{theirs}/files?path=x"))
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    b.post_json(
        &format!("/containers/{theirs}/files/move"),
        &json!({"from": "x", "to": "y"}),
    )
    .await
    .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    b.post_json(
        &format!("/containers/{theirs}/files/mkdir"),
        &json!({"path": "x"}),
    )
    .await
    .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    // Its owner may.
    let r = s
        .send(
            a.request(
                reqwest::Method::PUT,
                &format!("/containers/{theirs}/files?path=x"),
            )
            .body("x"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // They are writes: operate and read tokens are refused before anything happens.
    for scope in ["read", "operate"] {
        let t = s.token(scope, Some("a")).await;
        let r = t
            .post_json(
                &format!("/containers/{theirs}/files/mkdir"),
                &json!({"path": "d"}),
            )
            .await;
        r.assert_error(403, "forbidden", "SCOPE_REQUIRED");
        t.delete(&format!("/containers/{theirs}/files?path=x"))
            .await
            .assert_error(403, "forbidden", "SCOPE_REQUIRED");
    }
    assert!(s.mount(&theirs).join("x").is_file());

    // A container its idle policy stopped is started by a single-file upload first.
    let cuid = s
        .create_started(
            &json!({"image": BUSYBOX, "command": SLEEPER, "idle": {"after": 5, "action": "stop"}}),
        )
        .await;
    s.wait_for(
        &format!("/containers/{cuid}"),
        Duration::from_secs(30),
        |r| r.json["status"] == "stopped" && r.json["status_reason"] == "idle",
    )
    .await;
    // A body declared past UPLOAD_MAX_BYTES is refused before anything is woken.
    s.put_file(&cuid, "big.bin", vec![0u8; 1024 * 1024 + 1])
        .await
        .assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");
    s.upload_zip(&cuid, "", vec![0u8; 1024 * 1024 + 1])
        .await
        .assert_error(413, "payload_too_large", "UPLOAD_TOO_LARGE");
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["status"],
        "stopped"
    );
    let r = s.put_file(&cuid, "wake.txt", "hi").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.header("server-timing")
            .is_some_and(|v| v.starts_with("resume;dur=")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        s.get(&format!("/containers/{cuid}")).await.json["status"],
        "running"
    );
}

#[tokio::test]
async fn under_a_disk_cap_a_file_that_does_not_fit_changes_nothing() {
    let s = Server::start().await;
    let cuid = s
        .create(&json!({"image": BUSYBOX, "command": SLEEPER, "resources": {"disk": "32m"}}))
        .await;
    // The capped /app is in the container's image (not DATA_DIR/mounts).
    let r = s.put_file(&cuid, "keep.txt", "old").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(s.make_folder(&cuid, "d").await.status, 201);
    assert_eq!(
        s.move_file(&cuid, "keep.txt", "d/keep.txt").await.status,
        200
    );

    let big = vec![1u8; 40 << 20];
    let r = s.put_file(&cuid, "d/keep.txt", big).await;
    r.assert_error(413, "payload_too_large", "DISK_QUOTA_EXCEEDED");
    let (status, _, body) =
        get_bytes(&s, &format!("/containers/{cuid}/download?path=d/keep.txt")).await;
    assert_eq!((status, body), (200, b"old".to_vec()));
    // Nothing left behind: not in the server's staging, not in the image's.
    assert!(staging_is_empty(&s));
    let image_staging = s.data_dir().join("disks").join(&cuid).join("staging");
    let left: Vec<_> = std::fs::read_dir(&image_staging)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let r = s.delete_file(&cuid, "d", "&recursive=true").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get(&format!("/containers/{cuid}/files")).await;
    assert_eq!(r.json["entries"], json!([]), "{}", r.text);
}

#[tokio::test]
async fn a_long_valid_path_undecodable_bytes_and_unknown_parameters() {
    let s = Server::start().await;
    let cuid = s.create_sleeper().await;
    // The longest path the parser takes (16 names of 255 bytes: 4095 bytes) is written, read
    // back and deleted, though under DATA_DIR it would pass PATH_MAX.
    let long = vec!["c".repeat(255); 16].join("/");
    assert_eq!(long.len(), 4095);
    let r = s.put_file(&cuid, &long, "deep").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (status, _, body) = get_bytes(
        &s,
        &format!("/containers/{cuid}/download?path={}", url_encode(&long)),
    )
    .await;
    assert_eq!((status, body), (200, b"deep".to_vec()));
    let r = s.put_file(&cuid, &long, "deeper").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // One byte more than Linux holds relative to /app (4096): the client's path, a 400.
    let mut names = vec!["d".repeat(255); 15];
    names.push("e".repeat(128));
    names.push("f".repeat(127));
    let too_long = names.join("/");
    assert_eq!(too_long.len(), 4096);
    s.put_file(&cuid, &too_long, "x")
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.make_folder(&cuid, &too_long)
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    let r = s.delete_file(&cuid, &long, "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .delete_file(&cuid, &"c".repeat(255), "&recursive=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .delete_file(&cuid, &"d".repeat(255), "&recursive=true")
        .await;
    assert!([200, 404].contains(&r.status), "{}", r.text);
    assert!(staging_is_empty(&s));

    // Bytes that are not UTF-8 are not a name with U+FFFD in it.
    let put = |q: &str| {
        s.request(
            reqwest::Method::PUT,
            &format!("/containers/{cuid}/files?{q}"),
        )
        .body("x")
    };
    s.send(put("path=%ff%fe"))
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.delete(&format!("/containers/{cuid}/files?path=%ff%fe"))
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    s.get(&format!("/containers/{cuid}/files?path=%ff"))
        .await
        .assert_error(400, "validation_error", "UNSAFE_PATH");
    // An unknown parameter is refused, not ignored.
    s.send(put("path=x&bogus=1"))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    assert!(s.put_file(&cuid, "y", "y").await.status == 201);
    s.delete(&format!("/containers/{cuid}/files?path=y&recursve=true"))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    let r = s.get(&format!("/containers/{cuid}/files")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["y"], "{}", r.text);
}

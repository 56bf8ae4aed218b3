//! Names and search (docs/API.md §4, issue 23): a `name` unique among a tenant's live
//! containers, `409 NAME_TAKEN` for a second claim, and `GET /containers?q=` matching name,
//! image and tag prefixes.

use serde_json::{json, Value};

use crate::common::{Server, BUSYBOX};

fn names(list: &Value) -> Vec<String> {
    list["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn a_name_is_unique_among_live_containers_and_can_change() {
    let s = Server::start().await;
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "name": "team-a-web"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["name"], "team-a-web");
    let first = r.json["cuid"].as_str().unwrap().to_owned();

    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "name": "team-a-web"}),
        )
        .await;
    r.assert_error(409, "conflict", "NAME_TAKEN");
    assert_eq!(r.json["details"]["holder"], json!(first), "{}", r.text);
    assert_eq!(s.count_containers().await, 1, "a refused create left a row");

    // Renamed: nothing else changes, and the old name is free again.
    let r = s
        .patch_json(
            &format!("/containers/{first}"),
            &json!({"name": "team-a-api"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "team-a-api");
    // A name is the server's business, not Docker's: no new generation, nothing recreated.
    assert_eq!(r.json["generation"], 1, "{}", r.text);
    let second = s
        .create(&json!({"image": BUSYBOX, "name": "team-a-web"}))
        .await;
    s.patch_json(
        &format!("/containers/{second}"),
        &json!({"name": "team-a-api"}),
    )
    .await
    .assert_error(409, "conflict", "NAME_TAKEN");
    let kept = s.get(&format!("/containers/{second}")).await;
    assert_eq!(
        kept.json["name"], "team-a-web",
        "a refused rename changed it"
    );

    // A deleted container's name is free at once.
    let r = s.delete(&format!("/containers/{first}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .patch_json(
            &format!("/containers/{second}"),
            &json!({"name": "team-a-api"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // `null` removes it.
    let r = s
        .patch_json(&format!("/containers/{second}"), &json!({"name": null}))
        .await;
    assert_eq!(r.json["name"], Value::Null, "{}", r.text);

    for bad in [
        json!(""),
        json!("Team"),
        json!("-web"),
        json!("web-"),
        json!("a_b"),
        json!("x".repeat(64)),
        json!(7),
    ] {
        s.post_json("/containers", &json!({"image": BUSYBOX, "name": bad}))
            .await
            .assert_error(400, "validation_error", "INVALID_NAME");
    }
    assert_eq!(s.count_containers().await, 1);
}

/// A fork is a new container: it has no name and no host ports (both belong to one
/// container) unless its overrides give it its own.
#[tokio::test]
async fn a_fork_takes_a_name_and_host_ports_only_when_given_them() {
    let s = Server::start().await;
    let port = crate::common::free_port();
    let source = s
        .create(&json!({"image": BUSYBOX, "name": "origin",
                        "ports": [{"host": port, "container": 80}]}))
        .await;
    let r = s
        .post_json(&format!("/containers/{source}/fork"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["name"], Value::Null);
    assert_eq!(r.json["ports"], json!([]), "{}", r.text);
    let other = crate::common::free_port();
    let r = s
        .post_json(
            &format!("/containers/{source}/fork"),
            &json!({"spec": {"ports": [{"host": other, "container": 80}]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["ports"][0]["host"], other, "{}", r.text);
    s.post_json(
        &format!("/containers/{source}/fork"),
        &json!({"spec": {"ports": [{"host": port, "container": 80}]}}),
    )
    .await
    .assert_error(409, "conflict", "PORT_CONFLICT");
    let r = s
        .post_json(
            &format!("/containers/{source}/fork"),
            &json!({"spec": {"name": "origin-copy"}}),
        )
        .await;
    assert_eq!(r.json["name"], "origin-copy", "{}", r.text);
    s.post_json(
        &format!("/containers/{source}/fork"),
        &json!({"spec": {"name": "origin"}}),
    )
    .await
    .assert_error(409, "conflict", "NAME_TAKEN");
    assert_eq!(s.count_containers().await, 4, "a refused fork left a row");
}

#[tokio::test]
async fn two_tenants_may_use_one_name() {
    let s = Server::start().await;
    s.put_tenant("team-a", &json!({})).await;
    s.put_tenant("team-b", &json!({})).await;
    let a = s.token("write", Some("team-a")).await;
    let b = s.token("write", Some("team-b")).await;
    for t in [&a, &b] {
        let r = t
            .post_json("/containers", &json!({"image": BUSYBOX, "name": "web"}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = a
        .post_json("/containers", &json!({"image": BUSYBOX, "name": "web"}))
        .await;
    r.assert_error(409, "conflict", "NAME_TAKEN");
    // The other tenant's holder is never named to this one.
    let mine = a.get("/containers?q=web").await;
    assert_eq!(names(&mine.json), ["web"]);
}

#[tokio::test]
async fn the_search_matches_name_image_and_tag_prefixes_across_pages() {
    let s = Server::start().await;
    for (name, tags) in [
        ("team-a", json!(["frontend"])),
        ("team-b", json!(["backend"])),
        ("other", json!(["team-tools"])),
        ("plain", json!(["axb"])),
        ("a_b", Value::Null),
    ] {
        let mut body = json!({"image": BUSYBOX, "tags": tags});
        if name != "a_b" {
            body["name"] = json!(name);
        } else {
            body["tags"] = json!(["a_b"]);
        }
        let r = s.post_json("/containers", &body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let search = |q: &str| {
        let s = &s;
        let q = q.to_owned();
        async move { s.get(&format!("/containers?q={q}")).await }
    };
    // A name's prefix, a tag's prefix (`team` finds `team-tools`), any case.
    assert_eq!(
        names(&search("team").await.json),
        ["team-a", "team-b", "other"]
    );
    assert_eq!(names(&search("TEAM-A").await.json), ["team-a"]);
    assert_eq!(names(&search("back").await.json), ["team-b"]);
    // The image (`cm-test-busybox:latest`) matches every one.
    assert_eq!(
        search("cm-test-busy").await.json["containers"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(names(&search("zzz").await.json).is_empty());
    // `_` and `%` are the text itself, not patterns (`a_` would match `axb`).
    assert_eq!(
        search("a_").await.json["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(search("a%25").await.json["containers"]
        .as_array()
        .unwrap()
        .is_empty());

    // Pages keep the search: two of three, then the third. `total` counts every page.
    let page = s.get("/containers?q=team&limit=2&total=true").await;
    assert_eq!(names(&page.json), ["team-a", "team-b"]);
    assert_eq!(page.json["total"], 3, "{}", page.text);
    assert_eq!(s.get("/containers?total=true").await.json["total"], 5);
    assert!(s.get("/containers").await.json.get("total").is_none());
    s.get("/containers?total=yes")
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    let cursor = page.json["next_cursor"].as_str().unwrap().to_owned();
    let next = s.get(&format!("/containers?cursor={cursor}")).await;
    assert_eq!(names(&next.json), ["other"]);
    s.get(&format!("/containers?cursor={cursor}&q=plain"))
        .await
        .assert_error(400, "validation_error", "INVALID_CURSOR");
    s.get(&format!("/containers?q={}", "x".repeat(129)))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
}

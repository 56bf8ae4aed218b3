//! Time limits (`lifetime`, issue 19): a real server and Docker. A deadline stops or deletes
//! its container and says why (`status_reason`, `/events`, the audit log); a `PATCH` moves
//! it; one that passed while the server was killed acts at start-up; `DEFAULT_TTL` and
//! `MAX_TTL`; bad input gets the contract's errors.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::common::*;

fn sleeper_with(lifetime: Value) -> Value {
    json!({"image": BUSYBOX, "command": SLEEPER, "lifetime": lifetime, "start": true})
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// `POST /containers?wait=false`: the answer comes before the start, so the deadlines of a
/// test are close together whatever Docker's speed.
async fn create_now(s: &Server, body: &Value) -> Value {
    let r = s.post_json("/containers?wait=false", body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json
}

fn running_in_docker(cuid: &str) -> Option<bool> {
    docker_inspect(cuid).map(|i| i["State"]["Running"] == true)
}

#[tokio::test]
async fn a_deadline_stops_or_deletes_and_a_patch_moves_it() {
    let s = Server::start().await;
    // Made first: its first deadline comes no later than the others'.
    let kept = create_now(&s, &sleeper_with(json!({"ttl": 4}))).await;
    let stopped = create_now(&s, &sleeper_with(json!({"ttl": 4, "on_expiry": "stop"}))).await;
    let deleted = create_now(&s, &sleeper_with(json!({"ttl": 4, "on_expiry": "delete"}))).await;
    let (kept_id, stopped_id, deleted_id) = (
        kept["cuid"].as_str().unwrap().to_owned(),
        stopped["cuid"].as_str().unwrap().to_owned(),
        deleted["cuid"].as_str().unwrap().to_owned(),
    );
    assert_eq!(stopped["lifetime"], json!({"ttl": 4, "on_expiry": "stop"}));
    assert_eq!(
        time(&stopped["expires_at"]) - time(&stopped["created_at"]),
        chrono::TimeDelta::seconds(4)
    );
    assert_eq!(stopped["status_reason"], Value::Null);

    // Extend one: the deadline moves to now + ttl; nothing is recreated.
    let old_deadline = time(&kept["expires_at"]);
    let r = s
        .patch_json(
            &format!("/containers/{kept_id}"),
            &json!({"lifetime": {"ttl": 600}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["generation"], kept["generation"],
        "no new generation"
    );
    assert_eq!(r.json["lifetime"], json!({"ttl": 600, "on_expiry": "stop"}));
    let new_deadline = time(&r.json["expires_at"]);
    assert!(new_deadline > old_deadline + chrono::TimeDelta::seconds(590));

    // The others reach their deadlines: stopped by the server, and deleted.
    let path = format!("/containers/{stopped_id}");
    let after = s
        .wait_for(&path, Duration::from_secs(90), |r| {
            r.json["status"] == "stopped"
        })
        .await;
    assert_eq!(after.json["desired_state"], "stopped");
    assert_eq!(after.json["status_reason"], "expired");
    assert_eq!(after.json["expires_at"], Value::Null, "acted on once");
    assert_eq!(after.json["lifetime"]["ttl"], 4, "the lifetime stays shown");
    assert_eq!(running_in_docker(&stopped_id), Some(false));
    s.wait_for(
        &format!("/containers/{deleted_id}"),
        Duration::from_secs(90),
        |r| r.status == 404,
    )
    .await;
    assert!(docker_inspect(&deleted_id).is_none(), "removed from Docker");

    // The extended one outlived its old deadline (the others' have passed): still up.
    assert!(Utc::now() > old_deadline);
    let k = s.get(&format!("/containers/{kept_id}")).await;
    assert_eq!(
        (&k.json["status"], &k.json["status_reason"]),
        (&json!("running"), &Value::Null),
        "{}",
        k.text
    );
    assert_eq!(time(&k.json["expires_at"]), new_deadline);
    assert_eq!(running_in_docker(&kept_id), Some(true));

    // `/events` says why: the stop and the tombstone carry `status_reason: expired`.
    let events = read_events_until(&s, 0, |_, _, d| {
        d["cuid"] == deleted_id.as_str() && d["deleted"] == true
    })
    .await;
    let reason_of = |cuid: &str, status: &str| {
        events.iter().any(|(_, kind, d)| {
            kind == "container"
                && d["cuid"] == cuid
                && d["container"]["status"] == status
                && d["container"]["status_reason"] == "expired"
        })
    };
    assert!(reason_of(&stopped_id, "stopped"), "{events:?}");
    assert!(reason_of(&deleted_id, "deleting"), "{events:?}");

    // The audit log: one line per deadline, by the server, with the outcome.
    let audit = s.audit_lines();
    let expired = |cuid: &str| {
        audit
            .iter()
            .find(|l| l["action"] == "expire" && l["cuid"] == cuid)
            .cloned()
            .unwrap_or_else(|| panic!("no expire line for {cuid}"))
    };
    let line = expired(&stopped_id);
    assert_eq!(
        (&line["actor"], &line["reason"], &line["outcome"]),
        (&json!("server"), &json!("expired"), &json!("stopped"))
    );
    assert_eq!(expired(&deleted_id)["outcome"], "deleted");
    assert!(!audit
        .iter()
        .any(|l| l["action"] == "expire" && l["cuid"] == kept_id.as_str()));

    // Counted: one stopped, one deleted; one deadline (the extended one) still waited for.
    let m = s.get("/metrics").await.text;
    for line in [
        "cm_lifetimes_expired_total{outcome=\"stopped\"} 1",
        "cm_lifetimes_expired_total{outcome=\"deleted\"} 1",
        "cm_deadlines 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }

    // A client may start the expired one again: the deadline was consumed, it stays up.
    s.start_container(&stopped_id).await;
    let again = s.get(&path).await;
    assert_eq!(again.json["status_reason"], Value::Null);
    assert_eq!(again.json["expires_at"], Value::Null);

    // Shortening works the same way: a deadline in a second.
    let r = s
        .patch_json(
            &format!("/containers/{kept_id}"),
            &json!({"lifetime": {"ttl": 1}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.wait_for(
        &format!("/containers/{kept_id}"),
        Duration::from_secs(60),
        |r| r.json["status"] == "stopped" && r.json["status_reason"] == "expired",
    )
    .await;
    // And `null` removes a lifetime, deadline and all.
    let r = s
        .patch_json(
            &path,
            &json!({"lifetime": {"ttl": 600, "on_expiry": "delete"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["expires_at"].is_string());
    let r = s.patch_json(&path, &json!({"lifetime": null})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json["lifetime"], &r.json["expires_at"]),
        (&Value::Null, &Value::Null)
    );
}

#[tokio::test]
async fn a_deadline_passed_while_the_server_was_killed_acts_at_start_up() {
    let mut s = Server::start().await;
    let stop = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER,
            "lifetime": {"ttl": 8, "on_expiry": "stop"}}))
        .await;
    let delete = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER,
            "lifetime": {"ttl": 8, "on_expiry": "delete"}}))
        .await;
    let deadline = time(&s.get(&format!("/containers/{delete}")).await.json["expires_at"]);
    s.kill9();
    // The deadlines pass while no server runs; the containers keep running in Docker.
    wait_until(Duration::from_secs(30), "the deadline to pass", || {
        Utc::now() > deadline
    })
    .await;
    assert_eq!(running_in_docker(&stop), Some(true));
    s.start_again().await;

    let after = s
        .wait_for(
            &format!("/containers/{stop}"),
            Duration::from_secs(60),
            |r| r.json["status"] == "stopped",
        )
        .await;
    assert_eq!(after.json["status_reason"], "expired");
    assert_eq!(running_in_docker(&stop), Some(false));
    s.wait_for(
        &format!("/containers/{delete}"),
        Duration::from_secs(60),
        |r| r.status == 404,
    )
    .await;
    assert!(docker_inspect(&delete).is_none());
    let outcomes: Vec<Value> = s
        .audit_lines()
        .into_iter()
        .filter(|l| l["action"] == "expire")
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}

#[tokio::test]
async fn max_and_default_ttl_bound_every_container_and_bad_lifetimes_are_refused() {
    let s = Server::start_with(Options {
        env: vec![
            ("DEFAULT_TTL".into(), "1h".into()),
            ("MAX_TTL".into(), "7200".into()),
        ],
        ..Options::default()
    })
    .await;
    // DEFAULT_TTL fills in a create without one.
    let r = s.post_json("/containers", &json!({"image": BUSYBOX})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json["lifetime"],
        json!({"ttl": 3600, "on_expiry": "stop"})
    );
    assert_eq!(
        time(&r.json["expires_at"]) - time(&r.json["created_at"]),
        chrono::TimeDelta::seconds(3600)
    );
    let cuid = r.json["cuid"].as_str().unwrap().to_owned();
    let path = format!("/containers/{cuid}");

    // MAX_TTL: a longer ttl, or none at all, is refused, on create and patch alike.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "lifetime": {"ttl": 7201}}),
        )
        .await;
    r.assert_error(400, "validation_error", "TTL_TOO_LONG");
    let mut details = r.json["details"].clone();
    // `errors` lists every field refused: this one alone, with its code and message.
    let errors = details.as_object_mut().unwrap().remove("errors").unwrap();
    assert_eq!(
        details,
        json!({"field": "lifetime.ttl", "provided": 7201, "limit": 7200})
    );
    assert_eq!(errors[0]["code"], "TTL_TOO_LONG");
    assert_eq!(errors.as_array().unwrap().len(), 1);
    s.post_json("/containers", &json!({"image": BUSYBOX, "lifetime": null}))
        .await
        .assert_error(400, "validation_error", "TTL_TOO_LONG");
    s.patch_json(&path, &json!({"lifetime": {"ttl": 9000}}))
        .await
        .assert_error(400, "validation_error", "TTL_TOO_LONG");
    s.patch_json(&path, &json!({"lifetime": null}))
        .await
        .assert_error(400, "validation_error", "TTL_TOO_LONG");
    // A tenant is bound like anyone.
    s.put_tenant("ttl-team", &json!({})).await;
    let t = s.token("write", Some("ttl-team")).await;
    t.post_json(
        "/containers",
        &json!({"image": BUSYBOX, "lifetime": {"ttl": 7201}}),
    )
    .await
    .assert_error(400, "validation_error", "TTL_TOO_LONG");
    let r = t
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "lifetime": {"ttl": 60, "on_expiry": "delete"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Each mistake has its code and names its field.
    for (lifetime, code, field) in [
        (json!("1h"), "INVALID_LIFETIME", "lifetime"),
        (json!({"on_expiry": "stop"}), "INVALID_TTL", "lifetime.ttl"),
        (json!({"ttl": 0}), "INVALID_TTL", "lifetime.ttl"),
        (json!({"ttl": 2.5}), "INVALID_TTL", "lifetime.ttl"),
        (
            json!({"ttl": 60, "on_expiry": "pause"}),
            "INVALID_ON_EXPIRY",
            "lifetime.on_expiry",
        ),
        (
            json!({"ttl": 60, "idle": 5}),
            "UNKNOWN_FIELD",
            "lifetime.idle",
        ),
    ] {
        for r in [
            s.post_json(
                "/containers",
                &json!({"image": BUSYBOX, "lifetime": lifetime}),
            )
            .await,
            s.patch_json(&path, &json!({"lifetime": lifetime})).await,
        ] {
            r.assert_error(400, "validation_error", code);
            assert_eq!(r.json["details"]["field"], field, "{}", r.text);
        }
    }
    // Nothing changed by the refused patches.
    let now = s.get(&path).await;
    assert_eq!(
        now.json["lifetime"],
        json!({"ttl": 3600, "on_expiry": "stop"})
    );

    // A DEFAULT_TTL over MAX_TTL is refused at start-up.
    let (status, stderr) = run_to_exit(&[
        ("APP_USER", USER),
        ("APP_PASS", PASS),
        ("DEFAULT_TTL", "2h"),
        ("MAX_TTL", "1h"),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("DEFAULT_TTL"), "{stderr}");
}

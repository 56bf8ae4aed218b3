//! The timer's schedule (pure), the store's decision at a deadline (a SQLite file, no
//! Docker), and the cost of many deadlines while none is due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use super::*;
use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::spec::{Lifetime, OnExpiry, Spec};
use crate::store::containers::{Container, Created};
use crate::store::ExpiryPlan;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

#[test]
fn the_schedule_looks_only_at_its_earliest_deadline() {
    let mut s = Schedule::default();
    assert_eq!(s.next(t(0)), Next::Idle);
    assert!(
        s.set("a", Some(t(30))),
        "the first deadline is the earliest"
    );
    assert!(!s.set("b", Some(t(45))), "a later one wakes nobody");
    assert!(s.set("c", Some(t(20))), "an earlier one does");
    assert_eq!(s.next(t(0)), Next::Sleep(Duration::from_secs(20)));
    // Long waits are cut at MAX_SLEEP, to follow the wall clock.
    assert_eq!(s.next(t(-1000)), Next::Sleep(MAX_SLEEP));
    // Moving a deadline replaces it; removing one forgets it.
    assert!(!s.set("c", Some(t(40))));
    assert_eq!(s.len(), 3);
    assert!(!s.set("a", None));
    assert_eq!(s.len(), 2);
    assert_eq!(s.next(t(0)), Next::Sleep(Duration::from_secs(40)));
    // Due ones come out earliest first, and leave the schedule.
    assert_eq!(s.next(t(40)), Next::Due(vec!["c".into()]));
    assert_eq!(s.next(t(1000)), Next::Due(vec!["b".into()]));
    assert!(s.is_empty());
    assert_eq!(s.next(t(1000)), Next::Idle);
}

#[test]
fn many_due_deadlines_come_out_in_batches() {
    let mut s = Schedule::default();
    for i in 0..(BATCH + 10) {
        s.set(&format!("c{i:04}"), Some(t(i as i64)));
    }
    let Next::Due(first) = s.next(t(10_000)) else {
        panic!("due")
    };
    assert_eq!(first.len(), BATCH);
    assert_eq!(first[0], "c0000");
    let Next::Due(rest) = s.next(t(10_000)) else {
        panic!("due")
    };
    assert_eq!(rest.len(), 10);
}

async fn fresh() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    (Store::open(&url).await.unwrap(), dir)
}

fn spec() -> Spec {
    crate::spec::parse_create(
        serde_json::json!({"image": "alpine:3"})
            .as_object()
            .unwrap()
            .clone(),
        &crate::spec::Limits::from_host("127.0.0.1".parse().unwrap()),
    )
    .unwrap()
    .spec
}

async fn insert(store: &Store, desired: DesiredState, lifetime: Option<Lifetime>) -> Container {
    let cuid = crate::spec::new_cuid();
    match store
        .insert_owned(
            &cuid,
            &spec(),
            desired,
            None,
            lifetime.as_ref(),
            None,
            |_| Value::Null,
        )
        .await
        .unwrap()
    {
        Created::New(c) => *c,
        Created::KeyTaken => unreachable!(),
    }
}

fn life(ttl: u64, on_expiry: OnExpiry) -> Option<Lifetime> {
    Some(Lifetime { ttl, on_expiry })
}

#[tokio::test]
async fn at_the_deadline_the_store_decides_on_the_row_as_it_is() {
    let (store, _dir) = fresh().await;
    let runner = insert(&store, DesiredState::Running, life(60, OnExpiry::Stop)).await;
    let at = runner.expires_at.clone().unwrap();
    let created = DateTime::parse_from_rfc3339(&runner.created_at).unwrap();
    let deadline = DateTime::parse_from_rfc3339(&at).unwrap();
    assert_eq!(deadline - created, TimeDelta::seconds(60));
    assert_eq!(
        ExpiryPlan::of(&runner, &runner.created_at),
        ExpiryPlan::NotDue(Some(at.clone()))
    );
    assert_eq!(
        ExpiryPlan::of(&runner, &at),
        ExpiryPlan::Stop(DesiredState::Stopped, false)
    );

    // Before the deadline: nothing, and the deadline is answered to be waited for.
    let early = store.expire(&runner.cuid, Utc::now()).await.unwrap();
    assert!(
        matches!(early, Expiry::NotDue(Some(ref a)) if *a == at),
        "{early:?}"
    );

    // After it: stopped by the server, the deadline consumed, the lifetime kept.
    let later = Utc::now() + TimeDelta::seconds(61);
    let Expiry::Stopped(stopped) = store.expire(&runner.cuid, later).await.unwrap() else {
        panic!("stopped")
    };
    assert_eq!(stopped.desired_state, DesiredState::Stopped);
    assert_eq!(stopped.status_reason, Some(StatusReason::Expired));
    assert_eq!(stopped.expires_at, None);
    assert_eq!(stopped.lifetime, life(60, OnExpiry::Stop));
    // Acted on once: again is nothing.
    assert!(matches!(
        store.expire(&runner.cuid, later).await.unwrap(),
        Expiry::NotDue(None)
    ));

    // A PATCH that moved the deadline before the lock wins.
    let moved = insert(&store, DesiredState::Running, life(60, OnExpiry::Stop)).await;
    let updated = store
        .update::<crate::error::ApiError>(&moved.cuid, None, |c| {
            Ok((c.spec.clone(), Some(life(3600, OnExpiry::Stop))))
        })
        .await
        .unwrap();
    assert!(!updated.changed, "a lifetime is not a spec change");
    assert_eq!(updated.container.generation, moved.generation);
    let new_at = updated.container.expires_at.clone().unwrap();
    assert!(new_at > at);
    assert!(matches!(
        store.expire(&moved.cuid, later).await.unwrap(),
        Expiry::NotDue(Some(ref a)) if *a == new_at
    ));
    // And one that removed it too.
    let removed = store
        .update::<crate::error::ApiError>(&moved.cuid, None, |c| Ok((c.spec.clone(), Some(None))))
        .await
        .unwrap()
        .container;
    assert_eq!((removed.lifetime, removed.expires_at), (None, None));
    let far = Utc::now() + TimeDelta::days(365);
    assert!(matches!(
        store.expire(&moved.cuid, far).await.unwrap(),
        Expiry::NotDue(None)
    ));

    // `delete`: the tombstone, with the reason in the same write.
    let doomed = insert(&store, DesiredState::Running, life(5, OnExpiry::Delete)).await;
    let Expiry::Deleted(gone) = store.expire(&doomed.cuid, later).await.unwrap() else {
        panic!("deleted")
    };
    assert!(gone.deleted_at.is_some());
    assert_eq!(gone.status, Status::Deleting);
    assert_eq!(gone.status_reason, Some(StatusReason::Expired));

    // `stop` of a container never started: the deadline goes, nothing else changes.
    let idle = insert(&store, DesiredState::Created, life(5, OnExpiry::Stop)).await;
    let Expiry::Settled(same) = store.expire(&idle.cuid, later).await.unwrap() else {
        panic!("settled")
    };
    assert_eq!(same.desired_state, DesiredState::Created);
    assert_eq!((same.status_reason, same.expires_at), (None, None));

    // Stopped by its idle policy: the deadline makes it `expired` (no wake on use).
    let slept = insert(&store, DesiredState::Running, life(5, OnExpiry::Stop)).await;
    store
        .transition_for::<crate::error::ApiError>(&slept.cuid, StatusReason::Idle, |_| {
            Ok(Some((DesiredState::Stopped, false)))
        })
        .await
        .unwrap();
    let seen = store.get(&slept.cuid).await.unwrap().unwrap();
    let stopped = crate::store::containers::Observation {
        status: Status::Stopped,
        exit_code: None,
        oom_killed: false,
        observed_generation: seen.generation,
        last_error: None,
        restart_done: seen.restart_requested,
        health: None,
        health_log: None,
        node: None,
        node_address: None,
        lost_node: None,
    };
    store
        .record_observation(&slept.cuid, &stopped)
        .await
        .unwrap();
    let Expiry::Settled(expired) = store.expire(&slept.cuid, later).await.unwrap() else {
        panic!("settled")
    };
    assert_eq!(expired.desired_state, DesiredState::Stopped);
    assert_eq!(expired.status_reason, Some(StatusReason::Expired));

    // A client's DELETE clears the reason; a gone row is nothing to do.
    assert!(matches!(
        store
            .expire("c00000000-0000-0000-0000-000000000000", later)
            .await
            .unwrap(),
        Expiry::NotDue(None)
    ));
    // Only live deadlines are loaded.
    let loaded = store.deadlines().await.unwrap();
    assert!(loaded.is_empty(), "{loaded:?}");
}

/// 10,000 deadlines an hour away and one a second away: the task loads them with one
/// query, wakes for the near one, acts on it, and then sleeps; nothing is done per container
/// while none is due. A deadline already past at start-up (the server was down) acts at once.
#[tokio::test]
async fn ten_thousand_deadlines_cost_nothing_while_none_is_due() {
    let (store, dir) = fresh().await;
    let hour = crate::store::deadline_after(Utc::now(), 3600);
    let now = crate::store::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO containers (cuid, image, desired_state, created_at, updated_at, ttl, on_expiry, expires_at)
         SELECT printf('cbulk%05d', i), 'alpine:3', 'running', ?1, ?1, 3600, 'stop', ?2 FROM n",
    )
    .bind(&now)
    .bind(&hour)
    .execute(&store.pool)
    .await
    .unwrap();
    let missed = insert(&store, DesiredState::Running, life(1, OnExpiry::Stop)).await;
    sqlx::query("UPDATE containers SET expires_at = '2000-01-01T00:00:00.000Z' WHERE cuid = ?")
        .bind(&missed.cuid)
        .execute(&store.pool)
        .await
        .unwrap();
    let near = insert(&store, DesiredState::Running, life(2, OnExpiry::Stop)).await;

    let audit = Arc::new(Audit::open(dir.path(), 1 << 20).unwrap());
    let deadlines = Deadlines::new();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = deadlines.spawn(
        store.clone(),
        Reconciler::new(),
        audit.clone(),
        shutdown.clone(),
    );

    let stopped =
        |c: Option<Container>| c.is_some_and(|c| c.desired_state == DesiredState::Stopped);
    while !stopped(store.get(&near.cuid).await.unwrap()) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the near deadline never acted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = store.get(&missed.cuid).await.unwrap().unwrap();
    assert_eq!(
        c.status_reason,
        Some(StatusReason::Expired),
        "the missed deadline acted"
    );
    assert_eq!(deadlines.len(), 10_000);
    let woken = deadlines.wakeups();
    // Start (missed one due), then asleep until the near one, its act, asleep again.
    assert!(woken <= 4, "{woken} wake-ups");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deadlines.wakeups(), woken, "asleep while nothing is due");
    let lines = std::fs::read_to_string(audit.path()).unwrap();
    assert_eq!(lines.matches("\"action\":\"expire\"").count(), 2, "{lines}");
    assert!(lines.contains("\"reason\":\"expired\""));

    // A new earlier deadline wakes it; a later one does not.
    deadlines.set(
        "cbulk00001",
        Some(&crate::store::deadline_after(Utc::now(), 7200)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(deadlines.wakeups(), woken);
    shutdown.cancel();
    task.await.unwrap();
}

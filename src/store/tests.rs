//! The store on its own: a fresh SQLite file per test (WAL needs a file, and the file is
//! what production uses), no HTTP and no Docker.

use serde_json::{json, Value};

use super::containers::{Container, Created, ListFilter, Observation, Updated};
use super::Store;
use crate::error::{ApiCode, ApiError, Kind};
use crate::lifecycle::{DesiredState, Status, StatusReason};
use crate::spec::{Port, Resources, Spec};

/// A store in its own directory; the directory lives as long as the returned guard.
async fn fresh() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::open(&url).await.expect("open store");
    (store, dir)
}

fn spec(ports: &[u16]) -> Spec {
    Spec {
        image: "alpine:3".into(),
        env: [("A".to_owned(), "1".to_owned())].into(),
        tags: vec!["web".into()],
        resources: Resources::default(),
        ports: ports
            .iter()
            .map(|&host| Port {
                host,
                container: 80,
                protocol: "tcp".into(),
                host_ip: "127.0.0.1".into(),
            })
            .collect(),
        command: None,
        restart: crate::spec::RestartPolicy::No,
        user: None,
        read_only: false,
        isolation: Default::default(),
        network: Default::default(),
        name: None,
        idle: None,
        health: None,
        auto_update: false,
        placement: None,
    }
}

async fn insert(store: &Store, spec: &Spec) -> Result<Container, ApiError> {
    let cuid = crate::spec::new_cuid();
    match store
        .insert(&cuid, spec, DesiredState::Created, None, |_| Value::Null)
        .await?
    {
        Created::New(c) => Ok(*c),
        Created::KeyTaken => panic!("no key was given"),
    }
}

/// The error of a write that must fail (the success types need not be `Debug`).
fn refused<T>(result: Result<T, ApiError>) -> ApiError {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn running() -> Observation {
    Observation {
        status: Status::Running,
        exit_code: None,
        oom_killed: false,
        observed_generation: 1,
        last_error: None,
        restart_done: 0,
        health: None,
        health_log: None,
        node: None,
        node_address: None,
        lost_node: None,
    }
}

#[tokio::test]
async fn insert_then_get_returns_the_same_container() {
    let (store, _dir) = fresh().await;
    let s = spec(&[18080]);
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(c.spec, s);
    assert_eq!(c.desired_state, DesiredState::Created);
    assert_eq!(c.status, Status::Created);
    assert_eq!((c.generation, c.observed_generation), (1, 0));

    let got = store.get(&c.cuid).await.unwrap().expect("stored");
    assert_eq!(got.spec, s);
    assert_eq!(got.seq, c.seq);
    let missing = ApiError::from(store.get_or_404("cnope").await.unwrap_err());
    assert_eq!(missing.code, "CONTAINER_NOT_FOUND");
}

/// The egress policy is stored on insert and update, and changing it is a new generation.
#[tokio::test]
async fn the_network_policy_is_stored_on_insert_and_update() {
    let (store, _dir) = fresh().await;
    let mut s = spec(&[]);
    s.network = crate::spec::Network {
        egress: crate::spec::Egress::Allowlist,
        allow: vec!["10.1.2.0/24:5432".into(), "192.0.2.7:443".into()],
    };
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(c.spec, s);
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec, s);
    let Updated { container, changed } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.network = crate::spec::Network::with_egress(crate::spec::Egress::None);
            Ok(next)
        })
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(container.generation, 2);
    let stored = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(stored.spec.network.egress, crate::spec::Egress::None);
    assert!(stored.spec.network.allow.is_empty());
}

/// The health check is stored with the spec; observed health, its log and the count of
/// unhealthy restarts are the reconciler's, `healthy` resets the count, and `?health=`
/// lists by it (`none`: no health).
#[tokio::test]
async fn health_is_stored_observed_and_listed() {
    use crate::spec::{Health, HealthCheck, HttpProbe, OnUnhealthy};
    let (store, _dir) = fresh().await;
    let mut s = spec(&[]);
    s.health = Some(HealthCheck {
        cmd: None,
        http: Some(HttpProbe {
            port: 8000,
            path: "/up".into(),
        }),
        interval: 2,
        timeout: 1,
        retries: 3,
        start_period: 5,
        on_unhealthy: Some(OnUnhealthy::Restart),
    });
    let c = insert(&store, &s).await.unwrap();
    let plain = insert(&store, &spec(&[])).await.unwrap();
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec, s);

    let seen = |h: Option<Health>, log: &str| Observation {
        health: h,
        health_log: Some(log.to_owned()),
        node: None,
        node_address: None,
        lost_node: None,
        ..running()
    };
    assert!(store
        .record_observation(&c.cuid, &seen(Some(Health::Unhealthy), "refused"))
        .await
        .unwrap());
    // The same again writes nothing; another log line is a change.
    assert!(!store
        .record_observation(&c.cuid, &seen(Some(Health::Unhealthy), "refused"))
        .await
        .unwrap());
    store.record_unhealthy_restart(&c.cuid).await.unwrap();
    let r = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(
        (r.health, r.health_log.as_deref(), r.unhealthy_restarts),
        (Some(Health::Unhealthy), Some("refused"), 1)
    );
    assert!(r.unhealthy_restart_at.is_some());
    let listed = |health: &[&str]| {
        let filter = ListFilter {
            health: Some(health.iter().map(|h| h.to_string()).collect()),
            ..ListFilter::default()
        };
        let store = store.clone();
        async move {
            let page = store.list(&filter, 0, 10).await.unwrap();
            page.into_iter().map(|c| c.cuid).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&["unhealthy"]).await, [c.cuid.as_str()]);
    assert_eq!(listed(&["none"]).await, [plain.cuid.as_str()]);
    assert!(listed(&["healthy"]).await.is_empty());
    assert!(store
        .record_observation(&c.cuid, &seen(Some(Health::Healthy), "200"))
        .await
        .unwrap());
    let r = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!((r.health, r.unhealthy_restarts), (Some(Health::Healthy), 0));
    assert_eq!(listed(&["healthy", "none"]).await.len(), 2);
}

#[tokio::test]
async fn disk_is_stored_on_insert_and_update() {
    let (store, _dir) = fresh().await;
    let mut s = spec(&[]);
    s.resources.disk = Some("1g".into());
    s.resources.disk_bytes = Some(1 << 30);
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec, s);
    let Updated { changed, .. } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.resources.disk = Some("2g".into());
            next.resources.disk_bytes = Some(2 << 30);
            Ok(next)
        })
        .await
        .unwrap();
    assert!(changed);
    let stored = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(stored.spec.resources.disk_bytes, Some(2 << 30));
    assert_eq!(stored.spec.resources.disk.as_deref(), Some("2g"));
}

#[tokio::test]
async fn read_only_and_tmp_are_stored_on_insert_and_update() {
    let (store, _dir) = fresh().await;
    let mut s = spec(&[]);
    s.read_only = true;
    s.resources.tmp = Some("16m".into());
    s.resources.tmp_bytes = Some(16 << 20);
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(c.spec, s);
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec, s);

    // Turning it off alone is a change: a new generation, which the reconciler converges
    // by recreating the container.
    let Updated { container, changed } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.read_only = false;
            next.resources.tmp = None;
            next.resources.tmp_bytes = None;
            Ok(next)
        })
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(container.generation, 2);
    let stored = store.get(&c.cuid).await.unwrap().unwrap();
    assert!(!stored.spec.read_only);
    assert_eq!(
        (stored.spec.resources.tmp, stored.spec.resources.tmp_bytes),
        (None, None)
    );
}

#[tokio::test]
async fn isolation_is_stored_on_insert_and_update() {
    let (store, _dir) = fresh().await;
    let mut s = spec(&[]);
    s.isolation = crate::spec::Isolation::Gvisor;
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec, s);

    let Updated { container, changed } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.isolation = crate::spec::Isolation::Runc;
            Ok(next)
        })
        .await
        .unwrap();
    assert!(
        changed,
        "a new runtime is a new generation (the container is recreated)"
    );
    assert_eq!(container.generation, 2);
    let stored = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(stored.spec.isolation, crate::spec::Isolation::Runc);
}

#[tokio::test]
async fn an_idempotency_key_is_stored_once() {
    let (store, _dir) = fresh().await;
    let s = spec(&[]);
    let first = store
        .insert(
            "c1",
            &s,
            DesiredState::Running,
            Some(("k", "sha")),
            |c| json!({"cuid": c.cuid}),
        )
        .await
        .unwrap();
    assert!(matches!(first, Created::New(_)));
    let stored = store.idempotent_response("k").await.unwrap().unwrap();
    assert_eq!(stored.status, 201);
    assert_eq!(stored.response, json!({"cuid": "c1"}));
    let twin = store
        .insert("c2", &s, DesiredState::Running, Some(("k", "sha")), |_| {
            Value::Null
        })
        .await
        .unwrap();
    assert!(matches!(twin, Created::KeyTaken));
    assert!(store.get("c2").await.unwrap().is_none());
}

#[tokio::test]
async fn transition_plans_on_the_current_row_and_a_refusal_changes_nothing() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[])).await.unwrap();

    let (after, changed) = store
        .transition::<ApiError>(&c.cuid, |current| {
            assert_eq!(current.desired_state, DesiredState::Created);
            Ok(Some((DesiredState::Running, true)))
        })
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(after.desired_state, DesiredState::Running);
    assert_eq!(after.restart_requested, 1);

    // The next plan sees what the first one wrote.
    let refused = store
        .transition::<ApiError>(&c.cuid, |current| {
            assert_eq!(current.desired_state, DesiredState::Running);
            Err(ApiError::state(ApiCode::InvalidTransition, "refused"))
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code, ApiCode::InvalidTransition);
    let now = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(now.desired_state, DesiredState::Running);
    assert_eq!(now.restart_requested, 1);
    assert_eq!(now.updated_at, after.updated_at);

    // "Nothing to change" writes nothing either.
    let (same, changed) = store
        .transition::<ApiError>(&c.cuid, |_| Ok(None))
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(same.updated_at, after.updated_at);

    let missing = store
        .transition::<ApiError>("cnope", |_| panic!("no row, no plan"))
        .await
        .unwrap_err();
    assert_eq!(missing.code, "CONTAINER_NOT_FOUND");
}

#[tokio::test]
async fn a_servers_transition_keeps_its_reason_until_a_clients_replaces_it() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[])).await.unwrap();
    assert_eq!(c.status_reason, None);

    let (idled, changed) = store
        .transition_for::<ApiError>(&c.cuid, StatusReason::Idle, |_| {
            Ok(Some((DesiredState::Paused, false)))
        })
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(idled.desired_state, DesiredState::Paused);
    assert_eq!(idled.status_reason, Some(StatusReason::Idle));
    // Read back from the file, not only from the answer.
    let stored = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(stored.status_reason, Some(StatusReason::Idle));

    let (woken, _) = store
        .transition::<ApiError>(&c.cuid, |_| Ok(Some((DesiredState::Running, false))))
        .await
        .unwrap();
    assert_eq!(woken.status_reason, None);
}

#[tokio::test]
async fn update_spec_checks_if_match_and_bumps_the_generation_only_on_change() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[18081])).await.unwrap();

    let stale = refused(
        store
            .update_spec::<ApiError>(&c.cuid, Some(7), |_| {
                panic!("not called on a stale generation")
            })
            .await,
    );
    assert_eq!(stale.kind, Kind::PreconditionFailed);
    assert_eq!(stale.code, "STALE_GENERATION");
    assert_eq!(stale.details, Some(json!({"expected": 7, "current": 1})));

    let Updated { container, changed } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| Ok(current.spec.clone()))
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(container.generation, 1);

    let Updated { container, changed } = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.image = "alpine:3.20".into();
            next.ports = spec(&[18082, 18083]).ports;
            Ok(next)
        })
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(container.generation, 2);
    assert_eq!(container.spec.image, "alpine:3.20");
    let hosts: Vec<u16> = container.spec.ports.iter().map(|p| p.host).collect();
    assert_eq!(hosts, [18082, 18083]);
    // The old port is free again.
    insert(&store, &spec(&[18081])).await.unwrap();

    // A refusal from `change` leaves the row as it was.
    let err = refused(
        store
            .update_spec::<ApiError>(&c.cuid, None, |_| {
                Err(ApiError::validation(ApiCode::InvalidImage, "no"))
            })
            .await,
    );
    assert_eq!(err.code, ApiCode::InvalidImage);
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().generation, 2);
}

#[tokio::test]
async fn a_taken_host_port_is_a_conflict_naming_its_holder() {
    let (store, _dir) = fresh().await;
    let holder = insert(&store, &spec(&[18090])).await.unwrap();

    let err = insert(&store, &spec(&[18091, 18090])).await.unwrap_err();
    assert_eq!(err.kind, Kind::Conflict);
    assert_eq!(err.code, "PORT_CONFLICT");
    assert_eq!(
        err.details,
        Some(json!({"host": 18090, "protocol": "tcp", "holder": holder.cuid}))
    );
    // Nothing of the refused insert is left, its other port included.
    assert_eq!(store.all_cuids().await.unwrap(), vec![holder.cuid.clone()]);
    insert(&store, &spec(&[18091])).await.unwrap();

    // The same port on the other protocol is a different port.
    let mut udp = spec(&[18090]);
    udp.ports[0].protocol = "udp".into();
    insert(&store, &udp).await.unwrap();

    // Through a PATCH too.
    let other = insert(&store, &spec(&[])).await.unwrap();
    let err = refused(
        store
            .update_spec::<ApiError>(&other.cuid, None, |_| Ok(spec(&[18090])))
            .await,
    );
    assert_eq!(err.code, "PORT_CONFLICT");
    assert_eq!(err.details.unwrap()["holder"], json!(holder.cuid));
}

#[tokio::test]
async fn record_observation_writes_only_when_something_changed() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[])).await.unwrap();

    assert!(store.record_observation(&c.cuid, &running()).await.unwrap());
    let seen = store.get(&c.cuid).await.unwrap().unwrap();
    assert_eq!(seen.status, Status::Running);
    assert_eq!(seen.observed_generation, 1);
    assert!(!store.record_observation(&c.cuid, &running()).await.unwrap());
    assert_eq!(
        store.get(&c.cuid).await.unwrap().unwrap().updated_at,
        seen.updated_at
    );

    // `restart_done` only grows.
    let mut o = running();
    o.restart_done = 2;
    assert!(store.record_observation(&c.cuid, &o).await.unwrap());
    o.restart_done = 1;
    assert!(!store.record_observation(&c.cuid, &o).await.unwrap());
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().restart_done, 2);

    // A tombstone's `deleting` is never overwritten.
    store.tombstone(&c.cuid, None).await.unwrap();
    let mut exited = running();
    exited.status = Status::Exited;
    assert!(!store.record_observation(&c.cuid, &exited).await.unwrap());
    assert_eq!(
        store.get(&c.cuid).await.unwrap().unwrap().status,
        Status::Deleting
    );
}

#[tokio::test]
async fn record_error_keeps_deleting_for_a_tombstone() {
    let (store, _dir) = fresh().await;
    let live = insert(&store, &spec(&[])).await.unwrap();
    let doomed = insert(&store, &spec(&[])).await.unwrap();
    let error = json!({"code": "COMPOSE_FAILED", "message": "boom"});

    store.record_error(&live.cuid, &error).await.unwrap();
    let c = store.get(&live.cuid).await.unwrap().unwrap();
    assert_eq!(c.status, Status::Error);
    assert_eq!(c.last_error, Some(error.clone()));

    // The API writes desired state only: `deleted_at`. The row reads as `deleting` at once,
    // while the observed column is left to the reconciler.
    let stone = store.tombstone(&doomed.cuid, Some(1)).await.unwrap();
    assert_eq!(stone.status, Status::Deleting);
    assert!(stone.deleted_at.is_some());
    assert_eq!(stored_status(&store, &doomed.cuid).await, "created");
    let listed = |status: &str| {
        let filter = ListFilter {
            status: Some(vec![status.to_owned()]),
            tag: None,
            tenant: None,
            q: None,
            health: None,
            update_available: None,
        };
        let store = store.clone();
        async move {
            let page = store.list(&filter, 0, 10).await.unwrap();
            page.into_iter().map(|c| c.cuid).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("deleting").await, [doomed.cuid.as_str()]);
    // Filtered on what is shown: not on the stored `created` of the tombstone.
    assert!(listed("created").await.is_empty());
    assert_eq!(listed("error").await, [live.cuid.as_str()]);
    store.record_error(&doomed.cuid, &error).await.unwrap();
    let c = store.get(&doomed.cuid).await.unwrap().unwrap();
    assert_eq!(c.status, Status::Deleting);
    assert_eq!(c.last_error, Some(error));
    assert_eq!(stored_status(&store, &doomed.cuid).await, "deleting");

    // Deleting the row needs the tombstone.
    store.delete_row(&live.cuid).await.unwrap();
    assert!(store.get(&live.cuid).await.unwrap().is_some());
    store.delete_row(&doomed.cuid).await.unwrap();
    assert!(store.get(&doomed.cuid).await.unwrap().is_none());
}

#[tokio::test]
async fn tombstone_checks_if_match_and_is_idempotent() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[])).await.unwrap();
    let stale = ApiError::from(store.tombstone(&c.cuid, Some(2)).await.unwrap_err());
    assert_eq!(stale.code, "STALE_GENERATION");
    assert!(store
        .get(&c.cuid)
        .await
        .unwrap()
        .unwrap()
        .deleted_at
        .is_none());

    let first = store.tombstone(&c.cuid, None).await.unwrap();
    let again = store.tombstone(&c.cuid, None).await.unwrap();
    assert_eq!(again.deleted_at, first.deleted_at);
    let missing = ApiError::from(store.tombstone("cnope", None).await.unwrap_err());
    assert_eq!(missing.code, "CONTAINER_NOT_FOUND");
}

#[tokio::test]
async fn listing_pages_in_creation_order_with_filters() {
    let (store, _dir) = fresh().await;
    let mut cuids = Vec::new();
    for i in 0..5 {
        let mut s = spec(&[]);
        s.tags = vec![if i % 2 == 0 { "even" } else { "odd" }.into()];
        cuids.push(insert(&store, &s).await.unwrap().cuid);
    }
    let all = ListFilter::default();

    // `limit + 1` rows: the extra one says another page exists.
    let first = store.list(&all, 0, 2).await.unwrap();
    let got: Vec<&str> = first.iter().map(|c| c.cuid.as_str()).collect();
    assert_eq!(got, [&cuids[0], &cuids[1], &cuids[2]]);
    let second = store.list(&all, first[1].seq, 2).await.unwrap();
    let got: Vec<&str> = second.iter().map(|c| c.cuid.as_str()).collect();
    assert_eq!(got, [&cuids[2], &cuids[3], &cuids[4]]);
    let last = store.list(&all, second[1].seq, 2).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].cuid, cuids[4]);

    let even = ListFilter {
        status: None,
        tag: Some("even".into()),
        tenant: None,
        q: None,
        health: None,
        update_available: None,
    };
    let evens = store.list(&even, 0, 10).await.unwrap();
    let got: Vec<&str> = evens.iter().map(|c| c.cuid.as_str()).collect();
    assert_eq!(got, [&cuids[0], &cuids[2], &cuids[4]]);

    store
        .record_observation(&cuids[3], &running())
        .await
        .unwrap();
    let running_only = ListFilter {
        status: Some(vec!["running".into()]),
        tag: None,
        tenant: None,
        q: None,
        health: None,
        update_available: None,
    };
    let got = store.list(&running_only, 0, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].cuid, cuids[3]);
}

/// The observed `status` column as stored (the API never writes it).
async fn stored_status(store: &Store, cuid: &str) -> String {
    sqlx::query_scalar("SELECT status FROM containers WHERE cuid = ?")
        .bind(cuid)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idle_policy_is_stored_and_its_change_alone_makes_no_generation() {
    use crate::spec::{Idle, IdleAction};
    let (store, _dir) = fresh().await;
    let policy = Idle {
        after: 60,
        action: IdleAction::Stop,
        resume_on_use: false,
    };
    let mut s = spec(&[]);
    s.idle = Some(policy);
    let c = insert(&store, &s).await.unwrap();
    assert_eq!(c.spec.idle, Some(policy));
    assert_eq!(
        store.get(&c.cuid).await.unwrap().unwrap().spec.idle,
        Some(policy)
    );

    // Only the policy: a change, no new generation (nothing for Docker to recreate).
    let u = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.idle = None;
            Ok(next)
        })
        .await
        .unwrap();
    assert!(u.changed);
    assert_eq!(u.container.generation, 1);
    assert_eq!(u.container.spec.idle, None);
    assert_eq!(store.get(&c.cuid).await.unwrap().unwrap().spec.idle, None);

    // With anything else: a new generation, as for any spec change.
    let u = store
        .update_spec::<ApiError>(&c.cuid, Some(1), |current| {
            let mut next = current.spec.clone();
            next.idle = Some(policy);
            next.tags = vec!["other".into()];
            Ok(next)
        })
        .await
        .unwrap();
    assert_eq!(u.container.generation, 2);
    assert_eq!(u.container.spec.idle, Some(policy));

    // The sampler's candidates: wanted running and observed running only.
    assert!(store.idle_candidates().await.unwrap().is_empty());
    sqlx::query("UPDATE containers SET desired_state = 'running', status = 'running'")
        .execute(&store.pool)
        .await
        .unwrap();
    let candidates = store.idle_candidates().await.unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0].cuid, c.cuid);
    assert_eq!(candidates[0].idle, policy);
}

/// A task seen on another node than the last one is a move, across the gap where no task
/// runs; its reason is `node_down` when the old node is the one it was lost with.
#[tokio::test]
async fn a_new_node_is_a_move_with_its_reason() {
    let (store, _dir) = fresh().await;
    let c = insert(&store, &spec(&[])).await.unwrap();
    let on = |node: Option<&str>, lost: Option<&str>| Observation {
        node: node.map(str::to_owned),
        lost_node: lost.map(str::to_owned),
        ..running()
    };
    let get = |cuid: String| {
        let store = store.clone();
        async move { store.get(&cuid).await.unwrap().unwrap() }
    };
    store
        .record_observation(&c.cuid, &on(Some("n1"), None))
        .await
        .unwrap();
    assert_eq!(
        get(c.cuid.clone()).await.last_move,
        None,
        "a first node is no move"
    );
    // Lost with n1: no task runs for a while.
    let gap = Observation {
        status: Status::Restarting,
        ..on(None, Some("n1"))
    };
    store.record_observation(&c.cuid, &gap).await.unwrap();
    let got = get(c.cuid.clone()).await;
    assert_eq!((got.node, got.last_move), (None, None));
    store
        .record_observation(&c.cuid, &on(Some("n2"), Some("n1")))
        .await
        .unwrap();
    let got = get(c.cuid.clone()).await;
    assert_eq!(got.node.as_deref(), Some("n2"));
    let m = got.last_move.expect("moved");
    assert_eq!((m.from.as_str(), m.to.as_str()), ("n1", "n2"));
    assert_eq!(m.reason.as_deref(), Some("node_down"));
    // Seen again on n2: the same move.
    assert!(!store
        .record_observation(&c.cuid, &on(Some("n2"), Some("n1")))
        .await
        .unwrap());
    assert_eq!(get(c.cuid.clone()).await.last_move, Some(m));
    // Back to n1 without a node lost: a move without a known reason.
    store
        .record_observation(&c.cuid, &on(Some("n1"), None))
        .await
        .unwrap();
    let m = get(c.cuid.clone()).await.last_move.expect("moved back");
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.reason),
        ("n2", "n1", None)
    );
}

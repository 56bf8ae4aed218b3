//! `GET /events`: the change feed ([`crate::events`]) as server-sent events.
//!
//! Each change is `id: <seq>`, `event: container`, `data: {cuid, generation, status,
//! container}` or `data: {cuid, deleted: true}`; a move to another Swarm node is also
//! `event: moved`, `data: {cuid, from, to, at, reason}`, right after its `container` event. A client resuming with `Last-Event-ID`
//! gets what it missed if that is still in the window, otherwise one `event: reset` (reload
//! the list, then carry on from the id it names). A new client starts at the present.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::Stream;

use crate::events::{Feed, Since};
use crate::http::lease::Lease;
use crate::http::schema::{EventFrame, EventName, EventReset};
use crate::state::AppState;
use crate::tenancy::Principal;

struct Reader {
    feed: Arc<Feed>,
    rx: tokio::sync::watch::Receiver<u64>,
    after: u64,
    pending: VecDeque<Event>,
    shutdown: tokio_util::sync::CancellationToken,
    /// A tenant's reader: only events about that tenant's containers.
    tenant: Option<String>,
}

fn reset(latest: u64) -> Event {
    sent(EventFrame {
        id: latest.to_string(),
        event: EventName::Reset,
        data: serde_json::to_string(&EventReset {
            reason: "the events after your Last-Event-ID are no longer kept; reload the list",
            id: latest,
        })
        .unwrap_or_default(),
    })
}

/// The documented frame as axum writes it.
fn sent(frame: EventFrame) -> Event {
    let event = match frame.event {
        EventName::Container => "container",
        EventName::Reset => "reset",
        EventName::Moved => "moved",
    };
    Event::default().id(frame.id).event(event).data(frame.data)
}

#[utoipa::path(get, path = "/events", operation_id = "events", tag = "containers", summary = "Server-sent events: one per change of a container (resumable with Last-Event-ID)", params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event")), responses((status = 200, description = "An event stream", body = crate::http::schema::EventFrame, content_type = "text/event-stream"), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    lease: Option<Extension<Lease>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let feed = state.events.clone();
    let rx = feed.subscribe();
    let latest = feed.latest();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    let mut pending = VecDeque::new();
    let after = match resume {
        None => latest,
        Some(Ok(id)) => id,
        // Not one of our ids: start over like a reset.
        Some(Err(_)) => {
            pending.push_back(reset(latest));
            latest
        }
    };
    let reader = Reader {
        feed,
        rx,
        after,
        pending,
        shutdown: state.shutdown.clone(),
        tenant: principal.tenant,
    };
    // A comment line at once: proxies and clients see the stream open.
    let opened = futures_util::stream::once(async { Ok(Event::default().comment("open")) });
    let stream = futures_util::StreamExt::chain(opened, stream(reader));
    // The stream ends with the sign-in that opened it (sign-out, expiry, a revoked token).
    let ended: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match lease {
        Some(Extension(lease)) => Box::pin(lease.ended(state.clone())),
        None => Box::pin(std::future::pending()),
    };
    let stream = futures_util::StreamExt::take_until(stream, ended);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn stream(reader: Reader) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(e) = r.pending.pop_front() {
                return Some((Ok(e), r));
            }
            match r.feed.since(r.after) {
                Since::Reset => {
                    let latest = r.feed.latest();
                    r.after = latest;
                    r.pending.push_back(reset(latest));
                }
                Since::Events(list) if !list.is_empty() => {
                    for e in list {
                        r.after = e.id;
                        if r.tenant.is_some() && r.tenant.as_deref() != e.tenant.as_deref() {
                            continue;
                        }
                        r.pending.push_back(sent(EventFrame {
                            id: e.id.to_string(),
                            event: if e.name == "moved" {
                                EventName::Moved
                            } else {
                                EventName::Container
                            },
                            data: e.data.to_string(),
                        }));
                    }
                }
                Since::Events(_) => {
                    tokio::select! {
                        () = r.shutdown.cancelled() => return None,
                        res = r.rx.changed() => if res.is_err() { return None },
                    }
                }
            }
        }
    })
}

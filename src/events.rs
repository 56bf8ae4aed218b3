//! The change feed behind `GET /events`: one event per change of a container's
//! representation, numbered by a sequence that only grows, the last [`WINDOW`] kept for
//! resumption, and no more than `EVENTS_MAX_BYTES` of them: each event carries a whole
//! representation (env included), so a count alone would let a few big containers pin
//! gigabytes. Whichever bound is reached first drops the oldest events.
//!
//! Design: a single task diffs the store against its last snapshot each time something may
//! have changed. The store signals every committed write to a container row, the API's
//! desired-state writes and the reconciler's observed-state writes alike
//! ([`Store::subscribe_changes`]). Diffing (instead of building events at every write site)
//! keeps the feed in one place and makes it impossible to miss a writer;
//! the watch channel coalesces bursts, so a client sees every *settled* representation in
//! order, though two changes within one diff may arrive as one event (the newer).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::representation::{representation, Representation, Shown};
use crate::store::containers::ListFilter;
use crate::store::Store;

/// How many bytes of events are kept by default (`EVENTS_MAX_BYTES`).
pub use crate::config::DEFAULT_EVENTS_MAX_BYTES as MAX_BYTES;
/// How many events are kept for `Last-Event-ID` resumption by default (`EVENTS_WINDOW`).
pub use crate::config::DEFAULT_EVENTS_WINDOW as WINDOW;

#[derive(Clone, Debug)]
pub struct Event {
    pub id: u64,
    /// The SSE `event:` name: `container`, or `moved` (see [`ContainerMoved`]).
    pub name: &'static str,
    /// The JSON `data:` line.
    pub data: Arc<str>,
    /// The tenant of the container it is about: a tenant's reader sees only its own.
    pub tenant: Option<Arc<str>>,
}

/// The `data` of an `event: container`: a container's new representation, or its end.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ContainerEvent {
    /// Boxed: a representation is large beside a deletion.
    Changed(Box<ContainerChanged>),
    Deleted(ContainerDeleted),
}

/// A container whose representation changed (or that was created).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ContainerChanged {
    pub cuid: String,
    pub generation: i64,
    pub status: Shown,
    pub container: Representation,
}

/// A container whose row is gone.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ContainerDeleted {
    pub cuid: String,
    /// Always true.
    pub deleted: bool,
}

/// The `data` of an `event: moved`, sent right after the `container` event that shows it: the
/// container runs on another Swarm node than before (its `last_move`, with the cuid).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ContainerMoved {
    pub cuid: String,
    #[serde(flatten)]
    pub moved: crate::store::containers::NodeMove,
}

/// What a reader gets after the id it last saw.
pub enum Since {
    Events(Vec<Event>),
    /// That id is older than the window (or from before a restart): reload the list.
    Reset,
}

pub struct Feed {
    window: usize,
    max_bytes: usize,
    ring: Mutex<Ring>,
    /// The newest id; readers wait on it.
    latest: watch::Sender<u64>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Event>,
    /// Sum of the kept events' `data` lengths.
    bytes: usize,
}

impl Feed {
    pub fn new(window: usize, max_bytes: usize) -> Self {
        Self {
            window: window.max(1),
            max_bytes: max_bytes.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(window.clamp(1, WINDOW)),
                bytes: 0,
            }),
            latest: watch::channel(0).0,
        }
    }

    /// Bytes of the events kept now.
    pub fn bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    pub fn latest(&self) -> u64 {
        *self.latest.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    fn push(&self, data: &impl Serialize, tenant: Option<&str>) {
        self.push_named("container", data, tenant);
    }

    fn push_named(&self, name: &'static str, data: &impl Serialize, tenant: Option<&str>) {
        let tenant = tenant.map(Arc::from);
        let data: Arc<str> = serde_json::to_string(data).unwrap_or_default().into();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.latest() + 1;
        // The newest event is always kept, even alone over the budget: a reader waiting for
        // the next id must find it.
        while ring.events.len() >= self.window
            || (!ring.events.is_empty() && ring.bytes + data.len() > self.max_bytes)
        {
            let Some(old) = ring.events.pop_front() else {
                break;
            };
            ring.bytes -= old.data.len();
        }
        ring.bytes += data.len();
        ring.events.push_back(Event {
            id,
            name,
            data,
            tenant,
        });
        self.latest.send_replace(id);
    }

    /// The events after `after`, or [`Since::Reset`] when some of them are gone.
    pub fn since(&self, after: u64) -> Since {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let latest = self.latest();
        if after > latest {
            return Since::Reset;
        }
        if after == latest {
            return Since::Events(Vec::new());
        }
        match ring.events.front() {
            Some(first) if first.id <= after + 1 => Since::Events(
                ring.events
                    .iter()
                    .filter(|e| e.id > after)
                    .cloned()
                    .collect(),
            ),
            _ => Since::Reset,
        }
    }
}

/// Every container's representation, as compared between diffs. A container being deleted
/// is still there (status `deleting`); `deleted: true` is sent when its row is gone.
async fn snapshot(store: &Store) -> Result<HashMap<String, (Representation, String)>, sqlx::Error> {
    let mut out = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.list(&ListFilter::default(), after, 1000).await?;
        let more = page.len() > 1000;
        for c in page.iter().take(1000) {
            after = c.seq;
            let rep = representation(c);
            let text = serde_json::to_string(&rep).unwrap_or_default();
            out.insert(c.cuid.clone(), (rep, text));
        }
        if !more {
            return Ok(out);
        }
    }
}

/// Runs the feed until `shutdown`: diff after every change signal.
pub async fn run(
    feed: Arc<Feed>,
    store: Store,
    mut changes: watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    // Starting from nothing, the first diff announces every container once: nothing made
    // between start-up and that first diff can be missed.
    let mut known: HashMap<String, String> = HashMap::new();
    loop {
        changes.borrow_and_update();
        match snapshot(&store).await {
            Ok(now) => {
                emit(&feed, &known, &now);
                known = now.into_iter().map(|(k, (_, text))| (k, text)).collect();
            }
            Err(e) => tracing::warn!(error = %e, "events: cannot read the store"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

fn emit(
    feed: &Feed,
    known: &HashMap<String, String>,
    now: &HashMap<String, (Representation, String)>,
) {
    // Creation order (the store's seq is not in the representation; created_at is, and
    // cuid breaks ties) keeps the feed's order stable.
    let mut changed: Vec<&Representation> = now
        .iter()
        .filter(|(cuid, (_, text))| known.get(*cuid) != Some(text))
        .map(|(_, (rep, _))| rep)
        .collect();
    changed.sort_by(|a, b| (&a.created_at, &a.cuid).cmp(&(&b.created_at, &b.cuid)));
    for rep in changed {
        feed.push(
            &ContainerEvent::Changed(Box::new(ContainerChanged {
                cuid: rep.cuid.clone(),
                generation: rep.generation,
                status: rep.status,
                container: rep.clone(),
            })),
            rep.tenant.as_deref(),
        );
        if let Some(m) = moved(known.get(&rep.cuid), rep) {
            feed.push_named("moved", &m, rep.tenant.as_deref());
        }
    }
    let mut gone: Vec<&String> = known.keys().filter(|k| !now.contains_key(*k)).collect();
    gone.sort();
    for cuid in gone {
        // The last representation sent names the tenant the deletion belongs to.
        let last: serde_json::Value = known
            .get(cuid)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        feed.push(
            &ContainerEvent::Deleted(ContainerDeleted {
                cuid: cuid.clone(),
                deleted: true,
            }),
            last["tenant"].as_str(),
        );
    }
}

/// The move a new representation shows that the last one sent did not (a new `last_move`).
/// A container first seen (`known` empty: a start-up, or its creation) announces none.
fn moved(known: Option<&String>, rep: &Representation) -> Option<ContainerMoved> {
    let m = rep.last_move.as_ref()?;
    let last: serde_json::Value = serde_json::from_str(known?).ok()?;
    if last["last_move"]["at"].as_str() == Some(m.at.as_str()) {
        return None;
    }
    Some(ContainerMoved {
        cuid: rep.cuid.clone(),
        moved: m.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_and_reset() {
        let f = Feed::new(WINDOW, MAX_BYTES);
        assert!(matches!(f.since(0), Since::Events(v) if v.is_empty()));
        for i in 0..(WINDOW + 10) {
            f.push(&json!({ "i": i }), None);
        }
        assert_eq!(f.latest(), (WINDOW + 10) as u64);
        assert!(matches!(f.since(5), Since::Reset));
        assert!(matches!(f.since(f.latest() + 1), Since::Reset));
        match f.since(f.latest() - 3) {
            Since::Events(v) => assert_eq!(
                v.iter().map(|e| e.id).collect::<Vec<_>>(),
                vec![f.latest() - 2, f.latest() - 1, f.latest()]
            ),
            Since::Reset => panic!("within the window"),
        }
        // The oldest kept id's predecessor is still resumable.
        assert!(matches!(f.since(10), Since::Events(v) if v.len() == WINDOW));
    }

    #[test]
    fn the_ring_is_bounded_by_bytes_too() {
        let f = Feed::new(WINDOW, 10_000);
        let big = "x".repeat(1_000);
        for i in 0..100 {
            f.push(&json!({ "i": i, "pad": big }), None);
            assert!(f.bytes() <= 10_000, "{} bytes after {i}", f.bytes());
        }
        // About nine events of ~1 KB fit: an early id is gone, a recent one resumes.
        assert!(matches!(f.since(50), Since::Reset));
        match f.since(f.latest() - 5) {
            Since::Events(v) => assert_eq!(v.len(), 5),
            Since::Reset => panic!("a recent id must resume"),
        }
        // One event over the whole budget is still kept (alone), so it can be read.
        f.push(&json!({ "pad": "y".repeat(20_000) }), None);
        assert!(matches!(f.since(f.latest() - 1), Since::Events(v) if v.len() == 1));
        assert!(matches!(f.since(f.latest() - 2), Since::Reset));
    }
}

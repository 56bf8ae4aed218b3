//! `GET /containers/{cuid}/stats`: what a running container uses, from the Engine API's
//! stats (CPU %, memory, network, block I/O, pids). `?stream=true` sends one SSE event per
//! second (Docker's own stats cadence) until the client leaves, the container stops, the
//! sign-in that opened it ends or the server shuts down.
//!
//! `GET /stats?cuids=c1,c2,…`: one sample of each of several containers in one request (the
//! console's list draws a CPU sparkline per running row with it). Samples are kept for a few
//! seconds and shared by every caller, so many open lists cost Docker one sample per
//! container per [`SHARED_FOR`]: callers asking for a container whose sample is being taken
//! wait for that one ([`Shared`]), and at most `DOCKER_CALLS` samples are taken at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bollard::models::{ContainerBlkioStats, ContainerCpuStats, ContainerStatsResponse};
use bollard::query_parameters::{InspectContainerOptions, StatsOptions};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::extract::{Path, Query};
use crate::http::lease::{self, Lease};
use crate::http::response::live_container;
use crate::lifecycle::Status;
use crate::state::AppState;
use crate::tenancy::Principal;

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    /// `true`: a `text/event-stream` with one `stats` event per second.
    #[serde(default)]
    pub stream: bool,
}

/// One sample. Sizes in bytes; counters (network, block I/O) since the container started.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub cuid: String,
    /// When Docker took the sample (RFC 3339).
    pub read: Option<String>,
    /// Share of one CPU × 100 (two busy CPUs: 200), over the last second.
    pub cpu_percent: f64,
    pub online_cpus: u32,
    pub memory: MemoryStats,
    pub network: NetworkStats,
    pub block_io: BlockIoStats,
    pub pids: PidsStats,
    /// How full a capped `/app` is (`resources.disk`); null without a cap.
    #[schema(required = true)]
    pub disk: Option<crate::http::schema::DiskUsage>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MemoryStats {
    /// Usage less the page cache that can be dropped, as `docker stats` shows it.
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub percent: f64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct NetworkStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BlockIoStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PidsStats {
    pub current: u64,
    pub limit: Option<u64>,
}

fn not_running(cuid: &str) -> ApiError {
    ApiError::new(
        Kind::StateConflict,
        ApiCode::ContainerNotRunning,
        format!("container {cuid} is not running; stats exist only for a running container"),
    )
}

fn engine_error(e: &bollard::errors::Error) -> ApiError {
    crate::error::docker_unavailable(e)
}

#[utoipa::path(get, path = "/containers/{cuid}/stats", tag = "containers", summary = "CPU, memory, network, block I/O and pids of a running container", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("stream" = Option<bool>, Query, description = "true: text/event-stream, one `stats` event per second")), responses((status = 200, description = "One sample (or an SSE stream of them)", body = crate::http::stats::Stats), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 409, description = "CONTAINER_NOT_RUNNING", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(query): Query<StatsQuery>,
    lease: Option<Extension<Lease>>,
) -> ApiResult<Response> {
    let c = live_container(&state, &cuid).await?;
    let cuid = c.cuid.clone();
    let config = state.config.clone();
    let disk = move || crate::http::schema::DiskUsage::of(&config, &c);
    let (docker, container) = crate::http::container_engine(&state, &cuid).await?;
    // Docker's own view decides, not the store's (which may lag an exit by a moment).
    let running = match docker
        .inspect_container(&container, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info.state.is_some_and(|s| {
            s.running == Some(true) && s.paused != Some(true) && s.restarting != Some(true)
        }),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => return Err(engine_error(&e)),
    };
    if !running {
        return Err(not_running(&cuid));
    }

    if query.stream {
        // Docker streams one sample per second, each with the previous one as `precpu`.
        let options = StatsOptions {
            stream: true,
            one_shot: false,
        };
        let id = cuid.clone();
        let events = docker
            .stats(&container, Some(options))
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(move |r| {
                let event = r.ok().and_then(|s| {
                    let mut sample = summarize(&id, &s);
                    sample.disk = disk();
                    Event::default().event("stats").json_data(sample).ok()
                });
                std::future::ready(event.map(Ok::<_, Infallible>))
            })
            // Ends with the sign-in that opened it and with the server, like `GET /events`.
            .take_until(lease::stream_end(lease.map(|Extension(l)| l), &state));
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }

    // Not one-shot: Docker waits for a second sample so `precpu_stats` is filled and the
    // CPU share over that second can be computed.
    let options = StatsOptions {
        stream: false,
        one_shot: false,
    };
    let sample = docker
        .stats(&container, Some(options))
        .next()
        .await
        .ok_or_else(|| not_running(&cuid))?;
    match sample {
        Ok(s) => {
            let mut sample = summarize(&cuid, &s);
            sample.disk = disk();
            Ok(Json(sample).into_response())
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Err(not_running(&cuid)),
        Err(e) => Err(engine_error(&e)),
    }
}

/// At most this many containers in one `GET /stats`.
pub const MAX_CUIDS: usize = 50;
/// How long a sample taken for `GET /stats` is shared with the next callers.
pub const SHARED_FOR: Duration = Duration::from_secs(5);
/// Docker samples taken at once for one `GET /stats`.
const PARALLEL: usize = 8;

/// Docker stats calls in flight at once for `GET /stats`, over all requests.
const DOCKER_CALLS: usize = 16;

/// Recent samples by cuid (process-wide: a cuid names one container on this host).
static RECENT: LazyLock<Shared<Stats>> = LazyLock::new(|| Shared::new(SHARED_FOR, DOCKER_CALLS));

/// Samples shared by the callers that want one within `fresh_for` of each other: one is
/// taken at a time per key, and a caller that arrives while it is taken waits for it rather
/// than taking its own; at most `calls` are taken at once over all keys.
pub struct Shared<T> {
    fresh_for: Duration,
    calls: tokio::sync::Semaphore,
    keys: Mutex<HashMap<String, Slot<T>>>,
}

/// One key's last sample, locked while a new one is taken.
type Slot<T> = std::sync::Arc<tokio::sync::Mutex<Option<Taken<T>>>>;

/// A sample (`None`: there was none to take) and when it was taken.
struct Taken<T> {
    at: Instant,
    sample: Option<T>,
}

impl<T: Clone> Shared<T> {
    pub fn new(fresh_for: Duration, calls: usize) -> Self {
        Shared {
            fresh_for,
            calls: tokio::sync::Semaphore::new(calls.max(1)),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The sample of `key`: one taken in the last `fresh_for`, or one finished after this
    /// call began (also "none": a container that just stopped is not asked again by every
    /// caller), or else a new one from `take`.
    pub async fn get<F, Fut>(&self, key: &str, take: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let asked = Instant::now();
        let slot = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            // Forget keys nobody waits on whose sample is stale (or was none).
            let fresh_for = self.fresh_for;
            keys.retain(|_, slot| {
                std::sync::Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |t| {
                        t.as_ref()
                            .is_some_and(|t| t.sample.is_some() && t.at.elapsed() < fresh_for)
                    })
            });
            keys.entry(key.to_owned()).or_default().clone()
        };
        let mut taken = slot.lock().await;
        if let Some(t) = taken.as_ref() {
            if t.at >= asked || (t.sample.is_some() && t.at.elapsed() < self.fresh_for) {
                return t.sample.clone();
            }
        }
        let sample = {
            let _call = self.calls.acquire().await.ok()?;
            take().await
        };
        *taken = Some(Taken {
            at: Instant::now(),
            sample: sample.clone(),
        });
        sample
    }
}

/// `GET /stats`: samples of several containers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ManyStats {
    /// One sample per running container asked for, in the order asked.
    pub stats: Vec<Stats>,
    /// Asked for, visible to the caller, but not running (no sample).
    pub not_running: Vec<String>,
    /// Asked for but unknown, deleted or another tenant's (all alike).
    pub not_found: Vec<String>,
    /// Running, by the store, on a Swarm node whose Engine API cannot be reached now (no
    /// sample; the others are still sampled).
    pub unreachable: Vec<String>,
}

fn bad_cuids(value: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(
        ApiCode::InvalidQuery,
        "cuids",
        serde_json::json!(value),
        message,
    )
}

/// One sample with the CPU share over Docker's own second; `None` when Docker has no
/// running container by that id (or answers nothing within 5 s).
async fn sample_of(docker: &bollard::Docker, cuid: &str, container: &str) -> Option<Stats> {
    RECENT
        .get(cuid, || take_sample(docker, cuid, container))
        .await
}

/// `container`: its name (the cuid) or, on Swarm, its task's container on the node.
async fn take_sample(docker: &bollard::Docker, cuid: &str, container: &str) -> Option<Stats> {
    let options = StatsOptions {
        stream: false,
        one_shot: false,
    };
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        docker.stats(container, Some(options)).next(),
    )
    .await
    .ok()??
    .ok()?;
    let sample = summarize(cuid, &first);
    // A stopped container's sample has no time ("0001-01-01…").
    if sample.read.as_deref().is_none_or(|r| r.starts_with("0001")) {
        return None;
    }
    Some(sample)
}

#[utoipa::path(get, path = "/stats", tag = "containers", summary = "One sample of each of several containers", params(("cuids" = String, Query, description = "comma-separated cuids, 1-50")), responses((status = 200, description = "Samples of the running ones; the others named", body = crate::http::stats::ManyStats), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn many(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<ManyStats>> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "cuids") {
        return Err(ApiError::field(
            ApiCode::InvalidQuery,
            k.clone(),
            serde_json::json!(q[k]),
            format!("unknown query parameter `{k}`"),
        ));
    }
    let raw = q.get("cuids").map(String::as_str).unwrap_or("");
    let mut cuids: Vec<&str> = Vec::new();
    for c in raw.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if !crate::spec::is_cuid(c) {
            return Err(bad_cuids(raw, format!("{c:?} is not a cuid")));
        }
        if !cuids.contains(&c) {
            cuids.push(c);
        }
    }
    if cuids.is_empty() {
        return Err(bad_cuids(raw, "cuids must name at least one container"));
    }
    if cuids.len() > MAX_CUIDS {
        return Err(bad_cuids(
            raw,
            format!("at most {MAX_CUIDS} containers at once"),
        ));
    }
    let mut out = ManyStats {
        stats: Vec::new(),
        not_running: Vec::new(),
        not_found: Vec::new(),
        unreachable: Vec::new(),
    };
    let mut running = Vec::new();
    for cuid in cuids {
        match state.store.get(cuid).await? {
            Some(c) if c.deleted_at.is_none() && principal.sees(c.tenant.as_deref()) => {
                // The store's word picks whom to ask; Docker's sample decides.
                if c.status == Status::Running {
                    running.push(c);
                } else {
                    out.not_running.push(c.cuid);
                }
            }
            _ => out.not_found.push(cuid.to_owned()),
        }
    }
    if running.is_empty() {
        return Ok(Json(out));
    }
    // Each is found where it runs (this host's daemon, or the Swarm node of its task) in
    // the same parallel step as its sample: one node that cannot be reached costs only its
    // own containers (`unreachable`), not the answer.
    let samples: Vec<(String, Result<Option<Stats>, ()>)> = futures_util::stream::iter(running)
        .map(|c| {
            let state = state.clone();
            async move {
                let Ok(at) = crate::http::locate(&state, &c.cuid).await else {
                    return (c.cuid, Err(()));
                };
                let s = sample_of(&at.docker, &c.cuid, &at.container)
                    .await
                    .map(|mut s| {
                        s.disk = crate::http::schema::DiskUsage::of(&state.config, &c);
                        s
                    });
                (c.cuid, Ok(s))
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    for (cuid, s) in samples {
        match s {
            Ok(Some(s)) => out.stats.push(s),
            Ok(None) => out.not_running.push(cuid),
            Err(()) => out.unreachable.push(cuid),
        }
    }
    Ok(Json(out))
}

fn total_cpu(s: &Option<ContainerCpuStats>) -> (u64, u64) {
    let s = s.as_ref();
    (
        s.and_then(|s| s.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0),
        s.and_then(|s| s.system_cpu_usage).unwrap_or(0),
    )
}

/// CPU % the way `docker stats` computes it: the container's share of the host's CPU time
/// between the two samples, times the CPUs it could use.
fn cpu_percent(s: &ContainerStatsResponse) -> (f64, u32) {
    let (cpu, system) = total_cpu(&s.cpu_stats);
    let (pre_cpu, pre_system) = total_cpu(&s.precpu_stats);
    let online = s
        .cpu_stats
        .as_ref()
        .and_then(|c| {
            c.online_cpus.or_else(|| {
                c.cpu_usage
                    .as_ref()
                    .and_then(|u| u.percpu_usage.as_ref())
                    .map(|p| p.len() as u32)
            })
        })
        .unwrap_or(1)
        .max(1);
    let cpu_delta = cpu.saturating_sub(pre_cpu) as f64;
    let system_delta = system.saturating_sub(pre_system) as f64;
    if pre_system == 0 || system_delta <= 0.0 {
        return (0.0, online);
    }
    (cpu_delta / system_delta * f64::from(online) * 100.0, online)
}

fn block_io(b: &Option<ContainerBlkioStats>) -> BlockIoStats {
    let mut out = BlockIoStats {
        read_bytes: 0,
        write_bytes: 0,
    };
    let entries = b
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    for e in entries.into_iter().flatten() {
        let v = e.value.unwrap_or(0);
        match e.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => out.read_bytes += v,
            Some("write") => out.write_bytes += v,
            _ => {}
        }
    }
    out
}

pub fn summarize(cuid: &str, s: &ContainerStatsResponse) -> Stats {
    let (cpu_percent, online_cpus) = cpu_percent(s);
    let mem = s.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    // cgroup v2 reports `inactive_file`, v1 `total_inactive_file`: cache the kernel can
    // drop, which `docker stats` leaves out of "used".
    let cache = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
                .copied()
        })
        .unwrap_or(0);
    let used = usage.saturating_sub(cache);
    let limit = mem.and_then(|m| m.limit).unwrap_or(0);
    let (rx, tx) = s
        .networks
        .iter()
        .flatten()
        .fold((0, 0), |(rx, tx), (_, n)| {
            (rx + n.rx_bytes.unwrap_or(0), tx + n.tx_bytes.unwrap_or(0))
        });
    let pids = s.pids_stats.as_ref();
    Stats {
        cuid: cuid.to_owned(),
        read: s.read.as_ref().map(|t| t.to_string()),
        cpu_percent,
        online_cpus,
        memory: MemoryStats {
            used_bytes: used,
            limit_bytes: limit,
            percent: if limit > 0 {
                used as f64 / limit as f64 * 100.0
            } else {
                0.0
            },
        },
        network: NetworkStats {
            rx_bytes: rx,
            tx_bytes: tx,
        },
        block_io: block_io(&s.blkio_stats),
        pids: PidsStats {
            current: pids.and_then(|p| p.current).unwrap_or(0),
            // Docker reports "no limit" as the maximum u64.
            limit: pids
                .and_then(|p| p.limit)
                .filter(|&l| l != 0 && l != u64::MAX),
        },
        disk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A sampler that counts its calls and how many run at once.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Counting {
        async fn take(&self, value: Option<u32>) -> Option<u32> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            value
        }
    }

    #[tokio::test]
    async fn parallel_callers_share_the_sample_being_taken() {
        let shared = Arc::new(Shared::<u32>::new(Duration::from_secs(5), 16));
        let sampler = Arc::new(Counting::default());
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (shared, sampler) = (shared.clone(), sampler.clone());
                tokio::spawn(async move { shared.get("c1", || sampler.take(Some(7))).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), Some(7));
        }
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 1);
        // Fresh: kept for the next caller too.
        assert_eq!(shared.get("c1", || sampler.take(Some(8))).await, Some(7));
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 1);
        // Another key is its own sample.
        assert_eq!(shared.get("c2", || sampler.take(Some(9))).await, Some(9));
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stale_sample_is_taken_again_once_and_none_is_shared_only_while_waiting() {
        let shared = Arc::new(Shared::<u32>::new(Duration::from_millis(50), 16));
        let sampler = Arc::new(Counting::default());
        assert_eq!(shared.get("c", || sampler.take(Some(1))).await, Some(1));
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Expired: the 10 parallel callers take one new sample between them.
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (shared, sampler) = (shared.clone(), sampler.clone());
                tokio::spawn(async move { shared.get("c", || sampler.take(None)).await })
            })
            .collect();
        for c in callers {
            assert_eq!(c.await.unwrap(), None);
        }
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 2);
        // "None" is not kept for a later caller: it asks again.
        assert_eq!(shared.get("c", || sampler.take(Some(3))).await, Some(3));
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn samples_taken_at_once_are_bounded() {
        let shared = Arc::new(Shared::<u32>::new(Duration::from_secs(5), 3));
        let sampler = Arc::new(Counting::default());
        let callers: Vec<_> = (0..12)
            .map(|i| {
                let (shared, sampler) = (shared.clone(), sampler.clone());
                tokio::spawn(
                    async move { shared.get(&format!("c{i}"), || sampler.take(Some(i))).await },
                )
            })
            .collect();
        for (i, c) in callers.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), Some(i as u32));
        }
        assert_eq!(sampler.calls.load(Ordering::SeqCst), 12);
        assert_eq!(sampler.most.load(Ordering::SeqCst), 3);
    }
}

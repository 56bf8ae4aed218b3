//! Prometheus metrics (`GET /metrics`, OpenMetrics text). One process-wide set of
//! instruments: the places that count (HTTP middleware, reconciler, compose runner, event
//! listener, terminal, file routes) reach it without threading a handle through every call.
//! Gauges that mirror state the server already keeps (queue depth, containers by status) are
//! read at scrape time, so they can never drift from what they describe.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// OpenMetrics text: what `prometheus-client` writes and every Prometheus since 2.5 reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpDurationLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubcommandLabels {
    pub subcommand: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    /// `containers`, `running`, `cpus`, `memory_bytes` or `pids`.
    pub resource: &'static str,
}

/// One tenant's figures for the scrape: what it uses and its limits (`None`: no limit), by
/// resource name.
pub struct TenantFigures {
    pub tenant: String,
    pub usage: Vec<(&'static str, f64)>,
    pub quota: Vec<(&'static str, Option<f64>)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub desired_state: String,
    pub status: String,
}

/// Request latencies: 5 ms to ~80 s (actions wait for convergence up to a minute).
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Passes, compose calls and resyncs: 10 ms to ~160 s (compose timeout is 120 s).
fn work_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<HttpDurationLabels>,
    pub reconcile_passes: Family<OutcomeLabels, Counter>,
    pub reconcile_duration: HistogramFamily<OutcomeLabels>,
    pub queue_depth: Gauge,
    pub queue_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub compose_invocations: Family<SubcommandLabels, Counter>,
    pub compose_failures: Family<SubcommandLabels, Counter>,
    pub compose_duration: HistogramFamily<SubcommandLabels>,
    pub engine_errors: Family<OperationLabels, Counter>,
    pub containers: Family<ContainerLabels, Gauge>,
    pub tenant_usage: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub tenant_quota: Family<TenantLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub docker_events: Counter,
    pub resync_duration: Histogram,
    pub terminal_sessions: Gauge,
    pub upload_bytes: Counter,
    pub download_bytes: Counter,
    pub connections_refused: Counter,
    /// Deadlines acted on, by outcome (`stopped`, `deleted`, `not running`).
    pub lifetimes_expired: Family<OutcomeLabels, Counter>,
    /// Deadlines the timer holds (set at scrape time).
    pub deadlines: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("cm"),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(request_histogram),
            reconcile_passes: Family::default(),
            reconcile_duration: Family::new_with_constructor(work_histogram),
            queue_depth: Gauge::default(),
            queue_oldest_age: Gauge::default(),
            compose_invocations: Family::default(),
            compose_failures: Family::default(),
            compose_duration: Family::new_with_constructor(work_histogram),
            engine_errors: Family::default(),
            containers: Family::default(),
            tenant_usage: Family::default(),
            tenant_quota: Family::default(),
            docker_events: Counter::default(),
            resync_duration: work_histogram(),
            terminal_sessions: Gauge::default(),
            upload_bytes: Counter::default(),
            download_bytes: Counter::default(),
            connections_refused: Counter::default(),
            lifetimes_expired: Family::default(),
            deadlines: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency until the response head, by route template and method",
            m.http_duration.clone(),
        );
        r.register(
            "reconcile_passes",
            "Reconcile passes by outcome (ok, failed, panicked)",
            m.reconcile_passes.clone(),
        );
        r.register(
            "reconcile_pass_duration_seconds",
            "Reconcile pass duration by outcome",
            m.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_queue_depth",
            "Containers waiting in line for a reconcile pass (not those backing off)",
            m.queue_depth.clone(),
        );
        r.register(
            "reconcile_queue_oldest_age_seconds",
            "How long the longest-waiting container in the reconcile line has waited",
            m.queue_oldest_age.clone(),
        );
        r.register(
            "compose_invocations",
            "docker compose invocations by subcommand",
            m.compose_invocations.clone(),
        );
        r.register(
            "compose_failures",
            "docker compose invocations that failed or timed out, by subcommand",
            m.compose_failures.clone(),
        );
        r.register(
            "compose_duration_seconds",
            "docker compose duration by subcommand",
            m.compose_duration.clone(),
        );
        r.register(
            "engine_api_errors",
            "Docker Engine API calls that failed, by operation",
            m.engine_errors.clone(),
        );
        r.register(
            "containers",
            "Containers in the store by desired state and observed status",
            m.containers.clone(),
        );
        r.register(
            "tenant_usage",
            "What each tenant holds, by resource (as its quotas count it)",
            m.tenant_usage.clone(),
        );
        r.register(
            "tenant_quota",
            "Each tenant's limits, by resource (absent: no limit)",
            m.tenant_quota.clone(),
        );
        r.register(
            "docker_events",
            "Docker container events received",
            m.docker_events.clone(),
        );
        r.register(
            "resync_duration_seconds",
            "Duration of the periodic full resync with Docker",
            m.resync_duration.clone(),
        );
        r.register(
            "terminal_sessions_open",
            "WebSocket terminal sessions open now",
            m.terminal_sessions.clone(),
        );
        r.register(
            "upload_bytes",
            "Bytes received by ZIP uploads",
            m.upload_bytes.clone(),
        );
        r.register(
            "download_bytes",
            "Bytes sent by file and ZIP downloads",
            m.download_bytes.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once: MAX_CONNECTIONS or MAX_CONNECTIONS_PER_IP reached",
            m.connections_refused.clone(),
        );
        r.register(
            "lifetimes_expired",
            "Containers whose lifetime ran out, by what the server did (stopped, deleted, not running)",
            m.lifetimes_expired.clone(),
        );
        r.register(
            "deadlines",
            "Container deadlines (lifetime) the timer is waiting for",
            m.deadlines.clone(),
        );
        m
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

/// Standard methods by name, anything else as `other`: a client inventing methods must not
/// be able to create series without end.
fn method_label(method: &str) -> &str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    if KNOWN.contains(&method) {
        method
    } else {
        "other"
    }
}

pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let m = get();
    let method = method_label(method);
    m.http_requests
        .get_or_create(&HttpLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status,
        })
        .inc();
    m.http_duration
        .get_or_create(&HttpDurationLabels {
            route: route.to_owned(),
            method: method.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

pub fn reconcile_pass(outcome: &'static str, elapsed: Duration) {
    let m = get();
    let labels = OutcomeLabels { outcome };
    m.reconcile_passes.get_or_create(&labels).inc();
    m.reconcile_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

pub fn compose(subcommand: &str, ok: bool, elapsed: Duration) {
    let m = get();
    let labels = SubcommandLabels {
        subcommand: subcommand.to_owned(),
    };
    m.compose_invocations.get_or_create(&labels).inc();
    if !ok {
        m.compose_failures.get_or_create(&labels).inc();
    }
    m.compose_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

pub fn engine_error(operation: &'static str) {
    get()
        .engine_errors
        .get_or_create(&OperationLabels { operation })
        .inc();
}

/// Counts a terminal session as open for as long as the guard lives (a panicking or
/// aborted session still closes its count).
pub struct SessionGuard(());

impl SessionGuard {
    pub fn open() -> Self {
        get().terminal_sessions.inc();
        Self(())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        get().terminal_sessions.dec();
    }
}

/// Sets the scrape-time gauges (the reconcile line's depth and oldest wait; containers by
/// desired state and status) and renders everything.
pub fn scrape(
    queue_depth: usize,
    queue_oldest: Option<Duration>,
    containers: Vec<(String, String, i64)>,
    tenants: Vec<TenantFigures>,
) -> String {
    let m = get();
    m.queue_depth.set(queue_depth as i64);
    m.queue_oldest_age
        .set(queue_oldest.map_or(0.0, |d| d.as_secs_f64()));
    // Replaced whole, so a combination that no longer exists drops out instead of
    // staying at its last value.
    m.containers.clear();
    for (desired_state, status, n) in containers {
        m.containers
            .get_or_create(&ContainerLabels {
                desired_state,
                status,
            })
            .set(n);
    }
    m.tenant_usage.clear();
    m.tenant_quota.clear();
    for t in tenants {
        for (resource, value) in t.usage {
            m.tenant_usage
                .get_or_create(&TenantLabels {
                    tenant: t.tenant.clone(),
                    resource,
                })
                .set(value);
        }
        for (resource, limit) in t.quota {
            if let Some(limit) = limit {
                m.tenant_quota
                    .get_or_create(&TenantLabels {
                        tenant: t.tenant.clone(),
                        resource,
                    })
                    .set(limit);
            }
        }
    }
    m.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("FROBNICATE"), "other");
    }

    #[test]
    fn exposition_has_the_registered_families() {
        http_request("/x", "BREW", 418, Duration::from_millis(3));
        let text = get().encode();
        assert!(
            text.contains("cm_http_requests_total{route=\"/x\",method=\"other\",status=\"418\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE cm_reconcile_queue_depth gauge"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

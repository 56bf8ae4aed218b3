//! The HTTP surface: one module per resource, plus the middleware every route shares.
//! Handlers (`containers`, `actions`, `files`, `logs`, `terminal`) build on the shared
//! rooms `response` (answers about a container), `wait` (waiting for convergence) and
//! `prestart` (checks before a start), never on one another.

pub mod actions;
pub mod auth;
pub mod containers;
pub mod context;
pub mod cursor;
pub mod error_map;
pub mod events;
pub mod extract;
pub mod file_ops;
pub mod files;
pub mod health;
pub mod images;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod origin;
pub mod prestart;
pub mod quota;
pub mod response;
pub mod resume;
pub mod schema;
pub mod scope;
pub mod session;
pub mod snapshots;
pub mod stats;
pub mod tenants;
pub mod terminal;
pub mod tokens;
pub mod ui;
pub mod updates;
pub mod upload_body;
pub mod wait;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error;
use crate::state::AppState;

/// The Engine API client for a request handler, or `503 unavailable` `DOCKER_UNAVAILABLE`.
pub(crate) async fn docker_client(state: &AppState) -> error::ApiResult<bollard::Docker> {
    state
        .docker
        .get()
        .await
        .map_err(|e| error::docker_unavailable(&e))
}

/// The Engine API that runs `cuid`'s container, and that container's name there: this
/// host's daemon and the cuid with `BACKEND=compose`; with `swarm`, the node that runs the
/// container's task (`SWARM_NODES`) and the task's container. A container without a task
/// (stopped, never started) answers with the manager and the cuid, which Docker does not
/// know: as a container never started on one host. A node that runs it but cannot be
/// reached is `503 DOCKER_UNAVAILABLE`.
pub(crate) async fn container_engine(
    state: &AppState,
    cuid: &str,
) -> error::ApiResult<(bollard::Docker, String)> {
    container_place(state, cuid)
        .await
        .map(|(docker, container, _)| (docker, container))
}

/// [`container_engine`] and the Swarm node it reaches (`None` on one host, or when no task
/// runs).
pub(crate) async fn container_place(
    state: &AppState,
    cuid: &str,
) -> error::ApiResult<(bollard::Docker, String, Option<String>)> {
    let docker = docker_client(state).await?;
    if state.config.backend.swarm().is_none() {
        return Ok((docker, cuid.to_owned(), None));
    }
    let swarm = crate::reconcile::swarm::SwarmBackend::new(
        state.config.clone(),
        state.identity.instance_id.clone(),
        state.docker.clone(),
        state.nodes.clone(),
        state.reconciler.pulls.clone(),
    );
    let place = swarm.place(cuid).await.map_err(|e| {
        error::ApiError::new(
            error::Kind::Unavailable,
            error::ApiCode::DockerUnavailable,
            e.message,
        )
    })?;
    let Some(place) = place else {
        return Ok((docker, cuid.to_owned(), None));
    };
    match swarm.node_engine(&place.node).await {
        Some(node) => Ok((node, place.container, Some(place.node))),
        None => Err(error::ApiError::new(
            error::Kind::Unavailable,
            error::ApiCode::DockerUnavailable,
            format!(
                "node {} runs container {cuid} but its Docker Engine cannot be reached (SWARM_NODES)",
                place.node
            ),
        )),
    }
}

/// The whole API. Layers, outermost first: request id + audit line, auth, cross-origin
/// writes refused, panic → 500 body.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/", get(ui::root))
        .route("/ui", get(ui::ui_slash))
        .route("/ui/", get(ui::index))
        .route("/ui/{*file}", get(ui::file))
        .route(
            "/session",
            post(session::sign_in)
                .get(session::who)
                .delete(session::sign_out),
        )
        .route("/session/ticket", post(session::ticket))
        .route("/events", get(events::events))
        .route("/livez", get(health::livez))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(
            "/containers",
            post(containers::create).get(containers::list),
        )
        .route(
            "/containers/{cuid}",
            get(containers::get_one)
                .patch(containers::patch)
                .delete(containers::delete),
        )
        .route("/containers/{cuid}/ports", patch(containers::patch_ports))
        .route("/containers/{cuid}/status", get(containers::status))
        .route("/containers/{cuid}/start", post(actions::start))
        .route("/containers/{cuid}/stop", post(actions::stop))
        .route("/containers/{cuid}/restart", post(actions::restart))
        .route("/containers/{cuid}/pause", post(actions::pause))
        .route("/containers/{cuid}/unpause", post(actions::unpause))
        .route("/containers/{cuid}/update", post(updates::update))
        .route(
            "/containers/{cuid}/upload-zip",
            // The upload enforces UPLOAD_MAX_BYTES itself, streaming to disk.
            post(files::upload_zip).route_layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/containers/{cuid}/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route(
            "/containers/{cuid}/snapshots/{id}",
            delete(snapshots::delete),
        )
        .route("/containers/{cuid}/restore", post(snapshots::restore))
        .route("/containers/{cuid}/fork", post(snapshots::fork))
        .route(
            "/containers/{cuid}/files",
            // The single-file upload enforces UPLOAD_MAX_BYTES itself, streaming to disk.
            put(file_ops::put_file)
                .route_layer(DefaultBodyLimit::disable())
                .get(files::list)
                .delete(file_ops::delete),
        )
        .route("/containers/{cuid}/files/move", post(file_ops::move_item))
        .route("/containers/{cuid}/files/mkdir", post(file_ops::mkdir))
        .route("/containers/{cuid}/download", get(files::download))
        .route("/containers/{cuid}/download-zip", get(files::download_zip))
        .route("/containers/{cuid}/logs", get(logs::logs))
        .route("/containers/{cuid}/stats", get(stats::stats))
        .route("/stats", get(stats::many))
        .route("/ws/{cuid}", get(terminal::ws))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", delete(tokens::revoke))
        .route("/tenants", get(tenants::list))
        .route(
            "/tenants/{name}",
            put(tenants::put)
                .get(tenants::get_one)
                .delete(tenants::delete),
        )
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::get_one)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/images", get(images::list))
        .route("/images/pull", post(images::pull))
        // A reference holds `/` (`registry:5000/team/app:1`): the rest of the path is it.
        .route("/images/{*reference}", delete(images::delete))
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));

    api.layer(CatchPanicLayer::custom(error::panic_response))
        .layer(axum::middleware::from_fn(
            origin::refuse_cross_origin_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            scope::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::request_context,
        ))
        .with_state(state)
}

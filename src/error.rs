//! The one error type. Everything that goes wrong on any route, handler errors, extractor
//! rejections, unknown routes, wrong methods, oversized bodies and panics, ends up as an
//! [`ApiError`] and is rendered as the docs/API.md §3 body.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

mod code;
pub use code::ApiCode;

tokio::task_local! {
    /// The request id of the request being served; set by the request middleware so that
    /// any error, wherever it is built, names the request it belongs to.
    pub static REQUEST_ID: String;
}

/// `stacktrace` appears in bodies only in development; set once at start-up.
static DEVELOPMENT: AtomicBool = AtomicBool::new(false);

pub fn set_development(on: bool) {
    DEVELOPMENT.store(on, Ordering::Relaxed);
}

fn development() -> bool {
    DEVELOPMENT.load(Ordering::Relaxed)
}

/// The `error` field of §3: a kind with a fixed HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Validation,
    Auth,
    Forbidden,
    NotFound,
    Conflict,
    State,
    /// A `state_error` that is about the container's current state rather than a
    /// transition (stats of a container that is not running): `409`.
    StateConflict,
    Timeout,
    Compose,
    Io,
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    MethodNotAllowed,
    Internal,
}

impl Kind {
    /// Every kind, for the document's enumeration.
    pub const ALL: &'static [Kind] = &[
        Kind::Validation,
        Kind::Auth,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::Conflict,
        Kind::State,
        Kind::StateConflict,
        Kind::Timeout,
        Kind::Compose,
        Kind::Io,
        Kind::PreconditionFailed,
        Kind::PayloadTooLarge,
        Kind::RateLimited,
        Kind::Unavailable,
        Kind::MethodNotAllowed,
        Kind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Validation => "validation_error",
            Kind::Auth => "auth_error",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::State | Kind::StateConflict => "state_error",
            Kind::Timeout => "timeout",
            Kind::Compose => "compose_error",
            Kind::Io => "io_error",
            Kind::PreconditionFailed => "precondition_failed",
            Kind::PayloadTooLarge => "payload_too_large",
            Kind::RateLimited => "rate_limited",
            Kind::Unavailable => "unavailable",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::Internal => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::Validation => StatusCode::BAD_REQUEST,
            Kind::Auth => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict | Kind::StateConflict => StatusCode::CONFLICT,
            Kind::State => StatusCode::UNPROCESSABLE_ENTITY,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::Compose | Kind::Io | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// On the wire a kind is its `error` string ([`Kind::as_str`]).
impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The schema is the set of strings [`Kind::as_str`] gives (two kinds share `state_error`),
/// so it is written by hand rather than derived.
impl utoipa::PartialSchema for Kind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut names: Vec<&str> = Vec::new();
        for k in Self::ALL {
            if !names.contains(&k.as_str()) {
                names.push(k.as_str());
            }
        }
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl utoipa::ToSchema for Kind {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorKind".into()
    }
}

/// The error body of every failure (docs/API.md §3), as sent and as documented.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: Kind,
    pub code: ApiCode,
    pub message: String,
    pub status: u16,
    pub request_id: String,
    /// RFC 3339 with an offset.
    pub timestamp: String,
    /// Free-form facts about the failure (`field`, `provided`, `limit`, …); a refused
    /// container spec adds `errors`, one `{field, code, message, …}` per field refused.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Only with `APP_ENV=development`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stacktrace: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub code: ApiCode,
    pub message: String,
    pub details: Option<Value>,
    /// Rarely used, so boxed: keeps `Result<_, ApiError>` small.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    headers: HeaderMap,
    stacktrace: Option<String>,
}

/// What the audit middleware needs to know about an error response: put in the response's
/// extensions so the log line carries `error` and `code` without re-parsing the body.
#[derive(Clone, Debug)]
pub struct ErrorInfo {
    pub error: &'static str,
    pub code: ApiCode,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(kind: Kind, code: ApiCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            details: None,
            // Only worth its cost where it is shown.
            extra: development().then(|| {
                Box::new(Extra {
                    headers: HeaderMap::new(),
                    stacktrace: Some(std::backtrace::Backtrace::force_capture().to_string()),
                })
            }),
        }
    }

    pub fn validation(code: ApiCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Validation, code, message)
    }

    /// A validation error about one field of the request: `details.field` and `provided`.
    pub fn field(
        code: ApiCode,
        field: impl Into<String>,
        provided: Value,
        message: impl Into<String>,
    ) -> Self {
        Self::validation(code, message)
            .with_details(json!({"field": field.into(), "provided": provided}))
    }

    pub fn not_found(code: ApiCode, message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, code, message)
    }

    pub fn conflict(code: ApiCode, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }

    pub fn state(code: ApiCode, message: impl Into<String>) -> Self {
        Self::new(Kind::State, code, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Kind::Io, ApiCode::IoError, message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.extra
            .get_or_insert_default()
            .headers
            .insert(name, value);
        self
    }

    /// The §3 body, without HTTP framing (WebSocket `error` frames reuse it).
    pub fn body(&self) -> ErrorBody {
        let request_id = REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
        let trace = self.extra.as_ref().and_then(|e| e.stacktrace.as_ref());
        ErrorBody {
            error: self.kind,
            code: self.code,
            message: self.message.clone(),
            status: self.kind.status().as_u16(),
            request_id,
            timestamp: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            details: self.details.clone().unwrap_or_else(|| json!({})),
            stacktrace: trace.filter(|_| development()).cloned(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind.as_str(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.kind.status(), axum::Json(body)).into_response();
        if let Some(extra) = self.extra {
            response.headers_mut().extend(extra.headers);
        }
        response.extensions_mut().insert(ErrorInfo {
            error: self.kind.as_str(),
            code: self.code,
        });
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Internal details go to the server log, not to the client.
        tracing::error!(error = %e, "database error");
        Self::new(Kind::Io, ApiCode::DatabaseError, "the state store failed")
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        tracing::error!(error = %e, "i/o error");
        Self::io(format!("a file operation failed: {}", e.kind()))
    }
}

/// Unknown route.
pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found(ApiCode::RouteNotFound, "no such route")
}

/// Known route, wrong method.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        Kind::MethodNotAllowed,
        ApiCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The catch-panic layer's handler: a panic still answers with the §3 body.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    tracing::error!(panic = %text, "handler panicked");
    let mut err = ApiError::new(
        Kind::Internal,
        ApiCode::InternalError,
        "the server hit an internal error",
    );
    if development() {
        err.extra.get_or_insert_default().stacktrace = Some(format!("panic: {text}"));
    }
    err.into_response()
}

/// Maps the 413 that tower-http's body limit produces (before any extractor runs) to §3.
/// The answer to a request when the Docker daemon does not answer.
pub fn docker_unavailable(e: &bollard::errors::Error) -> ApiError {
    crate::metrics::engine_error("request");
    tracing::warn!(error = %e, "Docker is not reachable");
    ApiError::new(
        Kind::Unavailable,
        ApiCode::DockerUnavailable,
        "the Docker daemon is not reachable",
    )
}

pub fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        Kind::PayloadTooLarge,
        ApiCode::PayloadTooLarge,
        format!("request body is over the {limit}-byte limit"),
    )
    .with_details(json!({"limit": limit}))
}

pub fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case(want)
        })
}

//! Extractors whose rejections are [`ApiError`]s, so malformed input always gets the §3 body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::{content_type_is, payload_too_large, ApiCode, ApiError};
use crate::spec::type_name;
use crate::state::AppState;

/// `408 timeout` `BODY_TIMEOUT`: a body that did not arrive in full within `BODY_TIMEOUT`.
/// A client trickling (or never sending) the body it announced cannot hold the connection.
pub fn body_timeout(within: std::time::Duration) -> ApiError {
    ApiError::new(
        crate::error::Kind::Timeout,
        ApiCode::BodyTimeout,
        format!(
            "the request body did not arrive within {} s",
            within.as_secs()
        ),
    )
    .with_details(serde_json::json!({"body_timeout_secs": within.as_secs()}))
}

/// A JSON object body, parsed but not yet validated: handlers validate field by field so that
/// each mistake gets its own code and `details.field`.
pub struct JsonObject(pub serde_json::Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if json_type != Some(true) {
            return Err(ApiError::validation(
                ApiCode::UnsupportedContentType,
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let within = state.config.connections.body_timeout;
        let bytes = tokio::time::timeout(within, Bytes::from_request(req, state))
            .await
            .map_err(|_| body_timeout(within))?
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large(limit)
                } else {
                    ApiError::validation(
                        ApiCode::BodyReadFailed,
                        "the request body could not be read",
                    )
                }
            })?;
        parse_object(&bytes).map(JsonObject)
    }
}

pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::validation(
            ApiCode::InvalidBody,
            "the body must be a JSON object",
        )
        .with_details(json!({"provided": type_name(&other)}))),
        Err(e) => Err(
            ApiError::validation(ApiCode::InvalidJson, format!("malformed JSON: {e}"))
                .with_details(json!({"line": e.line(), "column": e.column()})),
        ),
    }
}

/// `Query<T>` whose rejection is a `validation_error` (`INVALID_QUERY`).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::validation(ApiCode::InvalidQuery, e.body_text()))
    }
}

/// [`Query`] of the files routes, which first refuses a query whose percent-encoding does not
/// decode to UTF-8 instead of reading it with U+FFFD in place of the bytes (a `?path=%FF`
/// would otherwise name a file `\u{FFFD}`): in `path` that is `400 UNSAFE_PATH`, elsewhere
/// `400 INVALID_QUERY`.
pub struct FilesQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for FilesQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        utf8_query(parts.uri.query().unwrap_or(""))?;
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| FilesQuery(q.0))
    }
}

/// Refuses a query string with a name or value that is not UTF-8 once decoded.
pub fn utf8_query(query: &str) -> Result<(), ApiError> {
    let decodes = |s: &str| {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8()
            .is_ok()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !decodes(name) {
            return Err(ApiError::validation(
                ApiCode::InvalidQuery,
                "a query parameter's name is not UTF-8 once decoded",
            )
            .with_details(json!({"provided": name})));
        }
        if !decodes(value) {
            if percent_encoding::percent_decode_str(name).decode_utf8_lossy() == "path" {
                return Err(ApiError::validation(
                    ApiCode::UnsafePath,
                    "unsafe path: the path is not UTF-8 once decoded",
                )
                .with_details(json!({
                    "field": "path",
                    "provided": value,
                    "reason": "the path is not UTF-8 once decoded",
                })));
            }
            return Err(ApiError::field(
                ApiCode::InvalidQuery,
                name.to_owned(),
                json!(value),
                format!("{name} is not UTF-8 once decoded"),
            ));
        }
    }
    Ok(())
}

/// True when the request's body is a ZIP by its declared type (uploads).
pub fn is_zip(headers: &axum::http::HeaderMap) -> bool {
    content_type_is(headers, "application/zip")
        || content_type_is(headers, "application/x-zip-compressed")
        || content_type_is(headers, "application/octet-stream")
}

/// `Path<T>` whose rejection is the same `404` as an unknown container: every path
/// parameter of this API is a cuid, and one that cannot even be decoded (`%FF`) names no
/// container.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::not_found(ApiCode::ContainerNotFound, "no such container"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_that_do_not_decode_to_utf8_are_refused() {
        assert!(utf8_query("").is_ok());
        assert!(utf8_query("path=a%2Fb+c&recursive=true").is_ok());
        assert!(utf8_query("path=%C3%A9t%C3%A9").is_ok());
        assert_eq!(
            utf8_query("path=%ff%fe").unwrap_err().code,
            ApiCode::UnsafePath
        );
        assert_eq!(
            utf8_query("recursive=%ff").unwrap_err().code,
            ApiCode::InvalidQuery
        );
        assert_eq!(utf8_query("%ff=1").unwrap_err().code, ApiCode::InvalidQuery);
    }
}

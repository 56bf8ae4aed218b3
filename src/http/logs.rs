//! `GET /containers/{cuid}/logs` (docs/API.md §4): the main process's output, read from Docker's
//! log stream (the same stream the console follows).
//!
//! Query: `tail` (a number of records, or `all`), `since` (RFC 3339, or Unix seconds, may be
//! fractional; applied to the nanosecond), `follow=true` (stream until the client leaves, the
//! run ends, the sign-in that opened it ends or the server shuts down), `timestamps=true`, `stream=stdout|stderr|all`, and
//! `format`:
//! - `text` (default, `text/plain`): the output bytes as the process wrote them, each line
//!   prefixed with its RFC 3339 timestamp and a space when `timestamps=true`. Both streams
//!   interleaved unless `stream=` picks one, which is how to read stdout and stderr apart.
//! - `jsonl` (`application/x-ndjson`): one object per line of output, keeping the streams
//!   apart in one response: `{"stream":"stdout"|"stderr","data":…,"encoding":"utf8"|"base64",
//!   "timestamp":"…"}`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::json;

use crate::error::{ApiCode, ApiError, ApiResult};
use crate::http::extract::{Path, Query};
use crate::http::lease::{self, Lease};
use crate::http::response::{live_container, path_cuid};
use crate::http::schema::{LogEncoding, LogLine};
use crate::state::AppState;
use crate::terminal::console::{self, Record};
use crate::terminal::frames::Stream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Jsonl,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogQuery {
    pub tail: Option<u64>,
    pub since: Option<DateTime<FixedOffset>>,
    pub follow: bool,
    pub timestamps: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub format: Format,
}

fn invalid(name: &str, value: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(ApiCode::InvalidQuery, name, json!(value), message)
}

fn flag(q: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match q.get(name).map(String::as_str) {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes" | "") => Ok(true),
        Some(v) => Err(invalid(name, v, format!("{name} must be true or false"))),
    }
}

/// RFC 3339 (`2024-01-20T15:30:00+01:00`) or Unix seconds (`1705761000`, `1705761000.5`).
pub fn parse_since(value: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at);
    }
    let secs: f64 = value
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
    let whole = secs.trunc() as i64;
    let nanos = ((secs - secs.trunc()) * 1e9).round() as u32;
    Utc.timestamp_opt(whole, nanos.min(999_999_999))
        .single()
        .map(|at| at.fixed_offset())
}

pub fn parse_query(q: &HashMap<String, String>) -> ApiResult<LogQuery> {
    for key in q.keys() {
        if !["tail", "since", "follow", "timestamps", "stream", "format"].contains(&key.as_str()) {
            return Err(invalid(
                key,
                &q[key],
                format!("unknown query parameter {key:?}"),
            ));
        }
    }
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("all") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| invalid("tail", v, "tail must be a number of lines or \"all\""))?,
        ),
    };
    let since = match q.get("since") {
        None => None,
        Some(v) => Some(parse_since(v).ok_or_else(|| {
            invalid("since", v, "since must be an RFC 3339 time or Unix seconds")
        })?),
    };
    let (stdout, stderr) = match q.get("stream").map(String::as_str) {
        None | Some("all" | "both") => (true, true),
        Some("stdout") => (true, false),
        Some("stderr") => (false, true),
        Some(v) => return Err(invalid("stream", v, "stream must be stdout, stderr or all")),
    };
    let format = match q.get("format").map(String::as_str) {
        None | Some("text") => Format::Text,
        Some("jsonl" | "ndjson") => Format::Jsonl,
        Some(v) => return Err(invalid("format", v, "format must be text or jsonl")),
    };
    Ok(LogQuery {
        tail,
        since,
        follow: flag(q, "follow")?,
        timestamps: flag(q, "timestamps")?,
        stdout,
        stderr,
        format,
    })
}

/// One record, rendered in the response's format.
pub fn render(rec: &Record, q: &LogQuery) -> Bytes {
    let at = rec
        .at
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    match q.format {
        Format::Text => {
            if let (true, Some(at)) = (q.timestamps, at) {
                let mut out = Vec::with_capacity(at.len() + 1 + rec.data.len());
                out.extend_from_slice(at.as_bytes());
                out.push(b' ');
                out.extend_from_slice(&rec.data);
                Bytes::from(out)
            } else {
                rec.data.clone()
            }
        }
        Format::Jsonl => {
            let (data, encoding) = match std::str::from_utf8(&rec.data) {
                Ok(text) => (text.to_owned(), LogEncoding::Utf8),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(&rec.data),
                    LogEncoding::Base64,
                ),
            };
            let mut line = serde_json::to_string(&LogLine {
                stream: rec.stream,
                data,
                encoding,
                timestamp: at,
            })
            .unwrap_or_default();
            line.push('\n');
            Bytes::from(line)
        }
    }
}

#[utoipa::path(get, path = "/containers/{cuid}/logs", tag = "logs", summary = "Main-process output", params(("cuid" = String, Path, description = "c + UUID, e.g. c123e4567-e89b-12d3-a456-426614174000"), ("tail" = Option<String>, Query, pattern = "^([0-9]{1,19}|all)$", description = "a number of records, or all"), ("since" = Option<String>, Query, pattern = r"^([0-9]{1,10}(\.[0-9]{1,9})?|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$", description = "RFC 3339 or Unix seconds"), ("follow" = Option<bool>, Query), ("timestamps" = Option<bool>, Query), ("stream" = Option<crate::http::schema::LogStream>, Query, description = "stdout, stderr or both (all)"), ("format" = Option<crate::http::schema::LogFormat>, Query, description = "text or jsonl (ndjson)")), responses((status = 200, description = "Output: text, or with format=jsonl one JSON object a line (LogLine)", content((String = "text/plain"), (String = "application/x-ndjson"))), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 404, description = "No such container (or a malformed cuid)", body = crate::http::schema::ErrorBody), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(cuid): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
    lease: Option<Extension<Lease>>,
) -> ApiResult<Response> {
    let cuid = path_cuid(&cuid)?.to_owned();
    let q = parse_query(&raw)?;
    live_container(&state, &cuid).await?;
    let (docker, container) = crate::http::container_engine(&state, &cuid).await?;
    // Ask Docker once before the 200 goes out: an unreachable daemon is a 503, not an empty
    // log. A container Docker does not know (never started) has an empty log.
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        docker.inspect_container(
            &container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        ),
    )
    .await
    .unwrap_or(Err(bollard::errors::Error::RequestTimeoutError));
    match probe {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(crate::error::docker_unavailable(&e)),
    }
    let format = q.format;
    let render_q = q.clone();
    // A container never started has no log yet: an empty answer, not an error.
    let body = console::records(&docker, &container, q.since, q.tail, q.follow)
        .filter(move |rec| {
            std::future::ready(match rec.stream {
                Stream::Stdout => q.stdout,
                Stream::Stderr => q.stderr,
            })
        })
        .map(move |rec| Ok::<_, std::io::Error>(render(&rec, &render_q)))
        // A followed log ends with the server, and with the sign-in that opened it (a
        // sign-out, an expiry, a revoked token), like `GET /events`.
        .take_until(lease::stream_end(lease.map(|Extension(l)| l), &state));
    let content_type = match format {
        Format::Text => "text/plain; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
    };
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> ApiResult<LogQuery> {
        parse_query(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn since_takes_rfc3339_and_seconds() {
        let a = parse_since("2024-01-20T15:30:00+01:00").unwrap();
        assert_eq!(a.timestamp(), 1705761000);
        let b = parse_since("1705761000.5").unwrap();
        assert_eq!(b.timestamp(), 1705761000);
        assert_eq!(b.timestamp_subsec_millis(), 500);
        assert!(parse_since("yesterday").is_none());
        assert!(parse_since("-5").is_none());
    }

    #[test]
    fn queries_parse_and_bad_values_are_validation_errors() {
        let d = q(&[]).unwrap();
        assert_eq!(d.tail, None);
        assert!(!d.follow && d.stdout && d.stderr && d.format == Format::Text);
        let x = q(&[
            ("tail", "5"),
            ("follow", "true"),
            ("stream", "stderr"),
            ("format", "jsonl"),
        ])
        .unwrap();
        assert_eq!(x.tail, Some(5));
        assert!(x.follow && !x.stdout && x.stderr && x.format == Format::Jsonl);
        for (k, v) in [
            ("tail", "-1"),
            ("since", "x"),
            ("follow", "maybe"),
            ("stream", "stdin"),
            ("format", "xml"),
            ("nope", "1"),
        ] {
            assert_eq!(q(&[(k, v)]).unwrap_err().code, "INVALID_QUERY", "{k}={v}");
        }
    }

    #[test]
    fn records_render_in_both_formats() {
        let rec = Record {
            stream: Stream::Stderr,
            at: Some(DateTime::parse_from_rfc3339("2024-01-20T15:30:00.5Z").unwrap()),
            data: Bytes::from_static(b"oops\n"),
        };
        let text = q(&[]).unwrap();
        assert_eq!(&render(&rec, &text)[..], b"oops\n");
        let ts = q(&[("timestamps", "true")]).unwrap();
        assert_eq!(&render(&rec, &ts)[..], b"2024-01-20T15:30:00.500Z oops\n");
        let jl = q(&[("format", "jsonl")]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&render(&rec, &jl)).unwrap();
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["data"], "oops\n");
        assert_eq!(v["encoding"], "utf8");
    }
}

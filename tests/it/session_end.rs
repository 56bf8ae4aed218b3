//! Long-lived answers end with the sign-in that opened them: an open `GET /events` stream, a
//! followed log, a stats stream (and a terminal's WebSocket, with its shell) of a console
//! session ends when that session signs out or its token is revoked; a stream opened with an
//! API token ends when the token is revoked or expires. Streams of other credentials carry on.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::common::*;

/// How long an ended sign-in's stream may outlive it (a revocation is noticed at once, an
/// expiry within the server's 5 s re-check).
const BOUND: Duration = Duration::from_secs(10);

/// An open `GET /events` answer, read as bytes.
struct Stream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
}

impl Stream {
    async fn open(rb: reqwest::RequestBuilder) -> Stream {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut s = Stream {
            body: Box::pin(r.bytes_stream()),
        };
        // The `: open` comment: the stream is established server-side.
        let first = tokio::time::timeout(BOUND, s.body.next())
            .await
            .expect("the stream opens")
            .expect("a first chunk")
            .unwrap();
        assert!(String::from_utf8_lossy(&first).contains(": open"));
        s
    }

    /// Waits (at most `limit`) for the server to end the stream; panics if it does not.
    async fn ends_within(&mut self, limit: Duration, what: &str) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("{what}: the event stream is still open after {limit:?}"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => continue, // keep-alive or an event
            }
        }
    }

    /// Asserts that the stream is still open: an event made now arrives on it.
    async fn still_open(&mut self, s: &Server, what: &str) {
        let r = s
            .post_json(
                "/containers",
                &json!({"image": BUSYBOX, "command": ["true"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let cuid = r.json["cuid"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + BOUND;
        let mut seen = String::new();
        while !seen.contains(&cuid) {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!(
                    "{what}: the stream should still be open ({:?})",
                    other.map(|o| o.map(|r| r.map(|_| ())))
                ),
            }
        }
    }
}

fn events_with_session(s: &Server, signed: &Signed) -> reqwest::RequestBuilder {
    with_session(s, reqwest::Method::GET, "/events", signed)
}

fn events_with_token(s: &Server, token: &str) -> reqwest::RequestBuilder {
    s.client
        .get(format!("{}/events", s.base))
        .bearer_auth(token)
}

/// `POST /tokens`: (id, secret).
async fn new_token(s: &Server, name: &str, expires_in: Option<u64>) -> (String, String) {
    let r = s
        .post_json(
            "/tokens",
            &json!({"name": name, "scope": "read", "expires_in": expires_in}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn events_stream_ends_when_its_session_signs_out() {
    let s = Server::start().await;
    let mine = console_sign_in(&s).await;
    let other = console_sign_in(&s).await;
    let mut stream = Stream::open(events_with_session(&s, &mine)).await;
    let mut others = Stream::open(events_with_session(&s, &other)).await;
    let mut basic = Stream::open(s.request(reqwest::Method::GET, "/events")).await;

    sign_out(&s, &mine).await;
    stream.ends_within(BOUND, "signed out").await;
    // Another session's stream and a Basic one are not that session's.
    others.still_open(&s, "another session").await;
    basic.still_open(&s, "Basic credentials").await;
    // And it cannot be opened again.
    let r = s.send(events_with_session(&s, &mine)).await;
    r.assert_error(401, "auth_error", "SESSION_EXPIRED");
}

#[tokio::test]
async fn events_stream_ends_when_its_token_is_revoked_or_expires() {
    let s = Server::start().await;
    // A stream opened with the token itself.
    let (id, secret) = new_token(&s, "revoked", None).await;
    let mut stream = Stream::open(events_with_token(&s, &secret)).await;
    // A console session signed in with a token: it ends with its token too.
    let (id2, secret2) = new_token(&s, "session-token", None).await;
    let (r, signed) = sign_in_with_token(&s, &secret2).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let signed = signed.unwrap();
    let mut session_stream = Stream::open(events_with_session(&s, &signed)).await;
    // A token that expires by the clock.
    let (_, short) = new_token(&s, "short", Some(2)).await;
    let mut expiring = Stream::open(events_with_token(&s, &short)).await;
    let (_, kept) = new_token(&s, "kept", None).await;
    let mut kept = Stream::open(events_with_token(&s, &kept)).await;

    s.revoke_token(&id).await;
    stream.ends_within(BOUND, "token revoked").await;
    s.revoke_token(&id2).await;
    session_stream
        .ends_within(BOUND, "the session's token revoked")
        .await;
    expiring.ends_within(BOUND, "token expired").await;
    kept.still_open(&s, "a live token").await;
}

#[tokio::test]
async fn terminal_ends_when_its_session_signs_out() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let signed = console_sign_in(&s).await;
    let mut term = console_term(&s, &cuid, &signed).await;
    term.stdin("echo up-$((20+1))\n").await;
    term.until(BOUND, "shell", |t| t.out().contains("up-21"))
        .await;

    sign_out(&s, &signed).await;
    term.until_closed(BOUND).await;
}

/// `GET path` with a bearer token: asserts 200, returns the (open) body.
async fn open_with_token(s: &Server, path: &str, token: &str) -> Stream {
    let r = s
        .client
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    Stream {
        body: Box::pin(r.bytes_stream()),
    }
}

#[tokio::test]
async fn followed_logs_and_stats_streams_end_when_their_token_is_revoked() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let (id, secret) = new_token(&s, "streams", None).await;
    let (_, kept) = new_token(&s, "kept", None).await;
    let logs_path = format!("/containers/{cuid}/logs?follow=true");
    let stats_path = format!("/containers/{cuid}/stats?stream=true");
    let mut logs = open_with_token(&s, &logs_path, &secret).await;
    let mut stats = open_with_token(&s, &stats_path, &secret).await;
    let mut kept_stats = open_with_token(&s, &stats_path, &kept).await;
    // The stats stream is established: Docker's first sample arrives.
    let first = tokio::time::timeout(BOUND, stats.body.next())
        .await
        .expect("a first stats event")
        .expect("a first chunk")
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("stats"));

    s.revoke_token(&id).await;
    logs.ends_within(BOUND, "followed logs, token revoked")
        .await;
    stats
        .ends_within(BOUND, "stats stream, token revoked")
        .await;
    // Another token's stream carries on: samples keep arriving after the revocation.
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut samples = 0;
    while samples < 3 {
        match tokio::time::timeout_at(deadline, kept_stats.body.next()).await {
            Ok(Some(Ok(chunk))) => {
                samples += String::from_utf8_lossy(&chunk)
                    .matches("event: stats")
                    .count()
            }
            other => panic!(
                "a live token's stats stream should carry on ({:?})",
                other.map(|o| o.map(|r| r.map(|_| ())))
            ),
        }
    }
}

#[tokio::test]
async fn a_terminal_shell_is_gone_after_sign_out() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let signed = console_sign_in(&s).await;
    let mut term = console_term(&s, &cuid, &signed).await;
    // The shell's pid in the container (the echoed input has `$$`, the output digits).
    term.stdin("echo pid:$$:\n").await;
    term.until(BOUND, "shell pid", |t| shell_pid(&t.out()).is_some())
        .await;
    let pid = shell_pid(&term.out()).unwrap();
    let alive = |pid: u32| sh_in(&cuid, "0", &format!("test -d /proc/{pid}")).0;
    assert!(alive(pid), "the terminal's shell {pid} runs");

    sign_out(&s, &signed).await;
    term.until_closed(BOUND).await;
    wait_until(
        BOUND,
        &format!("the terminal's shell {pid} still runs after sign-out"),
        || !alive(pid),
    )
    .await;
}

/// The digits of the first `pid:<digits>:` in `out`.
fn shell_pid(out: &str) -> Option<u32> {
    out.match_indices("pid:").find_map(|(i, _)| {
        let rest = &out[i + 4..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty() && rest[digits.len()..].starts_with(':'))
            .then(|| digits.parse().ok())
            .flatten()
    })
}

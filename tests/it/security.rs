//! Attacks on the server itself, reproduced: a replayed console cookie, silent sockets,
//! requests without credentials meant to lock an address out, a forged `X-Forwarded-For`,
//! and a stop asked for in the middle of busy work.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

const T: Duration = Duration::from_secs(20);

/// The status of a WebSocket upgrade to `path_and_query` with `cookie` (101 when it opens).
async fn ws_status(s: &Server, path_and_query: &str, cookie: &str) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{}", s.addr, path_and_query)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", s.base.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            let _ = ws.close(None).await;
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// Finding 1, at the API: a cookie replayed without the session key (what a container's app
/// on another port of the host receives from the operator's browser) opens nothing: no
/// route, no `/events`, no terminal. The key opens the API; a ticket opens one WebSocket,
/// once, and only together with its own session's cookie.
#[tokio::test]
async fn a_replayed_console_cookie_opens_nothing() {
    let s = Server::start().await;
    let cuid = s.running_sleeper().await;
    let Signed { cookie, key } = console_sign_in(&s).await;

    // The cookie alone: 401 everywhere, without a Basic challenge, without side effects.
    for path in [
        "/containers",
        "/events",
        "/healthz",
        &format!("/containers/{cuid}"),
    ] {
        let r = s
            .send(with_cookie(&s, reqwest::Method::GET, path, &cookie))
            .await;
        r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
        assert!(r.header("www-authenticate").is_none());
    }
    let r = s
        .send(with_cookie(
            &s,
            reqwest::Method::POST,
            &format!("/containers/{cuid}/stop"),
            &cookie,
        ))
        .await;
    r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
    let r = s
        .send(with_cookie(&s, reqwest::Method::GET, "/session", &cookie))
        .await;
    r.assert_error(401, "auth_error", "NO_SESSION");
    assert_eq!(
        ws_status(&s, &format!("/ws/{cuid}?main=false"), &cookie).await,
        401
    );
    // A wrong key is no key, and it cannot be used to mint tickets.
    let r = s
        .send(
            with_cookie(&s, reqwest::Method::POST, "/session/ticket", &cookie)
                .header("x-session-key", "0".repeat(64)),
        )
        .await;
    r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
    // Nor can the replayed cookie sign the console out.
    let r = s
        .send(with_cookie(
            &s,
            reqwest::Method::DELETE,
            "/session",
            &cookie,
        ))
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .send(
            with_cookie(&s, reqwest::Method::GET, "/session", &cookie)
                .header("x-session-key", &key),
        )
        .await;
    assert_eq!(r.json["user"], USER, "{}", r.text);
    let status = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(status.json["desired_state"], "running", "{}", status.text);

    // Cookie and key: the API.
    let r = s
        .send(
            with_cookie(&s, reqwest::Method::GET, "/containers", &cookie)
                .header("x-session-key", &key),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A ticket: one WebSocket, once, with this session's cookie only.
    let ticket = |cookie: String, key: String| {
        let s = &s;
        async move {
            let r = s
                .send(
                    with_cookie(s, reqwest::Method::POST, "/session/ticket", &cookie)
                        .header("x-session-key", key),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["ticket"].as_str().unwrap().to_owned()
        }
    };
    let t = ticket(cookie.clone(), key.clone()).await;
    let ws = format!("/ws/{cuid}?main=false&ticket={t}");
    assert_eq!(ws_status(&s, &ws, &cookie).await, 101);
    assert_eq!(
        ws_status(&s, &ws, &cookie).await,
        401,
        "a ticket is single-use"
    );
    let other_cookie = console_sign_in(&s).await.cookie;
    let t = ticket(cookie.clone(), key.clone()).await;
    let ws = format!("/ws/{cuid}?main=false&ticket={t}");
    assert_eq!(
        ws_status(&s, &ws, &other_cookie).await,
        401,
        "another session's ticket"
    );
    // A ticket without any cookie is no credential either.
    let r = s
        .send(s.client.get(format!("{}/containers?ticket={t}", s.base)))
        .await;
    r.assert_error(401, "auth_error", "MISSING_CREDENTIALS");
    // A download link with a ticket (what the console's file links do).
    let t = ticket(cookie.clone(), key.clone()).await;
    let r = s
        .send(with_cookie(
            &s,
            reqwest::Method::GET,
            &format!("/containers/{cuid}/files?path=/&ticket={t}"),
            &cookie,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Finding 3: requests that carry no credentials (ten `<img>` tags on any page) never count
/// as failed logins; only wrong credentials do. Behind a trusted proxy the throttle counts
/// the client named in `X-Forwarded-For`; a client that is not a trusted proxy cannot pick
/// its address with that header.
#[tokio::test]
async fn only_wrong_credentials_count_and_forwarded_for_is_believed_only_from_proxies() {
    let s = Server::start_with(Options {
        env: vec![
            ("AUTH_MAX_FAILURES".into(), "3".into()),
            ("TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        ],
        ..Default::default()
    })
    .await;
    let url = format!("{}/healthz", s.base);
    // No credentials, a stale cookie: 401 each time, never 429.
    for i in 0..20 {
        let mut rb = s.client.get(&url);
        if i % 2 == 1 {
            rb = rb.header("cookie", "cm_session=feedface");
        }
        assert_eq!(rb.send().await.unwrap().status(), 401);
    }
    assert_eq!(
        s.get("/healthz").await.status,
        200,
        "no-credential requests locked the address out"
    );

    // Through the trusted proxy (127.0.0.1): clients are told apart by X-Forwarded-For.
    let via = |client: &str, pass: &str| {
        s.client
            .get(&url)
            .header("x-forwarded-for", format!("203.0.113.77, {client}"))
            .header("authorization", basic_auth(USER, pass))
    };
    for _ in 0..3 {
        assert_eq!(
            via("198.51.100.7", "guess").send().await.unwrap().status(),
            401
        );
    }
    let r = Resp::from(via("198.51.100.7", PASS).send().await.unwrap()).await;
    r.assert_error(429, "rate_limited", "TOO_MANY_AUTH_FAILURES");
    assert_eq!(
        via("198.51.100.8", PASS).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        s.get("/healthz").await.status,
        200,
        "the proxy itself is not blocked"
    );

    // 127.0.0.2 is not a trusted proxy: its X-Forwarded-For is ignored, so changing it does
    // not escape a block.
    let direct = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for i in 0..3 {
        let r = direct
            .get(&url)
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .header("authorization", basic_auth(USER, "guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = direct
        .get(&url)
        .header("x-forwarded-for", "192.0.2.200")
        .header("authorization", basic_auth(USER, PASS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

async fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server has closed `stream` (a read gives end-of-file or a reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an answer; wait for the close
        }
    }
}

/// Finding 2: 2,000 silent sockets from one address, with the server under `ulimit -n
/// 1024`: those past `MAX_CONNECTIONS_PER_IP` are closed at once, the rest after
/// `HEADER_READ_TIMEOUT`; meanwhile `/healthz` answers another address at once. A
/// kept-alive connection idle past the timeout is closed; a stream in use is not.
#[tokio::test]
async fn silent_sockets_cannot_starve_the_server() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // This test process needs more than 2,000 descriptors itself.
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < 4096) {
        let raised = Rlimit {
            current: limit.maximum.map(|m| m.min(8192)),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).unwrap();
    }
    let s = Server::start_with(Options {
        env: vec![
            ("HEADER_READ_TIMEOUT".into(), "2".into()),
            ("MAX_CONNECTIONS_PER_IP".into(), "100".into()),
        ],
        nofile: Some(1024),
        ..Default::default()
    })
    .await;

    let mut silent = Vec::with_capacity(2000);
    for _ in 0..2000 {
        silent.push(connect_from([127, 0, 0, 2], s.addr).await);
    }
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), s.get("/healthz"))
        .await
        .expect("/healthz did not answer while 2,000 silent sockets were open");
    assert_eq!(r.status, 200, "{}", r.text);
    let healthz_took = started.elapsed();

    // All but 100 were closed at once; the other 100 by the header timeout.
    let mut closed_early = 0;
    for stream in silent.iter_mut() {
        if closed_within(stream, Duration::from_millis(1)).await {
            closed_early += 1;
        }
    }
    // Some of the admitted ones may already be over their 2 s if connecting took long.
    let held = 2000 - closed_early;
    eprintln!("2,000 silent sockets: /healthz answered in {healthz_took:?}, {held} held open");
    assert!(
        held <= 100,
        "{held} silent sockets held open (limit 100), after {:?}",
        started.elapsed()
    );
    for stream in silent.iter_mut() {
        assert!(
            closed_within(stream, Duration::from_secs(8)).await,
            "a silent socket outlived the header timeout"
        );
    }
    eprintln!("all closed {:?} after they opened", started.elapsed());
    drop(silent);

    // A kept-alive connection: one request answered, then silence: closed by the timeout.
    let mut conn = connect_from([127, 0, 0, 2], s.addr).await;
    conn.write_all(
        format!(
            "GET /livez HTTP/1.1\r\nhost: {}\r\nconnection: keep-alive\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(8)).await,
        "an idle keep-alive connection stayed open"
    );
    assert!(
        idle_from.elapsed() >= Duration::from_millis(1500),
        "closed before the timeout: {:?}",
        idle_from.elapsed()
    );

    // A stream in use is not idle: /events open for twice the timeout still delivers.
    let events = s
        .request(reqwest::Method::GET, "/events")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut body = events.bytes_stream();
    // The stream must stay up past the header timeout; nothing but time can show that.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cuid = s.create(&json!({"image": BUSYBOX})).await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + T;
    while !seen.contains(&cuid) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("no event in time")
            .expect("the events stream was cut")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Finding 11: a server asked to stop exits within the drain limit plus a few seconds,
/// whatever it is busy with: removing a big orphaned tree at start-up (blocking work), a
/// trickling upload, an open terminal, container passes.
#[tokio::test]
async fn a_stop_ends_the_server_in_time_whatever_it_is_doing() {
    const DRAIN: u64 = 2;
    let limit = Duration::from_secs(DRAIN + 6);
    let mut s = Server::start_with(Options {
        env: vec![("DRAIN_TIMEOUT".into(), DRAIN.to_string())],
        ..Default::default()
    })
    .await;

    // 1. Start-up removes a directory left without a container: make it large (the removal
    //    runs on the blocking pool, which a plain runtime drop would wait for).
    let s_stop = |s: &mut Server| {
        let started = Instant::now();
        let status = s.stop_within(limit);
        (status, started.elapsed())
    };
    let (status, took) = s_stop(&mut s);
    assert!(status.success(), "{status}");
    let orphan = s
        .data_dir()
        .join("mounts")
        .join("c00000000-0000-4000-8000-000000000001");
    for d in 0..250 {
        let dir = orphan.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::File::create(dir.join(f.to_string())).unwrap();
        }
    }
    s.start_again().await;
    let (status, took_orphans) = s_stop(&mut s);
    assert!(status.success(), "{status}");
    // The removal was still going when the server exited: the stop did not wait for it.
    assert!(
        orphan.exists(),
        "the orphan was gone before the stop ended ({took_orphans:?}): the tree is too small to show anything"
    );
    eprintln!("stop: idle {took:?}, during the orphan removal {took_orphans:?}");

    // 2. Busy: passes running, a trickling upload, an open terminal.
    s.start_again().await;
    let cuid = s.running_sleeper().await;
    let mut ws = s.ws(&format!("/ws/{cuid}?main=false")).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "stdin", "data": "sleep 1000\n", "encoding": "utf8"}).to_string(),
    ))
    .await
    .unwrap();
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    trickle
        .write_all(
            format!(
                "POST /containers/{cuid}/upload-zip HTTP/1.1\r\nhost: {}\r\nauthorization: {}\r\ncontent-type: application/zip\r\ncontent-length: 100000\r\n\r\nPK",
                s.addr,
                basic_auth(USER, PASS)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        let r = s
            .post_json(
                "/containers",
                &json!({"image": BUSYBOX, "start": true, "command": ["sleep", "300"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let (status, took_busy) = s_stop(&mut s);
    eprintln!("stop while busy: {took_busy:?}");
    assert!(status.success(), "{status}");
    drop(ws);
    drop(trickle);
}

/// Found by a live attack on the fixes above: connections held by a request body that never
/// arrives (`POST /session` needs no credentials) or by a client that never reads its answer
/// could fill `MAX_CONNECTIONS` from a few addresses. A body gets `BODY_TIMEOUT` in all; a
/// write that the client takes nothing of for `WRITE_TIMEOUT` ends the connection.
#[tokio::test]
async fn a_body_that_never_comes_or_an_answer_never_read_holds_nothing() {
    let s = Server::start_with(Options {
        env: vec![
            ("BODY_TIMEOUT".into(), "2".into()),
            ("WRITE_TIMEOUT".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    // A body announced and never sent: to sign-in (public) and to create (authenticated).
    for (path, auth) in [
        ("/session", None),
        ("/containers", Some(basic_auth(USER, PASS))),
    ] {
        let mut conn = TcpStream::connect(s.addr).await.unwrap();
        let auth = auth
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        conn.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\n{auth}content-type: application/json\r\ncontent-length: 60000\r\n\r\n{{",
                s.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: the connection was held past the body timeout"))
            .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("BODY_TIMEOUT"), "{path}: {answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "{path}: too early"
        );
    }

    // A client that asks for a big answer many times over and reads nothing.
    let asset = s
        .send(s.client.get(format!("{}/ui/vendor/xterm.js", s.base)))
        .await;
    assert_eq!(asset.status, 200);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(s.addr).await.unwrap();
    let one = format!(
        "GET /ui/vendor/xterm.js HTTP/1.1\r\nhost: {}\r\n\r\n",
        s.addr
    );
    conn.write_all(one.repeat(20).as_bytes()).await.unwrap();
    // Nothing but time shows that the server gave up on a client that reads nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection was still open after {got} bytes"
    );
    assert!(
        got < 20 * asset.text.len(),
        "all 20 answers were sent ({got} bytes): the stalled writes were not cut"
    );
    assert_eq!(s.get("/healthz").await.status, 200);
}

/// Found by a live attack: a page on any site can navigate a window to
/// `http://admin:guess@host/…`; the browser first gets the Basic challenge, then retries
/// with the guessed credentials, which counted against the operator's address. Credentials a
/// browser sends for another site (`Sec-Fetch-Site`, which pages cannot set) are not looked
/// at, not counted and not challenged.
#[tokio::test]
async fn credentials_a_browser_sends_for_another_site_are_never_counted() {
    let s = Server::start_with(Options {
        env: vec![("AUTH_MAX_FAILURES".into(), "3".into())],
        ..Default::default()
    })
    .await;
    for site in ["cross-site", "same-site"] {
        for _ in 0..5 {
            let r = s
                .send(
                    s.client
                        .get(format!("{}/containers", s.base))
                        .header("sec-fetch-site", site)
                        .header("sec-fetch-mode", "navigate")
                        .header("authorization", basic_auth(USER, "guess")),
                )
                .await;
            r.assert_error(401, "auth_error", "CROSS_SITE_CREDENTIALS");
            assert!(
                r.header("www-authenticate").is_none(),
                "a challenge invites a retry"
            );
        }
    }
    // Not even the right password works that way, so the answer tells a guesser nothing.
    let r = s
        .send(
            s.request(reqwest::Method::GET, "/healthz")
                .header("sec-fetch-site", "cross-site"),
        )
        .await;
    r.assert_error(401, "auth_error", "CROSS_SITE_CREDENTIALS");
    // The operator's address is not locked out.
    assert_eq!(s.get("/healthz").await.status, 200);
    // A user who types the address (`none`) or the console itself (`same-origin`) is served.
    for site in ["none", "same-origin"] {
        let r = s
            .send(
                s.request(reqwest::Method::GET, "/healthz")
                    .header("sec-fetch-site", site),
            )
            .await;
        assert_eq!(r.status, 200, "{site}: {}", r.text);
    }
}

/// Found by a live attack: a page on another port of the host can set cookies named
/// `cm_session` with longer paths, which browsers send first; only the first value was read,
/// so the console was signed out until its cookies were cleared. Every value is tried.
#[tokio::test]
async fn planted_session_cookies_do_not_hide_the_real_one() {
    let s = Server::start().await;
    let signed = console_sign_in(&s).await;
    let cookies = format!("cm_session=junk1; cm_session=junk2; {}", signed.cookie);
    for path in ["/containers", "/session", "/healthz"] {
        let r = s
            .send(
                with_cookie(&s, reqwest::Method::GET, path, &cookies)
                    .header("x-session-key", &signed.key),
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    // Without the key, still nothing, whichever cookie is live.
    let r = s
        .send(with_cookie(
            &s,
            reqwest::Method::GET,
            "/containers",
            &cookies,
        ))
        .await;
    r.assert_error(401, "auth_error", "SESSION_KEY_REQUIRED");
}

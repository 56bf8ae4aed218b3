//! The WebSocket terminal (§6) and `GET /containers/{cuid}/logs` (§4), against real
//! containers through a real WebSocket client.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// Creates and starts a container running `command`; returns its cuid.
async fn running(s: &Server, command: &[&str]) -> String {
    s.create_running(&json!({"image": BUSYBOX, "command": command}))
        .await
}

/// Processes in the container (`ps` output).
fn ps(cuid: &str) -> String {
    docker(&["exec", cuid, "ps"])
}

async fn wait_ps(cuid: &str, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let out = ps(cuid);
        if pred(&out) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}; ps:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn tty_shell_echo_resize_interrupt_and_exit_code() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    let mut t = Term::open(&s, &format!("/ws/{cuid}?cols=80&rows=24&main=false")).await;
    // Sent the moment the socket opens, before the shell is ready: buffered, not lost.
    t.stdin("echo marker-$((6*7))\n").await;
    t.until(LONG, "echo marker", |t| t.out().contains("marker-42"))
        .await;

    t.stdin("stty size\n").await;
    t.until(LONG, "initial size 24 80", |t| t.out().contains("24 80"))
        .await;

    t.send(json!({"type": "resize", "cols": 132, "rows": 43}))
        .await;
    t.stdin("stty size\n").await;
    t.until(LONG, "resized", |t| t.out().contains("43 132"))
        .await;

    t.stdin("sleep 30\n").await;
    wait_ps(&cuid, LONG, "sleep 30 did not start", |p| {
        p.contains("sleep 30")
    })
    .await;
    let before = Instant::now();
    t.send(json!({"type": "signal", "name": "INT"})).await;
    t.stdin("echo back-$((1+2))\n").await;
    t.until(LONG, "prompt after INT", |t| t.out().contains("back-3"))
        .await;
    assert!(before.elapsed() < Duration::from_secs(15));
    wait_ps(&cuid, LONG, "sleep 30 survived INT", |p| {
        !p.contains("sleep 30")
    })
    .await;

    t.stdin("exit 7\n").await;
    assert_eq!(t.until_exit(LONG).await, 7);
    t.until_closed(LONG).await;
    assert!(t.errors.is_empty(), "{:?}", t.errors);
}

#[tokio::test]
async fn cmd_term_and_kill_give_143_and_137() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    for (sig, code, seconds) in [("TERM", 143, "101"), ("KILL", 137, "102")] {
        let mut t = Term::open(
            &s,
            &format!(
                "/ws/{cuid}?main=false&cmd={}",
                url_encode(&format!("sleep {seconds}"))
            ),
        )
        .await;
        let needle = format!("sleep {seconds}");
        wait_ps(&cuid, LONG, "sleep did not start", |p| p.contains(&needle)).await;
        t.send(json!({"type": "signal", "name": sig})).await;
        assert_eq!(t.until_exit(LONG).await, code, "{sig}");
        t.until_closed(LONG).await;
        assert!(!ps(&cuid).contains(&needle));
    }
    // With a TTY too: TERM goes to the terminal's foreground process.
    let mut t = Term::open(
        &s,
        &format!(
            "/ws/{cuid}?main=false&cols=80&rows=24&cmd={}",
            url_encode("sleep 103")
        ),
    )
    .await;
    wait_ps(&cuid, LONG, "sleep did not start", |p| {
        p.contains("sleep 103")
    })
    .await;
    t.send(json!({"type": "signal", "name": "TERM"})).await;
    assert_eq!(t.until_exit(LONG).await, 143);
}

#[tokio::test]
async fn without_tty_streams_are_separate_and_binary_is_exact() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;

    let cmd = "echo to-out; echo to-err >&2; printf 'caf\\303\\251 \\342\\202\\254\\n'; exit 3";
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 3);
    assert_eq!(t.out(), "to-out\ncafé €\n");
    assert_eq!(String::from_utf8_lossy(&t.exec_err), "to-err\n");
    assert!(t.encodings.iter().all(|e| e == "utf8"), "{:?}", t.encodings);

    // Binary output: base64, byte-exact (compared with a hex dump made in the container).
    let cmd = "{ head -c 4096 /dev/urandom | tee /dev/fd/3 | od -An -tx1 -v >&2; } 3>&1";
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 0, "{:?}", t.errors);
    assert_eq!(t.exec_out.len(), 4096);
    assert!(t.encodings.iter().any(|e| e == "base64"));
    let want: String = String::from_utf8_lossy(&t.exec_err)
        .split_whitespace()
        .collect();
    let got: String = t.exec_out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got, want);

    // A client's malformed frames get an error frame and the session goes on.
    let mut t = Term::open(&s, &format!("/ws/{cuid}?main=false")).await;
    t.ws.send(Message::Text("not json".into())).await.unwrap();
    t.send(json!({"type": "signal", "name": "HUP"})).await;
    t.send(json!({"type": "resize", "cols": 100, "rows": 30}))
        .await; // no TTY to resize
    t.send(json!({"type": "stdin", "data": "ZWNobyBiNjQtb2sK", "encoding": "base64"}))
        .await;
    t.until(LONG, "base64 stdin", |t| t.out().contains("b64-ok"))
        .await;
    t.until(LONG, "three errors", |t| t.errors.len() >= 3).await;
    let codes: Vec<&str> = t
        .errors
        .iter()
        .map(|e| e["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["INVALID_FRAME", "INVALID_SIGNAL", "NO_TTY"]);
    assert_eq!(t.errors[0]["error"]["error"], "validation_error");
    assert_eq!(t.errors[0]["error"]["status"], 400);
    t.send(json!({"type": "close"})).await;
    t.until_exit(LONG).await;
    t.until_closed(LONG).await;
}

/// Control characters are six bytes of JSON each (`\u001b`): output is cut so each message
/// stays near 64 KiB, and a valid 64 KiB stdin frame of them (384 KiB of JSON) is taken, while
/// one over the limit gets `FRAME_TOO_LARGE` and the session goes on.
#[tokio::test]
async fn control_characters_fit_the_message_limits_both_ways() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    // Prints how many of the first 64 KiB of input were not ^A.
    let cmd = "echo got-$(( $(head -c 65536 | tr -d '\\001' | wc -c) )); exec /bin/sh";
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    let stdin = "\u{1}".repeat(64 * 1024);
    let frame = json!({"type": "stdin", "data": stdin, "encoding": "utf8"}).to_string();
    assert!(frame.len() > 384 * 1024);
    t.ws.send(Message::Text(frame.into())).await.unwrap();
    // All 64 KiB arrived (`head` ended), every byte a ^A.
    t.until(LONG, "the stdin frame read", |t| t.out().contains("got-"))
        .await;
    assert_eq!(t.out(), "got-0\n");

    // 100 KiB decoded: an error frame, and the session goes on.
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 100 * 1024]);
    t.send(json!({"type": "stdin", "data": big, "encoding": "base64"}))
        .await;
    t.until(LONG, "FRAME_TOO_LARGE", |t| {
        t.errors
            .iter()
            .any(|e| e["error"]["code"] == "FRAME_TOO_LARGE")
    })
    .await;
    // 32 KiB of ESC, then a mark: frames stay near 64 KiB (checked on every message).
    t.stdin("head -c 32768 /dev/zero | tr '\\000' '\\033'; echo; echo esc-$((1+1))\n")
        .await;
    t.until(LONG, "the escapes", |t| t.out().contains("esc-2"))
        .await;
    assert_eq!(t.exec_out.iter().filter(|b| **b == 0x1b).count(), 32768);
    assert!(t.encodings.iter().all(|e| e == "utf8"), "{:?}", t.encodings);
    t.send(json!({"type": "close"})).await;
    t.until_exit(LONG).await;
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
}

#[tokio::test]
async fn console_shows_the_current_run_from_its_start() {
    let s = Server::start().await;
    let cuid = running(
        &s,
        &[
            "sh",
            "-c",
            "echo first-line; echo first-err >&2; exec sleep 3600",
        ],
    )
    .await;
    // Right after start: the main process's first lines, both streams, marked as main.
    let mut t = Term::open(&s, &format!("/ws/{cuid}")).await;
    t.until(LONG, "main output", |t| {
        t.main().contains("first-line")
            && String::from_utf8_lossy(&t.main_err).contains("first-err")
    })
    .await;
    // And a shell for input, its output apart.
    t.stdin("echo shell-$((2*21))\n").await;
    t.until(LONG, "shell output", |t| t.out().contains("shell-42"))
        .await;
    assert!(!t.out().contains("first-line"));

    // Live main output arrives too.
    docker(&["exec", &cuid, "sh", "-c", "echo live-line > /proc/1/fd/1"]);
    t.until(LONG, "live main output", |t| t.main().contains("live-line"))
        .await;
    t.stdin("exit\n").await;
    assert_eq!(t.until_exit(LONG).await, 0);

    // After a restart the console shows the new run only.
    let r = s.post(&format!("/containers/{cuid}/restart")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut t = Term::open(&s, &format!("/ws/{cuid}")).await;
    t.until(LONG, "new run output", |t| t.main().contains("first-line"))
        .await;
    t.stdin("echo sync\n").await;
    t.until(LONG, "sync", |t| t.out().contains("sync")).await;
    assert_eq!(t.main().matches("first-line").count(), 1, "{}", t.main());
    assert!(!t.main().contains("live-line"), "{}", t.main());
}

#[tokio::test]
async fn attach_reports_the_main_process_exit_code() {
    let s = Server::start().await;
    let cuid = s
        .create_running(&json!({"image": BUSYBOX, "restart": "no",
               "command": ["sh", "-c", "echo ready; read x; echo got-$x; exit $x"]}))
        .await;
    let mut t = Term::open(&s, &format!("/ws/{cuid}?attach=true")).await;
    t.until(LONG, "ready", |t| t.main().contains("ready")).await;
    t.stdin("7\n").await;
    assert_eq!(t.until_exit(LONG).await, 7);
    assert!(t.main().contains("got-7"), "{}", t.main());
    t.until_closed(LONG).await;
}

#[tokio::test]
async fn not_running_unknown_origin_and_auth() {
    let s = Server::start().await;
    // Stored, never started: upgrade, one error frame, close.
    let cuid = s.create_sleeper().await;
    let mut t = Term::open(&s, &format!("/ws/{cuid}")).await;
    t.until_closed(LONG).await;
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    let e = &t.errors[0]["error"];
    assert_eq!(e["error"], "state_error");
    assert_eq!(e["code"], "CONTAINER_NOT_RUNNING");
    assert_eq!(e["status"], 422);
    assert!(e["request_id"].is_string() && e["timestamp"].is_string());

    let handshake = |path: String, headers: Vec<(&'static str, String)>| {
        let addr = s.addr;
        async move {
            let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
            for (k, v) in headers {
                req.headers_mut().insert(k, v.parse().unwrap());
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok((_, resp)) => (resp.status().as_u16(), String::new()),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    let body = resp
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    (resp.status().as_u16(), body)
                }
                Err(e) => panic!("handshake: {e}"),
            }
        }
    };
    let auth = ("authorization", basic_auth(USER, PASS));
    // No credentials: 401 before any upgrade.
    let (status, body) = handshake(format!("/ws/{cuid}"), vec![]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("auth_error"), "{body}");
    // Another site's page: 403.
    let (status, body) = handshake(
        format!("/ws/{cuid}"),
        vec![auth.clone(), ("origin", "http://evil.example".into())],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ORIGIN_NOT_ALLOWED"), "{body}");
    assert!(body.contains(r#""error":"forbidden""#), "{body}");
    let (status, _) = handshake(
        format!("/ws/{cuid}"),
        vec![
            auth.clone(),
            ("origin", format!("http://127.0.0.1:{}", s.addr.port() + 1)),
        ],
    )
    .await;
    assert_eq!(status, 403);
    // This server's own origin is fine.
    let (status, body) = handshake(
        format!("/ws/{cuid}"),
        vec![auth.clone(), ("origin", format!("http://{}", s.addr))],
    )
    .await;
    assert_eq!(status, 101, "{body}");
    // Unknown and malformed cuids: 404; a bad option: 400.
    let (status, body) = handshake(
        "/ws/c00000000-0000-4000-8000-000000000000".into(),
        vec![auth.clone()],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = handshake("/ws/nope".into(), vec![auth.clone()]).await;
    assert_eq!(status, 404);
    let (status, body) = handshake(format!("/ws/{cuid}?cols=0"), vec![auth.clone()]).await;
    assert_eq!(status, 400, "{body}");
    // A plain GET (no upgrade) is an error body too.
    let r = s.get(&format!("/ws/{cuid}")).await;
    r.assert_error(400, "validation_error", "WEBSOCKET_UPGRADE_REQUIRED");
}

/// A container being deleted is already gone to clients: its logs and its terminal are
/// `404`, as its files are.
#[tokio::test]
async fn a_container_being_deleted_has_no_logs_or_terminal() {
    let s = Server::start().await;
    // It ignores TERM, so its stop takes the whole grace period: the delete stays underway.
    let cuid = running(
        &s,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo up; while :; do sleep 1; done",
        ],
    )
    .await;
    let logs = format!("/containers/{cuid}/logs");
    s.wait_for(&logs, LONG, |r| r.text.contains("up")).await;
    let r = s.delete(&format!("/containers/{cuid}?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);

    s.get(&logs)
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");
    let mut req = format!("ws://{}/ws/{cuid}", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", basic_auth(USER, PASS).parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("CONTAINER_NOT_FOUND"), "{body}");
        }
        Ok(_) => panic!("a terminal into a container being deleted"),
        Err(e) => panic!("handshake: {e}"),
    }
    // Still being deleted (and running) when asked: the 404s were not just the end of it.
    let r = s.get(&format!("/containers/{cuid}")).await;
    assert_eq!(r.json["status"], "deleting", "{}", r.text);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &cuid]).trim(),
        "true"
    );
}

#[tokio::test]
async fn an_abrupt_disconnect_leaves_no_process_behind() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    let mut a = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode("sleep 1001")),
    )
    .await;
    let mut b = Term::open(&s, &format!("/ws/{cuid}?main=false&cols=80&rows=24")).await;
    b.stdin("sleep 1002 & sleep 1003\n").await;
    let c = Term::open(&s, &format!("/ws/{cuid}?main=false")).await;
    wait_ps(&cuid, LONG, "sleeps did not start", |p| {
        p.contains("sleep 1001") && p.contains("sleep 1002") && p.contains("sleep 1003")
    })
    .await;
    let before = ps(&cuid);
    assert!(before.contains("sh"), "{before}");
    // TCP reset, no close frame.
    for t in [&mut a, &mut b] {
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = t.ws.get_ref() {
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).unwrap();
        }
    }
    drop(a);
    drop(b);
    drop(c); // just gone (FIN), no close frame either
    wait_ps(
        &cuid,
        Duration::from_secs(10),
        "processes left behind",
        |p| !p.contains("sleep 100") && !p.contains("/bin/sh"),
    )
    .await;
    assert!(ps(&cuid).contains("sleep 3600"), "the main process stays");
}

/// A process that reads no input, on a terminal in raw mode: `^C` is an ordinary byte there,
/// so `INT` frames fill the terminal's input, then Docker's stdin path, and one of those
/// writes waits for good. A client that leaves then still ends the session and its process.
#[tokio::test]
async fn a_full_terminal_input_does_not_keep_a_session_after_its_client_leaves() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    let cmd = "stty raw -echo; echo ready; exec sleep 1005";
    let mut t = Term::open(
        &s,
        &format!(
            "/ws/{cuid}?main=false&cols=80&rows=24&cmd={}",
            url_encode(cmd)
        ),
    )
    .await;
    t.until(LONG, "raw mode", |t| t.out().contains("ready"))
        .await;
    // Only `INT`s, so the write that waits is a ^C. Once it waits, the server stops reading
    // the socket and this client's sends stall.
    let int = json!({"type": "signal", "name": "INT"}).to_string();
    let started = Instant::now();
    let mut sent = 0u64;
    let stalled = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{sent} INT frames and the input never filled"
        );
        let batch = async {
            for _ in 0..1000 {
                t.ws.feed(Message::Text(int.clone().into())).await.unwrap();
            }
            t.ws.flush().await.unwrap();
        };
        if tokio::time::timeout(Duration::from_secs(3), batch)
            .await
            .is_err()
        {
            break true;
        }
        sent += 1000;
    };
    assert!(stalled);
    assert!(ps(&cuid).contains("sleep 1005"));
    // TCP reset: the server notices at its next ping at the latest.
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = t.ws.get_ref() {
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(t);
    wait_ps(
        &cuid,
        Duration::from_secs(40),
        "the session outlived its client",
        |p| !p.contains("sleep 1005"),
    )
    .await;
}

/// A background job outlives its session's leader (same session, same process group): the
/// session ends it all the same, whether the leader exits on its own or the client vanishes.
#[tokio::test]
async fn background_jobs_do_not_outlive_the_session() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;

    // The leader exits with 0 on its own; the exit frame carries its code.
    let mut t = Term::open(
        &s,
        &format!(
            "/ws/{cuid}?main=false&cmd={}",
            url_encode("sleep 1000 & echo hi")
        ),
    )
    .await;
    assert_eq!(t.until_exit(LONG).await, 0, "{:?}", t.errors);
    assert_eq!(t.out(), "hi\n");
    t.until_closed(LONG).await;
    wait_ps(&cuid, LONG, "sleep 1000 survived its session", |p| {
        !p.contains("sleep 1000")
    })
    .await;

    // The leader has exited, then the client disconnects abruptly (TCP reset).
    let mut t = Term::open(
        &s,
        &format!(
            "/ws/{cuid}?main=false&cmd={}",
            url_encode("sleep 1004 & echo hi")
        ),
    )
    .await;
    t.until(LONG, "hi", |t| t.out().contains("hi")).await;
    wait_ps(&cuid, LONG, "the leader did not exit", |p| {
        p.contains("sleep 1004") && !p.contains("echo hi")
    })
    .await;
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = t.ws.get_ref() {
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
    }
    drop(t);
    wait_ps(&cuid, LONG, "sleep 1004 survived a disconnect", |p| {
        !p.contains("sleep 1004")
    })
    .await;
    assert!(ps(&cuid).contains("sleep 3600"), "the main process stays");
}

#[tokio::test]
async fn fifty_concurrent_sessions_on_one_container() {
    let s = Server::start().await;
    let cuid = running(&s, &["sh", "-c", "echo main-hello; exec sleep 3600"]).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let ws = s.ws(&format!("/ws/{cuid}")).await;
        set.spawn(async move {
            let mut t = Term::on(ws);
            t.stdin(&format!("echo session-$(({i}*1000+7))\nexit {}\n", i % 5))
                .await;
            let code = t.until_exit(Duration::from_secs(60)).await;
            assert_eq!(code, (i % 5) as i64);
            assert!(
                t.out().contains(&format!("session-{}", i * 1000 + 7)),
                "{}",
                t.out()
            );
            assert!(t.main().contains("main-hello"), "{}", t.main());
            i
        });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        r.expect("session task");
        done += 1;
    }
    assert_eq!(done, 50);
    wait_ps(&cuid, LONG, "shells left behind", |p| {
        !p.contains("/bin/sh")
    })
    .await;
}

#[tokio::test]
async fn a_slow_reader_slows_the_exec_down() {
    let s = Server::start().await;
    let cuid = running(&s, SLEEPER).await;
    // 64 MB of output: with nobody reading, the producer must block, not finish.
    let cmd = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 64000000; echo; echo end-mark";
    let mut t = Term::open(
        &s,
        &format!("/ws/{cuid}?main=false&cmd={}", url_encode(cmd)),
    )
    .await;
    wait_ps(&cuid, LONG, "producer did not start", |p| p.contains("yes")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ps(&cuid).contains("head -c"),
        "the producer was not slowed down"
    );
    // Reading everything: complete, in order, exit 0.
    assert_eq!(t.until_exit(Duration::from_secs(120)).await, 0);
    assert_eq!(t.exec_out.len(), 64_000_000 + 1 + 9);
    assert!(t.out().ends_with("\nend-mark\n"));
}

#[tokio::test]
async fn logs_with_tail_since_follow_and_streams() {
    let s = Server::start().await;
    let cuid = running(
        &s,
        &[
            "sh",
            "-c",
            "echo out-1; echo err-1 >&2; echo out-2; echo out-3; exec sleep 3600",
        ],
    )
    .await;
    let path = format!("/containers/{cuid}/logs");
    let r = s
        .wait_for(&path, LONG, |r| r.status == 200 && r.text.contains("out-3"))
        .await;
    // Docker copies stdout and stderr apart: only each stream's own order is certain.
    let mut all: Vec<&str> = r.text.lines().collect();
    all.sort();
    assert_eq!(all, ["err-1", "out-1", "out-2", "out-3"], "{}", r.text);
    let full: Vec<String> = r.text.lines().map(|l| format!("{l}\n")).collect();
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));

    // Streams apart.
    let r = s.get(&format!("{path}?stream=stderr")).await;
    assert_eq!(r.text, "err-1\n");
    let r = s.get(&format!("{path}?stream=stdout")).await;
    assert_eq!(r.text, "out-1\nout-2\nout-3\n");
    let r = s.get(&format!("{path}?format=jsonl")).await;
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for l in &lines {
        let data = l["data"].as_str().unwrap();
        let want = if data.starts_with("err") {
            "stderr"
        } else {
            "stdout"
        };
        assert_eq!(l["stream"], want, "{l}");
        assert_eq!(l["encoding"], "utf8");
    }
    let out2 = lines.iter().find(|l| l["data"] == "out-2\n").unwrap();

    // tail
    let r = s.get(&format!("{path}?tail=2")).await;
    assert_eq!(r.text, full[2..].concat());
    let r = s.get(&format!("{path}?tail=0")).await;
    assert_eq!(r.text, "");

    // since: RFC 3339 (to the nanosecond) and Unix seconds.
    let third = out2["timestamp"].as_str().unwrap();
    let r = s
        .get(&format!("{path}?since={}&stream=stdout", url_encode(third)))
        .await;
    assert_eq!(r.text, "out-2\nout-3\n");
    let r = s.get(&format!("{path}?since=4102444800")).await; // 2100-01-01
    assert_eq!(r.text, "");
    let r = s.get(&format!("{path}?since=0&timestamps=true")).await;
    assert_eq!(r.text.lines().count(), 4);
    assert!(
        r.text
            .lines()
            .all(|l| l.split(' ').next().unwrap().ends_with('Z')),
        "{}",
        r.text
    );
    s.get(&format!("{path}?since=yesterday"))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    s.get(&format!("{path}?tail=x"))
        .await
        .assert_error(400, "validation_error", "INVALID_QUERY");
    s.get("/containers/c00000000-0000-4000-8000-000000000000/logs")
        .await
        .assert_error(404, "not_found", "CONTAINER_NOT_FOUND");

    // follow: a line printed after the request started arrives on the open stream.
    let resp = s
        .request(reqwest::Method::GET, &format!("{path}?follow=true&tail=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let deadline = Instant::now() + LONG;
    // Docker copies stdout and stderr apart, so the last record of the log is whichever
    // stream's last line was written last: the full listing above says which.
    let last = full.last().unwrap().clone();
    while !String::from_utf8_lossy(&got).contains(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .expect("tail line");
        got.extend_from_slice(&chunk.unwrap().unwrap());
    }
    docker(&["exec", &cuid, "sh", "-c", "echo late-line > /proc/1/fd/1"]);
    while !String::from_utf8_lossy(&got).contains("late-line") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .expect("late line");
        got.extend_from_slice(&chunk.unwrap().unwrap());
    }
    assert_eq!(String::from_utf8_lossy(&got), format!("{last}late-line\n"));
}

#[tokio::test]
async fn a_slow_console_viewer_loses_its_place_and_never_blocks_main() {
    let s = Server::start().await;
    let cuid = running(
        &s,
        &[
            "sh",
            "-c",
            "echo go; read x; yes main-line-0123456789 | head -n 30000; echo main-done; exec sleep 3600",
        ],
    )
    .await;
    let mut t = Term::open(&s, &format!("/ws/{cuid}")).await;
    t.until(LONG, "go", |t| t.main().contains("go")).await;
    // Start the flood, then do not read while it runs.
    docker(&["exec", &cuid, "sh", "-c", "echo 1 > /proc/1/fd/0"]);
    let r = s
        .wait_for(&format!("/containers/{cuid}/logs?tail=1"), LONG, |r| {
            r.text.contains("main-done")
        })
        .await;
    assert_eq!(r.status, 200);
    // The main process finished without waiting for the viewer; the viewer is told it lost
    // lines and then follows live output again.
    t.until(Duration::from_secs(60), "lag error", |t| {
        t.errors
            .iter()
            .any(|e| e["error"]["code"] == "OUTPUT_LAGGED")
    })
    .await;
    let lines = t.main().matches("main-line").count();
    assert!(lines < 30_000, "nothing was skipped: {lines}");
    // Once it has caught up, live lines arrive again (lines printed while it is still
    // behind may be skipped too, so print one every second). Docker replays the flood to the
    // follower before the new lines: on a machine busy with builds that took over a minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    while !t.main().contains("after-lag") {
        assert!(Instant::now() < deadline, "no live output after the lag");
        docker(&["exec", &cuid, "sh", "-c", "echo after-lag > /proc/1/fd/1"]);
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !t.main().contains("after-lag") {
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                if let Some(Ok(Message::Text(x))) = t.ws.next().await {
                    t.take(serde_json::from_str(x.as_str()).unwrap());
                }
            })
            .await;
        }
    }
}

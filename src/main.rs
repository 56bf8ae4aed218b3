//! Thin entry point: configuration, logging, then the server until SIGTERM/SIGINT.

use std::process::ExitCode;

use container_manager::config::Config;
use container_manager::server;
use container_manager::state::AppState;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let env_file = std::env::current_dir()
        .map(|d| d.join(".env"))
        .unwrap_or_else(|_| ".env".into());
    // `.env` of the working directory first; variables already in the environment win. A
    // link there is refused: it would choose where settings and a new password come from.
    if let Err(e) = container_manager::first_run::load_env_file(&env_file) {
        eprintln!("container-manager: {e}");
        return ExitCode::from(2);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        None => {}
        Some("backup") => return backup(&args[1..]),
        Some(other) => {
            eprintln!("container-manager: unknown command {other:?}; usage: container-manager [backup PATH]");
            return ExitCode::from(2);
        }
    }
    // No credentials at all: a first start makes some (stored in ./.env, printed once).
    let generated = match container_manager::first_run::prepare(&env_file) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("container-manager: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env_with(generated.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("container-manager: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_json);

    raise_open_file_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("container-manager: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, generated));
    // Blocking work still running (a big removal, a compose call's wait) is idempotent and
    // redone at the next start: do not wait for it.
    runtime.shutdown_timeout(RUNTIME_STOP_LIMIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("container-manager: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long blocking tasks get once the server has stopped serving.
const RUNTIME_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Past the drain limit plus this, a stopping server exits whatever still runs.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The last resort of a stop: a plain thread (it needs no runtime, so a stuck runtime cannot
/// hold it up) that ends the process if the orderly stop has not after `limit`.
fn exit_after(limit: std::time::Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "container-manager: the stop took longer than {} s; exiting without waiting further",
            limit.as_secs()
        );
        std::process::exit(1);
    });
}

/// `container-manager backup PATH`: an online, consistent copy of the state store.
fn backup(args: &[std::ffi::OsString]) -> ExitCode {
    let [target] = args else {
        eprintln!("container-manager: usage: container-manager backup PATH");
        return ExitCode::from(2);
    };
    let url = match Config::database_url_from_env() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("container-manager: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("container-manager: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::path::Path::new(target);
    match runtime.block_on(container_manager::backup::run(&url, target)) {
        Ok(()) => {
            println!("backed up to {}", target.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("container-manager: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    generated: Option<container_manager::first_run::Generated>,
) -> Result<(), server::StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(server::StartError::Serve)?;
    let shutdown = CancellationToken::new();
    let state = AppState::open(config, shutdown.clone()).await?;
    server::start_background(&state);
    // The one line a supervisor or the test harness reads to find the port.
    let addr = listener.local_addr().map_err(server::StartError::Serve)?;
    println!("listening on {addr}");
    if let Some(g) = &generated {
        println!("{}", container_manager::first_run::banner(g, addr));
    }
    let drain_timeout = state.config.connections.drain_timeout;
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        exit_after(drain_timeout + EXIT_GRACE);
        shutdown.cancel();
    });
    server::serve(state, listener).await
}

/// The server's own log on stderr: readable text by default; with `LOG_FORMAT=json` one JSON
/// object per line (`timestamp`, `level`, `target`, `message` and the event's fields at the
/// top level, `span.request_id` inside a request) for log shippers.
fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

/// Every terminal session holds sockets, and uploads and download-zips a few descriptors
/// each: lift the soft limit on open files to the hard one (often 1024 vs. hundreds of
/// thousands under systemd).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("container-manager: cannot raise the open-file limit: {e}");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

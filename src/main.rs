//! Thin entry point: the command line, configuration, logging, then the server until
//! SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use container_manager::config::Config;
use container_manager::server;
use container_manager::state::AppState;
use tokio_util::sync::CancellationToken;

/// Container-management control plane: a REST API over desired state in SQLite, and a
/// reconciler that drives `docker compose` v2.
#[derive(Parser)]
#[command(name = "container-manager", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Copy the state store to PATH while the server runs.
    ///
    /// The copy is a consistent snapshot (SQLite `VACUUM INTO`) and PATH must not exist. It
    /// reads DATABASE_URL or DATA_DIR from the environment and .env, like the server.
    Backup {
        /// The file to write.
        path: PathBuf,
    },
}

/// The settings `serve` reads, shown under `serve --help`. They come from `.env.example`, so
/// the help lists every setting that file documents and cannot drift from it; the values
/// themselves are read by `Config` from the environment and `.env`, not by the parser.
fn settings_help() -> String {
    let mut out = String::from(
        "Settings (environment variables; `.env` in the working directory is read too, the \
         environment wins):\n",
    );
    let mut vars: Vec<String> = Vec::new();
    let mut text: Vec<&str> = Vec::new();
    let mut flush = |vars: &mut Vec<String>, text: &mut Vec<&str>| {
        if !vars.is_empty() {
            out.push('\n');
            for v in vars.iter() {
                out.push_str(&format!("  {v}\n"));
            }
            for t in text.iter() {
                out.push_str(&format!("      {t}\n"));
            }
        }
        vars.clear();
        text.clear();
    };
    for line in include_str!("../.env.example").lines() {
        let (commented, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line.trim()),
        };
        match setting(body) {
            Some((name, value)) => {
                vars.push(match (commented, value) {
                    (false, v) => format!("{name}  [default: {v}]"),
                    (true, "") => format!("{name}  [default: unset]"),
                    (true, v) => format!("{name}  [e.g. {v}]"),
                });
            }
            None if body.is_empty() && !commented => flush(&mut vars, &mut text),
            None => {
                // A description after settings starts the next group.
                if !vars.is_empty() {
                    flush(&mut vars, &mut text);
                }
                text.push(body);
            }
        }
    }
    flush(&mut vars, &mut text);
    out
}

/// `NAME=value` with an upper-case variable name.
fn setting(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once('=')?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    valid.then_some((name, value))
}

fn parse_args() -> Cli {
    let command = Cli::command().mut_subcommand("serve", |c| c.after_help(settings_help()));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    // `--help`, `--version` and usage errors end here (exit 0, or 2 with the usage).
    let cli = parse_args();
    let env_file = std::env::current_dir()
        .map(|d| d.join(".env"))
        .unwrap_or_else(|_| ".env".into());
    // `.env` of the working directory next; variables already in the environment win. A
    // link there is refused: it would choose where settings and a new password come from.
    if let Err(e) = container_manager::first_run::load_env_file(&env_file) {
        eprintln!("container-manager: {e}");
        return ExitCode::from(2);
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&env_file),
        Command::Backup { path } => backup(&path),
    }
}

/// `container-manager [serve]`: the server until SIGTERM/SIGINT.
fn serve(env_file: &std::path::Path) -> ExitCode {
    // No credentials at all: a first start makes some (stored in ./.env, printed once).
    let generated = match container_manager::first_run::prepare(env_file) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("container-manager: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env_with(
        generated
            .as_ref()
            .map(|g| (g.user.as_str(), g.pass.as_str())),
    ) {
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
fn backup(target: &std::path::Path) -> ExitCode {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_help_names_each_setting_with_its_default_and_meaning() {
        let help = settings_help();
        assert!(
            help.contains(
                "  LISTEN_ADDR  [default: 0.0.0.0:8080]\n      Address the API listens on.\n"
            ),
            "{help}"
        );
        assert!(help.contains("  APP_USER  [e.g. admin]\n  APP_PASS  [e.g. your_secure_password_here]\n      Basic-auth"), "{help}");
        // The file's own header is not a setting.
        assert!(!help.contains("Copy to .env"), "{help}");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}

//! An attached session (`?attach=true`): the viewer talks to the container's main process.

use std::time::Duration;

use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::error::{Error, Reason};
use super::frames::Input;
use super::plumbing::{no_tty, write_input, SessionIo};
use super::Ctx;

/// `?attach=true`: input goes to the main process's stdin, signals to the main process
/// (Docker's kill API; tini forwards them), `exit` when the main process ends. `close`
/// detaches: the main process belongs to the reconciler, not to a viewer.
pub(super) async fn attach_session(
    ctx: &Ctx,
    mut io: SessionIo,
    main: Option<&tokio::task::JoinHandle<()>>,
) {
    let docker = &ctx.docker;
    // Register the wait first so an exit right after attaching is not missed.
    let wait_opts = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut waiter = Box::pin(docker.wait_container(&ctx.container, Some(wait_opts)));
    let attach_opts = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(true)
        .build();
    let attached = match docker
        .attach_container(&ctx.container, Some(attach_opts))
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "attach failed");
            return io
                .error(Error::new(
                    Reason::AttachFailed,
                    "could not attach to the main process",
                ))
                .await;
        }
    };
    let mut stdin = attached.input;
    let _output = attached.output;
    let exit = loop {
        tokio::select! {
            r = waiter.next() => break match r {
                Some(Ok(resp)) => Some(resp.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
                _ => None,
            },
            () = io.gone.cancelled() => return,
            () = ctx.shutdown.cancelled() => return,
            () = ctx.node_lost.cancelled() => return super::end_lost(ctx, &io).await,
            input = io.input.recv() => match input {
                None | Some(Input::Close) => return,
                Some(Input::Stdin(bytes)) => {
                    // The main process's end closes its stdin, failing the write.
                    if !write_input(&mut stdin, &bytes, &io, std::future::pending()).await {
                        return;
                    }
                }
                Some(Input::Resize { .. }) => io.error(no_tty()).await,
                Some(Input::Signal(sig)) => {
                    let opts = KillContainerOptionsBuilder::new()
                        .signal(&format!("SIG{}", sig.name()))
                        .build();
                    if let Err(e) = docker.kill_container(&ctx.container, Some(opts)).await {
                        tracing::debug!(error = %e, "kill failed");
                        io.error(Error::new(Reason::SignalFailed, "the main process could not be signalled")).await;
                    }
                }
            },
        }
    };
    // Let the main output reach its end (the log stream ends with the run), briefly.
    if let Some(main) = main {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !main.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    match exit {
        Some(code) => io.exit(code).await,
        // The wait broke with the node's daemon.
        None if super::node_is_lost(ctx).await => super::end_lost(ctx, &io).await,
        None => {
            io.error(Error::new(
                Reason::ExitCodeUnknown,
                "the main process's exit code could not be read",
            ))
            .await
        }
    }
}

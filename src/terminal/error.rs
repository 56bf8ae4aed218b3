//! What a terminal session reports in its `error` frames. The frame's body is the HTTP
//! error body, made in `http/` (the session gets the renderer in its [`super::Ctx`]).

use serde_json::Value;

/// A frame the session refuses, or a step of the session that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub reason: Reason,
    pub message: String,
    pub details: Option<Value>,
}

/// Why (each has its own code on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A client frame that is not a JSON object with a string `type` (or lacks its data).
    InvalidFrame,
    InvalidBase64,
    InvalidEncoding,
    FrameTooLarge,
    InvalidSize,
    InvalidSignal,
    UnknownFrameType,
    /// A resize for a session opened without a TTY.
    NoTty,
    AttachFailed,
    /// No process could be started in the container.
    ExecFailed,
    /// The exec was created but did not attach (a fault of Docker or the server).
    ExecNotAttached,
    SignalFailed,
    ExitCodeUnknown,
    /// The client did not keep up with the main output.
    OutputLagged,
    /// The Swarm node that runs the container was lost: the session ends with it.
    NodeLost,
}

impl Error {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// Renders an `error` frame (the text the client receives) for an [`Error`].
pub type ErrorFrame = fn(&Error) -> String;

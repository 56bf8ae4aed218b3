//! The container lifecycle in one place: the states a container is asked to be in and the
//! statuses it is observed in, as types the compiler checks every `match` on, and the pure
//! rules over them:
//! - [`plan`]: which action is allowed from which state, and what it changes;
//! - [`Progress::settled`]: when a waiting request has its answer;
//! - [`Progress::in_sync`]: when Docker's list and the store agree (resync wakes the rest);
//! - [`DockerState::status`]: what Docker's state of a container is reported as.
//!
//! The reconciler's next step is [`crate::reconcile::decide`]; the failures it records are
//! [`ErrorCode`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ApiCode;

/// What a client asked the container to be (`desired_state`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum DesiredState {
    /// Stored, never started: nothing exists in Docker.
    Created,
    Running,
    Stopped,
    Paused,
}

/// Why the server itself, not a client, set the current desired state (`status_reason`):
/// a `lifetime` that ran out, or an `idle` policy. Any client action clears it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum StatusReason {
    Expired,
    Idle,
}

/// What the container was last observed to be (`status`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Status {
    /// Never started.
    Created,
    Running,
    Paused,
    /// Docker's restart policy is bringing it back.
    Restarting,
    /// The main process ended on its own (see `exit_code`).
    Exited,
    /// Stopped on request.
    Stopped,
    /// The last step failed (see `last_error`); retried with back-off.
    Error,
    /// Tombstoned: being removed.
    Deleting,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
        }
    }

    /// Running or paused: a spec change has to recreate the container.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

impl Status {
    pub const ALL: [Status; 8] = [
        Self::Created,
        Self::Running,
        Self::Paused,
        Self::Restarting,
        Self::Exited,
        Self::Stopped,
        Self::Error,
        Self::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A process may hold its ports in Docker (an `error` may be a failed recreate of a
    /// container that still runs).
    fn may_be_running(self) -> bool {
        matches!(
            self,
            Self::Running | Self::Restarting | Self::Paused | Self::Error
        )
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Docker's own state of a container (inspect's `State.Status`, the list's `State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
    Removing,
}

impl DockerState {
    /// Docker's state of a container, from inspect's `State` (the one place it is read: the
    /// reconciler, `/status` and the terminal all ask this).
    pub fn of(st: &bollard::models::ContainerState) -> Self {
        Self::parse(&st.status.map(|s| s.to_string()).unwrap_or_default())
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            "removing" => Self::Removing,
            _ => Self::Created,
        }
    }

    /// A process runs in it (paused counts: it holds its memory and ports).
    pub fn is_running(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Restarting)
    }

    /// The status reported for a container Docker shows in this state, given what was asked.
    /// Docker says `exited` both for a stop on request and for a process that ended on its
    /// own: what was desired tells them apart.
    pub fn status(self, desired: DesiredState) -> Status {
        match self {
            Self::Running => Status::Running,
            Self::Paused => Status::Paused,
            Self::Restarting => Status::Restarting,
            Self::Created | Self::Exited | Self::Dead | Self::Removing => {
                if desired == DesiredState::Stopped {
                    Status::Stopped
                } else {
                    Status::Exited
                }
            }
        }
    }
}

/// The actions a client can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Pause,
    Unpause,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Unpause => "unpause",
        }
    }
}

/// What an action does to desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Already there: `200` at once.
    Noop,
    Set {
        desired: DesiredState,
        restart: bool,
        /// The container goes from not running to running: check `boot.py` and host ports.
        starting: bool,
    },
}

/// An action the container's state does not allow (docs/API.md §4); `http/` answers it
/// `422 INVALID_TRANSITION`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} a container that is {status}", verb.as_str())]
pub struct InvalidTransition {
    pub verb: Verb,
    pub desired: DesiredState,
    pub status: Status,
}

/// The allowed transitions (docs/API.md §4), from desired state and observed status.
pub fn plan(verb: Verb, desired: DesiredState, status: Status) -> Result<Plan, InvalidTransition> {
    use DesiredState as D;
    use Status as S;
    let running_now = status.may_be_running();
    let invalid = || InvalidTransition {
        verb,
        desired,
        status,
    };
    let set = |desired, restart, starting| Plan::Set {
        desired,
        restart,
        starting,
    };
    match verb {
        Verb::Start if status == S::Paused || desired == D::Paused => Err(invalid()),
        // A finished job is run again, and the answer waits for that new run (also when a
        // `stop` just asked for has not been observed yet).
        Verb::Start if status == S::Exited => Ok(set(D::Running, true, true)),
        Verb::Start if desired == D::Running && matches!(status, S::Running | S::Restarting) => {
            Ok(Plan::Noop)
        }
        Verb::Start => Ok(set(D::Running, false, !running_now)),
        Verb::Stop
            if matches!(desired, D::Stopped | D::Created)
                && matches!(status, S::Stopped | S::Created) =>
        {
            Ok(Plan::Noop)
        }
        Verb::Stop => Ok(set(D::Stopped, false, false)),
        Verb::Restart => Ok(set(D::Running, true, !running_now)),
        Verb::Pause if desired == D::Paused && status == S::Paused => Ok(Plan::Noop),
        Verb::Pause if desired == D::Running && status == S::Running => {
            Ok(set(D::Paused, false, false))
        }
        Verb::Pause => Err(invalid()),
        Verb::Unpause if status == S::Paused => Ok(set(D::Running, false, false)),
        Verb::Unpause => Err(invalid()),
    }
}

/// The lifecycle fields of one container, as stored (columns `desired_state`, `status`, …,
/// and `deleting`: whether it is tombstoned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    #[sqlx(rename = "desired_state")]
    pub desired: DesiredState,
    pub status: Status,
    pub generation: i64,
    pub observed_generation: i64,
    pub restart_requested: i64,
    pub restart_done: i64,
    pub deleting: bool,
}

impl Progress {
    /// Observed state matches desired state for the current generation: a waiting request
    /// has its answer.
    pub fn settled(&self) -> bool {
        let status_ok = match self.desired {
            // A main process may end on its own right after starting: that is an answer too.
            DesiredState::Running => matches!(
                self.status,
                Status::Running | Status::Exited | Status::Restarting
            ),
            DesiredState::Created => self.status == Status::Created,
            DesiredState::Stopped => self.status == Status::Stopped,
            DesiredState::Paused => self.status == Status::Paused,
        };
        status_ok && self.converged()
    }

    fn converged(&self) -> bool {
        // A restart is owed only to a container wanted up: a stop (or a never-started
        // container) supersedes one still pending, e.g. a restart whose start failed. Counted
        // as owed, it kept a `stop` that had converged waiting into its `408`.
        let restart_owed = self.desired.is_up() && self.restart_done < self.restart_requested;
        self.observed_generation == self.generation && !restart_owed
    }

    /// Whether Docker's list entry for the container (its state and the generation label it
    /// was made from; `None`: not in Docker) agrees with what the store says. Resync wakes the
    /// containers for which it does not.
    pub fn in_sync(&self, docker: Option<(DockerState, Option<i64>)>) -> bool {
        if self.deleting || self.status == Status::Error || !self.converged() {
            return false;
        }
        match docker {
            None => {
                matches!(self.status, Status::Created | Status::Stopped) && !self.desired.is_up()
            }
            Some((state, generation)) => {
                generation == Some(self.generation)
                    && match state {
                        DockerState::Exited | DockerState::Created => {
                            matches!(self.status, Status::Stopped | Status::Exited)
                        }
                        DockerState::Running => self.status == Status::Running,
                        DockerState::Paused => self.status == Status::Paused,
                        DockerState::Restarting => self.status == Status::Restarting,
                        DockerState::Dead | DockerState::Removing => false,
                    }
            }
        }
    }
}

/// Why a reconciler step failed: recorded in `last_error.code` and, for a waiting request,
/// its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The image is not on the Docker host (policy `never`), or its registry says the image
    /// or tag does not exist.
    ImageNotFound,
    /// The image's registry cannot be reached.
    RegistryUnavailable,
    /// The image's registry refused the credentials (or wants some).
    RegistryAuthFailed,
    /// A pull would name a registry `REGISTRY_ALLOWLIST` does not hold.
    RegistryNotAllowed,
    /// A host port is held by another program.
    PortInUse,
    /// The Docker daemon does not answer.
    DockerUnavailable,
    /// `docker compose` (or an Engine API call) failed otherwise.
    ComposeFailed,
    /// `docker compose` did not finish within `COMPOSE_TIMEOUT`.
    ComposeTimeout,
    /// A file operation on the host failed.
    IoError,
    /// The state store failed.
    DatabaseError,
    /// A pass took its every step without the container settling.
    NotConverging,
    /// The container's `isolation` needs a runtime the daemon no longer offers (`runsc`
    /// unregistered after the container was created).
    RuntimeUnavailable,
    /// The firewall rules of the container's egress policy could not be applied.
    FirewallFailed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        ApiCode::from(self).as_str()
    }
}

/// Every step failure is a code a client can receive: the string is [`ApiCode`]'s.
impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::ImageNotFound => ApiCode::ImageNotFound,
            ErrorCode::RegistryUnavailable => ApiCode::RegistryUnavailable,
            ErrorCode::RegistryAuthFailed => ApiCode::RegistryAuthFailed,
            ErrorCode::RegistryNotAllowed => ApiCode::RegistryNotAllowed,
            ErrorCode::PortInUse => ApiCode::PortInUse,
            ErrorCode::DockerUnavailable => ApiCode::DockerUnavailable,
            ErrorCode::ComposeFailed => ApiCode::ComposeFailed,
            ErrorCode::ComposeTimeout => ApiCode::ComposeTimeout,
            ErrorCode::RuntimeUnavailable => ApiCode::RuntimeUnavailable,
            ErrorCode::IoError => ApiCode::IoError,
            ErrorCode::DatabaseError => ApiCode::DatabaseError,
            ErrorCode::NotConverging => ApiCode::NotConverging,
            ErrorCode::FirewallFailed => ApiCode::FirewallFailed,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use DesiredState as D;
    use Status as S;

    fn code(r: Result<Plan, InvalidTransition>) -> String {
        match r {
            Ok(p) => format!("{p:?}"),
            Err(e) => crate::error::ApiError::from(e).code.as_str().to_owned(),
        }
    }

    fn set(desired: D, restart: bool, starting: bool) -> Plan {
        Plan::Set {
            desired,
            restart,
            starting,
        }
    }

    #[test]
    fn transitions() {
        use Verb::*;
        let noop = "Noop".to_owned();
        assert_eq!(code(plan(Start, D::Running, S::Running)), noop);
        assert_eq!(code(plan(Stop, D::Stopped, S::Stopped)), noop);
        assert_eq!(code(plan(Stop, D::Created, S::Created)), noop);
        for (verb, desired, status) in [
            (Pause, D::Stopped, S::Stopped),
            (Pause, D::Created, S::Created),
            (Unpause, D::Running, S::Running),
            (Start, D::Paused, S::Paused),
        ] {
            assert_eq!(
                code(plan(verb, desired, status)),
                "INVALID_TRANSITION",
                "{verb:?} from {desired}/{status}"
            );
        }
        let cases = [
            (Start, D::Created, S::Created, set(D::Running, false, true)),
            (Start, D::Running, S::Exited, set(D::Running, true, true)),
            (Pause, D::Running, S::Running, set(D::Paused, false, false)),
            (Unpause, D::Paused, S::Paused, set(D::Running, false, false)),
            // A start right after a stop that is not observed yet still waits for a new run.
            (Start, D::Stopped, S::Exited, set(D::Running, true, true)),
            // A container in error may still hold its ports in Docker: no port probe.
            (Start, D::Running, S::Error, set(D::Running, false, false)),
            // A paused container may be stopped or restarted.
            (Stop, D::Paused, S::Paused, set(D::Stopped, false, false)),
            (Restart, D::Paused, S::Paused, set(D::Running, true, false)),
        ];
        for (verb, desired, status, want) in cases {
            assert_eq!(
                plan(verb, desired, status).unwrap(),
                want,
                "{verb:?} from {desired}/{status}"
            );
        }
    }

    #[test]
    fn names_round_trip_through_text_and_json() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Status::parse("nope"), None);
        assert_eq!(serde_json::to_value(D::Paused).unwrap(), "paused");
        assert_eq!(
            serde_json::to_value(ErrorCode::ImageNotFound).unwrap(),
            "IMAGE_NOT_FOUND"
        );
        let back: ErrorCode = serde_json::from_value(json!("NOT_CONVERGING")).unwrap();
        assert_eq!(back, ErrorCode::NotConverging);
    }

    fn progress(desired: D, status: S) -> Progress {
        Progress {
            desired,
            status,
            generation: 3,
            observed_generation: 3,
            restart_requested: 1,
            restart_done: 1,
            deleting: false,
        }
    }

    #[test]
    fn a_waiting_request_is_answered_once_converged() {
        assert!(progress(D::Running, S::Running).settled());
        assert!(progress(D::Running, S::Exited).settled());
        assert!(progress(D::Stopped, S::Stopped).settled());
        assert!(!progress(D::Stopped, S::Running).settled());
        assert!(!progress(D::Paused, S::Running).settled());
        let behind = Progress {
            observed_generation: 2,
            ..progress(D::Running, S::Running)
        };
        assert!(!behind.settled());
        let restart_pending = Progress {
            restart_requested: 2,
            ..progress(D::Running, S::Running)
        };
        assert!(!restart_pending.settled());
        // A stop after a restart that never happened is answered once stopped.
        let stopped_instead = Progress {
            restart_requested: 2,
            ..progress(D::Stopped, S::Stopped)
        };
        assert!(stopped_instead.settled());
        assert!(stopped_instead.in_sync(None));
    }

    #[test]
    fn resync_compares_docker_with_the_store() {
        use DockerState as K;
        assert!(progress(D::Running, S::Running).in_sync(Some((K::Running, Some(3)))));
        assert!(!progress(D::Running, S::Running).in_sync(Some((K::Running, Some(2)))));
        assert!(!progress(D::Running, S::Running).in_sync(Some((K::Exited, Some(3)))));
        assert!(!progress(D::Running, S::Running).in_sync(None));
        assert!(progress(D::Stopped, S::Stopped).in_sync(Some((K::Exited, Some(3)))));
        assert!(progress(D::Stopped, S::Stopped).in_sync(None));
        assert!(progress(D::Created, S::Created).in_sync(None));
        assert!(!progress(D::Paused, S::Paused).in_sync(Some((K::Running, Some(3)))));
        assert!(!progress(D::Running, S::Error).in_sync(Some((K::Running, Some(3)))));
        let deleting = Progress {
            deleting: true,
            ..progress(D::Running, S::Deleting)
        };
        assert!(!deleting.in_sync(None));
    }

    #[test]
    fn docker_states_map_to_statuses() {
        use DockerState as K;
        assert_eq!(K::Running.status(D::Running), S::Running);
        assert_eq!(K::Exited.status(D::Stopped), S::Stopped);
        assert_eq!(K::Exited.status(D::Running), S::Exited);
        assert_eq!(K::Paused.status(D::Paused), S::Paused);
        assert!(K::Paused.is_running() && !K::Exited.is_running());
    }

    #[test]
    fn failures_are_spelled_as_their_codes() {
        // Their statuses are `http::error_map`'s (`step_kind`).
        for code in [
            ErrorCode::RegistryUnavailable,
            ErrorCode::RegistryAuthFailed,
            ErrorCode::RegistryNotAllowed,
        ] {
            let text = serde_json::to_value(code).unwrap();
            assert_eq!(text, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(text).unwrap(), code);
        }
    }

    /// What `last_error.code` stores (serde of `ErrorCode`) is the string of its `ApiCode`.
    #[test]
    fn step_codes_are_api_codes() {
        use ErrorCode as E;
        let all = [
            E::ImageNotFound,
            E::RegistryUnavailable,
            E::RegistryAuthFailed,
            E::RegistryNotAllowed,
            E::PortInUse,
            E::DockerUnavailable,
            E::ComposeFailed,
            E::ComposeTimeout,
            E::IoError,
            E::DatabaseError,
            E::NotConverging,
            E::RuntimeUnavailable,
            E::FirewallFailed,
        ];
        for code in all {
            // A new variant stops this compiling until it is listed above too.
            match code {
                E::ImageNotFound
                | E::RegistryUnavailable
                | E::RegistryAuthFailed
                | E::RegistryNotAllowed
                | E::PortInUse
                | E::DockerUnavailable
                | E::ComposeFailed
                | E::ComposeTimeout
                | E::IoError
                | E::DatabaseError
                | E::NotConverging
                | E::RuntimeUnavailable => {}
                E::FirewallFailed => {}
            }
            let text = serde_json::to_value(code).unwrap();
            assert_eq!(text, ApiCode::from(code).as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(text).unwrap(), code);
        }
    }
}

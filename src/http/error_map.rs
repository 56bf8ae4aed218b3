//! The one place where the domain layers' errors become the HTTP error (docs/API.md §3):
//! each `From` below picks the kind (and so the status), the code, the message, the details
//! and any header. The layers below `http/` never see [`ApiError`]: the store, the spec, the
//! life cycle, `/app`'s files and the terminal each return their own error type, and
//! handlers still just use `?`.

use axum::http::{header, HeaderValue};
use serde_json::json;

use crate::error::{ApiCode, ApiError, Kind};
use crate::lifecycle::ErrorCode;
use crate::{appdir, lifecycle, spec, store, terminal};

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        use store::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound(cuid) => ApiError::not_found(ApiCode::ContainerNotFound, message)
                .with_details(json!({"cuid": cuid})),
            E::StaleGeneration { expected, current } => {
                ApiError::new(Kind::PreconditionFailed, ApiCode::StaleGeneration, message)
                    .with_details(json!({"expected": expected, "current": current}))
            }
            E::Deleting => ApiError::state(ApiCode::ContainerDeleting, message),
            E::NameTaken { name, holder } => ApiError::conflict(ApiCode::NameTaken, message)
                .with_details(json!({"name": name, "holder": holder})),
            E::PortConflict {
                host,
                protocol,
                holder,
            } => ApiError::conflict(ApiCode::PortConflict, message)
                .with_details(json!({"host": host, "protocol": protocol, "holder": holder})),
            E::Database(e) => e.into(),
        }
    }
}

impl From<lifecycle::InvalidTransition> for ApiError {
    fn from(e: lifecycle::InvalidTransition) -> Self {
        ApiError::state(ApiCode::InvalidTransition, e.to_string())
            .with_details(json!({"status": e.status, "desired_state": e.desired}))
    }
}

/// The first field refused gives the code, the message and the details (as when only one
/// was reported); `details.errors` lists every field refused, that one first, each with its
/// own `code` and `message` beside its details (`field`, `provided`, …).
impl From<spec::Invalid> for ApiError {
    fn from(e: spec::Invalid) -> Self {
        let errors: Vec<serde_json::Value> = e
            .all()
            .map(|i| {
                let mut one = json!({"code": spec_code(i.rule).as_str(), "message": i.message});
                if let (Some(one), serde_json::Value::Object(d)) = (one.as_object_mut(), &i.details)
                {
                    for (k, v) in d {
                        one.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                one
            })
            .collect();
        let mut details = e.details;
        match details.as_object_mut() {
            Some(d) => {
                d.insert("errors".into(), errors.into());
            }
            None => details = json!({"errors": errors}),
        }
        ApiError::validation(spec_code(e.rule), e.message).with_details(details)
    }
}

/// Every spec rule is a `400 validation_error` with a code of its own.
fn spec_code(rule: spec::Rule) -> ApiCode {
    use spec::Rule as R;
    match rule {
        R::UnknownField => ApiCode::UnknownField,
        R::MissingImage => ApiCode::MissingImage,
        R::InvalidImage => ApiCode::InvalidImage,
        R::InvalidStart => ApiCode::InvalidStart,
        R::InvalidEnv => ApiCode::InvalidEnv,
        R::InvalidEnvName => ApiCode::InvalidEnvName,
        R::InvalidEnvValue => ApiCode::InvalidEnvValue,
        R::EnvTooLarge => ApiCode::EnvTooLarge,
        R::MissingPorts => ApiCode::MissingPorts,
        R::InvalidPorts => ApiCode::InvalidPorts,
        R::InvalidPort => ApiCode::InvalidPort,
        R::InvalidProtocol => ApiCode::InvalidProtocol,
        R::InvalidHostIp => ApiCode::InvalidHostIp,
        R::DuplicatePort => ApiCode::DuplicatePort,
        R::InvalidTags => ApiCode::InvalidTags,
        R::InvalidName => ApiCode::InvalidName,
        R::InvalidTag => ApiCode::InvalidTag,
        R::DuplicateTag => ApiCode::DuplicateTag,
        R::InvalidCommand => ApiCode::InvalidCommand,
        R::InvalidRestart => ApiCode::InvalidRestart,
        R::InvalidUser => ApiCode::InvalidUser,
        R::InvalidResources => ApiCode::InvalidResources,
        R::InvalidCpus => ApiCode::InvalidCpus,
        R::InvalidMemory => ApiCode::InvalidMemory,
        R::MemoryTooLow => ApiCode::MemoryTooLow,
        R::InvalidPids => ApiCode::InvalidPids,
        R::InvalidTmp => ApiCode::InvalidTmp,
        R::TmpTooSmall => ApiCode::TmpTooSmall,
        R::InvalidReadOnly => ApiCode::InvalidReadOnly,
        R::InvalidAutoUpdate => ApiCode::InvalidAutoUpdate,
        R::InvalidPlacement => ApiCode::InvalidPlacement,
        R::InvalidIsolation => ApiCode::InvalidIsolation,
        R::InvalidNetwork => ApiCode::InvalidNetwork,
        R::InvalidEgress => ApiCode::InvalidEgress,
        R::InvalidAllowEntry => ApiCode::InvalidAllowEntry,
        R::InvalidAllowCidr => ApiCode::InvalidAllowCidr,
        R::InvalidAllowPort => ApiCode::InvalidAllowPort,
        R::AllowWithoutAllowlist => ApiCode::AllowWithoutAllowlist,
        R::TooManyAllowEntries => ApiCode::TooManyAllowEntries,
        R::InvalidDisk => ApiCode::InvalidDisk,
        R::DiskTooSmall => ApiCode::DiskTooSmall,
        R::DiskChangeRefused => ApiCode::DiskChangeRefused,
        R::InvalidLifetime => ApiCode::InvalidLifetime,
        R::InvalidTtl => ApiCode::InvalidTtl,
        R::TtlTooLong => ApiCode::TtlTooLong,
        R::InvalidOnExpiry => ApiCode::InvalidOnExpiry,
        R::InvalidIdle => ApiCode::InvalidIdle,
        R::InvalidIdleAfter => ApiCode::InvalidIdleAfter,
        R::InvalidIdleAction => ApiCode::InvalidIdleAction,
        R::InvalidIdleResume => ApiCode::InvalidIdleResume,
        R::InvalidHealth => ApiCode::InvalidHealth,
        R::InvalidHealthCmd => ApiCode::InvalidHealthCmd,
        R::InvalidHealthHttp => ApiCode::InvalidHealthHttp,
        R::InvalidHealthPort => ApiCode::InvalidHealthPort,
        R::InvalidHealthPath => ApiCode::InvalidHealthPath,
        R::InvalidHealthInterval => ApiCode::InvalidHealthInterval,
        R::InvalidHealthTimeout => ApiCode::InvalidHealthTimeout,
        R::InvalidHealthRetries => ApiCode::InvalidHealthRetries,
        R::InvalidHealthStartPeriod => ApiCode::InvalidHealthStartPeriod,
        R::InvalidOnUnhealthy => ApiCode::InvalidOnUnhealthy,
    }
}

impl From<appdir::Error> for ApiError {
    fn from(e: appdir::Error) -> Self {
        let message = e.to_string();
        match e {
            appdir::Error::Refused {
                reason,
                message,
                details,
            } => {
                let (kind, code) = files_kind_code(reason);
                let err = ApiError::new(kind, code, message);
                match details {
                    Some(details) => err.with_details(details),
                    None => err,
                }
            }
            appdir::Error::SlotsBusy {
                pool,
                slots,
                waited,
            } => {
                let code = match pool {
                    appdir::Pool::Upload => ApiCode::UploadSlotsBusy,
                    appdir::Pool::Listing => ApiCode::ListingSlotsBusy,
                };
                ApiError::new(Kind::Unavailable, code, message)
                    .with_details(json!({
                        "slots": slots,
                        "waited_secs": waited.as_secs(),
                        "retry_after": appdir::SLOTS_BUSY_RETRY_AFTER_SECS,
                    }))
                    .with_header(
                        header::RETRY_AFTER,
                        HeaderValue::from(appdir::SLOTS_BUSY_RETRY_AFTER_SECS),
                    )
            }
            appdir::Error::Store(e) => e.into(),
            // A path the parser accepts that Linux cannot hold after all (PATH_MAX counted
            // from wherever the kernel resolves it): the client's path, not a server fault.
            appdir::Error::Io(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => ApiError::new(
                Kind::Validation,
                ApiCode::UnsafePath,
                "unsafe path: the path is too long",
            )
            .with_details(json!({"field": "path", "reason": "the path is too long"})),
            appdir::Error::Io(e) => e.into(),
        }
    }
}

/// The kind (status) and code of each refusal of the files routes: a path or archive the
/// client got wrong is `400`, an archive too big `413`, a missing file `404`, a name taken
/// by a directory `409`, and a failed move into place the server's `500`.
fn files_kind_code(reason: appdir::Reason) -> (Kind, ApiCode) {
    use appdir::Reason as R;
    match reason {
        R::UnsafePath => (Kind::Validation, ApiCode::UnsafePath),
        R::FileNotFound => (Kind::NotFound, ApiCode::FileNotFound),
        R::PathConflict => (Kind::Conflict, ApiCode::PathConflict),
        R::MoveFailed => (Kind::Io, ApiCode::IoError),
        R::AlreadyExists => (Kind::Conflict, ApiCode::FileExists),
        R::NotADirectory => (Kind::Validation, ApiCode::NotADirectory),
        R::DirectoryNotEmpty => (Kind::Conflict, ApiCode::DirectoryNotEmpty),
        R::MoveIntoItself => (Kind::Validation, ApiCode::MoveIntoItself),
        R::DirectoryTooLarge => (Kind::Validation, ApiCode::DirectoryTooLarge),
        R::InvalidZip => (Kind::Validation, ApiCode::InvalidZip),
        R::UnsafeZipEntry => (Kind::Validation, ApiCode::UnsafeZipEntry),
        R::UnsupportedZipEntry => (Kind::Validation, ApiCode::UnsupportedZipEntry),
        R::DuplicateZipEntry => (Kind::Validation, ApiCode::DuplicateZipEntry),
        R::ZipTooManyEntries => (Kind::PayloadTooLarge, ApiCode::ZipTooManyEntries),
        R::ZipRatioExceeded => (Kind::PayloadTooLarge, ApiCode::ZipRatioExceeded),
        R::ZipTooLarge => (Kind::PayloadTooLarge, ApiCode::ZipTooLarge),
        R::ZipDirectoryTooLarge => (Kind::PayloadTooLarge, ApiCode::ZipDirectoryTooLarge),
        R::DiskQuotaExceeded => (Kind::PayloadTooLarge, ApiCode::DiskQuotaExceeded),
        R::SnapshotTooLarge => (Kind::PayloadTooLarge, ApiCode::SnapshotTooLarge),
    }
}

impl From<&terminal::Error> for ApiError {
    fn from(e: &terminal::Error) -> Self {
        let (kind, code) = terminal_kind_code(e.reason);
        let err = ApiError::new(kind, code, e.message.clone());
        match &e.details {
            Some(details) => err.with_details(details.clone()),
            None => err,
        }
    }
}

impl From<terminal::Error> for ApiError {
    fn from(e: terminal::Error) -> Self {
        (&e).into()
    }
}

/// A bad client frame is a `validation_error`; a process that cannot be started, attached
/// or signalled a `state_error`; an exit code Docker does not give the server's own fault;
/// a viewer that falls behind a `timeout`.
fn terminal_kind_code(reason: terminal::Reason) -> (Kind, ApiCode) {
    use terminal::Reason as R;
    match reason {
        R::InvalidFrame => (Kind::Validation, ApiCode::InvalidFrame),
        R::InvalidBase64 => (Kind::Validation, ApiCode::InvalidBase64),
        R::InvalidEncoding => (Kind::Validation, ApiCode::InvalidEncoding),
        R::FrameTooLarge => (Kind::Validation, ApiCode::FrameTooLarge),
        R::InvalidSize => (Kind::Validation, ApiCode::InvalidSize),
        R::InvalidSignal => (Kind::Validation, ApiCode::InvalidSignal),
        R::UnknownFrameType => (Kind::Validation, ApiCode::UnknownFrameType),
        R::NoTty => (Kind::Validation, ApiCode::NoTty),
        R::AttachFailed => (Kind::State, ApiCode::AttachFailed),
        R::ExecFailed => (Kind::State, ApiCode::ExecFailed),
        R::ExecNotAttached => (Kind::Internal, ApiCode::ExecFailed),
        R::SignalFailed => (Kind::State, ApiCode::SignalFailed),
        R::ExitCodeUnknown => (Kind::Internal, ApiCode::ExitCodeUnknown),
        R::OutputLagged => (Kind::Timeout, ApiCode::OutputLagged),
        R::NodeLost => (Kind::Unavailable, ApiCode::NodeLost),
    }
}

/// The error kind (and so the HTTP status) of a reconciler step's failure, for the request
/// that waited on it or the image route that ran it.
pub fn step_kind(code: ErrorCode) -> Kind {
    use ErrorCode as E;
    match code {
        E::ImageNotFound | E::RegistryAuthFailed | E::RegistryNotAllowed => Kind::State,
        // 400 as on create and patch: the spec asks for what this daemon does not offer.
        E::RuntimeUnavailable => Kind::Validation,
        E::PortInUse => Kind::Conflict,
        E::DockerUnavailable | E::RegistryUnavailable => Kind::Unavailable,
        E::IoError => Kind::Io,
        E::ComposeFailed
        | E::ComposeTimeout
        | E::DatabaseError
        | E::NotConverging
        | E::FirewallFailed => Kind::Compose,
    }
}

/// A WebSocket `error` frame around the §3 body.
pub fn error_frame(err: &ApiError) -> String {
    json!({"type": "error", "error": err.body()}).to_string()
}

/// The renderer a terminal session gets for its `error` frames.
pub fn terminal_error_frame(err: &terminal::Error) -> String {
    error_frame(&ApiError::from(err))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn store_errors_keep_their_status_code_and_details() {
        let e = ApiError::from(store::Error::NotFound("cx".into()));
        assert_eq!(
            (e.kind, e.code),
            (Kind::NotFound, ApiCode::ContainerNotFound)
        );
        assert_eq!(e.message, "no container cx");
        assert_eq!(e.details, Some(json!({"cuid": "cx"})));

        let e = ApiError::from(store::Error::StaleGeneration {
            expected: 7,
            current: 1,
        });
        assert_eq!(e.kind.status(), 412);
        assert_eq!(e.code, ApiCode::StaleGeneration);
        assert_eq!(e.details, Some(json!({"expected": 7, "current": 1})));

        let e = ApiError::from(store::Error::Deleting);
        assert_eq!(
            (e.kind.status().as_u16(), e.code),
            (422, ApiCode::ContainerDeleting)
        );

        let e = ApiError::from(store::Error::PortConflict {
            host: 80,
            protocol: "tcp".into(),
            holder: None,
        });
        assert_eq!((e.kind, e.code), (Kind::Conflict, ApiCode::PortConflict));
        assert_eq!(
            e.message,
            "host port 80/tcp already belongs to another container"
        );
        assert_eq!(
            e.details,
            Some(json!({"host": 80, "protocol": "tcp", "holder": null}))
        );

        // What SQLite said stays in the log.
        let e = ApiError::from(store::Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(
            (e.kind.status().as_u16(), e.code),
            (500, ApiCode::DatabaseError)
        );
        assert_eq!(e.message, "the state store failed");
    }

    #[test]
    fn busy_slots_are_503_with_retry_after() {
        let e = ApiError::from(appdir::Error::SlotsBusy {
            pool: appdir::Pool::Listing,
            slots: 1,
            waited: Duration::from_millis(5200),
        });
        assert_eq!(e.code, ApiCode::ListingSlotsBusy);
        assert_eq!(
            e.message,
            "all 1 listing slots stayed busy for 5 s; retry later"
        );
        assert_eq!(
            e.details,
            Some(json!({"slots": 1, "waited_secs": 5, "retry_after": 5}))
        );
        let response = e.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "5");

        let e = ApiError::from(appdir::Error::SlotsBusy {
            pool: appdir::Pool::Upload,
            slots: 4,
            waited: Duration::from_secs(30),
        });
        assert_eq!(e.code, ApiCode::UploadSlotsBusy);
    }

    #[test]
    fn files_refusals_have_the_status_of_who_is_at_fault() {
        use appdir::Reason as R;
        let status = |reason| {
            let e = ApiError::from(appdir::Error::refused(reason, "m"));
            assert_eq!(e.message, "m");
            e.kind.status().as_u16()
        };
        for reason in [
            R::UnsafePath,
            R::InvalidZip,
            R::DuplicateZipEntry,
            R::DirectoryTooLarge,
            R::NotADirectory,
            R::MoveIntoItself,
        ] {
            assert_eq!(status(reason), 400, "{reason:?}");
        }
        for reason in [
            R::ZipTooManyEntries,
            R::ZipRatioExceeded,
            R::ZipTooLarge,
            R::ZipDirectoryTooLarge,
            R::DiskQuotaExceeded,
            R::SnapshotTooLarge,
        ] {
            assert_eq!(status(reason), 413, "{reason:?}");
        }
        assert_eq!(status(R::FileNotFound), 404);
        assert_eq!(status(R::PathConflict), 409);
        assert_eq!(status(R::AlreadyExists), 409);
        assert_eq!(status(R::DirectoryNotEmpty), 409);
        assert_eq!(status(R::MoveFailed), 500);
        let e = ApiError::from(appdir::Error::refused(R::MoveFailed, "m"));
        assert_eq!((e.kind, e.code), (Kind::Io, ApiCode::IoError));

        // Details ride along; a gone container is the store's 404; a failed syscall is
        // the generic i/o answer.
        let e = ApiError::from(
            appdir::Error::refused(R::UnsafePath, "m").with_details(json!({"path": "x"})),
        );
        assert_eq!(e.details, Some(json!({"path": "x"})));
        let e = ApiError::from(appdir::Error::from(store::Error::NotFound("cx".into())));
        assert_eq!(e.code, ApiCode::ContainerNotFound);
        let e = ApiError::from(appdir::Error::from(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        )));
        assert_eq!((e.kind, e.code), (Kind::Io, ApiCode::IoError));
    }

    #[test]
    fn terminal_errors_are_validation_state_internal_or_timeout() {
        use terminal::Reason as R;
        let of = |reason| {
            let e = ApiError::from(terminal::Error::new(reason, "m"));
            (e.kind, e.code)
        };
        assert_eq!(of(R::NoTty), (Kind::Validation, ApiCode::NoTty));
        assert_eq!(
            of(R::InvalidFrame),
            (Kind::Validation, ApiCode::InvalidFrame)
        );
        assert_eq!(of(R::SignalFailed), (Kind::State, ApiCode::SignalFailed));
        // One code, two kinds: a process that cannot start is the container's state; an
        // exec that does not attach is a fault.
        assert_eq!(of(R::ExecFailed), (Kind::State, ApiCode::ExecFailed));
        assert_eq!(
            of(R::ExecNotAttached),
            (Kind::Internal, ApiCode::ExecFailed)
        );
        assert_eq!(
            of(R::ExitCodeUnknown),
            (Kind::Internal, ApiCode::ExitCodeUnknown)
        );
        assert_eq!(of(R::OutputLagged), (Kind::Timeout, ApiCode::OutputLagged));
        assert_eq!(of(R::NodeLost), (Kind::Unavailable, ApiCode::NodeLost));

        let frame: serde_json::Value = serde_json::from_str(&terminal_error_frame(
            &terminal::Error::new(R::OutputLagged, "behind")
                .with_details(json!({"skipped_lines": 3})),
        ))
        .unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["error"]["code"], "OUTPUT_LAGGED");
        assert_eq!(frame["error"]["status"], 408);
        assert_eq!(frame["error"]["message"], "behind");
        assert_eq!(frame["error"]["details"], json!({"skipped_lines": 3}));
    }

    #[test]
    fn step_failures_map_to_their_answers() {
        assert_eq!(step_kind(ErrorCode::ImageNotFound).status().as_u16(), 422);
        assert_eq!(step_kind(ErrorCode::PortInUse).status().as_u16(), 409);
        assert_eq!(
            step_kind(ErrorCode::DockerUnavailable).status().as_u16(),
            503
        );
        assert_eq!(step_kind(ErrorCode::IoError).status().as_u16(), 500);
        assert_eq!(step_kind(ErrorCode::NotConverging), Kind::Compose);
        assert_eq!(step_kind(ErrorCode::RegistryUnavailable), Kind::Unavailable);
        assert_eq!(step_kind(ErrorCode::RegistryAuthFailed), Kind::State);
    }

    #[test]
    fn spec_refusals_are_400_with_their_field() {
        let e = ApiError::from(spec::Invalid::field(
            spec::Rule::InvalidUser,
            "user",
            json!("root"),
            "m",
        ));
        assert_eq!(
            (e.kind.status().as_u16(), e.code),
            (400, ApiCode::InvalidUser)
        );
        // Its details, and `errors` listing it (the only field refused) with its code.
        assert_eq!(
            e.details,
            Some(json!({"field": "user", "provided": "root", "errors": [
                {"field": "user", "provided": "root", "code": "INVALID_USER", "message": "m"}
            ]}))
        );
    }

    #[test]
    fn an_invalid_transition_names_status_and_desired_state() {
        let e = ApiError::from(
            lifecycle::plan(
                lifecycle::Verb::Unpause,
                lifecycle::DesiredState::Running,
                lifecycle::Status::Running,
            )
            .unwrap_err(),
        );
        assert_eq!(
            (e.kind.status().as_u16(), e.code),
            (422, ApiCode::InvalidTransition)
        );
        assert_eq!(e.message, "cannot unpause a container that is running");
        assert_eq!(
            e.details,
            Some(json!({"status": "running", "desired_state": "running"}))
        );
    }
}

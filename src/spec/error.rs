//! Why a body is refused: the rule it breaks, the sentence for the client, and the details
//! that name the field. The HTTP answer (`400 validation_error` with its code) is made from
//! it in `http/`.

use serde_json::{json, Value};

/// A spec body that breaks a rule.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub rule: Rule,
    pub message: String,
    /// `{"field", "provided"}`, or what else the rule reports (a size and its limit).
    pub details: Value,
}

/// Each rule of the spec a body can break (each has its own code on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    UnknownField,
    MissingImage,
    InvalidImage,
    InvalidStart,
    InvalidEnv,
    InvalidEnvName,
    InvalidEnvValue,
    EnvTooLarge,
    MissingPorts,
    InvalidPorts,
    InvalidPort,
    InvalidProtocol,
    InvalidHostIp,
    DuplicatePort,
    InvalidTags,
    InvalidName,
    InvalidTag,
    DuplicateTag,
    InvalidCommand,
    InvalidRestart,
    InvalidUser,
    InvalidResources,
    InvalidCpus,
    InvalidMemory,
    MemoryTooLow,
    InvalidPids,
    InvalidTmp,
    TmpTooSmall,
    InvalidReadOnly,
    InvalidAutoUpdate,
    InvalidPlacement,
    InvalidIsolation,
    InvalidNetwork,
    InvalidEgress,
    InvalidAllowEntry,
    InvalidAllowCidr,
    InvalidAllowPort,
    AllowWithoutAllowlist,
    TooManyAllowEntries,
    InvalidDisk,
    DiskTooSmall,
    DiskChangeRefused,
    InvalidLifetime,
    InvalidTtl,
    TtlTooLong,
    InvalidOnExpiry,
    InvalidIdle,
    InvalidIdleAfter,
    InvalidIdleAction,
    InvalidIdleResume,
    InvalidHealth,
    InvalidHealthCmd,
    InvalidHealthHttp,
    InvalidHealthPort,
    InvalidHealthPath,
    InvalidHealthInterval,
    InvalidHealthTimeout,
    InvalidHealthRetries,
    InvalidHealthStartPeriod,
    InvalidOnUnhealthy,
}

impl Invalid {
    /// A rule broken by one field: `details` names it and echoes what was sent.
    pub fn field(
        rule: Rule,
        field: impl Into<String>,
        provided: Value,
        message: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            message: message.into(),
            details: json!({"field": field.into(), "provided": provided}),
        }
    }
}

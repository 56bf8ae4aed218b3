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
    /// The other fields of the same body that break a rule, in the order they were read
    /// (this one is the first): a form shows them all at once (`details.errors`).
    pub more: Vec<Invalid>,
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
            more: Vec::new(),
        }
    }

    /// This error and the ones after it, in order.
    pub fn all(&self) -> impl Iterator<Item = &Invalid> {
        std::iter::once(self).chain(self.more.iter())
    }
}

/// The errors of one body, read field by field: one bad field does not hide the next.
#[derive(Default)]
pub(crate) struct Errors(Vec<Invalid>);

impl Errors {
    /// The value of a field that is fine; a broken one is kept for the answer.
    pub fn check<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    pub fn push(&mut self, mut e: Invalid) {
        let more = std::mem::take(&mut e.more);
        self.0.push(e);
        self.0.extend(more);
    }

    /// `Err` with the first error (the rest in its `more`) if any field was refused.
    pub fn finish(self) -> Result<(), Invalid> {
        let mut it = self.0.into_iter();
        match it.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = it.collect();
                Err(first)
            }
        }
    }
}

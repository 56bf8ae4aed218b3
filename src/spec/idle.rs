//! `idle`: what the server does with a running container nobody uses.
//! `{"after": seconds, "action": "pause" | "stop", "resume_on_use": true}` or `null` (no
//! policy). The tracking and the decision are in `crate::idle`; here only the shape.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{reject_unknown, Invalid, Rule};

/// The shortest `after`: a few seconds, so that tests (and demos) need not wait long; the
/// idle clock is sampled every `IDLE_SAMPLE_INTERVAL` (2 s by default), so shorter would not
/// mean much.
pub const MIN_IDLE_AFTER: u64 = 5;
/// The longest `after`: 30 days.
pub const MAX_IDLE_AFTER: u64 = 30 * 24 * 3600;

/// What the idle policy does to a container idle for `after` seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdleAction {
    /// Freeze its processes (memory kept, CPU freed); resumes in milliseconds.
    #[default]
    Pause,
    /// Stop it (memory freed too); resuming starts it again.
    Stop,
}

impl IdleAction {
    pub const ALL: [IdleAction; 2] = [IdleAction::Pause, IdleAction::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A container's idle policy as stored and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Idle {
    /// Seconds without use before the action.
    #[schema(minimum = 5, maximum = 2592000)]
    pub after: u64,
    pub action: IdleAction,
    /// A terminal, an upload or a start on a container the policy paused or stopped wakes
    /// it first.
    pub resume_on_use: bool,
}

/// `idle` of a create or patch body; `null` is no policy. Replaces the whole policy.
pub(super) fn parse_idle(v: Value) -> Result<Option<Idle>, Invalid> {
    let mut map: Map<String, Value> = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        v => {
            return Err(Invalid::field(
                Rule::InvalidIdle,
                "idle",
                v,
                "idle must be an object: {\"after\": seconds, \"action\": \"pause\" | \"stop\", \"resume_on_use\": true} (or null)",
            ))
        }
    };
    reject_unknown(&map, &["after", "action", "resume_on_use"], "idle.")?;
    let after = match map.remove("after") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            let after = n.as_u64().unwrap_or_default();
            if !(MIN_IDLE_AFTER..=MAX_IDLE_AFTER).contains(&after) {
                return Err(Invalid::field(
                    Rule::InvalidIdleAfter,
                    "idle.after",
                    json!(after),
                    format!(
                        "idle.after must be {MIN_IDLE_AFTER} to {MAX_IDLE_AFTER} seconds (30 days)"
                    ),
                ));
            }
            after
        }
        other => {
            return Err(Invalid::field(
                Rule::InvalidIdleAfter,
                "idle.after",
                other.unwrap_or(Value::Null),
                format!("idle.after is required: a whole number of seconds, {MIN_IDLE_AFTER} to {MAX_IDLE_AFTER}"),
            ))
        }
    };
    let action = match map.remove("action") {
        None | Some(Value::Null) => IdleAction::Pause,
        Some(Value::String(s)) if IdleAction::parse(&s).is_some() => {
            IdleAction::parse(&s).unwrap_or_default()
        }
        Some(v) => {
            return Err(Invalid::field(
                Rule::InvalidIdleAction,
                "idle.action",
                v,
                "idle.action must be pause or stop",
            ))
        }
    };
    let resume_on_use = match map.remove("resume_on_use") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(v) => {
            return Err(Invalid::field(
                Rule::InvalidIdleResume,
                "idle.resume_on_use",
                v,
                "idle.resume_on_use must be a boolean",
            ))
        }
    };
    Ok(Some(Idle {
        after,
        action,
        resume_on_use,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_with_its_defaults() {
        let i = parse_idle(json!({"after": 60})).unwrap().unwrap();
        assert_eq!(
            i,
            Idle {
                after: 60,
                action: IdleAction::Pause,
                resume_on_use: true
            }
        );
        let i = parse_idle(json!({"after": 5, "action": "stop", "resume_on_use": false}))
            .unwrap()
            .unwrap();
        assert_eq!(i.action, IdleAction::Stop);
        assert!(!i.resume_on_use);
        assert_eq!(parse_idle(Value::Null).unwrap(), None);
    }

    #[test]
    fn each_mistake_has_its_rule() {
        let cases = [
            (json!("60"), Rule::InvalidIdle, "idle"),
            (json!([60]), Rule::InvalidIdle, "idle"),
            (json!({}), Rule::InvalidIdleAfter, "idle.after"),
            (json!({"after": 4}), Rule::InvalidIdleAfter, "idle.after"),
            (
                json!({"after": 2592001}),
                Rule::InvalidIdleAfter,
                "idle.after",
            ),
            (json!({"after": 10.5}), Rule::InvalidIdleAfter, "idle.after"),
            (json!({"after": -10}), Rule::InvalidIdleAfter, "idle.after"),
            (json!({"after": "10"}), Rule::InvalidIdleAfter, "idle.after"),
            (
                json!({"after": 10, "action": "kill"}),
                Rule::InvalidIdleAction,
                "idle.action",
            ),
            (
                json!({"after": 10, "resume_on_use": "yes"}),
                Rule::InvalidIdleResume,
                "idle.resume_on_use",
            ),
            (
                json!({"after": 10, "when": 1}),
                Rule::UnknownField,
                "idle.when",
            ),
        ];
        for (v, rule, field) in cases {
            let e = parse_idle(v.clone()).unwrap_err();
            assert_eq!(e.rule, rule, "{v}");
            assert_eq!(e.details["field"], field, "{v}");
        }
    }
}

//! `lifetime`: `{"ttl": seconds, "on_expiry": "stop" | "delete"}`, the time limit of a
//! container. The deadline it sets (`expires_at`) is kept by the store and acted on by the
//! server's deadline timer; here only the field is read and bounded (`MAX_TTL`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{Invalid, Rule};
use super::type_name;

/// Longest `ttl` the spec admits whatever `MAX_TTL` says (ten years): a deadline always
/// fits the clock's arithmetic.
pub const TTL_CEILING: u64 = 10 * 365 * 24 * 3600;

/// What happens at the deadline.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// Desired state `stopped` (the container and its `/app` are kept). The default.
    #[default]
    Stop,
    /// Deleted, as by `DELETE` (container, project and `/app` removed).
    Delete,
}

impl OnExpiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(Self::Stop),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A container's time limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lifetime {
    /// Seconds from the create (or from the `PATCH` that set it) to the deadline.
    #[schema(minimum = 1)]
    pub ttl: u64,
    pub on_expiry: OnExpiry,
}

/// A `lifetime` object as sent: `on_expiry` may be left out (a create takes `stop`, a patch
/// keeps the container's current one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimeIn {
    pub ttl: u64,
    pub on_expiry: Option<OnExpiry>,
}

impl LifetimeIn {
    /// The lifetime, `on_expiry` filled in from `current` (else `stop`).
    pub fn resolve(self, current: Option<&Lifetime>) -> Lifetime {
        Lifetime {
            ttl: self.ttl,
            on_expiry: self
                .on_expiry
                .or(current.map(|c| c.on_expiry))
                .unwrap_or_default(),
        }
    }
}

/// Reads `lifetime` (not `null`: the caller decides what that means). `max_ttl` is the
/// `MAX_TTL` setting.
pub fn parse_lifetime(v: Value, max_ttl: Option<u64>) -> Result<LifetimeIn, Invalid> {
    let Value::Object(mut map) = v else {
        let message = format!(
            "`lifetime` must be an object {{\"ttl\": seconds, \"on_expiry\": \"stop\"|\"delete\"}} or null, not {}",
            type_name(&v)
        );
        return Err(Invalid::field(
            Rule::InvalidLifetime,
            "lifetime",
            v,
            message,
        ));
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["ttl", "on_expiry"].contains(&k.as_str()))
    {
        let field = format!("lifetime.{k}");
        return Err(Invalid::field(
            Rule::UnknownField,
            field.clone(),
            Value::String(k.clone()),
            format!("unknown field `{field}`"),
        ));
    }
    let ttl = match map.remove("ttl") {
        None | Some(Value::Null) => {
            return Err(Invalid::field(
                Rule::InvalidTtl,
                "lifetime.ttl",
                Value::Null,
                "`lifetime.ttl` is required: seconds until the deadline",
            ))
        }
        Some(v) => match v.as_u64() {
            Some(n) if (1..=TTL_CEILING).contains(&n) => n,
            _ => {
                return Err(Invalid::field(
                    Rule::InvalidTtl,
                    "lifetime.ttl",
                    v,
                    format!("`lifetime.ttl` must be a whole number of seconds, 1 to {TTL_CEILING}"),
                ))
            }
        },
    };
    if let Some(max) = max_ttl {
        if ttl > max {
            return Err(Invalid {
                rule: Rule::TtlTooLong,
                message: format!("`lifetime.ttl` may be at most {max} seconds (MAX_TTL)"),
                details: json!({"field": "lifetime.ttl", "provided": ttl, "limit": max}),
                more: Vec::new(),
            });
        }
    }
    let on_expiry = match map.remove("on_expiry") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(OnExpiry::parse) {
            Some(o) => Some(o),
            None => {
                return Err(Invalid::field(
                    Rule::InvalidOnExpiry,
                    "lifetime.on_expiry",
                    v,
                    "`lifetime.on_expiry` must be \"stop\" or \"delete\"",
                ))
            }
        },
    };
    Ok(LifetimeIn { ttl, on_expiry })
}

/// Under `MAX_TTL` every container has a deadline: `lifetime: null` is refused.
pub fn check_required(max_ttl: Option<u64>) -> Result<(), Invalid> {
    match max_ttl {
        None => Ok(()),
        Some(max) => Err(Invalid {
            rule: Rule::TtlTooLong,
            message: format!(
                "this server limits every container's life to {max} seconds (MAX_TTL): `lifetime` cannot be null"
            ),
            details: json!({"field": "lifetime", "provided": null, "limit": max}),
            more: Vec::new(),
        }),
    }
}

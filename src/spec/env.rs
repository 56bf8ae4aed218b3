//! `env`: variable names and values, and the merge rules of a patch (`null` removes).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::{Invalid, Rule};
use super::type_name;

pub(super) const MAX_ENV_VARS: usize = 1024;
const MAX_ENV_VALUE: usize = 128 * 1024;
/// `ENV_MAX_BYTES` by default: names plus values of one container.
pub const DEFAULT_ENV_MAX_BYTES: usize = 256 * 1024;

/// Bytes of a container's env as counted against `ENV_MAX_BYTES`: names plus values.
pub fn env_bytes(env: &BTreeMap<String, String>) -> usize {
    env.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Refuses an env over `limit` bytes. The per-variable caps alone allow 1,024 × 128 KiB, and
/// every copy of a container's representation (each `/events` entry, each response) carries
/// the whole env, so one big env multiplies through the server's memory. `before` is the size
/// the container has now: a patch that makes an env over a lowered limit smaller still goes
/// through.
pub(super) fn check_env_size(
    env: &BTreeMap<String, String>,
    limit: usize,
    before: usize,
) -> Result<(), Invalid> {
    let size = env_bytes(env);
    if size <= limit || size <= before {
        return Ok(());
    }
    Err(Invalid {
        rule: Rule::EnvTooLarge,
        message: format!(
            "env holds {size} bytes (names plus values); a container may hold at most {limit}"
        ),
        details: json!({"field": "env", "limit": limit, "size": size}),
        more: Vec::new(),
    })
}

pub fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 256
}

/// Env as sent: values are strings, or (in a patch) `null` to remove the key.
pub(super) fn parse_env_map(
    v: Value,
    allow_null: bool,
) -> Result<Vec<(String, Option<String>)>, Invalid> {
    let Value::Object(map) = v else {
        // Only the type is echoed: a list like ["DB_PASSWORD=…"] holds secrets.
        let t = type_name(&v);
        return Err(Invalid::field(
            Rule::InvalidEnv,
            "env",
            json!(t),
            format!("env must be an object of strings, not {t}"),
        ));
    };
    if map.len() > MAX_ENV_VARS {
        return Err(Invalid::field(
            Rule::InvalidEnv,
            "env",
            json!(map.len()),
            format!("at most {MAX_ENV_VARS} variables"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let field = format!("env.{name}");
        if !is_env_name(&name) {
            return Err(Invalid::field(
                Rule::InvalidEnvName,
                field,
                Value::String(name),
                "env names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        match value {
            Value::String(s) if s.contains('\0') => {
                return Err(Invalid::field(
                    Rule::InvalidEnvValue,
                    field,
                    Value::Null,
                    "env values cannot hold NUL (a process environment cannot)",
                ))
            }
            Value::String(s) if s.len() > MAX_ENV_VALUE => {
                return Err(Invalid::field(
                    Rule::InvalidEnvValue,
                    field,
                    json!(s.len()),
                    format!("env values are at most {MAX_ENV_VALUE} bytes"),
                ))
            }
            Value::String(s) => out.push((name, Some(s))),
            Value::Null if allow_null => out.push((name, None)),
            other => {
                // The value itself is not echoed: env values may be secrets.
                let t = type_name(&other);
                return Err(Invalid::field(
                    Rule::InvalidEnvValue,
                    field,
                    json!(t),
                    format!("env values must be strings, not {t}"),
                ));
            }
        }
    }
    Ok(out)
}

//! `placement` (issue 20): where a container may run on a Swarm, as Swarm's own placement
//! constraints (`node.labels.zone==a`). Checked here for syntax; whether the cluster has a
//! node that fits, and whether the backend places at all, is the API's check (it knows the
//! backend).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Invalid, Rule};

/// Most constraints one container may have.
pub const MAX_CONSTRAINTS: usize = 16;
/// Longest constraint.
const MAX_CONSTRAINT_LEN: usize = 256;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Placement {
    /// Swarm placement constraints, each `<attribute> == <value>` or `!=`; the attribute is
    /// `node.id`, `node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch`,
    /// `node.labels.<key>` or `engine.labels.<key>`. All must hold.
    #[schema(example = json!(["node.labels.zone==a"]))]
    pub constraints: Vec<String>,
}

/// One constraint taken apart: attribute, whether it is `==`, value.
pub fn split(constraint: &str) -> Option<(&str, bool, &str)> {
    let (attr, eq, value) = if let Some((a, v)) = constraint.split_once("==") {
        (a, true, v)
    } else {
        let (a, v) = constraint.split_once("!=")?;
        (a, false, v)
    };
    Some((attr.trim(), eq, value.trim()))
}

fn attribute_ok(attr: &str) -> bool {
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match attr {
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch" => {
            true
        }
        _ => attr
            .strip_prefix("node.labels.")
            .or_else(|| attr.strip_prefix("engine.labels."))
            .is_some_and(key_ok),
    }
}

/// `null` or `{"constraints": []}`: none.
pub fn parse_placement(v: Value) -> Result<Option<Placement>, Invalid> {
    let bad = |v: Value, why: &str| {
        Invalid::field(
            Rule::InvalidPlacement,
            "placement",
            v,
            format!("`placement` {why}"),
        )
    };
    let mut map = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        other => return Err(bad(other, "must be an object {\"constraints\": [...]}")),
    };
    if let Some(k) = map.keys().find(|k| *k != "constraints") {
        let k = k.clone();
        return Err(bad(
            Value::String(k.clone()),
            &format!("has no field `{k}`"),
        ));
    }
    let list = match map.remove("constraints") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(bad(other, "`constraints` must be a list of strings")),
    };
    if list.len() > MAX_CONSTRAINTS {
        return Err(bad(
            Value::from(list.len()),
            &format!("has at most {MAX_CONSTRAINTS} constraints"),
        ));
    }
    let mut constraints = Vec::new();
    for item in list {
        let Value::String(text) = item else {
            return Err(bad(item, "`constraints` must be a list of strings"));
        };
        let ok = text.len() <= MAX_CONSTRAINT_LEN
            && split(&text).is_some_and(|(attr, _, value)| {
                attribute_ok(attr)
                    && !value.is_empty()
                    && !value.contains("==")
                    && !value.contains("!=")
                    && value.bytes().all(|b| b.is_ascii_graphic())
            });
        if !ok {
            return Err(bad(
                Value::String(text),
                "constraints must read `node.labels.<key>==<value>` (or `!=`; attributes: node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>)",
            ));
        }
        if !constraints.contains(&text) {
            constraints.push(text);
        }
    }
    Ok((!constraints.is_empty()).then_some(Placement { constraints }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constraints_are_swarm_syntax() {
        let p = parse_placement(
            json!({"constraints": ["node.labels.zone==a", "node.role != manager"]}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.constraints.len(), 2);
        assert_eq!(
            split("node.role != manager"),
            Some(("node.role", false, "manager"))
        );
        assert_eq!(parse_placement(json!(null)).unwrap(), None);
        assert_eq!(parse_placement(json!({"constraints": []})).unwrap(), None);
        for bad in [
            json!("node.labels.zone==a"),
            json!({"constraints": "node.labels.zone==a"}),
            json!({"constraints": [1]}),
            json!({"constraints": ["zone==a"]}),
            json!({"constraints": ["node.labels.==a"]}),
            json!({"constraints": ["node.labels.zone=a"]}),
            json!({"constraints": ["node.labels.zone=="]}),
            json!({"constraints": ["node.labels.zone==a b"]}),
            json!({"constraints": ["node.labels.zone==a==b"]}),
            json!({"other": []}),
        ] {
            assert!(parse_placement(bad.clone()).is_err(), "{bad}");
        }
    }
}

//! Which webhook events a change of a container's representation is: a pure function of the
//! last classified representation and the new one, read as JSON so that a field another
//! feature adds (`health`, `update_available`, `status_reason`) is classified as soon as it
//! appears in the representation, without this module knowing its type.
//!
//! Adding a kind: a name in [`KINDS`] (the API accepts it from then on) and a line in
//! [`RULES`] (it fires from then on).

use serde_json::Value;

/// Every event kind a webhook may subscribe to, besides `*` (all of them).
pub const KINDS: [&str; 10] = [
    "died",
    "oom",
    "unhealthy",
    "healthy",
    "restarting",
    "expired",
    "deleted",
    "update_available",
    "updated",
    "moved",
];

/// A rule: whether the change from `old` to `new` (both representations) is this event.
type Rule = fn(&Value, &Value) -> bool;

/// The rules, in the order their events are delivered when one change is several.
/// `deleted` has none: it is the row's disappearance (see [`classify`]).
const RULES: &[(&str, Rule)] = &[
    ("died", died),
    ("oom", oom),
    ("restarting", restarting),
    ("unhealthy", |o, n| {
        became(health(o), health(n), "unhealthy")
    }),
    ("healthy", |o, n| became(health(o), health(n), "healthy")),
    ("update_available", update_available),
    ("updated", updated),
    ("moved", moved),
    ("expired", |o, n| {
        became(
            o["status_reason"].as_str(),
            n["status_reason"].as_str(),
            "expired",
        )
    }),
];

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_default()
}

fn desired_up(v: &Value) -> bool {
    matches!(v["desired_state"].as_str(), Some("running" | "paused"))
}

/// It was up and is now down without having been asked: its main process ended (any exit
/// code: nobody asked it to stop) or Docker's restart policy is bringing it back.
fn died(o: &Value, n: &Value) -> bool {
    matches!(status(o), "running" | "paused")
        && matches!(status(n), "exited" | "restarting")
        && desired_up(n)
}

/// A death by the kernel's OOM killer (fires beside `died`).
fn oom(o: &Value, n: &Value) -> bool {
    died(o, n) && n["oom_killed"] == Value::Bool(true)
}

fn restarting(o: &Value, n: &Value) -> bool {
    status(n) == "restarting" && status(o) != "restarting"
}

/// `health` as a string, or the `status` of a `health` object.
fn health(v: &Value) -> Option<&str> {
    let h = &v["health"];
    h.as_str().or_else(|| h["status"].as_str())
}

fn became(old: Option<&str>, new: Option<&str>, to: &str) -> bool {
    new == Some(to) && old != Some(to)
}

/// A newer digest is shown that was not shown before.
fn update_available(o: &Value, n: &Value) -> bool {
    let digest = |v: &Value| -> Option<String> {
        let u = &v["update_available"];
        if u.is_null() {
            return None;
        }
        Some(
            u["digest"]
                .as_str()
                .map_or_else(|| u.to_string(), str::to_owned),
        )
    };
    let new = digest(n);
    new.is_some() && new != digest(o)
}

/// An image update was judged: kept or rolled back (`last_update.result` says which, and
/// `reason` why), a new `last_update` each time.
fn updated(o: &Value, n: &Value) -> bool {
    let at = |v: &Value| v["last_update"]["at"].as_str().map(str::to_owned);
    let new = at(n);
    new.is_some() && new != at(o)
}

/// It runs on another Swarm node than before: a new `last_move` (`from`, `to`, `reason`).
fn moved(o: &Value, n: &Value) -> bool {
    let at = |v: &Value| v["last_move"]["at"].as_str().map(str::to_owned);
    let new = at(n);
    new.is_some() && new != at(o)
}

/// The events of one change: `old` is the last classified representation (`None`: never
/// seen, which is no event: a container's first sight is its creation or the first
/// classification after an upgrade), `new` the current one (`None`: its row is gone).
pub fn classify(old: Option<&Value>, new: Option<&Value>) -> Vec<&'static str> {
    match (old, new) {
        (Some(_), None) => vec!["deleted"],
        (Some(o), Some(n)) => RULES
            .iter()
            .filter(|(_, rule)| rule(o, n))
            .map(|(kind, _)| *kind)
            .collect(),
        (None, _) => Vec::new(),
    }
}

/// Whether a subscription to `events` takes `kind`.
pub fn subscribed(events: &[String], kind: &str) -> bool {
    events.iter().any(|e| e == "*" || e == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rep(status: &str, desired: &str) -> Value {
        json!({"status": status, "desired_state": desired, "exit_code": null, "oom_killed": false})
    }

    #[test]
    fn deaths_restarts_and_deletions() {
        let running = rep("running", "running");
        let mut exited = rep("exited", "running");
        exited["exit_code"] = json!(3);
        assert_eq!(classify(Some(&running), Some(&exited)), ["died"]);
        let mut oom_killed = exited.clone();
        oom_killed["oom_killed"] = json!(true);
        oom_killed["exit_code"] = json!(137);
        assert_eq!(classify(Some(&running), Some(&oom_killed)), ["died", "oom"]);
        let restarting_ = rep("restarting", "running");
        assert_eq!(
            classify(Some(&running), Some(&restarting_)),
            ["died", "restarting"]
        );
        assert!(classify(Some(&restarting_), Some(&restarting_)).is_empty());
        // Asked to stop: no death.
        let stopped = rep("stopped", "stopped");
        assert!(classify(Some(&running), Some(&stopped)).is_empty());
        let mut exited_asked = rep("exited", "stopped");
        exited_asked["exit_code"] = json!(143);
        assert!(classify(Some(&running), Some(&exited_asked)).is_empty());
        // A first sight is no event; a row gone is `deleted`.
        assert!(classify(None, Some(&exited)).is_empty());
        assert_eq!(classify(Some(&running), None), ["deleted"]);
        // Nothing changed that a rule reads.
        assert!(classify(Some(&running), Some(&running)).is_empty());
    }

    /// Fields other features add are classified once they appear.
    #[test]
    fn fields_of_other_features() {
        let mut a = rep("running", "running");
        a["health"] = json!("starting");
        let mut b = a.clone();
        b["health"] = json!("healthy");
        assert_eq!(classify(Some(&a), Some(&b)), ["healthy"]);
        let mut c = a.clone();
        c["health"] = json!({"status": "unhealthy", "output": "x"});
        assert_eq!(classify(Some(&b), Some(&c)), ["unhealthy"]);
        assert!(classify(Some(&c), Some(&c)).is_empty());

        let mut u = a.clone();
        u["update_available"] = json!({"digest": "sha256:1", "seen_at": "t"});
        assert_eq!(classify(Some(&a), Some(&u)), ["update_available"]);
        let mut u2 = u.clone();
        u2["update_available"]["seen_at"] = json!("t2");
        assert!(classify(Some(&u), Some(&u2)).is_empty(), "same digest");
        u2["update_available"]["digest"] = json!("sha256:2");
        assert_eq!(classify(Some(&u), Some(&u2)), ["update_available"]);

        let mut done = a.clone();
        done["last_update"] = json!({"from": "sha256:1", "to": "sha256:2", "result": "rolled_back",
                                     "reason": "exited", "at": "t1"});
        assert_eq!(classify(Some(&a), Some(&done)), ["updated"]);
        assert!(classify(Some(&done), Some(&done)).is_empty());
        let mut again = done.clone();
        again["last_update"]["at"] = json!("t2");
        assert_eq!(classify(Some(&done), Some(&again)), ["updated"]);

        let mut m = a.clone();
        m["node"] = json!("n2");
        m["last_move"] = json!({"from": "n1", "to": "n2", "at": "t1", "reason": "node_down"});
        assert_eq!(classify(Some(&a), Some(&m)), ["moved"]);
        assert!(classify(Some(&m), Some(&m)).is_empty());
        let mut back = m.clone();
        back["last_move"] = json!({"from": "n2", "to": "n1", "at": "t2", "reason": null});
        assert_eq!(classify(Some(&m), Some(&back)), ["moved"]);

        let mut e = rep("stopped", "stopped");
        e["status_reason"] = json!("expired");
        assert_eq!(classify(Some(&a), Some(&e)), ["expired"]);
        assert!(classify(Some(&e), Some(&e)).is_empty());
    }

    #[test]
    fn every_rule_names_a_kind() {
        for (kind, _) in RULES {
            assert!(KINDS.contains(kind), "{kind}");
        }
        assert!(subscribed(&["*".into()], "died"));
        assert!(subscribed(&["oom".into()], "oom"));
        assert!(!subscribed(&["oom".into()], "died"));
    }
}

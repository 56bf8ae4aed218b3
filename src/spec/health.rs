//! `health`: a health check Docker runs inside the container. `{"cmd": [...] | null, "http":
//! {"port": 8000, "path": "/"} | null, "interval": s, "timeout": s, "retries": n,
//! "start_period": s, "on_unhealthy": "restart" | null}`, exactly one of `cmd` and `http`.
//! `cmd` is an argv run in the container (no shell); `http` is run by the server's own
//! static probe, bind-mounted read-only into the container (no curl needed in the image).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{reject_unknown, Invalid, Rule};

/// Defaults and bounds of the timings, in seconds.
pub const DEFAULT_INTERVAL: u32 = 10;
pub const DEFAULT_TIMEOUT: u32 = 5;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_START_PERIOD: u32 = 0;
pub const MAX_INTERVAL: u32 = 3600;
pub const MAX_TIMEOUT: u32 = 600;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_START_PERIOD: u32 = 3600;
/// Most arguments of `cmd`, and the longest one.
pub const MAX_CMD_ARGS: usize = 64;
pub const MAX_CMD_ARG_LEN: usize = 4096;
/// The longest `http.path`.
pub const MAX_PATH_LEN: usize = 1024;

const FIELDS: &[&str] = &[
    "cmd",
    "http",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "on_unhealthy",
];

/// The HTTP probe: `GET http://127.0.0.1:<port><path>` from inside the container; healthy
/// on a 2xx or 3xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpProbe {
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Starts with `/`; printable ASCII without spaces. Default `/`.
    pub path: String,
}

/// What the reconciler does about an unhealthy container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Restart it (with back-off; see docs/API.md).
    Restart,
}

/// A container's health check as stored and shown (defaults filled in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthCheck {
    /// argv run inside the container (no shell), or null with `http`.
    #[schema(required = true)]
    pub cmd: Option<Vec<String>>,
    #[schema(required = true)]
    pub http: Option<HttpProbe>,
    /// Seconds between probes.
    pub interval: u32,
    /// Seconds one probe may take.
    pub timeout: u32,
    /// Failures in a row that make it `unhealthy`.
    pub retries: u32,
    /// Seconds after a start during which failures do not count.
    pub start_period: u32,
    #[schema(required = true)]
    pub on_unhealthy: Option<OnUnhealthy>,
}

impl HealthCheck {
    /// Whether the reconciler restarts it when unhealthy.
    pub fn restarts(&self) -> bool {
        self.on_unhealthy == Some(OnUnhealthy::Restart)
    }
}

/// The observed health, as Docker reports it (`ContainerHealth` in the OpenAPI document:
/// `Health` is the body of `/healthz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ContainerHealth)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    pub const ALL: [Health; 3] = [Health::Starting, Health::Healthy, Health::Unhealthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Docker's words (`none`, and anything else, is no health).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

fn invalid(rule: Rule, field: &str, v: Value, message: impl Into<String>) -> Invalid {
    Invalid::field(rule, format!("health.{field}"), v, message)
}

/// `health` of a create or patch body; `null` is no health check. Replaces the whole check.
pub(super) fn parse_health(v: Value) -> Result<Option<HealthCheck>, Invalid> {
    let mut map: Map<String, Value> = match v {
        Value::Null => return Ok(None),
        Value::Object(m) => m,
        v => {
            return Err(Invalid::field(
                Rule::InvalidHealth,
                "health",
                v,
                "health must be an object: {\"cmd\": [argv] | \"http\": {\"port\", \"path\"}, \"interval\", \"timeout\", \"retries\", \"start_period\", \"on_unhealthy\"}",
            ))
        }
    };
    reject_unknown(&map, FIELDS, "health.")?;
    let cmd = match map.remove("cmd") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_cmd(v)?),
    };
    let http = match map.remove("http") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_http(v)?),
    };
    if cmd.is_some() == http.is_some() {
        return Err(Invalid::field(
            Rule::InvalidHealth,
            "health",
            json!({"cmd": cmd, "http": http}),
            "a health check has exactly one of `cmd` (argv run in the container) and `http` ({\"port\", \"path\"})",
        ));
    }
    let mut seconds =
        |name: &str, rule: Rule, min: u32, max: u32, default: u32| match map.remove(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match whole(&v) {
                Some(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
                _ => Err(invalid(
                    rule,
                    name,
                    v,
                    format!("{name} must be a whole number from {min} to {max}"),
                )),
            },
        };
    let interval = seconds(
        "interval",
        Rule::InvalidHealthInterval,
        1,
        MAX_INTERVAL,
        DEFAULT_INTERVAL,
    )?;
    let timeout = seconds(
        "timeout",
        Rule::InvalidHealthTimeout,
        1,
        MAX_TIMEOUT,
        DEFAULT_TIMEOUT,
    )?;
    let retries = seconds(
        "retries",
        Rule::InvalidHealthRetries,
        1,
        MAX_RETRIES,
        DEFAULT_RETRIES,
    )?;
    let start_period = seconds(
        "start_period",
        Rule::InvalidHealthStartPeriod,
        0,
        MAX_START_PERIOD,
        DEFAULT_START_PERIOD,
    )?;
    let on_unhealthy = match map.remove("on_unhealthy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "restart" => Some(OnUnhealthy::Restart),
        Some(v) => {
            return Err(invalid(
                Rule::InvalidOnUnhealthy,
                "on_unhealthy",
                v,
                "on_unhealthy must be \"restart\" or null",
            ))
        }
    };
    Ok(Some(HealthCheck {
        cmd,
        http,
        interval,
        timeout,
        retries,
        start_period,
        on_unhealthy,
    }))
}

/// A whole, non-negative number (`5` or `5.0`).
fn whole(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64).then_some(f as u64)
}

fn parse_cmd(v: Value) -> Result<Vec<String>, Invalid> {
    let bad = |v: Value| {
        invalid(
            Rule::InvalidHealthCmd,
            "cmd",
            v,
            format!("cmd must be a list of 1 to {MAX_CMD_ARGS} strings of at most {MAX_CMD_ARG_LEN} characters, without NUL (argv, no shell)"),
        )
    };
    let Value::Array(items) = v else {
        return Err(bad(v));
    };
    if items.is_empty() || items.len() > MAX_CMD_ARGS {
        return Err(bad(Value::Array(items)));
    }
    let args: Option<Vec<String>> = items
        .iter()
        .map(|i| {
            i.as_str()
                .filter(|s| !s.contains('\0') && s.chars().count() <= MAX_CMD_ARG_LEN)
                .map(str::to_owned)
        })
        .collect();
    args.ok_or_else(|| bad(Value::Array(items)))
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') && s.len() <= MAX_PATH_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_http(v: Value) -> Result<HttpProbe, Invalid> {
    let Value::Object(mut map) = v else {
        return Err(invalid(
            Rule::InvalidHealthHttp,
            "http",
            v,
            "http must be an object: {\"port\": 1-65535, \"path\": \"/...\"}",
        ));
    };
    reject_unknown(&map, &["port", "path"], "health.http.")?;
    let port = match map.remove("port") {
        Some(v) => match v.as_u64() {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                return Err(invalid(
                    Rule::InvalidHealthPort,
                    "http.port",
                    v,
                    "http.port must be 1 to 65535",
                ))
            }
        },
        None => {
            return Err(invalid(
                Rule::InvalidHealthPort,
                "http.port",
                Value::Null,
                "http.port is required",
            ))
        }
    };
    let path = match map.remove("path") {
        None | Some(Value::Null) => "/".to_owned(),
        Some(Value::String(s)) if is_path(&s) => s,
        Some(v) => {
            return Err(invalid(
                Rule::InvalidHealthPath,
                "http.path",
                v,
                format!("http.path must start with / and be at most {MAX_PATH_LEN} printable ASCII characters without spaces"),
            ))
        }
    };
    Ok(HttpProbe { port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Rule {
        parse_health(v).unwrap_err().rule
    }

    #[test]
    fn defaults_fill_in_and_null_is_none() {
        assert_eq!(parse_health(Value::Null).unwrap(), None);
        let h = parse_health(json!({"cmd": ["true"]})).unwrap().unwrap();
        assert_eq!(
            h,
            HealthCheck {
                cmd: Some(vec!["true".into()]),
                http: None,
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                retries: DEFAULT_RETRIES,
                start_period: DEFAULT_START_PERIOD,
                on_unhealthy: None,
            }
        );
        let h = parse_health(
            json!({"http": {"port": 8000}, "interval": 2.0, "retries": 1,
            "start_period": 0, "on_unhealthy": "restart"}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            h.http,
            Some(HttpProbe {
                port: 8000,
                path: "/".into()
            })
        );
        assert_eq!((h.interval, h.retries), (2, 1));
        assert!(h.restarts());
    }

    #[test]
    fn every_field_has_its_rule() {
        assert_eq!(rule(json!("curl")), Rule::InvalidHealth);
        assert_eq!(rule(json!({})), Rule::InvalidHealth);
        assert_eq!(
            rule(json!({"cmd": ["true"], "http": {"port": 1}})),
            Rule::InvalidHealth
        );
        assert_eq!(rule(json!({"cmd": ["true"], "x": 1})), Rule::UnknownField);
        let long = "x".repeat(MAX_CMD_ARG_LEN + 1);
        for cmd in [
            json!([]),
            json!("true"),
            json!([1]),
            json!([long]),
            json!(["a\u{0}"]),
        ] {
            assert_eq!(rule(json!({ "cmd": cmd })), Rule::InvalidHealthCmd, "{cmd}");
        }
        assert_eq!(rule(json!({"http": 80})), Rule::InvalidHealthHttp);
        assert_eq!(
            rule(json!({"http": {"port": 80, "host": "x"}})),
            Rule::UnknownField
        );
        for port in [json!(0), json!(65536), json!("80"), json!(null)] {
            assert_eq!(
                rule(json!({"http": {"port": port}})),
                Rule::InvalidHealthPort,
                "{port}"
            );
        }
        assert_eq!(rule(json!({"http": {}})), Rule::InvalidHealthPort);
        for path in [json!("health"), json!("/a b"), json!(7), json!("/é")] {
            assert_eq!(
                rule(json!({"http": {"port": 80, "path": path}})),
                Rule::InvalidHealthPath,
                "{path}"
            );
        }
        let c = |k: &str, v: Value| {
            let mut m = json!({"cmd": ["true"]});
            m[k] = v;
            rule(m)
        };
        assert_eq!(c("interval", json!(0)), Rule::InvalidHealthInterval);
        assert_eq!(c("interval", json!(1.5)), Rule::InvalidHealthInterval);
        assert_eq!(c("interval", json!(3601)), Rule::InvalidHealthInterval);
        assert_eq!(c("timeout", json!(0)), Rule::InvalidHealthTimeout);
        assert_eq!(c("timeout", json!("5s")), Rule::InvalidHealthTimeout);
        assert_eq!(c("retries", json!(0)), Rule::InvalidHealthRetries);
        assert_eq!(c("retries", json!(101)), Rule::InvalidHealthRetries);
        assert_eq!(c("start_period", json!(-1)), Rule::InvalidHealthStartPeriod);
        assert_eq!(c("on_unhealthy", json!("stop")), Rule::InvalidOnUnhealthy);
        assert_eq!(c("on_unhealthy", json!(true)), Rule::InvalidOnUnhealthy);
    }
}

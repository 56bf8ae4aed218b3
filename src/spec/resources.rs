//! `resources`: cpus (bounded by this host's CPUs), memory (with units), pids, and the size
//! of `/tmp` under `read_only`.

use serde_json::Value;

use super::error::{Invalid, Rule};
use super::{reject_unknown, Limits, Resources};

/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// `/tmp` of a `read_only` container without `resources.tmp`.
pub const DEFAULT_TMP_BYTES: i64 = 64 << 20;
/// Below a megabyte a `/tmp` is too small for anything and is most likely a unit mistake.
pub const MIN_TMP_BYTES: u64 = 1 << 20;
/// Smallest `resources.disk`: ext4 takes a few MiB of it for its own metadata, so a smaller
/// image would leave next to nothing for `/app`.
pub const MIN_DISK_BYTES: u64 = 16 << 20;
const RESOURCE_FIELDS: &[&str] = &["cpus", "memory", "pids", "tmp", "disk"];

/// CPUs Docker counts when it checks `cpus` (`runtime.NumCPU`: the online CPUs).
pub fn host_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Counts a kernel CPU list such as `0-3,5`.
fn count_cpu_list(s: &str) -> Option<usize> {
    s.split(',').try_fold(0usize, |acc, part| {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
        Some(acc + n)
    })
}

/// Merges `resources` into `into`; a key set to `null` clears that limit.
pub(super) fn merge_resources(
    into: &mut Resources,
    v: Value,
    limits: &Limits,
) -> Result<(), Invalid> {
    let Value::Object(map) = v else {
        return Err(Invalid::field(
            Rule::InvalidResources,
            "resources",
            v,
            "resources must be an object",
        ));
    };
    reject_unknown(&map, RESOURCE_FIELDS, "resources.")?;
    for (key, value) in map {
        match (key.as_str(), value) {
            ("cpus", Value::Null) => into.cpus = None,
            ("cpus", v) => into.cpus = Some(parse_cpus(v, limits)?),
            ("memory", Value::Null) => (into.memory, into.memory_bytes) = (None, None),
            ("memory", v) => {
                let (text, bytes) = parse_memory_value(v)?;
                into.memory = Some(text);
                into.memory_bytes = Some(bytes);
            }
            ("pids", Value::Null) => into.pids = None,
            ("pids", v) => match whole(&v).and_then(|n| i64::try_from(n).ok()) {
                Some(n) if n >= 1 => into.pids = Some(n),
                _ => {
                    return Err(Invalid::field(
                        Rule::InvalidPids,
                        "resources.pids",
                        v,
                        "pids must be a whole number >= 1",
                    ))
                }
            },
            ("tmp", Value::Null) => (into.tmp, into.tmp_bytes) = (None, None),
            ("tmp", v) => {
                let (text, bytes) = parse_tmp_value(v)?;
                into.tmp = Some(text);
                into.tmp_bytes = Some(bytes);
            }
            ("disk", Value::Null) => (into.disk, into.disk_bytes) = (None, None),
            ("disk", v) => {
                let (text, bytes) = parse_disk_value(v)?;
                into.disk = Some(text);
                into.disk_bytes = Some(bytes);
            }
            _ => unreachable!("rejected as unknown above"),
        }
    }
    Ok(())
}

fn parse_cpus(v: Value, limits: &Limits) -> Result<f64, Invalid> {
    let cpus = v.as_f64().filter(|c| c.is_finite() && *c > 0.0);
    match cpus {
        // Docker's granularity is 0.01 CPU.
        Some(c) if c > limits.host_cpus => Err(Invalid::field(
            Rule::InvalidCpus,
            "resources.cpus",
            v,
            format!("cpus is above this host's {} CPUs", limits.host_cpus),
        )),
        Some(c) if c < 0.01 => Err(Invalid::field(
            Rule::InvalidCpus,
            "resources.cpus",
            v,
            "cpus must be at least 0.01",
        )),
        Some(c) => Ok(c),
        None => Err(Invalid::field(
            Rule::InvalidCpus,
            "resources.cpus",
            v,
            "cpus must be a number > 0",
        )),
    }
}

/// A non-negative whole number: `4096` or `4096.0` (JSON has one number type, and JSON
/// Schema's `integer` accepts both, as the ports do).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn parse_memory_value(v: Value) -> Result<(String, i64), Invalid> {
    let text = match &v {
        Value::String(s) => s.clone(),
        Value::Number(_) if whole(&v).is_some() => whole(&v).unwrap_or_default().to_string(),
        _ => {
            return Err(Invalid::field(
                Rule::InvalidMemory,
                "resources.memory",
                v,
                "memory must look like 4096m, 1g, 512k or a number of bytes",
            ))
        }
    };
    match parse_memory(&text) {
        None => Err(Invalid::field(
            Rule::InvalidMemory,
            "resources.memory",
            v,
            "memory must look like 4096m, 1g, 512k or a number of bytes",
        )),
        Some(bytes) if bytes < MIN_MEMORY_BYTES => Err(Invalid::field(
            Rule::MemoryTooLow,
            "resources.memory",
            v,
            "memory must be at least 6m (Docker's minimum)",
        )),
        Some(bytes) => Ok((text, i64::try_from(bytes).unwrap_or(i64::MAX))),
    }
}

/// `resources.tmp`: a size like `memory`'s, at least [`MIN_TMP_BYTES`]. No upper bound of
/// its own: a tmpfs takes memory only as it fills, and its pages count against the
/// container's memory limit.
fn parse_tmp_value(v: Value) -> Result<(String, i64), Invalid> {
    let bad = |v: Value| {
        Invalid::field(
            Rule::InvalidTmp,
            "resources.tmp",
            v,
            "tmp must look like 64m, 1g, 512k or a number of bytes",
        )
    };
    let text = match &v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        _ => return Err(bad(v)),
    };
    match parse_memory(&text) {
        None => Err(bad(v)),
        Some(bytes) if bytes < MIN_TMP_BYTES => Err(Invalid::field(
            Rule::TmpTooSmall,
            "resources.tmp",
            v,
            "tmp must be at least 1m",
        )),
        Some(bytes) => Ok((text, i64::try_from(bytes).unwrap_or(i64::MAX))),
    }
}

/// `resources.disk`: a size like `memory`'s, at least [`MIN_DISK_BYTES`], at most 16 TiB
/// (ext4's limit with 4 KiB blocks).
pub fn parse_disk_value(v: Value) -> Result<(String, i64), Invalid> {
    let bad = |v: Value| {
        Invalid::field(
            Rule::InvalidDisk,
            "resources.disk",
            v,
            "disk must look like 512m, 10g or a number of bytes, between 16m and 16t",
        )
    };
    let text = match &v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        _ => return Err(bad(v)),
    };
    match parse_size(&text) {
        None => Err(bad(v)),
        Some(bytes) if bytes < MIN_DISK_BYTES => Err(Invalid::field(
            Rule::DiskTooSmall,
            "resources.disk",
            v,
            "disk must be at least 16m",
        )),
        Some(bytes) if bytes > 16 << 40 => Err(bad(v)),
        Some(bytes) => Ok((text, i64::try_from(bytes).unwrap_or(i64::MAX))),
    }
}

/// [`parse_memory`], and `t`/`tb` for terabytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let tera = lower.strip_suffix("tb").or_else(|| lower.strip_suffix('t'));
    match tera {
        Some(n) => n.parse::<u64>().ok()?.checked_mul(1 << 40),
        None => parse_memory(&lower),
    }
}

/// `4096m`, `1g`, `512k`, `1024b`, `1048576` (case-insensitive; `mb`/`gb`/`kb` too).
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b <= i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("4096m"), Some(4096 << 20));
        assert_eq!(parse_memory("1g"), Some(1 << 30));
        assert_eq!(parse_memory("512k"), Some(512 << 10));
        assert_eq!(parse_memory("1048576"), Some(1048576));
        assert_eq!(parse_memory("2GB"), Some(2 << 30));
        for bad in ["", "m", "1t", "1.5g", "-1m", "99999999999999999999g", "1 g"] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }

    /// `1073741824.0` is the integer the document allows, as `1073741824` is.
    #[test]
    fn whole_numbers_may_be_written_with_a_fraction() {
        let (text, bytes) = parse_memory_value(serde_json::json!(1073741824.0)).unwrap();
        assert_eq!((text.as_str(), bytes), ("1073741824", 1 << 30));
        assert!(parse_memory_value(serde_json::json!(1073741824.5)).is_err());
        assert!(parse_memory_value(serde_json::json!(-8388608.0)).is_err());
        assert_eq!(whole(&serde_json::json!(50.0)), Some(50));
        assert_eq!(whole(&serde_json::json!(50.5)), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3,5"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
    }
}

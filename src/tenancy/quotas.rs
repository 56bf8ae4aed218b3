//! A tenant's quotas and the one rule that checks them: a write that would take the tenant's
//! usage past a limit is refused, one that does not is allowed. Usage that is already over a
//! (lowered) limit is left alone; it only stops growing.
//!
//! What counts: every live container of the tenant (a tombstoned one until the reconciler has
//! removed it), stopped ones included, for `max_containers`, `max_cpus`, `max_memory` and
//! `max_pids` and `max_disk` (a reservation, as Kubernetes' ResourceQuota counts pods): so a start never fails
//! for lack of CPU quota. `max_running` counts containers whose desired state is `running` or
//! `paused` (a paused one still holds its memory). CPU and memory are the effective limits: the
//! spec's, or the server's `DEFAULT_CPUS`/`DEFAULT_MEMORY`.

use serde::{Deserialize, Serialize};

/// The limits of one tenant; `None` is no limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_containers: Option<i64>,
    pub max_running: Option<i64>,
    pub max_cpus: Option<f64>,
    pub max_memory: Option<i64>,
    pub max_pids: Option<i64>,
    /// The sum of the containers' `resources.disk` caps, bytes.
    pub max_disk: Option<i64>,
    /// Host ports the tenant may publish: an inclusive range.
    pub ports: Option<PortRange>,
    pub requests_per_second: Option<f64>,
}

impl Quotas {
    /// The quotas of a stored tenant row.
    pub fn from_row(row: &crate::store::tenancy::TenantRow) -> Self {
        let port = |p: Option<i64>| p.and_then(|p| u16::try_from(p).ok());
        let ports = match (port(row.port_min), port(row.port_max)) {
            (Some(first), Some(last)) => Some(PortRange { first, last }),
            _ => None,
        };
        Quotas {
            max_containers: row.max_containers,
            max_running: row.max_running,
            max_cpus: row.max_cpus,
            max_memory: row.max_memory_bytes,
            max_pids: row.max_pids,
            max_disk: row.max_disk_bytes,
            ports,
            requests_per_second: row.requests_per_second,
        }
    }
}

/// An inclusive host-port range, written `"20000-20999"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(text: &str) -> Option<PortRange> {
        let (a, b) = text.split_once('-')?;
        let first: u16 = a.trim().parse().ok()?;
        let last: u16 = b.trim().parse().ok()?;
        (first >= 1 && first <= last).then_some(PortRange { first, last })
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PortRange::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(
                "a port range is \"FIRST-LAST\" with 1 <= FIRST <= LAST <= 65535",
            )
        })
    }
}

/// What a tenant holds now, or what a write adds to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub containers: i64,
    pub running: i64,
    pub cpus: f64,
    pub memory: i64,
    pub pids: i64,
    pub disk: i64,
}

/// The quota a write would break, for the `403 QUOTA_EXCEEDED` body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breach {
    pub quota: &'static str,
    pub limit: serde_json::Value,
    pub used: serde_json::Value,
    pub requested: serde_json::Value,
}

impl Quotas {
    /// The first quota that `used + requested` would exceed, if any. A part of `requested`
    /// that is zero never breaches: usage over a lowered limit does not block other writes.
    pub fn check(&self, used: &Usage, requested: &Usage) -> Option<Breach> {
        fn int(quota: &'static str, limit: Option<i64>, used: i64, req: i64) -> Option<Breach> {
            let limit = limit?;
            (req > 0 && used + req > limit).then(|| Breach {
                quota,
                limit: limit.into(),
                used: used.into(),
                requested: req.into(),
            })
        }
        int(
            "max_containers",
            self.max_containers,
            used.containers,
            requested.containers,
        )
        .or_else(|| {
            int(
                "max_running",
                self.max_running,
                used.running,
                requested.running,
            )
        })
        .or_else(|| {
            let limit = self.max_cpus?;
            // Hundredths of a CPU: sums of decimal fractions must not fail by a rounding bit.
            let over = ((used.cpus + requested.cpus) * 100.0).round() > (limit * 100.0).round();
            (requested.cpus > 0.0 && over).then(|| Breach {
                quota: "max_cpus",
                limit: limit.into(),
                used: used.cpus.into(),
                requested: requested.cpus.into(),
            })
        })
        .or_else(|| int("max_memory", self.max_memory, used.memory, requested.memory))
        .or_else(|| int("max_pids", self.max_pids, used.pids, requested.pids))
        .or_else(|| int("max_disk", self.max_disk, used.disk, requested.disk))
    }

    /// The first host port outside the tenant's range, if any.
    pub fn port_outside(&self, host_ports: impl IntoIterator<Item = u16>) -> Option<u16> {
        let range = self.ports?;
        host_ports.into_iter().find(|p| !range.contains(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas() -> Quotas {
        Quotas {
            max_containers: Some(2),
            max_running: Some(1),
            max_cpus: Some(1.0),
            max_memory: Some(1000),
            max_pids: None,
            max_disk: Some(1 << 30),
            ports: PortRange::parse("20000-20009"),
            requests_per_second: None,
        }
    }

    fn one(cpus: f64, running: i64) -> Usage {
        Usage {
            containers: 1,
            running,
            cpus,
            memory: 100,
            pids: 50,
            disk: 0,
        }
    }

    #[test]
    fn the_last_slot_can_be_taken_once() {
        let q = quotas();
        assert_eq!(q.check(&one(0.3, 0), &one(0.3, 0)), None);
        let full = Usage {
            containers: 2,
            ..one(0.6, 0)
        };
        let breach = q.check(&full, &one(0.3, 0)).unwrap();
        assert_eq!(breach.quota, "max_containers");
        assert_eq!(breach.used, serde_json::json!(2));
    }

    #[test]
    fn cpus_add_up_without_rounding_errors() {
        let q = quotas();
        // 0.7 + 0.3 is 0.9999999999999999 or 1.0000000000000002 in binary: both are 1.
        assert_eq!(q.check(&one(0.7, 0), &one(0.3, 0)), None);
        assert_eq!(
            q.check(&one(0.8, 0), &one(0.3, 0)).unwrap().quota,
            "max_cpus"
        );
    }

    #[test]
    fn usage_over_a_lowered_limit_only_stops_growth() {
        let q = quotas();
        let over = Usage {
            containers: 1,
            running: 3,
            ..Default::default()
        };
        // Starting nothing new is fine; starting one more is not.
        assert_eq!(q.check(&over, &Usage::default()), None);
        let start = Usage {
            running: 1,
            ..Default::default()
        };
        assert_eq!(q.check(&over, &start).unwrap().quota, "max_running");
    }

    #[test]
    fn ports_must_be_in_the_range() {
        let q = quotas();
        assert_eq!(q.port_outside([20000, 20009]), None);
        assert_eq!(q.port_outside([20000, 8080]), Some(8080));
        assert_eq!(Quotas::default().port_outside([80]), None);
        assert_eq!(PortRange::parse("10-1"), None);
        assert_eq!(PortRange::parse("0-10"), None);
        assert_eq!(PortRange::parse("x"), None);
        let range: PortRange = serde_json::from_str("\"20000-20999\"").unwrap();
        assert_eq!(serde_json::to_string(&range).unwrap(), "\"20000-20999\"");
    }
}

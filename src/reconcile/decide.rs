//! The reconciler's decision: a pure function from (desired state, observed state) to the
//! next step. It assumes nothing about why it was called; given the same inputs it always
//! answers the same, which is what makes every pass idempotent and crash-safe.

use chrono::{DateTime, Utc};

use crate::lifecycle::Status;
pub use crate::lifecycle::{DesiredState, DockerState};

/// What Docker says about the container (by its name, which is its cuid).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub id: String,
    pub state: DockerState,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The spec generation it was created from (our label).
    pub generation: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Its address on the server's network and the network's bridge, while it has one
    /// (running or paused): what its firewall rules match.
    pub placement: Option<super::firewall::Placement>,
    /// Docker's health status (`None`: no health check, or not running).
    pub health: Option<crate::spec::Health>,
    /// The tail of the last probe's output.
    pub health_log: Option<String>,
    /// The Swarm node that runs it (`BACKEND=swarm`, while a task runs); `None` on one host.
    pub node: Option<String>,
    /// That node's address (`Status.Addr`): where host-mode ports answer.
    pub node_address: Option<String>,
    /// A Swarm node that is down and still shows a task of it: the node it was lost with.
    pub lost_node: Option<String>,
}

/// The desired side, as far as the decision needs it.
#[derive(Clone, Debug)]
pub struct Desired {
    pub state: DesiredState,
    pub generation: i64,
    pub deleting: bool,
    /// A restart was asked for and has not been carried out.
    pub restart_pending: bool,
    /// When the desired state (or a restart) was last asked for.
    pub desired_at: DateTime<Utc>,
    /// Its health check says `on_unhealthy: restart`.
    pub restart_unhealthy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// In sync: record this observed status.
    Settled(Status),
    /// Render and `compose up -d`: creates, or recreates with a new spec.
    Up,
    /// Start the existing container, made from the current spec.
    Start,
    Stop,
    Pause,
    Unpause,
    Restart,
    /// Restart a running container its health check found unhealthy (`on_unhealthy:
    /// restart`), when its back-off allows (the pass checks).
    RestartUnhealthy,
    /// `compose down`, remove the directories, remove the row.
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: &'static str,
}

fn d(action: Action, reason: &'static str) -> Decision {
    Decision { action, reason }
}

/// An exit that came after the current desire and not from a signal sent from outside is
/// the process's own: Docker's restart policy owns it and the reconciler leaves it alone.
/// An exit by SIGTERM/SIGKILL that was not an OOM kill is someone's `docker stop`/`kill` or a
/// daemon shutdown, and is repaired.
fn exited_on_its_own(desired: &Desired, o: &Observed) -> bool {
    let after_desire = o.finished_at.is_some_and(|f| f >= desired.desired_at);
    let signalled = matches!(o.exit_code, Some(137 | 143)) && !o.oom_killed;
    after_desire && !signalled
}

pub fn decide(desired: &Desired, observed: Option<&Observed>) -> Decision {
    use Action::*;
    use DockerState as S;
    if desired.deleting {
        return d(Delete, "deletion requested");
    }
    match desired.state {
        // Never started: nothing exists in Docker and nothing should.
        DesiredState::Created => d(Settled(Status::Created), "never started"),
        DesiredState::Stopped => match observed.map(|o| o.state) {
            Some(S::Running | S::Paused | S::Restarting) => d(Stop, "should be stopped"),
            _ => d(Settled(Status::Stopped), "stopped"),
        },
        DesiredState::Running | DesiredState::Paused => {
            let Some(o) = observed else {
                return d(Up, "container missing");
            };
            if o.generation != Some(desired.generation) {
                return d(Up, "spec changed");
            }
            let paused_wanted = desired.state == DesiredState::Paused;
            let restart_due =
                desired.restart_pending && o.started_at.is_none_or(|s| s < desired.desired_at);
            match o.state {
                S::Removing => d(Up, "container being removed outside"),
                S::Dead => d(Up, "container dead"),
                S::Created => d(Start, "container not started"),
                S::Exited if restart_due => d(Start, "restart requested"),
                S::Exited if exited_on_its_own(desired, o) => {
                    d(Settled(Status::Exited), "main process ended on its own")
                }
                S::Exited => d(Start, "stopped outside or before the start request"),
                S::Paused if restart_due || !paused_wanted => d(
                    Unpause,
                    if restart_due {
                        "unpause to restart"
                    } else {
                        "paused outside"
                    },
                ),
                S::Running | S::Restarting if restart_due => d(Restart, "restart requested"),
                S::Running if paused_wanted => d(Pause, "should be paused"),
                S::Running
                    if desired.restart_unhealthy
                        && o.health == Some(crate::spec::Health::Unhealthy) =>
                {
                    d(RestartUnhealthy, "unhealthy, on_unhealthy: restart")
                }
                S::Running => d(Settled(Status::Running), "running"),
                S::Paused => d(Settled(Status::Paused), "paused"),
                S::Restarting => d(Settled(Status::Restarting), "restart policy at work"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use DesiredState as D;
    use DockerState as S;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn desired(state: D) -> Desired {
        Desired {
            state,
            generation: 2,
            deleting: false,
            restart_pending: false,
            desired_at: t("2026-01-01T00:00:10Z"),
            restart_unhealthy: false,
        }
    }

    fn obs(state: S) -> Observed {
        Observed {
            id: "x".into(),
            state,
            exit_code: None,
            oom_killed: false,
            generation: Some(2),
            started_at: Some(t("2026-01-01T00:00:11Z")),
            finished_at: None,
            placement: None,
            health: None,
            health_log: None,
            node: None,
            node_address: None,
            lost_node: None,
        }
    }

    fn exited(code: i64, finished: &str) -> Observed {
        Observed {
            exit_code: Some(code),
            finished_at: Some(t(finished)),
            ..obs(S::Exited)
        }
    }

    #[test]
    fn decision_table() {
        let late = "2026-01-01T00:00:20Z";
        let early = "2026-01-01T00:00:05Z";
        let mut deleting = desired(D::Running);
        deleting.deleting = true;
        let mut restart = desired(D::Running);
        restart.restart_pending = true;
        let mut restart_done = restart.clone();
        restart_done.desired_at = t("2026-01-01T00:00:10Z");
        let mut restarted = obs(S::Running);
        restarted.started_at = Some(t("2026-01-01T00:00:09Z"));
        let mut oom = exited(137, late);
        oom.oom_killed = true;
        let mut old_spec = obs(S::Running);
        old_spec.generation = Some(1);
        let mut restarts_unhealthy = desired(D::Running);
        restarts_unhealthy.restart_unhealthy = true;
        let unhealthy = Observed {
            health: Some(crate::spec::Health::Unhealthy),
            ..obs(S::Running)
        };
        let mut paused_unhealthy = restarts_unhealthy.clone();
        paused_unhealthy.state = D::Paused;

        let cases: Vec<(&str, Desired, Option<Observed>, Action)> = vec![
            ("tombstone", deleting.clone(), Some(obs(S::Running)), Delete),
            ("tombstone, nothing in docker", deleting, None, Delete),
            (
                "never started",
                desired(D::Created),
                None,
                Settled(Status::Created),
            ),
            ("start: missing", desired(D::Running), None, Up),
            (
                "running",
                desired(D::Running),
                Some(obs(S::Running)),
                Settled(Status::Running),
            ),
            (
                "spec changed",
                desired(D::Running),
                Some(old_spec.clone()),
                Up,
            ),
            (
                "spec changed while paused",
                desired(D::Paused),
                Some(old_spec),
                Up,
            ),
            (
                "job finished (exit 0)",
                desired(D::Running),
                Some(exited(0, late)),
                Settled(Status::Exited),
            ),
            (
                "job failed, policy no",
                desired(D::Running),
                Some(exited(1, late)),
                Settled(Status::Exited),
            ),
            (
                "docker stop outside",
                desired(D::Running),
                Some(exited(143, late)),
                Start,
            ),
            (
                "docker kill outside",
                desired(D::Running),
                Some(exited(137, late)),
                Start,
            ),
            (
                "oom kill is its own exit",
                desired(D::Running),
                Some(oom),
                Settled(Status::Exited),
            ),
            (
                "exit before the start request",
                desired(D::Running),
                Some(exited(0, early)),
                Start,
            ),
            (
                "paused outside",
                desired(D::Running),
                Some(obs(S::Paused)),
                Unpause,
            ),
            (
                "restart policy at work",
                desired(D::Running),
                Some(obs(S::Restarting)),
                Settled(Status::Restarting),
            ),
            (
                "created but not started",
                desired(D::Running),
                Some(obs(S::Created)),
                Start,
            ),
            ("dead", desired(D::Running), Some(obs(S::Dead)), Up),
            (
                "restart pending",
                restart.clone(),
                Some(restarted.clone()),
                Restart,
            ),
            (
                "restart already happened",
                restart_done,
                Some(obs(S::Running)),
                Settled(Status::Running),
            ),
            (
                "restart of a finished job",
                restart.clone(),
                Some(Observed {
                    started_at: Some(t(early)),
                    ..exited(0, early)
                }),
                Start,
            ),
            (
                "restart while paused",
                restart,
                Some(Observed {
                    started_at: Some(t(early)),
                    ..obs(S::Paused)
                }),
                Unpause,
            ),
            ("pause", desired(D::Paused), Some(obs(S::Running)), Pause),
            (
                "unhealthy, on_unhealthy restart",
                restarts_unhealthy.clone(),
                Some(unhealthy.clone()),
                RestartUnhealthy,
            ),
            (
                "unhealthy, no on_unhealthy",
                desired(D::Running),
                Some(unhealthy.clone()),
                Settled(Status::Running),
            ),
            (
                "starting after its restart",
                restarts_unhealthy.clone(),
                Some(Observed {
                    health: Some(crate::spec::Health::Starting),
                    ..obs(S::Running)
                }),
                Settled(Status::Running),
            ),
            (
                "unhealthy but to be paused",
                paused_unhealthy,
                Some(unhealthy.clone()),
                Pause,
            ),
            (
                "unhealthy, stopped: nothing to restart",
                restarts_unhealthy,
                Some(Observed {
                    health: None,
                    ..exited(0, late)
                }),
                Settled(Status::Exited),
            ),
            (
                "paused",
                desired(D::Paused),
                Some(obs(S::Paused)),
                Settled(Status::Paused),
            ),
            ("paused but missing", desired(D::Paused), None, Up),
            (
                "stop running",
                desired(D::Stopped),
                Some(obs(S::Running)),
                Stop,
            ),
            (
                "stop paused",
                desired(D::Stopped),
                Some(obs(S::Paused)),
                Stop,
            ),
            (
                "stop restarting",
                desired(D::Stopped),
                Some(obs(S::Restarting)),
                Stop,
            ),
            (
                "stopped",
                desired(D::Stopped),
                Some(exited(143, late)),
                Settled(Status::Stopped),
            ),
            (
                "stopped, missing",
                desired(D::Stopped),
                None,
                Settled(Status::Stopped),
            ),
        ];
        for (name, des, ob, want) in cases {
            assert_eq!(decide(&des, ob.as_ref()).action, want, "{name}");
        }
    }
}

//! The compose file of one container: built from serde types and serialized as YAML, never
//! from string templates, so a client's value can only ever be a value. Every `$` in a value
//! is doubled so Compose interpolation never touches it. Only the keys below exist; nothing a
//! client sends can add others.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::store::containers::Container;

pub const SERVICE: &str = "app";
pub const LABEL_INSTANCE: &str = "com.container-manager.instance";
pub const LABEL_CUID: &str = "com.container-manager.cuid";
pub const LABEL_GENERATION: &str = "com.container-manager.generation";
pub const LABEL_TAG: &str = "com.container-manager.tag";

/// Capabilities of Docker's default set taken away from every container: a sandboxed app
/// needs none of them, and each is a way out or a way to leave something dangerous behind
/// (the README's security notes give the reasons). Kept: CHOWN, DAC_OVERRIDE, FOWNER,
/// SETUID, SETGID, SETPCAP, KILL, NET_BIND_SERVICE, which package managers and servers
/// running as root inside the container use.
pub const CAP_DROP: &[&str] = &[
    // Device nodes in /app are real device nodes on the host's filesystem.
    "MKNOD",
    // Raw sockets: spoofed packets and ARP games on the shared bridge.
    "NET_RAW",
    // File capabilities on a binary in /app survive on the host's filesystem.
    "SETFCAP",
    // Writing to the host kernel's audit log.
    "AUDIT_WRITE",
    // chroot is a classic step of container escapes and no app needs it.
    "SYS_CHROOT",
    // Keeps setuid/setgid bits on files it writes and sets setgid for foreign groups.
    "FSETID",
];

#[derive(Serialize)]
pub struct ComposeFile {
    pub name: String,
    pub services: BTreeMap<&'static str, Service>,
    pub networks: BTreeMap<&'static str, ExternalNetwork>,
}

#[derive(Serialize)]
pub struct ExternalNetwork {
    pub name: String,
    pub external: bool,
}

#[derive(Serialize)]
pub struct Service {
    pub image: String,
    pub container_name: String,
    pub command: Vec<String>,
    pub working_dir: &'static str,
    pub user: String,
    pub volumes: Vec<BindVolume>,
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    pub ports: Vec<PortMapping>,
    pub restart: String,
    pub init: bool,
    pub stdin_open: bool,
    pub tty: bool,
    pub pull_policy: &'static str,
    pub logging: Logging,
    pub labels: BTreeMap<&'static str, String>,
    pub security_opt: Vec<&'static str>,
    pub cap_drop: Vec<&'static str>,
    pub networks: Vec<&'static str>,
    /// Left out when false, so the files of containers without it stay as they were.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// The Docker runtime: `runsc` for `isolation: gvisor`; left out for `runc` (Docker's
    /// default), so the files of existing containers stay as they were and compose does not
    /// recreate them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The spec's health check; left out without one (the image's own `HEALTHCHECK`, if
    /// any, then applies, as before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// Docker's `HEALTHCHECK`, as compose writes it.
#[derive(Serialize)]
pub struct Healthcheck {
    /// `["CMD", argv...]`: run without a shell.
    pub test: Vec<String>,
    pub interval: String,
    pub timeout: String,
    pub retries: u32,
    pub start_period: String,
}

#[derive(Serialize)]
pub struct BindVolume {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: String,
    pub target: &'static str,
    /// Only for a capped `/app` (left out otherwise, so the files of other containers stay
    /// as they were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    /// Left out when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// `create_host_path: false`: compose then hands Docker a `Mounts` entry, which fails to
/// start when the source is missing, instead of a legacy bind, which makes it. A capped
/// `/app` is the `app/` of a mounted image: while the image is not mounted (after a reboot,
/// when Docker restarts containers on its own) the container must not start on an empty
/// directory of the host's disk beneath the mount point, uncapped; the reconciler starts it
/// once the image is mounted.
#[derive(Serialize)]
pub struct BindOptions {
    pub create_host_path: bool,
}

#[derive(Serialize)]
pub struct PortMapping {
    pub target: u16,
    pub published: String,
    pub host_ip: String,
    pub protocol: String,
}

#[derive(Serialize)]
pub struct Logging {
    pub driver: &'static str,
    pub options: BTreeMap<&'static str, String>,
}

/// The network every container of this server joins: one bridge, inter-container traffic
/// off. (A network per project would exhaust Docker's address pools at about 30.)
pub fn network_name(instance_id: &str) -> String {
    format!("cm-{instance_id}")
}

/// Compose interpolates `$VAR` and `${VAR}` in values; `$$` is a literal `$`.
fn escape(s: &str) -> String {
    s.replace('$', "$$")
}

/// `DATA_DIR/projects/<cuid>`: the directory of a container's compose project, holding the
/// file [`render`] makes.
pub fn project_dir(config: &Config, cuid: &str) -> std::path::PathBuf {
    config.data_dir.join("projects").join(cuid)
}

/// The `/tmp` of a read-only container: a tmpfs of `bytes`, sticky and world-writable like
/// any `/tmp` (the process may run as any uid). `nodev,nosuid` as on every mount a client
/// fills; `exec` undoes Docker's default `noexec`, which would only break tools that run
/// what they build in `/tmp` (`/app` is executable anyway, so it would protect nothing).
fn tmp_mount(bytes: i64) -> String {
    format!("/tmp:rw,nodev,nosuid,exec,size={bytes},mode=1777")
}

pub fn render(config: &Config, instance_id: &str, c: &Container) -> ComposeFile {
    let spec = &c.spec;
    let mut environment: BTreeMap<String, String> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), escape(v)))
        .collect();
    environment.insert("CONTAINER_UID".into(), c.cuid.clone());
    environment.insert("TAGS".into(), escape(&spec.tags.join(",")));
    environment
        .entry("PYTHONUNBUFFERED".into())
        .or_insert_with(|| "1".into());

    let command = spec
        .command
        .clone()
        .unwrap_or_else(|| config.boot_command.clone());
    let mut labels = BTreeMap::from([
        (LABEL_INSTANCE, instance_id.to_owned()),
        (LABEL_CUID, c.cuid.clone()),
        (LABEL_GENERATION, c.generation.to_string()),
    ]);
    if let Some(tag) = &config.instance_tag {
        labels.insert(LABEL_TAG, tag.clone());
    }
    let mut volumes_extra = Vec::new();
    let healthcheck = spec.health.as_ref().map(|h| {
        let test = match (&h.cmd, &h.http) {
            (Some(cmd), _) => cmd.iter().map(|a| escape(a)).collect(),
            (None, Some(http)) => {
                // The server's static probe, read-only; never made on the host if missing
                // (it would be made a directory), so a start fails loudly instead.
                volumes_extra.push(BindVolume {
                    kind: "bind",
                    source: super::probe::path(config).display().to_string(),
                    target: super::probe::TARGET,
                    bind: Some(BindOptions {
                        create_host_path: false,
                    }),
                    read_only: true,
                });
                vec![
                    super::probe::TARGET.to_owned(),
                    http.port.to_string(),
                    escape(&http.path),
                ]
            }
            (None, None) => vec!["true".to_owned()],
        };
        Healthcheck {
            test: std::iter::once("CMD".to_owned()).chain(test).collect(),
            interval: format!("{}s", h.interval),
            timeout: format!("{}s", h.timeout),
            retries: h.retries,
            start_period: format!("{}s", h.start_period),
        }
    });
    let mut service = Service {
        image: c.image_ref().to_owned(),
        container_name: c.cuid.clone(),
        command: command.iter().map(|a| escape(a)).collect(),
        working_dir: "/app",
        user: crate::appdir::mounts::owner(config, spec.user.as_deref()).to_string(),
        volumes: vec![BindVolume {
            kind: "bind",
            // A capped container's `/app` is the `app/` of its own mounted image.
            source: crate::appdir::mounts::app_dir(
                config,
                &c.cuid,
                spec.resources.disk_bytes.is_some(),
            )
            .display()
            .to_string(),
            target: "/app",
            bind: spec.resources.disk_bytes.map(|_| BindOptions {
                create_host_path: false,
            }),
            read_only: false,
        }],
        environment,
        // Without limits, one container can take the host's memory and CPUs; the spec's own
        // limits win (and the representation keeps showing the spec as sent).
        cpus: spec.resources.cpus.or(config.default_cpus),
        mem_limit: spec.resources.memory_bytes.or(config.default_memory),
        // Without one, a fork bomb in one container could use up the host's process ids.
        pids_limit: spec.resources.pids.or(config.default_pids_limit),
        ports: spec
            .ports
            .iter()
            .map(|p| PortMapping {
                target: p.container,
                published: p.host.to_string(),
                host_ip: p.host_ip.clone(),
                protocol: p.protocol.clone(),
            })
            .collect(),
        restart: spec.restart.as_str().to_owned(),
        init: true,
        stdin_open: true,
        tty: false,
        // The reconciler pulled it first (IMAGE_PULL_POLICY): compose must not pull again.
        pull_policy: "never",
        logging: Logging {
            driver: "json-file",
            options: BTreeMap::from([
                ("max-size", config.container_log_max_size.clone()),
                ("max-file", config.container_log_max_file.to_string()),
            ]),
        },
        labels,
        // No setuid binary (one planted in /app included) gains privileges by exec.
        security_opt: vec!["no-new-privileges:true"],
        cap_drop: CAP_DROP.to_vec(),
        networks: vec!["cm"],
        // The root filesystem read-only: `/app` (a bind mount) stays writable, `/tmp` is a
        // capped tmpfs, and Docker's own `/dev/shm` keeps its 64 MiB.
        read_only: spec.read_only,
        tmpfs: if spec.read_only {
            let bytes = spec
                .resources
                .tmp_bytes
                .unwrap_or(crate::spec::DEFAULT_TMP_BYTES);
            vec![tmp_mount(bytes)]
        } else {
            Vec::new()
        },
        runtime: match spec.isolation {
            crate::spec::Isolation::Runc => None,
            other => Some(config.runtime_of(other).to_owned()),
        },
        healthcheck,
    };
    service.volumes.extend(volumes_extra);
    ComposeFile {
        name: c.cuid.clone(),
        services: BTreeMap::from([(SERVICE, service)]),
        networks: BTreeMap::from([(
            "cm",
            ExternalNetwork {
                name: network_name(instance_id),
                external: true,
            },
        )]),
    }
}

pub fn to_yaml(file: &ComposeFile) -> String {
    serde_saphyr::to_string(file).expect("compose types always serialize")
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename, fsync of the folder),
/// and only when it differs from what is there. Returns whether it wrote.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(false);
    }
    let dir = path.parent().expect("compose file has a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".compose.yaml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Port, Resources, Spec};

    fn container(env: &[(&str, &str)]) -> Container {
        Container {
            seq: 1,
            cuid: "c123e4567-e89b-12d3-a456-426614174000".into(),
            spec: Spec {
                image: "python:3.12-slim".into(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                tags: vec!["web".into(), "prod".into()],
                resources: Resources {
                    cpus: Some(1.0),
                    memory: Some("4096m".into()),
                    memory_bytes: Some(4096 << 20),
                    pids: Some(2048),
                    tmp: None,
                    tmp_bytes: None,
                    disk: None,
                    disk_bytes: None,
                },
                ports: vec![Port {
                    host: 8080,
                    container: 80,
                    protocol: "tcp".into(),
                    host_ip: "0.0.0.0".into(),
                }],
                command: None,
                restart: crate::spec::RestartPolicy::OnFailure,
                user: None,
                read_only: false,
                isolation: Default::default(),
                network: Default::default(),
                name: None,
                idle: None,
                health: None,
                auto_update: false,
                placement: None,
            },
            tenant: None,
            status_reason: None,
            lifetime: None,
            expires_at: None,
            desired_state: crate::lifecycle::DesiredState::Running,
            status: crate::lifecycle::Status::Created,
            exit_code: None,
            oom_killed: false,
            generation: 3,
            observed_generation: 0,
            restart_requested: 0,
            restart_done: 0,
            desired_at: String::new(),
            last_error: None,
            deleted_at: None,
            created_at: String::new(),
            updated_at: String::new(),
            health: None,
            health_log: None,
            node: None,
            node_address: None,
            last_move: None,
            unhealthy_restarts: 0,
            unhealthy_restart_at: None,
            image: Default::default(),
        }
    }

    fn config() -> Config {
        std::env::set_var("APP_USER", "u");
        std::env::set_var("APP_PASS", "p");
        std::env::set_var("DATA_DIR", "/srv/cm");
        Config::from_env().unwrap()
    }

    #[test]
    fn hostile_env_values_stay_values() {
        let c = container(&[
            ("X", "x\n    privileged: true"),
            ("P", "${APP_PASS}$HOME"),
            ("Y", "yes"),
        ]);
        let file = render(&config(), "inst", &c);
        let yaml = to_yaml(&file);
        // Parsed back, the env values are single strings with `$` doubled and no new keys.
        let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let svc = &parsed["services"]["app"];
        assert_eq!(svc["environment"]["X"], "x\n    privileged: true");
        assert_eq!(svc["environment"]["P"], "$${APP_PASS}$$HOME");
        assert_eq!(svc["environment"]["Y"], "yes");
        assert!(svc.get("privileged").is_none());
        assert_eq!(svc["environment"]["TAGS"], "web,prod");
        assert_eq!(svc["environment"]["PYTHONUNBUFFERED"], "1");
        assert_eq!(svc["labels"][LABEL_GENERATION], "3");
        assert_eq!(
            svc["volumes"][0]["source"],
            "/srv/cm/mounts/c123e4567-e89b-12d3-a456-426614174000"
        );
        assert_eq!(svc["mem_limit"], 4096i64 << 20);
        assert_eq!(svc["cpus"], 1.0);
    }

    #[test]
    fn every_container_drops_capabilities_and_new_privileges() {
        let yaml = to_yaml(&render(&config(), "inst", &container(&[])));
        let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let svc = &parsed["services"]["app"];
        assert_eq!(
            svc["cap_drop"],
            serde_json::json!([
                "MKNOD",
                "NET_RAW",
                "SETFCAP",
                "AUDIT_WRITE",
                "SYS_CHROOT",
                "FSETID"
            ])
        );
        assert_eq!(
            svc["security_opt"],
            serde_json::json!(["no-new-privileges:true"])
        );
        assert!(svc.get("cap_add").is_none() && svc.get("privileged").is_none());
    }

    #[test]
    fn default_memory_and_cpus_apply_only_without_limits_in_the_spec() {
        let mut config = config();
        config.default_memory = Some(1 << 30);
        config.default_cpus = Some(0.5);
        let mut c = container(&[]);
        let limits = |config: &Config, c: &Container| {
            let yaml = to_yaml(&render(config, "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            let svc = &parsed["services"]["app"];
            (svc["mem_limit"].clone(), svc["cpus"].clone())
        };
        assert_eq!(
            limits(&config, &c),
            (serde_json::json!(4096i64 << 20), serde_json::json!(1.0))
        );
        c.spec.resources.memory_bytes = None;
        c.spec.resources.memory = None;
        c.spec.resources.cpus = None;
        assert_eq!(
            limits(&config, &c),
            (serde_json::json!(1i64 << 30), serde_json::json!(0.5))
        );
        config.default_memory = None;
        config.default_cpus = None;
        let (memory, cpus) = limits(&config, &c);
        assert!(memory.is_null() && cpus.is_null());
    }

    #[test]
    fn the_default_pids_limit_applies_only_without_one_in_the_spec() {
        let mut config = config();
        config.default_pids_limit = Some(4096);
        let mut c = container(&[]);
        let pids = |config: &Config, c: &Container| {
            let yaml = to_yaml(&render(config, "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            parsed["services"]["app"]["pids_limit"].clone()
        };
        assert_eq!(pids(&config, &c), 2048);
        c.spec.resources.pids = None;
        assert_eq!(pids(&config, &c), 4096);
        config.default_pids_limit = None;
        assert!(pids(&config, &c).is_null());
    }

    /// `health.cmd` is Docker's `CMD` form (no shell), `$` escaped; `http` runs the
    /// server's probe, bind-mounted read-only and never made on the host; without a check
    /// the file has no `healthcheck` key (files of existing containers stay as they were).
    #[test]
    fn health_checks_render_as_dockers_healthcheck() {
        use crate::spec::{HealthCheck, HttpProbe, OnUnhealthy};
        let service = |c: &Container| {
            let yaml = to_yaml(&render(&config(), "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            parsed["services"]["app"].clone()
        };
        let mut c = container(&[]);
        let plain = service(&c);
        assert!(plain.get("healthcheck").is_none());
        assert_eq!(plain["volumes"].as_array().unwrap().len(), 1);

        c.spec.health = Some(HealthCheck {
            cmd: Some(vec!["test".into(), "-f".into(), "/tmp/$ok".into()]),
            http: None,
            interval: 2,
            timeout: 1,
            retries: 4,
            start_period: 0,
            on_unhealthy: Some(OnUnhealthy::Restart),
        });
        let svc = service(&c);
        assert_eq!(
            svc["healthcheck"],
            serde_json::json!({"test": ["CMD", "test", "-f", "/tmp/$$ok"], "interval": "2s",
                "timeout": "1s", "retries": 4, "start_period": "0s"})
        );
        assert_eq!(svc["volumes"].as_array().unwrap().len(), 1);

        c.spec.health = Some(HealthCheck {
            cmd: None,
            http: Some(HttpProbe {
                port: 8000,
                path: "/health?x=1".into(),
            }),
            interval: 10,
            timeout: 5,
            retries: 3,
            start_period: 30,
            on_unhealthy: None,
        });
        let svc = service(&c);
        assert_eq!(
            svc["healthcheck"]["test"],
            serde_json::json!(["CMD", "/.cm-probe", "8000", "/health?x=1"])
        );
        assert_eq!(svc["healthcheck"]["start_period"], "30s");
        let probe = &svc["volumes"][1];
        assert_eq!(probe["target"], "/.cm-probe");
        assert_eq!(probe["read_only"], true);
        assert_eq!(probe["bind"]["create_host_path"], false);
        assert!(probe["source"]
            .as_str()
            .unwrap()
            .ends_with("/probe/cm-probe"));
    }

    #[test]
    fn read_only_renders_a_read_only_root_and_a_capped_tmp() {
        let service = |c: &Container| {
            let yaml = to_yaml(&render(&config(), "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            (yaml, parsed["services"]["app"].clone())
        };
        // Off (the default): neither key is in the file, `resources.tmp` or not.
        let mut c = container(&[]);
        c.spec.resources.tmp = Some("16m".into());
        c.spec.resources.tmp_bytes = Some(16 << 20);
        let (yaml, svc) = service(&c);
        assert!(
            svc.get("read_only").is_none() && svc.get("tmpfs").is_none(),
            "{yaml}"
        );

        c.spec.read_only = true;
        let (_, svc) = service(&c);
        assert_eq!(svc["read_only"], true);
        assert_eq!(
            svc["tmpfs"],
            serde_json::json!(["/tmp:rw,nodev,nosuid,exec,size=16777216,mode=1777"])
        );
        // `/app` is still the writable bind mount.
        assert_eq!(svc["volumes"][0]["target"], "/app");
        assert!(svc["volumes"][0].get("read_only").is_none());

        // Without `resources.tmp`: 64 MiB.
        c.spec.resources.tmp = None;
        c.spec.resources.tmp_bytes = None;
        let (_, svc) = service(&c);
        assert_eq!(
            svc["tmpfs"],
            serde_json::json!(["/tmp:rw,nodev,nosuid,exec,size=67108864,mode=1777"])
        );
    }

    #[test]
    fn gvisor_renders_the_runsc_runtime_with_the_same_log_cap() {
        let service = |c: &Container| {
            let yaml = to_yaml(&render(&config(), "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            (yaml, parsed["services"]["app"].clone())
        };
        // runc: no `runtime` key, so the files of existing containers do not change.
        let mut c = container(&[]);
        let (yaml, runc) = service(&c);
        assert!(runc.get("runtime").is_none(), "{yaml}");

        c.spec.isolation = crate::spec::Isolation::Gvisor;
        let (_, gvisor) = service(&c);
        assert_eq!(gvisor["runtime"], "runsc");
        // The json-file driver and its cap are the runtime's business not at all: the
        // daemon writes the log either way.
        assert_eq!(gvisor["logging"], runc["logging"]);
        assert_eq!(gvisor["logging"]["driver"], "json-file");
    }

    #[test]
    fn a_capped_app_is_the_app_dir_of_its_image() {
        let config = config();
        let mut c = container(&[]);
        let source = |c: &Container| {
            let yaml = to_yaml(&render(&config, "inst", c));
            let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            parsed["services"]["app"]["volumes"][0]["source"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            source(&c),
            config
                .data_dir
                .join("mounts")
                .join(&c.cuid)
                .display()
                .to_string()
        );
        let yaml = to_yaml(&render(&config, "inst", &c));
        assert!(!yaml.contains("create_host_path"), "{yaml}");
        c.spec.resources.disk = Some("1g".into());
        c.spec.resources.disk_bytes = Some(1 << 30);
        let yaml = to_yaml(&render(&config, "inst", &c));
        let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            parsed["services"]["app"]["volumes"][0]["bind"]["create_host_path"], false,
            "{yaml}"
        );
        assert_eq!(
            source(&c),
            config
                .data_dir
                .join("disks")
                .join(&c.cuid)
                .join("app")
                .display()
                .to_string()
        );
    }

    #[test]
    fn atomic_write_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p/compose.yaml");
        assert!(write_atomic(&path, "a: 1\n").unwrap());
        assert!(!write_atomic(&path, "a: 1\n").unwrap());
        assert!(write_atomic(&path, "a: 2\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
    }
}

//! The service configuration file (TOML): agencies with hashed tokens, flows, and service
//! settings. Validated as a whole at start; every mistake is reported with where it is.

use anyhow::{bail, Context};
use pathway_core::agreements::{Agency, AgencyKind, Agreements, Flow};
use pathway_gateway::auth::{Principal, Role};
use serde::Deserialize;
use std::path::Path;

pub const DEMO: &str = include_str!("../../../deploy/demo.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub service: ServiceSettings,
    #[serde(default, rename = "agency")]
    pub agencies: Vec<AgencyEntry>,
    #[serde(default, rename = "flow")]
    pub flows: Vec<Flow>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
    #[serde(default)]
    pub nats: NatsSection,
}

/// The NATS transport, off unless `servers` (or `serve --nats URL`) names a broker.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// `nats://host:port` of each node.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The exchange's user on the broker (`exchange` in deploy/nats).
    pub user: Option<String>,
    /// Its password, written here (the demo only) or, better, read from this variable.
    pub password: Option<String>,
    pub password_env: Option<String>,
    /// Replicas of each stream the exchange creates: 3 on a three-node cluster.
    pub replicas: Option<usize>,
}

impl std::fmt::Debug for NatsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSection")
            .field("servers", &self.servers)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "hidden"))
            .field("password_env", &self.password_env)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl NatsSection {
    /// The transport's settings, or `None` when no broker is named. Message limits are the
    /// defaults; `app::build_serving` sets the service's own.
    pub fn settings(&self) -> anyhow::Result<Option<pathway_nats::Settings>> {
        if self.servers.is_empty() {
            return Ok(None);
        }
        let password =
            match (&self.password, &self.password_env) {
                (_, Some(var)) => Some(std::env::var(var).with_context(|| {
                    format!("nats.password_env names `{var}`, which is not set")
                })?),
                (p, None) => p.clone(),
            };
        Ok(Some(pathway_nats::Settings {
            servers: self.servers.clone(),
            user: self.user.clone(),
            password,
            replicas: self.replicas.unwrap_or(1),
            limits: pathway_nats::answer::Limits::default(),
        }))
    }
}

/// A person (or system) with a role: within an agency, or the exchange's own `admin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub id: String,
    /// The agency the user belongs to; absent only for the exchange's `admin`.
    pub agency: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub token_sha256: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub listen: Option<String>,
    pub data: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_batch: Option<usize>,
    /// Minutes between housekeeping passes (retention purges); one also runs at start.
    pub housekeeping_minutes: Option<u64>,
    /// Requests per second each agency may make, on average, and in a burst.
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<f64>,
    /// Seconds a request may take to start answering.
    pub request_timeout_seconds: Option<u64>,
    /// The log's page cache in MiB (`pathway_log::CACHE_BYTES` when absent): memory against
    /// ingest speed.
    pub log_cache_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyEntry {
    pub id: String,
    pub kind: AgencyKind,
    #[serde(default)]
    pub name: String,
    /// SHA-256 digests (hex) of the agency's bearer tokens; several allow rotation.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// A local authority's 3-digit DfE code (for registrations from its looked-after lists).
    #[serde(default)]
    pub la_code: Option<String>,
    /// Ed25519 public keys (hex); with any, the agency's submissions must be signed.
    #[serde(default)]
    pub signing_keys: Vec<String>,
    /// The largest request body this agency may send, if not the service's.
    pub max_body_bytes: Option<usize>,
}

pub struct Config {
    pub service: ServiceSettings,
    pub nats: NatsSection,
    /// Agencies with their own body limit.
    pub body_limits: std::collections::HashMap<String, usize>,
    pub agreements: Agreements,
    /// (principal, token digest)
    pub tokens: Vec<(Principal, String)>,
}

impl std::fmt::Debug for Config {
    /// Token digests stay out of debug output, like anything that guards access.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("service", &self.service)
            .field("nats", &self.nats)
            .field("agreements", &self.agreements)
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .finish()
    }
}

pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
    let file: ConfigFile =
        toml::from_str(text).with_context(|| format!("{origin} is not a valid configuration"))?;
    let mut problems = Vec::new();
    let mut tokens = Vec::new();
    let digest_ok = |d: &str| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit());
    for a in &file.agencies {
        for d in &a.token_sha256 {
            if !digest_ok(d) {
                problems.push(format!("agency `{}`: token_sha256 entries must be 64 hex digits (use `exchange hash-token`)", a.id));
            }
            // Agency-level tokens are the agency's own systems.
            let service = Principal {
                user: a.id.clone(),
                agency: Some(a.id.clone()),
                role: Role::Service,
            };
            tokens.push((service, d.to_ascii_lowercase()));
        }
    }
    let mut user_ids = std::collections::BTreeSet::new();
    for (i, u) in file.users.iter().enumerate() {
        let place = format!("user[{i}] `{}`", u.id);
        if !user_ids.insert(u.id.clone()) {
            problems.push(format!("{place}: duplicate user id"));
        }
        match (&u.agency, u.role) {
            (Some(_), Role::Admin) => problems.push(format!(
                "{place}: the exchange's admin belongs to no agency; remove `agency`"
            )),
            (None, r) if r != Role::Admin => {
                problems.push(format!("{place}: a {r} needs the `agency` it belongs to"))
            }
            (Some(a), _) if !file.agencies.iter().any(|x| &x.id == a) => {
                problems.push(format!("{place}: `agency` names unknown agency `{a}`"))
            }
            _ => {}
        }
        if u.token_sha256.is_empty() {
            problems.push(format!("{place}: needs at least one token_sha256"));
        }
        for d in &u.token_sha256 {
            if !digest_ok(d) {
                problems.push(format!("{place}: token_sha256 entries must be 64 hex digits (use `exchange hash-token`)"));
            }
            let p = Principal {
                user: u.id.clone(),
                agency: u.agency.clone(),
                role: u.role,
            };
            tokens.push((p, d.to_ascii_lowercase()));
        }
    }
    let agencies = file
        .agencies
        .iter()
        .map(|a| Agency {
            id: a.id.clone(),
            kind: a.kind,
            name: a.name.clone(),
            la_code: a.la_code.clone(),
            signing_keys: a.signing_keys.clone(),
        })
        .collect();
    let agreements = match Agreements::new(agencies, file.flows) {
        Ok(a) => Some(a),
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            None
        }
    };
    if !(1..=5).contains(&file.nats.replicas.unwrap_or(1)) {
        problems.push("nats.replicas must be between 1 and 5".to_owned());
    }
    for s in &file.nats.servers {
        if s.parse::<async_nats::ServerAddr>().is_err() {
            problems.push(format!(
                "nats.servers: `{s}` is not a NATS address (nats://host:port)"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{origin} has {} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    Ok(Config {
        body_limits: file
            .agencies
            .iter()
            .filter_map(|a| a.max_body_bytes.map(|m| (a.id.clone(), m)))
            .collect(),
        service: file.service,
        nats: file.nats,
        agreements: agreements.expect("no problems"),
        tokens,
    })
}

/// The configuration text without the `[[user]]` table whose id is `user` (everything else,
/// comments included, kept as written), or `None` if there is no such user.
pub fn without_user(text: &str, user: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_user = false;
    let mut found = false;
    let id_line = format!("id = {user:?}");
    fn flush<'t>(block: &mut Vec<&'t str>, out: &mut Vec<&'t str>, found: &mut bool, id: &str) {
        if block.iter().any(|l| l.trim() == id) {
            *found = true;
        } else {
            out.append(block);
        }
        block.clear();
    }
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_user {
                flush(&mut block, &mut out, &mut found, &id_line);
            }
            in_user = t == "[[user]]";
        }
        if in_user {
            block.push(line);
        } else {
            out.push(line);
        }
    }
    if in_user {
        flush(&mut block, &mut out, &mut found, &id_line);
    }
    found.then(|| out.join("\n") + "\n")
}

pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Replaces a configuration file whole: written beside it, synced, then renamed over it.
/// A crash leaves the old file or the new one, never a truncated one the service would
/// refuse to start with; and an issued or revoked token survives a power cut. The file
/// keeps its permissions (it holds token digests).
pub fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file", path.display()))?;
    let tmp = dir.join(format!(".{}.new", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_configuration_is_valid() {
        let c = parse(DEMO, "demo").unwrap();
        assert_eq!(c.agreements.agencies().count(), 3);
        assert_eq!(c.tokens.len(), 8);
        assert_eq!(c.agreements.flows().len(), 9);
    }

    /// `service.log_cache_mib` reaches the log; without it the log keeps its default.
    #[test]
    fn the_log_cache_follows_the_settings() {
        let demo = parse(DEMO, "demo").unwrap();
        let cache = |c: &Config| crate::app::log_options(&c.service).cache_bytes;
        assert_eq!(cache(&demo), pathway_log::CACHE_BYTES);
        let set = parse(&format!("[service]\nlog_cache_mib = 48\n{DEMO}"), "set").unwrap();
        assert_eq!(cache(&set), 48 << 20);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = parse(DEMO, "demo").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("8 hidden"), "{shown}");
        for (_, digest) in &c.tokens {
            assert!(!shown.contains(digest.as_str()));
        }
        let tokens = pathway_gateway::Tokens::new(c.tokens.clone());
        assert_eq!(format!("{tokens:?}"), "Tokens([8 hidden])");
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let text = r#"
            [[agency]]
            id = "la"
            kind = "local-authority"
            token_sha256 = ["abc"]

            [[flow]]
            from = ["la"]
            to = "nobody"
            categories = ["care"]
            purpose = "x"
            basis = "statutory"
        "#;
        let err = parse(text, "test.toml").unwrap_err().to_string();
        assert!(err.contains("2 problem(s)"), "{err}");
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(
            err.contains("flow[0]: `to` names unknown agency `nobody`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(
            "[[agency]]\nid = \"la\"\nkind = \"local-authority\"\ncolour = \"red\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }

    #[test]
    fn a_replaced_config_keeps_its_permissions_and_leaves_nothing_beside_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exchange.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}

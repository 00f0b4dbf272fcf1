//! Loading and validating a whole file: every key checked, with its name in the error.

use super::*;

impl Config {
    /// Reads and validates a configuration file and its drop-ins
    /// ([`crate::files::load`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_files(path).map(|l| l.config)
    }

    /// As [`Config::load`], with the files read and which values came
    /// from a drop-in.
    pub fn load_files(path: &Path) -> Result<crate::files::Loaded, ConfigError> {
        let loaded = crate::files::load(path)?;
        loaded.config.admin.resolve_token()?;
        Ok(loaded)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // The message of a TOML error, with its line.
        let described = |e: &toml::de::Error| {
            let location = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or(text).lines().count().max(1))
                .map_or(String::new(), |line| format!(" (line {line})"));
            format!("{}{location}", e.message().replace('\n', "; "))
        };
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Toml(described(&e)))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = if key == "admin.token" {
                // The value may be the secret, mistyped: never echoed.
                "must be a string (the value is not shown: it is a secret)".to_owned()
            } else {
                described(e.inner())
            };
            if key == "." {
                ConfigError::Toml(message)
            } else {
                ConfigError::Syntax { key, message }
            }
        })?;
        cfg.validate()?;
        cfg.test_hooks_built(ultragate_dataplane::TEST_HOOKS)?;
        Ok(cfg)
    }

    /// `[cache] test_hooks` is a key of test builds only: a build without
    /// the hooks refuses it as unknown.
    pub(super) fn test_hooks_built(&self, built: bool) -> Result<(), ConfigError> {
        if self.cache.test_hooks.is_some() && !built {
            return Err(ConfigError::Syntax {
                key: "cache.test_hooks".into(),
                message: "unknown field `test_hooks` (test builds only)".into(),
            });
        }
        Ok(())
    }

    /// The defaults, as TOML text.
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.to_owned(),
            })
        };
        self.dpdk.cidr()?;
        self.dpdk.next_hop()?;
        self.notify.target()?;
        if self.notify.timeout_ms == 0 {
            return invalid("notify.timeout_ms", "must be above 0");
        }
        if !(0.0..=1.0).contains(&self.log.access_sample) {
            return invalid("log.access_sample", "must be between 0.0 and 1.0");
        }
        if self.log.access.is_empty() {
            return invalid("log.access", "give stdout, a file path or off");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                "is not a level or filter (e.g. info, warn, info,ultragate::access=off)",
            );
        }
        let g = &self.api_gateway;
        if !(1..=1 << 20).contains(&g.max_connections_per_core) {
            return invalid(
                "api_gateway.max_connections_per_core",
                "must be between 1 and 1048576",
            );
        }
        let token = |n: &String| {
            !n.is_empty() && n.bytes().all(ultragate_dataplane::http::chunked::is_tchar)
        };
        g.forward_rules()?;
        if g.max_connections_per_client == 0 {
            return invalid("api_gateway.max_connections_per_client", "must be above 0");
        }
        if !(16 * 1024..=64 << 20).contains(&g.max_connection_buffer_bytes) {
            return invalid(
                "api_gateway.max_connection_buffer_bytes",
                "must be between 16384 and 67108864",
            );
        }
        if self.security.audit_log_max_bytes < 4096 {
            return invalid("security.audit_log_max_bytes", "must be at least 4096");
        }
        if !g.strip_fields.iter().all(token) {
            return invalid("api_gateway.strip_fields", "must be field names (tokens)");
        }
        if self.cache.targeted_fields.len() > 8 || !self.cache.targeted_fields.iter().all(token) {
            return invalid(
                "cache.targeted_fields",
                "must be at most 8 field names (tokens)",
            );
        }
        if !(1024..=1024 * 1024).contains(&g.max_header_bytes) {
            return invalid(
                "api_gateway.max_header_bytes",
                "must be between 1024 and 1048576",
            );
        }
        let positive = [
            ("api_gateway.client_timeout_ms", g.client_timeout_ms),
            ("api_gateway.keepalive_timeout_ms", g.keepalive_timeout_ms),
            ("api_gateway.send_timeout_ms", g.send_timeout_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return invalid(key, "must be above 0");
        }
        let available = available_cores();
        if let Some(core) = g.cores.iter().find(|c| !available.contains(c)) {
            return Err(ConfigError::Invalid {
                key: "api_gateway.cores".into(),
                message: format!("core {core} does not exist here (cores: {available:?})"),
            });
        }
        if self.cache.max_bytes < 64 * 1024 {
            return invalid("cache.max_bytes", "must be at least 65536");
        }
        if self.cache.max_object_bytes > self.cache.max_bytes {
            return invalid("cache.max_object_bytes", "must not exceed cache.max_bytes");
        }
        if !(0.0..=1.0).contains(&self.control.error_rate_threshold) {
            return invalid(
                "control.error_rate_threshold",
                "must be between 0.0 and 1.0",
            );
        }
        if self.control.interval_ms == 0 || self.control.verify_interval_ms == 0 {
            return invalid("control.interval_ms", "intervals must be above 0");
        }
        self.validate_tls()?;
        self.validate_upstreams()?;
        self.validate_routes()
    }

    /// `[tls]`: a listener needs a certificate and a timeout; no data port
    /// at all is refused. The files are read when the listener starts (and
    /// at each reload), where their errors name the key and the file.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.to_owned(),
            })
        };
        let tls = &self.tls;
        if self.api_gateway.listen.is_none() && tls.listen.is_none() {
            return invalid(
                "api_gateway.listen",
                "is empty and so is tls.listen: no data port would serve",
            );
        }
        if tls.listen.is_some() && tls.certificate.is_empty() {
            return invalid(
                "tls.certificate",
                "a TLS listener needs at least one [[tls.certificate]]",
            );
        }
        if tls.handshake_timeout_ms == 0 {
            return invalid("tls.handshake_timeout_ms", "must be above 0");
        }
        Ok(())
    }

    /// Every pool: servers, timeouts, health path, and a fallback that
    /// exists and leads to no cycle.
    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        for (name, u) in self.upstream.all() {
            if u.servers.is_empty() {
                return invalid(
                    format!("upstream.{name}.servers"),
                    "at least one server is required",
                );
            }
            for (key, v) in [
                ("connect_timeout_ms", u.connect_timeout_ms),
                ("response_timeout_ms", u.response_timeout_ms),
                ("resolve_interval_ms", u.resolve_interval_ms),
            ] {
                if v == 0 {
                    return invalid(format!("upstream.{name}.{key}"), "must be above 0");
                }
            }
            if u.error_rate_threshold
                .is_some_and(|r| !(0.0..=1.0).contains(&r))
            {
                return invalid(
                    format!("upstream.{name}.error_rate_threshold"),
                    "must be between 0.0 and 1.0",
                );
            }
            if !u.health_path.starts_with('/') {
                return invalid(format!("upstream.{name}.health_path"), "must start with /");
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return invalid(
                    format!("upstream.{name}"),
                    "a pool name is letters, digits, `_` and `-`",
                );
            }
        }
        let pools = self.upstream.all();
        let fallback_of = |name: &str| {
            pools
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, u)| u.fallback.as_deref())
        };
        for (name, u) in &pools {
            let Some(f) = u.fallback.as_deref() else {
                continue;
            };
            let key = format!("upstream.{name}.fallback");
            if !pools.iter().any(|(n, _)| *n == f) {
                return invalid(key, &format!("no [upstream.{f}]"));
            }
            // Follow the chain: back to `name` is a cycle.
            let mut at = Some(f);
            for _ in 0..pools.len() {
                match at {
                    Some(n) if n == *name => {
                        return invalid(key, &format!("{name} → {f} → … leads back to {name}"))
                    }
                    Some(n) => at = fallback_of(n),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Every route: a unique name, an existing pool, a host, a prefix and
    /// methods that can match.
    fn validate_routes(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| Err(ConfigError::Invalid { key, message });
        let pools = self.upstream.all();
        for (i, r) in self.route.iter().enumerate() {
            let at = |k: &str| format!("route[{i}].{k}");
            if r.name.is_empty() {
                return invalid(at("name"), "must not be empty".into());
            }
            if self.route[..i].iter().any(|o| o.name == r.name) {
                return invalid(at("name"), format!("{:?} names another route too", r.name));
            }
            if !pools.iter().any(|(n, _)| *n == r.upstream) {
                return invalid(at("upstream"), format!("no [upstream.{}]", r.upstream));
            }
            if let Some(h) = &r.host {
                let name = h.strip_prefix("*.").unwrap_or(h);
                let ok = !name.is_empty()
                    && name.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    });
                if !ok {
                    return invalid(at("host"), format!("{h:?}: give NAME or *.SUFFIX"));
                }
            }
            if !r.path_prefix.starts_with('/') {
                return invalid(at("path_prefix"), "must start with /".into());
            }
            if let Some(m) = r
                .methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-'))
            {
                return invalid(at("methods"), format!("{m:?} is not a method (uppercase)"));
            }
        }
        Ok(())
    }

    /// The data cores: as configured, else the container's CPUs as
    /// [`CpuBudget::default_cores`] chooses them; never more than the CPU
    /// quota's whole CPUs.
    pub fn data_cores(&self, budget: &CpuBudget) -> Vec<usize> {
        let mut cores = if self.api_gateway.cores.is_empty() {
            budget.default_cores()
        } else {
            self.api_gateway.cores.clone()
        };
        if let Some(n) = budget.whole_cpus() {
            cores.truncate(n);
        }
        cores
    }
}

/// The ids of the cores this process may run on.
pub(super) fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map_or_else(|| vec![0], |ids| ids.into_iter().map(|c| c.id).collect())
}

//! A config as files: the main file, then the drop-ins its `[include]
//! files` names (globs relative to its folder, `*` in the file name),
//! merged over it in name order — a table key by key, any other value
//! replaced — so an operator can keep a runbook's snippet (`[security]`)
//! in a ConfigMap key of its own. Each value's file is remembered, for
//! errors and `GET /admin/config`.
//!
//! A drop-in may end its lines with the runbook's own shorthand, a line
//! `...` ("and the rest as it was"): its patches write
//! `"[api_gateway]\nenable_dpdk = false\n..."`. In a drop-in the rest
//! *is* as it was — the main file holds it — so such a line is read as
//! nothing. The main file gets no such reading: there it would hide a
//! truncated config.
//!
//! A file also must say where traffic goes: a config whose pools that
//! take traffic (`[upstream.primary]` without routes, every pool a route
//! names) have no `servers` written in any of its files is refused, so a
//! patch holding one section never sends every request to the built-in
//! default address.

use crate::config::{Config, ConfigError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Most drop-in files one config may include.
const MAX_INCLUDES: usize = 64;

/// A config read from its files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// The files read, main file first.
    pub files: Vec<PathBuf>,
    /// Dotted keys (leaves) set by a drop-in, and its file.
    pub from_drop_ins: BTreeMap<String, PathBuf>,
    /// The pools whose `servers` the files write (the others have the
    /// built-in default).
    pub servers_written: Vec<String>,
}

impl Loaded {
    /// Comment lines naming the file of every value a drop-in set, for
    /// the TOML `GET /admin/config` shows.
    pub fn provenance(&self) -> String {
        let mut out = String::new();
        let main = self.files.first().map(|p| p.display().to_string());
        if let Some(main) = main {
            out.push_str(&format!("# main file: {main}\n"));
        }
        for (key, file) in &self.from_drop_ins {
            out.push_str(&format!("# {key}: from {}\n", file.display()));
        }
        out
    }
}

/// Reads `path` and its drop-ins, merges, parses and validates them, and
/// checks that every pool taking traffic names its servers.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let main = read_table(path, Role::Main)?;
    let drop_ins = include_list(path, &main)?;
    let mut merged = main;
    let mut from_drop_ins = BTreeMap::new();
    let mut files = vec![path.to_path_buf()];
    for file in drop_ins {
        let table = read_table(&file, Role::DropIn)?;
        for key in leaves("", &table) {
            from_drop_ins.insert(key, file.clone());
        }
        merge(&mut merged, table);
        files.push(file);
    }
    let in_file = |key: &str| {
        from_drop_ins
            .iter()
            .find(|(k, _)| {
                key == k.as_str()
                    || key.starts_with(&format!("{k}."))
                    || k.starts_with(&format!("{key}."))
            })
            .map(|(_, f)| f.clone())
    };
    let text = if files.len() == 1 {
        read_text(path)?
    } else {
        toml::to_string(&merged).map_err(|e| ConfigError::Toml(e.to_string()))?
    };
    let config = Config::parse(&text).map_err(|e| with_file(e, &in_file))?;
    let servers_written: Vec<String> = merged
        .get("upstream")
        .and_then(|u| u.as_table())
        .map(|u| {
            u.iter()
                .filter(|(_, p)| p.get("servers").is_some())
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    traffic_pools_written(&config, &servers_written).map_err(|e| with_file(e, &in_file))?;
    Ok(Loaded {
        config,
        files,
        from_drop_ins,
        servers_written,
    })
}

/// The bytes of the main file and of every drop-in it names now, with
/// their names: what a file watch compares to see a change in any.
pub fn fingerprint(path: &Path) -> Vec<u8> {
    let mut out = std::fs::read(path).unwrap_or_default();
    let drop_ins = read_table(path, Role::Main)
        .and_then(|main| include_list(path, &main))
        .unwrap_or_default();
    for file in drop_ins {
        out.extend_from_slice(file.to_string_lossy().as_bytes());
        out.push(0);
        out.extend(std::fs::read(&file).unwrap_or_default());
    }
    out
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Which part of a config a file is.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Main,
    DropIn,
}

/// The runbook's "and the rest as it was".
const ELLIPSIS: &str = "...";

/// One file as a TOML table; a syntax error names the file. In a drop-in,
/// lines that are only `...` are dropped first (module docs).
fn read_table(path: &Path, role: Role) -> Result<toml::Table, ConfigError> {
    let mut text = read_text(path)?;
    if role == Role::DropIn && text.lines().any(|l| l.trim() == ELLIPSIS) {
        // Blank lines keep the line numbers of errors.
        text = text
            .lines()
            .map(|l| if l.trim() == ELLIPSIS { "" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
    }
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text.get(..s.start).unwrap_or(&text).lines().count().max(1));
        let at = line.map_or(String::new(), |l| format!(" (line {l})"));
        ConfigError::Toml(format!(
            "{}: {}{at}",
            path.display(),
            e.message().replace('\n', "; ")
        ))
    })
}

/// The drop-ins `[include] files` names, each glob's matches in name
/// order, relative to the main file's folder.
fn include_list(path: &Path, main: &toml::Table) -> Result<Vec<PathBuf>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "include.files".into(),
        message,
    };
    let Some(files) = main.get("include").and_then(|i| i.get("files")) else {
        return Ok(Vec::new());
    };
    let patterns = files
        .as_array()
        .ok_or_else(|| invalid("must be an array of paths".into()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for p in patterns {
        let p = p
            .as_str()
            .ok_or_else(|| invalid("must be an array of paths".into()))?;
        let full = base.join(p);
        let name = full
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("{p:?} names no file")))?;
        if !name.contains('*') {
            out.push(full.clone());
            continue;
        }
        let dir = full.parent().unwrap_or(base);
        let mut matched: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        !n.starts_with('.')
                            && ultragate_dataplane::glob::matches(name.as_bytes(), n.as_bytes())
                    })
                })
                .filter(|f| f.is_file())
                .collect(),
            // A folder not there yet (an optional ConfigMap key): nothing.
            Err(_) => Vec::new(),
        };
        matched.sort();
        out.extend(matched);
    }
    if out.len() > MAX_INCLUDES {
        return Err(invalid(format!("more than {MAX_INCLUDES} files")));
    }
    if out.iter().any(|f| f == path) {
        return Err(invalid("includes the main file itself".into()));
    }
    Ok(out)
}

/// Merges `over` into `base`: tables key by key, other values replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The dotted keys of a table's leaves (arrays are leaves).
fn leaves(prefix: &str, t: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => out.extend(leaves(&key, inner)),
            _ => out.push(key),
        }
    }
    out
}

/// The error, naming the drop-in its key came from.
fn with_file(e: ConfigError, in_file: &dyn Fn(&str) -> Option<PathBuf>) -> ConfigError {
    match e {
        ConfigError::Syntax { key, message } | ConfigError::Invalid { key, message }
            if in_file(&key).is_some() =>
        {
            let file = in_file(&key).unwrap_or_default();
            ConfigError::Invalid {
                message: format!("{message} (in {})", file.display()),
                key,
            }
        }
        e => e,
    }
}

/// Every pool that takes traffic names its servers in the files.
fn traffic_pools_written(cfg: &Config, written: &[String]) -> Result<(), ConfigError> {
    let written = |pool: &str| written.iter().any(|w| w == pool);
    let mut taking: Vec<&str> = cfg.route.iter().map(|r| r.upstream.as_str()).collect();
    if cfg.route.is_empty() {
        taking.push("primary");
    }
    match taking.into_iter().find(|p| !written(p)) {
        Some(pool) => Err(ConfigError::Invalid {
            key: format!("upstream.{pool}.servers"),
            message: "is not written in the config: a pool that takes traffic must name its servers \
                      (a file holding only another section would send every request to the default address)"
                .into(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ultragate-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("conf.d")).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn a_file_with_only_the_runbooks_security_snippet_is_refused_naming_the_key() {
        let d = dir(&[(
            "gw.toml",
            "[security]\nenable_audit_logging = true\nlog_all_requests = true\n",
        )]);
        let err = load(&d.join("gw.toml")).unwrap_err().to_string();
        assert!(err.contains("`upstream.primary.servers`"), "{err}");
        // A route's pool too.
        let d = dir(&[(
            "gw.toml",
            "[upstream.primary]\nservers = [\"127.0.0.1:1\"]\n[upstream.api]\nfallback = \"fallback\"\n[[route]]\nname = \"api\"\nupstream = \"api\"\n",
        )]);
        let err = load(&d.join("gw.toml")).unwrap_err().to_string();
        assert!(err.contains("`upstream.api.servers`"), "{err}");
    }

    #[test]
    fn drop_ins_merge_in_name_order_and_errors_name_their_file() {
        let d = dir(&[
            (
                "gw.toml",
                "[include]\nfiles = [\"conf.d/*.toml\"]\n[upstream.primary]\nservers = [\"127.0.0.1:9\"]\n[security]\nenable_audit_logging = false\n",
            ),
            ("conf.d/10-security.toml", "[security]\nenable_audit_logging = true\nlog_all_requests = true\n"),
            ("conf.d/20-cache.toml", "[cache]\nmax_bytes = 1048576\nmax_object_bytes = 65536\n"),
            ("conf.d/notes.txt", "not toml"),
        ]);
        let loaded = load(&d.join("gw.toml")).unwrap();
        let cfg = &loaded.config;
        assert!(cfg.security.enable_audit_logging && cfg.security.log_all_requests);
        assert_eq!(cfg.cache.max_bytes, 1 << 20);
        assert_eq!(
            cfg.upstream.primary.servers.len(),
            1,
            "the main file's servers stay"
        );
        assert_eq!(loaded.files.len(), 3);
        let p = loaded.provenance();
        assert!(
            p.contains("# security.log_all_requests: from ") && p.contains("10-security.toml"),
            "{p}"
        );
        std::fs::write(
            d.join("conf.d/30-bad.toml"),
            "[control]\nerror_rate_threshold = 7.0\n",
        )
        .unwrap();
        let err = load(&d.join("gw.toml")).unwrap_err().to_string();
        assert!(
            err.contains("`control.error_rate_threshold`") && err.contains("30-bad.toml"),
            "{err}"
        );
        std::fs::write(d.join("conf.d/30-bad.toml"), "[control\n").unwrap();
        let err = load(&d.join("gw.toml")).unwrap_err().to_string();
        assert!(
            err.contains("30-bad.toml") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn the_runbooks_ellipsis_in_a_drop_in_means_the_rest_as_it_was() {
        let d = dir(&[
            (
                "gw.toml",
                "[include]\nfiles = [\"*.conf\"]\n[upstream.primary]\nservers = [\"127.0.0.1:9\"]\n[api_gateway]\nenable_dpdk = true\n",
            ),
            // The runbook's ConfigMap patch, byte for byte.
            ("ultra-cpp.conf", "[api_gateway]\nenable_dpdk = false\n..."),
        ]);
        let loaded = load(&d.join("gw.toml")).unwrap();
        assert!(!loaded.config.api_gateway.enable_dpdk);
        assert_eq!(loaded.config.upstream.primary.servers.len(), 1);
        // Its security step too.
        std::fs::write(
            d.join("ultra-cpp.conf"),
            "[security]\nenable_audit_logging = true\nlog_all_requests = true\n...",
        )
        .unwrap();
        let loaded = load(&d.join("gw.toml")).unwrap();
        assert!(loaded.config.security.log_all_requests);
        assert!(
            loaded.config.api_gateway.enable_dpdk,
            "the main file's value is back"
        );
        // Errors after the ellipsis still name their line.
        std::fs::write(d.join("ultra-cpp.conf"), "...\n[control\n").unwrap();
        let err = load(&d.join("gw.toml")).unwrap_err().to_string();
        assert!(
            err.contains("ultra-cpp.conf") && err.contains("line 2"),
            "{err}"
        );
        // The main file gets no such reading.
        std::fs::write(
            d.join("gw.toml"),
            "[upstream.primary]\nservers = [\"127.0.0.1:9\"]\n...\n",
        )
        .unwrap();
        assert!(load(&d.join("gw.toml")).is_err());
    }
}

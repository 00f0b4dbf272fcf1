//! Server names to addresses, off the data path: each `HOST:PORT` of a
//! pool becomes every address of HOST (an IP literal is itself; a name is
//! looked up in `[resolver] hosts_file` first when one is set, then, with
//! `[resolver] system`, by the system resolver, which reads `/etc/hosts`
//! and asks DNS). A name that
//! does not resolve leaves the pool with the addresses of the others and
//! a reason, and is tried again at the next resolution.

use crate::config::{ResolverSection, ServerAddr};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

/// What resolving one pool's servers gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Every address, in the order of the servers, without repeats.
    pub addrs: Vec<SocketAddr>,
    /// The names that did not resolve, and why, readable.
    pub failed: Option<String>,
}

/// Resolves `servers` the way `[resolver]` says.
pub fn resolve(servers: &[ServerAddr], how: &ResolverSection) -> Resolved {
    let hosts = how
        .hosts_file
        .as_deref()
        .map(|p: &Path| std::fs::read_to_string(p).unwrap_or_default());
    let mut out = Resolved::default();
    let mut failed = Vec::new();
    for s in servers {
        match resolve_one(s, hosts.as_deref(), how.system) {
            Ok(addrs) => {
                for a in addrs {
                    if !out.addrs.contains(&a) {
                        out.addrs.push(a);
                    }
                }
            }
            Err(why) => failed.push(format!("{}: {why}", s.as_str())),
        }
    }
    out.failed = (!failed.is_empty()).then(|| failed.join("; "));
    out
}

/// Whether any of `servers` is a name rather than an address.
pub fn has_names(servers: &[ServerAddr]) -> bool {
    servers
        .iter()
        .any(|s| s.host_port().0.parse::<IpAddr>().is_err())
}

fn resolve_one(
    server: &ServerAddr,
    hosts: Option<&str>,
    system: bool,
) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = server.host_port();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(text) = hosts {
        let found = in_hosts(text, host);
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    if !system {
        return Err("not in [resolver] hosts_file, and the system resolver is off".into());
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(addrs)
}

/// The addresses `name` has in a hosts file, in file order.
fn in_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(list: &[&str]) -> Vec<ServerAddr> {
        list.iter()
            .map(|s| ServerAddr::try_from(s.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn addresses_names_and_a_hosts_file() {
        let dir = std::env::temp_dir().join(format!("ug-hosts-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# pods of api\n127.0.0.11 api.test\n127.0.0.12 api.test other # two\n::1 six.test\n",
        )
        .unwrap();
        // Only the file: no lookup leaves this machine.
        let how = ResolverSection {
            hosts_file: Some(dir.clone()),
            system: false,
        };
        let r = resolve(
            &servers(&[
                "api.test:80",
                "127.0.0.9:81",
                "[::1]:82",
                "API.TEST:80",
                "six.test:83",
            ]),
            &how,
        );
        let want: Vec<SocketAddr> = [
            "127.0.0.11:80",
            "127.0.0.12:80",
            "127.0.0.9:81",
            "[::1]:82",
            "[::1]:83",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(r.addrs, want, "every address, once");
        assert_eq!(r.failed, None);
        let r = resolve(&servers(&["missing.test:80", "127.0.0.9:81"]), &how);
        assert_eq!(r.addrs, ["127.0.0.9:81".parse().unwrap()]);
        assert!(r.failed.unwrap().starts_with("missing.test:80: "));
        let _ = std::fs::remove_file(&dir);
        assert!(has_names(&servers(&["127.0.0.1:1", "api:80"])));
        assert!(!has_names(&servers(&["127.0.0.1:1", "[::1]:80"])));
    }
}

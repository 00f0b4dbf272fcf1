//! Routes: which upstream pool a request goes to, by its host, path and
//! method (`[[route]]` in the config). The longest matching host wins
//! (an exact name over a `*.suffix` wildcard, a longer suffix over a
//! shorter one, either over a route for any host), then the longest path
//! prefix, then the order of the config. Without configured routes every
//! request takes the default route to the primary pool.

use std::sync::Arc;
use std::time::Duration;

/// Which hosts a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Any host (no `host` key).
    Any,
    /// This host exactly (lowercase, no port).
    Exact(String),
    /// Hosts ending in this suffix, its leading dot kept (`*.example.com`
    /// is `.example.com`, which `example.com` itself does not match).
    Suffix(String),
}

impl HostMatch {
    /// Parses the config's `host`: `NAME` or `*.SUFFIX`.
    pub fn parse(host: &str) -> HostMatch {
        let host = host.to_ascii_lowercase();
        match host.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
            None => HostMatch::Exact(host),
        }
    }

    /// How specific the match of `host` is: `None` when it does not
    /// match; more specific matches rank higher.
    fn rank(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            HostMatch::Any => Some((0, 0)),
            HostMatch::Exact(h) => (h == host).then_some((2, h.len())),
            HostMatch::Suffix(s) => host.ends_with(s.as_str()).then_some((1, s.len())),
        }
    }
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Its name, for `/admin/route`, events, metrics and the access log.
    pub name: Arc<str>,
    /// The hosts it takes.
    pub host: HostMatch,
    /// The path prefix it takes (`/` for every path).
    pub path_prefix: String,
    /// The methods it takes, uppercase; empty for every method.
    pub methods: Vec<String>,
    /// Its upstream pool's name (`upstream = "NAME"`).
    pub upstream: Arc<str>,
    /// The index of that pool.
    pub pool: usize,
    /// Whether its responses are looked up in and stored to the cache.
    pub cache: bool,
    /// The freshness its stored responses get, whatever they say (a
    /// response without any becomes storable; `no-store`, `private`,
    /// `Set-Cookie` and the like still keep one out).
    pub cache_ttl: Option<Duration>,
}

/// The routes of one configuration.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<RouteSpec>,
    /// The routes are the implicit default (no `[[route]]` configured).
    implicit: bool,
}

impl Default for Routes {
    /// The default route alone: every request to the primary pool, cached.
    fn default() -> Self {
        Routes {
            routes: vec![RouteSpec {
                name: "default".into(),
                host: HostMatch::Any,
                path_prefix: "/".into(),
                methods: Vec::new(),
                upstream: Arc::from("primary"),
                pool: 0,
                cache: true,
                cache_ttl: None,
            }],
            implicit: true,
        }
    }
}

impl Routes {
    /// Configured routes, in config order (the default route when there
    /// are none).
    pub fn new(routes: Vec<RouteSpec>) -> Routes {
        if routes.is_empty() {
            return Routes::default();
        }
        Routes {
            routes,
            implicit: false,
        }
    }

    /// The route of a request for `path` by `method`, whose host (the
    /// `Host` field or the target's authority) is `host`; `None` when no
    /// route takes it.
    pub fn find(&self, host: &[u8], path: &str, method: &str) -> Option<usize> {
        if self.implicit {
            return Some(0);
        }
        let host = normalize_host(host);
        // ((host rank, prefix length), index) of the best so far.
        let mut best: Option<(Specificity, usize)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let Some(rank) = r.host.rank(&host) else {
                continue;
            };
            if !path.starts_with(r.path_prefix.as_str())
                || !(r.methods.is_empty() || r.methods.iter().any(|m| m == method))
            {
                continue;
            }
            // Strictly better only: the first of equals wins.
            let key = (rank, r.path_prefix.len());
            if best.is_none_or(|(b, _)| key > b) {
                best = Some((key, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Route `i`.
    pub fn get(&self, i: usize) -> Option<&RouteSpec> {
        self.routes.get(i)
    }

    /// Every route, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter()
    }

    /// Whether the routes are the implicit default.
    pub fn is_implicit(&self) -> bool {
        self.implicit
    }
}

/// How specific a match is: host rank (exact 2, wildcard 1, any 0) with
/// the matched host's length, then the prefix's length.
type Specificity = ((u8, usize), usize);

/// The host as routes see it: lowercase, without a port or a trailing dot.
fn normalize_host(host: &[u8]) -> String {
    let text = String::from_utf8_lossy(host);
    let name = match text.strip_prefix('[') {
        // An IPv6 literal: up to its closing bracket.
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => text.split(':').next().unwrap_or(""),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str, methods: &[&str]) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            host: host.map_or(HostMatch::Any, HostMatch::parse),
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            upstream: Arc::from("primary"),
            pool: 0,
            cache: true,
            cache_ttl: None,
        }
    }

    fn name<'a>(routes: &'a Routes, host: &str, path: &str, method: &str) -> Option<&'a str> {
        routes
            .find(host.as_bytes(), path, method)
            .and_then(|i| routes.get(i))
            .map(|r| &*r.name)
    }

    #[test]
    fn without_routes_everything_takes_the_default() {
        let routes = Routes::new(Vec::new());
        assert!(routes.is_implicit());
        assert_eq!(name(&routes, "any", "/x", "DELETE"), Some("default"));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_then_longest_prefix() {
        let routes = Routes::new(vec![
            route("any", None, "/", &[]),
            route("wild", Some("*.example.com"), "/", &[]),
            route("api", Some("api.example.com"), "/", &[]),
            route("api-v1", Some("api.example.com"), "/v1/", &[]),
            route("deep-wild", Some("*.eu.example.com"), "/", &[]),
        ]);
        assert_eq!(
            name(&routes, "api.example.com", "/v1/users", "GET"),
            Some("api-v1")
        );
        assert_eq!(
            name(&routes, "API.Example.com:8080", "/v2", "GET"),
            Some("api")
        );
        assert_eq!(name(&routes, "www.example.com", "/", "GET"), Some("wild"));
        assert_eq!(
            name(&routes, "x.eu.example.com", "/", "GET"),
            Some("deep-wild"),
            "the longer suffix"
        );
        assert_eq!(
            name(&routes, "example.com", "/", "GET"),
            Some("any"),
            "*.example.com is not example.com"
        );
        assert_eq!(name(&routes, "example.com.", "/", "GET"), Some("any"));
    }

    #[test]
    fn methods_ties_and_no_match() {
        let routes = Routes::new(vec![
            route("writes", None, "/api/", &["POST", "PUT"]),
            route("first", None, "/api/", &[]),
            route("second", None, "/api/", &[]),
        ]);
        assert_eq!(name(&routes, "h", "/api/x", "POST"), Some("writes"));
        assert_eq!(
            name(&routes, "h", "/api/x", "GET"),
            Some("first"),
            "config order breaks ties"
        );
        assert_eq!(name(&routes, "h", "/other", "GET"), None, "no route");
        let assets = Routes::new(vec![route("assets", None, "/assets/", &[])]);
        assert_eq!(
            name(&assets, "h", "/assets", "GET"),
            None,
            "a prefix, not a segment"
        );
    }

    #[test]
    fn odd_hosts_do_not_panic() {
        let routes = Routes::new(vec![route("v6", Some("::1"), "/", &[])]);
        for host in ["[::1]:80", "[", "]", ":", "", "\u{ff}:1", "[::1"] {
            let _ = routes.find(host.as_bytes(), "/", "GET");
        }
        assert_eq!(name(&routes, "[::1]:80", "/", "GET"), Some("v6"));
    }
}

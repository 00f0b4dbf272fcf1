//! Routes: which upstream pool a request goes to, by its host, path and
//! method (`[[route]]` in the config). The longest matching host wins
//! (an exact name over a `*.suffix` wildcard, a longer suffix over a
//! shorter one, either over a route for any host), then the longest path
//! prefix, then the order of the config. Without configured routes every
//! request takes the default route to the primary pool.

#![forbid(unsafe_code)]

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
    /// The freshness its stored responses get, whatever they say, for
    /// the content types it names.
    pub cache_ttl: Option<TtlOverride>,
}

/// A route's `cache_ttl_override_s`: the freshness its stored responses
/// get, whatever they say (a response without any becomes storable;
/// `no-store`, `private`, `Set-Cookie` and the like still keep one out).
/// Only for the content types it names, like Cloudflare's cache
/// deception armour: a page the origin served in place of an asset (a
/// path it read differently) is no asset type, and keeps its own rules.
#[derive(Debug, Clone)]
pub struct TtlOverride {
    /// The freshness.
    pub ttl: Duration,
    /// Media types (`text/css`) or whole top-level types (`image/*`),
    /// lowercase.
    pub content_types: Arc<[Box<str>]>,
}

/// `cache_ttl_override_types`' default: static assets, never HTML or an
/// API's JSON.
pub const ASSET_TYPES: [&str; 8] = [
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/wasm",
    "image/*",
    "font/*",
    "audio/*",
    "video/*",
];

impl TtlOverride {
    /// The override of `ttl` for `content_types`.
    pub fn new<S: AsRef<str>>(ttl: Duration, content_types: &[S]) -> TtlOverride {
        TtlOverride {
            ttl,
            content_types: content_types
                .iter()
                .map(|t| t.as_ref().trim().to_ascii_lowercase().into_boxed_str())
                .collect(),
        }
    }

    /// Whether a response of `content_type` (the field's value) gets it;
    /// one without a `Content-Type` never does.
    pub fn applies_to(&self, content_type: Option<&[u8]>) -> bool {
        let Some(v) = content_type else {
            return false;
        };
        let media = v.split(|&b| b == b';').next().unwrap_or_default();
        let media = crate::http::trim(media);
        self.content_types
            .iter()
            .any(|t| match t.strip_suffix('*') {
                Some(top) => {
                    media.len() > top.len()
                        && media[..top.len()].eq_ignore_ascii_case(top.as_bytes())
                }
                None => media.eq_ignore_ascii_case(t.as_bytes()),
            })
    }
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
    /// `Host` field or the target's authority) is `host`.
    ///
    /// The most specific host and path prefix choose; among routes as
    /// specific as that, the first (in config order) whose methods take
    /// `method`. When none of them does, the request is refused with
    /// their methods as `Allow`: a less specific route (a catch-all) never
    /// takes a method the specific one does not allow.
    pub fn find(&self, host: &[u8], path: &str, method: &str) -> RouteMatch {
        if self.implicit {
            return match self.routes.first() {
                Some(r) if r.allows(method) => RouteMatch::Route(0),
                Some(r) => RouteMatch::MethodNotAllowed(r.allowed().collect::<Vec<_>>().join(", ")),
                None => RouteMatch::None,
            };
        }
        let host = normalize_host(host);
        // (host rank, prefix length) of the most specific match.
        let mut best: Option<Specificity> = None;
        for r in &self.routes {
            let Some(rank) = r.host.rank(&host) else {
                continue;
            };
            if !path.starts_with(r.path_prefix.as_str()) {
                continue;
            }
            let key = (rank, r.path_prefix.len());
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        let Some(best) = best else {
            return RouteMatch::None;
        };
        let mut tied = self.routes.iter().enumerate().filter(|(_, r)| {
            r.host.rank(&host) == Some(best.0)
                && r.path_prefix.len() == best.1
                && path.starts_with(r.path_prefix.as_str())
        });
        if let Some((i, _)) = tied.clone().find(|(_, r)| r.allows(method)) {
            return RouteMatch::Route(i);
        }
        let mut allow: Vec<&str> = Vec::new();
        for (_, r) in &mut tied {
            for m in r.allowed() {
                if !allow.contains(&m) {
                    allow.push(m);
                }
            }
        }
        RouteMatch::MethodNotAllowed(allow.join(", "))
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

/// What [`Routes::find`] found for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// The route that takes it, by index.
    Route(usize),
    /// The most specific routes for its host and path do not take its
    /// method: 405, with these methods as `Allow`.
    MethodNotAllowed(String),
    /// No route takes its host and path: 404.
    None,
}

/// The methods a route with no `methods` takes: every one but TRACE,
/// which echoes the request (cookies included) and is taken only where a
/// route lists it.
const ANY_METHOD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

impl RouteSpec {
    /// Whether the route takes `method`: one of its `methods` (`HEAD`
    /// with `GET`, as nginx's `limit_except` does), or any but TRACE when
    /// it lists none (an extension method included).
    pub fn allows(&self, method: &str) -> bool {
        if self.methods.is_empty() {
            return method != "TRACE";
        }
        self.methods
            .iter()
            .any(|m| m == method || (method == "HEAD" && m == "GET"))
    }

    /// The methods it takes, for `Allow`.
    fn allowed(&self) -> impl Iterator<Item = &str> + Clone {
        let listed = self.methods.iter().map(String::as_str);
        let head =
            self.methods.iter().any(|m| m == "GET") && !self.methods.iter().any(|m| m == "HEAD");
        let any = self
            .methods
            .is_empty()
            .then_some(ANY_METHOD.iter().copied());
        listed
            .chain(head.then_some("HEAD"))
            .chain(any.into_iter().flatten())
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
        match routes.find(host.as_bytes(), path, method) {
            RouteMatch::Route(i) => routes.get(i).map(|r| &*r.name),
            _ => None,
        }
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
        assert_eq!(
            routes.find(b"h", "/api/x", "TRACE"),
            RouteMatch::MethodNotAllowed("POST, PUT, GET, HEAD, DELETE, PATCH, OPTIONS".into()),
            "TRACE only where a route lists it"
        );
        let assets = Routes::new(vec![route("assets", None, "/assets/", &[])]);
        assert_eq!(
            name(&assets, "h", "/assets", "GET"),
            None,
            "a prefix, not a segment"
        );
    }

    #[test]
    fn a_catch_all_does_not_take_a_method_the_specific_route_refuses() {
        let routes = Routes::new(vec![
            route("everything", None, "/", &[]),
            route("read-only", None, "/assets/", &["GET"]),
            route("echo", None, "/debug/", &["TRACE"]),
        ]);
        assert_eq!(
            name(&routes, "h", "/assets/a.css", "HEAD"),
            Some("read-only")
        );
        assert_eq!(
            routes.find(b"h", "/assets/a.css", "DELETE"),
            RouteMatch::MethodNotAllowed("GET, HEAD".into())
        );
        assert_eq!(name(&routes, "h", "/other", "DELETE"), Some("everything"));
        let same_length = Routes::new(vec![
            route("norm", None, "/norm", &["GET"]),
            route("echo", None, "/echo", &[]),
        ]);
        assert_eq!(name(&same_length, "h", "/echo", "POST"), Some("echo"));
        assert_eq!(name(&routes, "h", "/debug/x", "TRACE"), Some("echo"));
        assert_eq!(
            routes.find(b"h", "/x", "TRACE"),
            RouteMatch::MethodNotAllowed("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS".into())
        );
    }

    #[test]
    fn a_ttl_override_takes_the_types_it_names() {
        let t = TtlOverride::new(Duration::from_secs(1), &ASSET_TYPES);
        for ct in [
            "text/css",
            "Image/PNG",
            "font/woff2",
            "text/javascript; charset=utf-8",
        ] {
            assert!(t.applies_to(Some(ct.as_bytes())), "{ct}");
        }
        for ct in ["text/html", "application/json", "image/", "text/cssx", ""] {
            assert!(!t.applies_to(Some(ct.as_bytes())), "{ct}");
        }
        assert!(!t.applies_to(None));
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

//! `[[route]]`: which requests go to which pool, and how they are cached.

use super::*;

/// One `[[route]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Its name, unique: `POST /admin/route` and events use it.
    pub name: String,
    /// `NAME` or `*.SUFFIX`; absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix it takes. Default `/`.
    #[serde(default = "slash")]
    pub path_prefix: String,
    /// The methods it takes; absent: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The `[upstream.NAME]` its requests go to.
    pub upstream: String,
    /// Whether its responses are cached. Default `true`.
    #[serde(default = "yes")]
    pub cache: bool,
    /// The freshness, in seconds, of what it stores, whatever the
    /// responses say (one without any becomes storable, unless its
    /// request carried `Cookie` or `Authorization`; `no-store`, `private`
    /// and `Set-Cookie` still keep a response out), for the content types
    /// of `cache_ttl_override_types`. Default none: the responses' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_override_s: Option<u64>,
    /// The `Content-Type`s `cache_ttl_override_s` applies to: media types
    /// (`text/css`) or top-level types (`image/*`). Default: static
    /// assets (CSS, JavaScript, WebAssembly, images, fonts, audio,
    /// video), never HTML or JSON.
    #[serde(default = "asset_types")]
    pub cache_ttl_override_types: Vec<String>,
}

pub(super) fn asset_types() -> Vec<String> {
    ultragate_dataplane::route::ASSET_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect()
}

pub(super) fn slash() -> String {
    "/".into()
}

pub(super) fn yes() -> bool {
    true
}

//! The seam between the data port and the control plane's admin handlers.
//!
//! The engine recognises `/admin/*` requests from loopback peers and hands
//! them out as [`AdminRequest`]s; the control plane implements
//! [`AdminService`], so the data plane never depends on it.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// An admin call received on the data port.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    /// The method token, e.g. `POST`.
    pub method: &'static str,
    /// The request target as sent, e.g. `/admin/cache/clear`.
    pub target: String,
    /// The peer's address, for the audit trail.
    pub peer: std::net::IpAddr,
    /// The `Authorization` field, for bearer tokens.
    pub authorization: Option<Bytes>,
    /// The `Host` field (or the target's authority).
    pub host: Option<Bytes>,
    /// It came from a web page: an `Origin` field, or `Sec-Fetch-Site`
    /// other than `none` (what a browser adds; curl and scripts do not).
    pub from_browser: bool,
    /// It could be a cross-site "simple" request: it has a `Content-Type`
    /// other than `application/json` (a form's or `text/plain`), and no
    /// `X-Ultragate-Admin` field (a custom field a page cannot send
    /// without a CORS preflight, which the admin API never grants).
    pub simple_body: bool,
    /// The request body, fully read.
    pub body: Bytes,
}

/// An admin service's answer, encoded by the engine.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The response body.
    pub body: Bytes,
    /// The methods the path takes, for a 405's `Allow`.
    pub allow: Option<&'static str>,
}

/// Whether a call with these `Origin` and `Sec-Fetch-Site` values came
/// from a web page.
pub fn from_browser(origin: Option<&[u8]>, fetch_site: Option<&[u8]>) -> bool {
    origin.is_some() || fetch_site.is_some_and(|v| !v.eq_ignore_ascii_case(b"none"))
}

/// Whether a call with this `Content-Type` and `X-Ultragate-Admin` could
/// be a page's "simple" request (see [`AdminRequest::simple_body`]).
pub fn simple_body(content_type: Option<&[u8]>, custom: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct.split(|&b| b == b';').next().unwrap_or_default();
    custom.is_none() && !crate::http::trim(media).eq_ignore_ascii_case(b"application/json")
}

/// Answers admin calls; implemented by the control plane.
pub trait AdminService: Send + Sync + 'static {
    /// Handles one admin call.
    fn call(&self, req: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>>;
}

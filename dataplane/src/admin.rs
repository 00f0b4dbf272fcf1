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

/// Answers admin calls; implemented by the control plane.
pub trait AdminService: Send + Sync + 'static {
    /// Handles one admin call.
    fn call(&self, req: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>>;
}

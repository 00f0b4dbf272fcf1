//! The admin call router: one place that answers `/admin/*`, whether the
//! call came in on the admin port or on the data port from loopback.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use ultragate_dataplane::admin::{AdminRequest, AdminResponse, AdminService};
use ultragate_dataplane::status::DataplaneStatus;

/// Answers admin calls from the state the control plane holds.
pub struct Admin {
    status: Arc<DataplaneStatus>,
    /// The running configuration, rendered once at start, for
    /// `GET /admin/config`.
    config_toml: String,
}

impl Admin {
    /// A router over the data plane's status and the running config.
    pub fn new(status: Arc<DataplaneStatus>, config_toml: String) -> Self {
        Self {
            status,
            config_toml,
        }
    }

    fn route(&self, req: &AdminRequest) -> AdminResponse {
        let path = req.target.split('?').next().unwrap_or("");
        match (req.method, path) {
            ("GET", "/admin/config") => AdminResponse {
                status: 200,
                content_type: "application/toml",
                body: Bytes::from(self.config_toml.clone()),
            },
            ("GET", "/admin/ready") => {
                json(200, &serde_json::json!({ "ready": self.status.is_ready() }))
            }
            (_, "/admin/config" | "/admin/ready") => {
                json(405, &serde_json::json!({ "error": "method not allowed" }))
            }
            _ => json(
                404,
                &serde_json::json!({
                    "error": format!("no admin endpoint {path}"),
                    "endpoints": ["GET /admin/config", "GET /admin/ready"],
                }),
            ),
        }
    }
}

/// A JSON admin answer.
pub fn json(status: u16, value: &serde_json::Value) -> AdminResponse {
    AdminResponse {
        status,
        content_type: "application/json",
        body: Bytes::from(value.to_string()),
    }
}

impl AdminService for Admin {
    fn call(&self, req: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse> + Send>> {
        let resp = self.route(&req);
        Box::pin(async move { resp })
    }
}

//! State the control plane publishes and the data cores read through
//! atomics: readiness, and whether a data plane is serving.

use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness as seen by `/health/ready` on both ports.
#[derive(Debug, Default)]
pub struct DataplaneStatus {
    serving: AtomicBool,
    draining: AtomicBool,
}

impl DataplaneStatus {
    /// Marks the data plane as serving (its listeners are bound).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Marks the process as draining: readiness turns red so that load
    /// balancers stop sending new connections.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready: a data plane serves and the process is not draining.
    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

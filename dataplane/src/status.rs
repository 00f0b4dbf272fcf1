//! State the control plane publishes and the data cores read through
//! atomics: readiness, and where upstream traffic goes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Which upstream group takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `[upstream.primary]`.
    Primary,
    /// `[upstream.fallback]`, the Node.js service: the runbook's divert.
    Fallback,
}

impl Route {
    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Fallback => "fallback",
        }
    }
}

/// Readiness and routing, shared by every data core.
#[derive(Debug, Default)]
pub struct DataplaneStatus {
    serving: AtomicBool,
    draining: AtomicBool,
    /// SIGTERM: the process is going away; a drain cannot be undone.
    stopping: AtomicBool,
    fallback: AtomicBool,
    log_requests: AtomicBool,
    backend: AtomicU8,
    /// Why the backend serving was chosen (set when it changes).
    reason: Mutex<String>,
    /// Whether the config asks for DPDK (`api_gateway.enable_dpdk`).
    dpdk_wanted: AtomicBool,
    /// Test builds: a core asked to stall (index + 1 in the high 16
    /// bits, milliseconds below).
    #[cfg(feature = "test-hooks")]
    stall: AtomicU64,
    /// Panics contained by a driver (each cost one connection).
    panics: AtomicU64,
    port: Mutex<Option<PortHealth>>,
}

/// The DPDK port as last sampled: link, counters, buffers and hugepages,
/// for `/health` and `/metrics`. Sampled by the data-plane monitor a few
/// times a second, never on the request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortHealth {
    /// The DPDK port id.
    pub port: u16,
    /// Whether the link is up.
    pub link_up: bool,
    /// Link speed in Mbit/s (0: unknown).
    pub speed_mbps: u32,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors, and frames the driver could not queue.
    pub tx_errors: u64,
    /// Packets the port dropped because its receive queue was full.
    pub rx_missed: u64,
    /// Receive-buffer allocation failures: the mempool ran dry.
    pub rx_nombuf: u64,
    /// Free mbufs in the mempool.
    pub mempool_free: u32,
    /// Mbufs in use.
    pub mempool_in_use: u32,
    /// Hugepages reserved (all sizes, from `/proc/meminfo`).
    pub hugepages_total: u64,
    /// Hugepages free.
    pub hugepages_free: u64,
}

impl DataplaneStatus {
    /// Counts a panic a driver contained to one connection.
    pub fn record_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Panics contained so far (`ultragate_panics_total`).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Marks the data plane as serving (its listeners are bound).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Marks the process as draining: readiness turns red so that load
    /// balancers stop sending new connections.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Marks the process as stopping (SIGTERM): draining for good.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
        self.set_draining();
    }

    /// Undoes an operator's drain (readiness green again), unless the
    /// process is stopping; says whether it did.
    pub fn undo_drain(&self) -> bool {
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        self.draining.store(false, Ordering::Release);
        true
    }

    /// Ready: a data plane serves and the process is not draining.
    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Sends new upstream requests to `route`.
    pub fn set_route(&self, route: Route) {
        self.fallback
            .store(route == Route::Fallback, Ordering::Release);
    }

    /// Logs every request (security isolation) or stops.
    pub fn set_log_requests(&self, on: bool) {
        self.log_requests.store(on, Ordering::Relaxed);
    }

    /// Whether every request is logged.
    pub fn log_requests(&self) -> bool {
        self.log_requests.load(Ordering::Relaxed)
    }

    /// Records which data-plane backend serves.
    pub fn set_backend(&self, backend: Backend) {
        self.backend.store(backend as u8, Ordering::Release);
    }

    /// Records why the serving backend was chosen, for `/health`.
    pub fn set_reason(&self, why: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = why.into();
    }

    /// Why the serving backend was chosen.
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records whether the config asks for DPDK.
    pub fn set_dpdk_wanted(&self, wanted: bool) {
        self.dpdk_wanted.store(wanted, Ordering::Relaxed);
    }

    /// Whether the config asks for DPDK: serving on the kernel then is a
    /// degraded state.
    pub fn dpdk_wanted(&self) -> bool {
        self.dpdk_wanted.load(Ordering::Relaxed)
    }

    /// Test builds: asks data core `core` to block its loop for `ms` the
    /// next time it hands over its numbers (a stalled core, for the
    /// heartbeat's test).
    #[cfg(feature = "test-hooks")]
    pub fn stall_core_for_test(&self, core: usize, ms: u64) {
        let v = ((core as u64 + 1) << 48) | (ms & ((1 << 48) - 1));
        self.stall.store(v, Ordering::Relaxed);
    }

    /// Test builds: blocks the calling core when it was asked to stall.
    #[cfg(feature = "test-hooks")]
    pub fn stall_if_asked(&self, core: usize) {
        let v = self.stall.load(Ordering::Relaxed);
        if v >> 48 == core as u64 + 1
            && self
                .stall
                .compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            std::thread::sleep(std::time::Duration::from_millis(v & ((1 << 48) - 1)));
        }
    }

    /// The data-plane backend serving now.
    pub fn backend(&self) -> Backend {
        match self.backend.load(Ordering::Acquire) {
            1 => Backend::Uring,
            2 => Backend::Dpdk,
            _ => Backend::Epoll,
        }
    }

    /// Records the latest sample of the DPDK port (`None`: no DPDK port).
    pub fn set_port(&self, health: Option<PortHealth>) {
        *self.port.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }

    /// The latest sample of the DPDK port, when there is one.
    pub fn port(&self) -> Option<PortHealth> {
        *self.port.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where new upstream requests go.
    pub fn route(&self) -> Route {
        if self.fallback.load(Ordering::Acquire) {
            Route::Fallback
        } else {
            Route::Primary
        }
    }
}

/// A data-plane backend, as `/health` and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    /// Kernel sockets through epoll (tokio).
    Epoll = 0,
    /// Kernel sockets through io_uring.
    Uring = 1,
    /// DPDK poll-mode driver with a userspace TCP stack.
    Dpdk = 2,
}

impl Backend {
    /// Every backend, for metrics that show one series each.
    pub const ALL: [Backend; 3] = [Backend::Epoll, Backend::Uring, Backend::Dpdk];

    /// The name used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Epoll => "epoll",
            Self::Uring => "io_uring",
            Self::Dpdk => "dpdk",
        }
    }
}

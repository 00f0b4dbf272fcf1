//! Which data plane serves: DPDK while its port is healthy, else the
//! kernel backend (io_uring or epoll) on `[api_gateway] listen`. This is
//! the runbook's "DPDK Network Failure" section done by the gateway: when
//! the port's link stays down past `[dpdk] link_down_grace_ms`, or the EAL,
//! hugepages or mempool fail at start, it serves on kernel networking
//! without a restart and says why in the event timeline;
//! `POST /admin/dataplane dpdk` goes back once the link is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ultragate_control::admin::{DataplaneSwitch, SwitchError};
use ultragate_control::executor::events::Event;
use ultragate_control::policy::PortPolicy;
use ultragate_control::supervisor::Supervisor;
pub use ultragate_dataplane::driver::DpdkConfig;
use ultragate_dataplane::driver::{Dataplane, DriverConfig, IoBackend, Shared};
use ultragate_dataplane::status::{Backend, DataplaneStatus};

/// How often the port is sampled.
const SAMPLE: Duration = Duration::from_millis(100);

#[cfg(feature = "dpdk")]
mod port {
    pub use ultragate_dataplane::driver::dpdk::DpdkDataplane as Port;
    use ultragate_dataplane::driver::{DpdkConfig, DriverConfig, Shared};

    /// Starts the DPDK data plane.
    pub fn start(dpdk: &DpdkConfig, cfg: DriverConfig, shared: Shared) -> Result<Port, String> {
        Port::start(dpdk, cfg, shared).map_err(|e| e.to_string())
    }
}

#[cfg(not(feature = "dpdk"))]
mod port {
    use ultragate_dataplane::driver::{DriverConfig, Shared};
    use ultragate_dataplane::status::PortHealth;

    /// No DPDK in this build: there is never a port.
    pub enum Port {}

    impl Port {
        pub fn health(&self) -> PortHealth {
            match *self {}
        }

        pub fn shutdown(self) {
            match self {}
        }
    }

    /// Always refuses, saying why.
    pub fn start(_: &super::DpdkConfig, _: DriverConfig, _: Shared) -> Result<Port, String> {
        Err("this build has no DPDK support (build with --features dpdk)".into())
    }
}

/// What the kernel data plane is started with, whenever it is needed.
struct KernelArgs {
    backend: IoBackend,
    cfg: DriverConfig,
    shared: Shared,
}

struct State {
    port: Option<port::Port>,
    kernel: Option<Dataplane>,
    args: Option<KernelArgs>,
    /// Whether DPDK serves: demoted when its link stays down, promoted
    /// only by an operator.
    policy: PortPolicy,
}

/// The data planes of the process and the choice between them.
pub struct Serving {
    state: Mutex<State>,
    status: Arc<DataplaneStatus>,
    /// Carries out the port row's decision.
    supervisor: Arc<Supervisor>,
    listen: String,
    stop: AtomicBool,
    monitor: Mutex<Option<JoinHandle<()>>>,
}

impl Serving {
    /// Nothing serves yet; `listen` is the kernel address used after a
    /// fallback, `grace` how long the link may stay down. The port row's
    /// move to kernel networking is registered with `supervisor`.
    pub fn new(supervisor: Arc<Supervisor>, listen: String, grace: Duration) -> Arc<Self> {
        let serving = Arc::new(Self {
            state: Mutex::new(State {
                port: None,
                kernel: None,
                args: None,
                policy: {
                    let mut p = PortPolicy::new(grace);
                    p.demote();
                    p
                },
            }),
            status: supervisor.status.clone(),
            supervisor: supervisor.clone(),
            listen,
            stop: AtomicBool::new(false),
            monitor: Mutex::new(None),
        });
        let weak = Arc::downgrade(&serving);
        supervisor.set_kernel_switch(Box::new(move || {
            let me = weak.upgrade().ok_or(SwitchError::ShuttingDown)?;
            let mut st = me.lock();
            let on = me.to_kernel(
                &mut st,
                "the DPDK port's link stayed down past the grace period",
            )?;
            Ok(format!("{on} at {}", me.listen))
        }));
        serving
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts serving: on DPDK when `dpdk` is given and starts (then a
    /// monitor thread watches the port), else on the kernel backend. A
    /// DPDK config that could not be made (`Err`, the reason) is served
    /// on the kernel like a port that did not start.
    pub fn start(
        self: &Arc<Self>,
        dpdk: Option<&Result<DpdkConfig, String>>,
        backend: IoBackend,
        cfg: DriverConfig,
        shared: Shared,
    ) -> anyhow::Result<()> {
        let args = KernelArgs {
            backend,
            cfg: cfg.clone(),
            shared: shared.clone(),
        };
        let mut st = self.lock();
        st.args = Some(args);
        self.status.set_dpdk_wanted(dpdk.is_some());
        let Some(dpdk) = dpdk else {
            st.kernel = Some(self.start_kernel(&st)?);
            return Ok(());
        };
        let started = dpdk
            .clone()
            .and_then(|d| port::start(&d, cfg, shared).map(|p| (p, d.port)));
        match started {
            Ok((p, port_id)) => {
                st.port = Some(p);
                st.policy.promote(true);
                self.status
                    .set_reason(format!("DPDK port {port_id} serves"));
            }
            Err(why) => {
                tracing::warn!(reason = %why, listen = %self.listen, "DPDK unavailable; serving on kernel networking");
                st.kernel = Some(self.start_kernel(&st)?);
                let kernel = self.status.reason();
                self.status
                    .set_reason(format!("DPDK did not start: {why} ({kernel})"));
                self.supervisor.record(Event::DpdkStartFailed {
                    why: &why,
                    listen: &self.listen,
                    serving: self.status.backend().as_str(),
                });
                return Ok(());
            }
        }
        drop(st);
        let me = self.clone();
        let monitor = std::thread::Builder::new()
            .name("ug-port-monitor".into())
            .spawn(move || me.watch())?;
        *self.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(monitor);
        Ok(())
    }

    fn start_kernel(&self, st: &State) -> anyhow::Result<Dataplane> {
        let a = st
            .args
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the data plane was not started"))?;
        Ok(Dataplane::start(
            a.backend,
            a.cfg.clone(),
            a.shared.clone(),
        )?)
    }

    /// Samples the port and feeds the port row; its decision goes to the
    /// runbook's executor (which calls back the registered switch).
    fn watch(&self) {
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(SAMPLE);
            let mut st = self.lock();
            let Some(h) = st.port.as_ref().map(port::Port::health) else {
                return;
            };
            self.status.set_port(Some(h));
            let Some(d) = st.policy.observe(Instant::now(), h.port, h.link_up) else {
                continue;
            };
            drop(st);
            tracing::warn!(port = h.port, listen = %self.listen, "DPDK link down past the grace period; serving on kernel networking");
            self.supervisor.execute(&d);
        }
    }

    /// Serves on kernel networking from now on; `why` is the reason
    /// `/health` gives.
    fn to_kernel(&self, st: &mut State, why: &str) -> Result<String, SwitchError> {
        if st.kernel.is_none() {
            let kernel = self.start_kernel(st);
            st.kernel = Some(kernel.map_err(|e| SwitchError::Kernel(e.to_string()))?);
        }
        if st.port.is_some() {
            self.status.set_reason(why);
        }
        st.policy.demote();
        let backend = st
            .kernel
            .as_ref()
            .map_or(Backend::Epoll, Dataplane::backend);
        self.status.set_backend(backend);
        Ok(format!("serving on {}", backend.as_str()))
    }

    /// Stops every data plane, draining in-flight requests.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(m) = self
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = m.join();
        }
        let (kernel, port) = {
            let mut st = self.lock();
            (st.kernel.take(), st.port.take())
        };
        if let Some(k) = kernel {
            k.shutdown();
        }
        if let Some(p) = port {
            p.shutdown();
        }
    }
}

impl DataplaneSwitch for Serving {
    fn switch(&self, to: &str) -> Result<&'static str, SwitchError> {
        let mut st = self.lock();
        let link_up = st.port.as_ref().map(|p| p.health().link_up);
        let to_port = match (to, link_up) {
            ("kernel", _) => false,
            ("auto", up) => up == Some(true),
            ("dpdk", Some(true)) => true,
            ("dpdk", Some(false)) => return Err(SwitchError::LinkDown),
            ("dpdk", None) => return Err(SwitchError::NotStarted),
            (other, _) => return Err(SwitchError::Unknown(other.to_owned())),
        };
        if !to_port {
            self.to_kernel(
                &mut st,
                &format!("an operator asked for {to} (POST /admin/dataplane)"),
            )?;
            return Ok(self.status.backend().as_str());
        }
        st.policy.promote(true);
        self.status.set_backend(Backend::Dpdk);
        self.status.set_reason(format!(
            "DPDK port serves again ({to} asked by an operator)"
        ));
        if let Some(k) = st.kernel.take() {
            // The kernel listener drains in the background.
            std::thread::spawn(move || k.shutdown());
        }
        Ok(Backend::Dpdk.as_str())
    }
}

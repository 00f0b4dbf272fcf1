//! The io_uring driver: one ring per data core, on a thread pinned with
//! `core_affinity`, each with its own `SO_REUSEPORT` listener, receive
//! buffers and upstream pool. Accept is multishot (one submission serves
//! many completions); receives take one buffer at a time, only while the
//! connection wants bytes (back-pressure), from a provided-buffer ring; sends hand the engine's queued chunks to the
//! kernel as they are (a cache hit's body is the cache's memory); upstream
//! connect, send and receive run on the same ring, so a core never blocks
//! and a request never changes thread.
//!
//! [`UringDataplane::start`] fails with [`Refused`] when the kernel or a
//! sandbox (container seccomp profiles return `EPERM`/`ENOSYS`) refuses the
//! ring or an opcode the driver needs; `io_backend = "auto"` then serves on
//! epoll.

mod bufring;
mod core;
mod op;

use super::{listen, DriverConfig, DriverError, Shared};
use crate::status::Backend;
use io_uring::{opcode, IoUring};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Why io_uring cannot serve here: the step the kernel refused and its
/// error, with a hint when a sandbox is the likely cause.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}{}", seccomp_hint(source))]
pub struct Refused {
    what: &'static str,
    source: io::Error,
}

/// `EPERM`/`ENOSYS` from io_uring mostly mean a seccomp profile said no.
fn seccomp_hint(e: &io::Error) -> &'static str {
    if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
        " (a seccomp profile refuses io_uring; see deploy/k8s/seccomp)"
    } else {
        ""
    }
}

fn refused(what: &'static str) -> impl FnOnce(io::Error) -> Refused {
    move |source| Refused { what, source }
}

/// The opcodes the driver submits.
const NEEDED: [(u8, &str); 7] = [
    (opcode::AcceptMulti::CODE, "accept"),
    (opcode::Recv::CODE, "recv"),
    (opcode::SendMsg::CODE, "sendmsg"),
    (opcode::Send::CODE, "send"),
    (opcode::Connect::CODE, "connect"),
    (opcode::AsyncCancel::CODE, "async_cancel"),
    (opcode::Read::CODE, "read"),
];

/// Builds a core's ring: single issuer with deferred task work (the core
/// reaps completions only when it asks), falling back to a plain ring on
/// kernels that lack those flags.
fn new_ring(entries: u32) -> Result<IoUring, Refused> {
    let fast = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(entries * 4)
        .build(entries);
    match fast {
        Ok(r) => Ok(r),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(entries * 4)
            .build(entries)
            .map_err(refused("io_uring_setup")),
        Err(e) => Err(refused("io_uring_setup")(e)),
    }
}

/// Checks that every opcode the driver needs is supported.
fn probe(ring: &IoUring) -> Result<(), Refused> {
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(refused("io_uring_register(PROBE)"))?;
    for (code, name) in NEEDED {
        if !p.is_supported(code) {
            return Err(Refused {
                what: name,
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        }
    }
    Ok(())
}

/// An eventfd that wakes a core's ring from other threads.
pub(super) struct Waker(OwnedFd);

impl Waker {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd this value owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes the core.
    pub(super) fn wake(&self) {
        use std::os::fd::AsRawFd;
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The running io_uring data plane.
pub struct UringDataplane {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
}

impl UringDataplane {
    /// Sets up a ring per core (each checked before any serves) and starts
    /// the data threads; [`DriverError::Uring`] when io_uring is refused.
    pub fn start(cfg: DriverConfig, shared: Shared) -> Result<Self, DriverError> {
        // Refused early and cheaply, before a listener is bound.
        probe(&new_ring(8)?)?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (listeners, local_addr) = listen::bind_cores(&cfg)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut running = Self {
            threads: Vec::new(),
            stop: stop.clone(),
            wakers: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Refused>>();
        for (i, listeners) in listeners.into_iter().enumerate() {
            let core = cfg
                .cores
                .get(i)
                .and_then(|id| cores.iter().find(|c| c.id == *id).copied());
            let waker = Arc::new(Waker::new().map_err(DriverError::Thread)?);
            let setup = core::Setup {
                core: cfg.cores.get(i).copied().unwrap_or(i),
                cfg: cfg.clone(),
                shared: shared.clone(),
                listeners,
                stop: stop.clone(),
                waker: waker.clone(),
            };
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ug-uring-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(core = core.id, "could not pin data thread");
                        }
                    }
                    core::run(setup, ready)
                })
                .map_err(DriverError::Thread)?;
            running.threads.push(thread);
            running.wakers.push(waker);
        }
        drop(ready_tx);
        for _ in 0..running.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    running.shutdown();
                    return Err(why.into());
                }
                Err(_) => {
                    running.shutdown();
                    return Err(DriverError::Thread(io::Error::other(
                        "a data thread ended during start-up",
                    )));
                }
            }
        }
        shared.status.set_backend(Backend::Uring);
        shared.status.set_serving(true);
        tracing::info!(backend = Backend::Uring.as_str(), ?local_addr, cores = ?cfg.cores, "data plane serving");
        Ok(running)
    }

    /// Stops accepting, lets in-flight requests finish within the drain
    /// timeout, and waits for the data threads.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

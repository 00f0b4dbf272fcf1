//! The DPDK environment of the process: EAL initialisation (once), the
//! mbuf pool on hugepages, and ports.

use super::DpdkError;
use dpdk_sys as sys;
use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// The EAL may be initialised once per process; the outcome is kept.
static EAL: OnceLock<Result<(), String>> = OnceLock::new();

/// The last DPDK error of this thread, as text.
fn last_error() -> String {
    // SAFETY: plain calls; rte_strerror returns a static or thread-local
    // string.
    unsafe {
        let e = sys::ug_errno();
        CStr::from_ptr(sys::ug_strerror(e))
            .to_string_lossy()
            .into_owned()
    }
}

/// Initialises the EAL with `args` (after the program name), adding
/// `--in-memory` (`--no-shconf` with `--no-huge`: no shared files, so
/// several gateways can run) and
/// `--no-telemetry` unless the arguments say otherwise, and `-l 0`
/// unless cores are given. The calling thread's CPU affinity is restored
/// afterwards: the EAL pins its caller to its main lcore.
pub fn init(args: &[String]) -> Result<(), DpdkError> {
    EAL.get_or_init(|| {
        let mut all = vec!["ultragate".to_owned()];
        all.extend(args.iter().cloned());
        let has = |flags: &[&str]| args.iter().any(|a| flags.iter().any(|f| a.starts_with(f)));
        if !has(&["--in-memory", "--file-prefix", "--no-shconf"]) {
            // --no-huge implies legacy memory, which --in-memory refuses.
            all.push(
                if has(&["--no-huge"]) {
                    "--no-shconf"
                } else {
                    "--in-memory"
                }
                .into(),
            );
        }
        if !has(&["--telemetry", "--no-telemetry"]) {
            all.push("--no-telemetry".into());
        }
        if !has(&["-l", "-c", "--lcores"]) {
            all.extend(["-l".to_owned(), "0".to_owned()]);
        }
        let owned: Vec<CString> = all
            .iter()
            .map(|a| {
                CString::new(a.as_str()).map_err(|_| format!("EAL argument {a:?} has a NUL byte"))
            })
            .collect::<Result<_, _>>()?;
        // rte_eal_init may permute argv; it owns this array from now on.
        let argv: &'static mut [*mut std::os::raw::c_char] = Box::leak(
            owned
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: reads the calling thread's mask into `mask`.
        let saved =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&mask), &mut mask) } == 0;
        // SAFETY: argc/argv describe valid C strings that live for ever.
        let rc = unsafe { sys::ug_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if saved {
            // SAFETY: restores the mask read above.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&mask), &mask) };
        }
        if rc < 0 {
            return Err(last_error());
        }
        Ok(())
    })
    .clone()
    .map_err(|reason| DpdkError::Eal { reason })
}

/// A pool of packet buffers (mbufs), shared by the cores (DPDK's
/// mempools are safe to use from several threads).
#[derive(Clone, Copy)]
pub struct Mempool(pub(super) *mut sys::RteMempool);

// SAFETY: a DPDK mempool is a thread-safe object with a stable address.
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs named `name` on `port`'s NUMA node.
    pub fn create(name: &str, n: u32, port: u16) -> Result<Self, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Mempool {
            reason: "name has a NUL byte".into(),
        })?;
        // SAFETY: valid C string; the EAL is initialised.
        let p = unsafe { sys::ug_pool_create(c.as_ptr(), n, sys::ug_port_socket(port)) };
        if p.is_null() {
            return Err(DpdkError::Mempool {
                reason: last_error(),
            });
        }
        Ok(Self(p))
    }

    /// Free mbufs.
    pub fn free(&self) -> u32 {
        // SAFETY: a live pool.
        unsafe { sys::ug_pool_avail(self.0) }
    }

    /// Mbufs in use.
    pub fn in_use(&self) -> u32 {
        // SAFETY: a live pool.
        unsafe { sys::ug_pool_in_use(self.0) }
    }
}

/// Configures and starts `port` with up to `queues` queue pairs; its MAC
/// address and how many queue pairs it has.
pub fn start_port(port: u16, queues: u16, pool: Mempool) -> Result<([u8; 6], u16), DpdkError> {
    // SAFETY: plain call.
    let count = unsafe { sys::ug_port_count() };
    if port >= count {
        return Err(DpdkError::Port {
            port,
            reason: format!("no such port ({count} available; check [dpdk] eal_args)"),
        });
    }
    let mut mac = [0u8; 6];
    let mut got = queues;
    // SAFETY: `mac` has room for six bytes; the pool is live.
    let rc = unsafe { sys::ug_port_start(port, &mut got, pool.0, mac.as_mut_ptr()) };
    if rc != 0 {
        return Err(DpdkError::Port {
            port,
            reason: std::io::Error::from_raw_os_error(-rc).to_string(),
        });
    }
    Ok((mac, got))
}

/// Two ports wired back to back through rings (no kernel, no NIC): what
/// one sends the other receives. For in-process tests and benchmarks.
pub fn ring_pair(name: &str) -> Result<(u16, u16), DpdkError> {
    let c = CString::new(name).map_err(|_| DpdkError::Port {
        port: 0,
        reason: "name has a NUL byte".into(),
    })?;
    let (mut a, mut b) = (0, 0);
    // SAFETY: valid C string and out pointers; the EAL is initialised.
    if unsafe { sys::ug_ring_pair(c.as_ptr(), &mut a, &mut b) } != 0 {
        return Err(DpdkError::Port {
            port: 0,
            reason: format!("ring pair: {}", last_error()),
        });
    }
    Ok((a, b))
}

/// Hugepages reserved and free, summed over page sizes
/// (`/sys/kernel/mm/hugepages`).
pub fn hugepages() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return total;
    };
    for d in dir.flatten() {
        let read = |f: &str| -> u64 {
            std::fs::read_to_string(d.path().join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        total.0 += read("nr_hugepages");
        total.1 += read("free_hugepages");
    }
    total
}

//! Whether this kernel offers kTLS: the `tls` upper-layer protocol set on
//! a loopback TCP connection made for the question. The answer goes to the
//! log and `/health`; TLS records are made in userspace (rustls in the
//! per-core layer) whatever it is: this build does not hand the record
//! layer to the kernel.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// Whether the kernel takes the `tls` ULP, or why not (asked once per
/// process).
pub fn kernel_support() -> &'static Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe)
}

fn probe() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("no loopback socket to ask on: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let client =
        TcpStream::connect(addr).map_err(|e| format!("no loopback connection to ask on: {e}"))?;
    let _server = listener.accept().map_err(|e| e.to_string())?;
    let ulp = b"tls";
    // SAFETY: a valid socket, and a buffer of that length.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            ulp.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOENT) => {
            "this kernel has no tls ULP (CONFIG_TLS off, or the module cannot be loaded)"
                .to_string()
        }
        _ => format!("setsockopt(TCP_ULP, \"tls\"): {err}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_matches_what_the_kernel_lists() {
        // The kernel lists the ULPs it has (loaded ones); a probe loads
        // the module when it can, so a listed `tls` means support.
        let listed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .unwrap_or_default()
            .split_whitespace()
            .any(|u| u == "tls");
        let answer = super::kernel_support();
        if listed {
            assert!(answer.is_ok(), "{answer:?}");
        }
        if let Err(why) = answer {
            assert!(!why.is_empty());
        }
    }
}

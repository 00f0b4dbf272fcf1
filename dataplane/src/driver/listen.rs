//! The data port's listening sockets: one per core with `SO_REUSEPORT`,
//! so the kernel spreads new connections over the cores.

use super::{DriverConfig, DriverError};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Backlog of each listening socket.
const BACKLOG: i32 = 1024;

/// One listener per core on `addr` (a port of 0 is picked once, then
/// shared); `n` of them.
fn bind_all(addr: SocketAddr, n: usize) -> Result<Vec<TcpListener>, DriverError> {
    let first = bind_reuseport(addr)?;
    let local = first
        .local_addr()
        .map_err(|source| DriverError::Bind { addr, source })?;
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(bind_reuseport(local)?);
    }
    Ok(all)
}

/// One core's listening sockets: the plain HTTP port's and the TLS
/// port's, either of which may be off.
pub(super) struct CoreListeners {
    /// Plain HTTP (`[api_gateway] listen`).
    pub(super) plain: Option<TcpListener>,
    /// HTTPS (`[tls] listen`).
    pub(super) tls: Option<TcpListener>,
}

/// The listeners of every core of `cfg`, and the addresses they took.
pub(super) fn bind_cores(
    cfg: &DriverConfig,
) -> Result<(Vec<CoreListeners>, Vec<SocketAddr>), DriverError> {
    let n = cfg.cores.len().max(1);
    let bind = |addr: Option<SocketAddr>| -> Result<Vec<Option<TcpListener>>, DriverError> {
        match addr {
            Some(a) => Ok(bind_all(a, n)?.into_iter().map(Some).collect()),
            None => Ok((0..n).map(|_| None).collect()),
        }
    };
    let plain = bind(cfg.listen)?;
    let tls = bind(cfg.tls_listen)?;
    let addrs = [plain.first(), tls.first()]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let cores = plain
        .into_iter()
        .zip(tls)
        .map(|(plain, tls)| CoreListeners { plain, tls })
        .collect();
    Ok((cores, addrs))
}

fn bind_reuseport(addr: SocketAddr) -> Result<TcpListener, DriverError> {
    let bind = || -> io::Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(BACKLOG)?;
        Ok(sock.into())
    };
    bind().map_err(|source| DriverError::Bind { addr, source })
}

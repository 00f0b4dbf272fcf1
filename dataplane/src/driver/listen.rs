//! The data port's listening sockets: one per core with `SO_REUSEPORT`,
//! so the kernel spreads new connections over the cores.

use super::DriverError;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Backlog of each listening socket.
const BACKLOG: i32 = 1024;

/// One listener per core on `addr` (a port of 0 is picked once, then
/// shared); `n` of them.
pub(super) fn bind_all(addr: SocketAddr, n: usize) -> Result<Vec<TcpListener>, DriverError> {
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

//! `ultragate --pre-stop MS`: the pod's preStop hook. Asks the running
//! gateway (through its admin port on loopback, where no token is needed)
//! to turn readiness red while it keeps serving, then waits so that the
//! endpoint change reaches every load balancer before the kubelet sends
//! SIGTERM and the listeners close.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The admin address to call: the configured one, on loopback when it
/// listens on every address.
pub fn admin_target(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
    } else {
        listen
    }
}

/// Calls `POST /admin/drain` and waits `wait`. A failed call is said on
/// stderr and the wait still happens: the pod leaves the endpoints anyway.
pub fn run(admin: SocketAddr, wait: Duration) -> Result<(), String> {
    let answer = drain(admin);
    match &answer {
        Ok(()) => eprintln!(
            "pre-stop: readiness red at {admin}; waiting {} ms before SIGTERM",
            wait.as_millis()
        ),
        Err(e) => eprintln!("pre-stop: {e}; waiting {} ms anyway", wait.as_millis()),
    }
    std::thread::sleep(wait);
    answer
}

fn drain(admin: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&admin, timeout)
        .map_err(|e| format!("cannot reach the admin port {admin}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(
        b"POST /admin/drain HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("POST /admin/drain to {admin}: {e}"))?;
    let mut answer = Vec::new();
    let _ = s.take(4096).read_to_end(&mut answer);
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
        Err(format!(
            "POST /admin/drain to {admin} answered {:?}",
            String::from_utf8_lossy(line)
        ))
    }
}

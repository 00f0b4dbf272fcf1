//! Back-pressure end to end: clients that pipeline requests and never
//! read cost the gateway at most its per-connection bound each
//! (`[api_gateway] max_connection_buffer_bytes`, 256 KiB by default),
//! on io_uring and on epoll. The TLS listener's case is in `tls.rs`.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

/// A cached 4 KiB object: every pipelined request is a hit.
const HIT: &str = "GET /obj?size=4096&cache=max-age%3D600 HTTP/1.1\r\nHost: h\r\n\r\n";

/// Opens `n` clients to `addr` that pipeline `HIT` and never read: each
/// is held open with as many requests written as the kernel took within
/// the time given (at most 4 MiB).
fn hogs(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let chunk = HIT.repeat(64);
    let mut all = Vec::new();
    for _ in 0..n {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nonblocking(true).unwrap();
        all.push(s);
    }
    // Round-robin until every socket stops taking bytes (the gateway
    // stopped reading it) or its budget or the time is spent.
    let end = Instant::now() + Duration::from_secs(8);
    let mut sent = vec![0usize; n];
    let mut open: Vec<usize> = (0..n).collect();
    while !open.is_empty() && Instant::now() < end {
        open.retain(|&i| match all[i].write(chunk.as_bytes()) {
            Ok(k) => {
                sent[i] += k;
                sent[i] < 4 << 20
            }
            Err(_) => false,
        });
        if !open.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    all
}

fn two_hundred_non_readers_cost_at_most_the_bound_each(backend: &str) {
    let (_o, origin) = origin(&[]);
    let gw = Gateway::start(&[origin], &format!("io_backend = \"{backend}\"\n"), "");
    let url = gw.url("/obj?size=4096&cache=max-age%3D600");
    assert!(String::from_utf8_lossy(&curl(&["-i", &url]).stdout).contains("200 OK"));
    let pid = gw.proc.child.id();
    let before = rss(pid);
    let held = hogs(gw.data, 200);
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss(pid).saturating_sub(before);
    let per = grown / 200;
    eprintln!(
        "{backend}: RSS {before} -> +{grown} bytes for 200 non-reading clients ({per} per client)"
    );
    // The bound, a request head and a response in flight, and the
    // allocator's slack.
    assert!(per < 400 * 1024, "{backend}: {per} bytes per client");
    // And it still serves everyone else.
    assert_eq!(
        get_status(gw.data, "/obj?size=4096&cache=max-age%3D600"),
        200
    );
    drop(held);
}

#[test]
fn io_uring_holds_non_reading_clients_to_the_bound() {
    two_hundred_non_readers_cost_at_most_the_bound_each("uring");
}

#[test]
fn epoll_holds_non_reading_clients_to_the_bound() {
    two_hundred_non_readers_cost_at_most_the_bound_each("epoll");
}

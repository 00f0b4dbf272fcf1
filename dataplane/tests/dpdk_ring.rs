//! The DPDK data plane in process, over a `net_ring` pair and without
//! hugepages (`--no-huge`): a client smoltcp stack on one ring port talks
//! to the gateway's stack on the other, with no kernel between them; the
//! gateway fetches from a real origin over a kernel socket on loopback.
//! HTTPS runs over the same pair: rustls in the per-core layer, over smoltcp.

#![cfg(feature = "ring")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ultragate_dataplane::driver::dpdk::ring;
use ultragate_dataplane::status::Backend;
use ultragate_dataplane::tls::{CertFiles, MinVersion, TlsServer, TlsSettings};

/// An origin on loopback: each answer says how many requests it has seen,
/// and may be cached for a minute.
fn origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        have.drain(..end + 4);
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("origin answer {n}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A certificate for `ring.test` made here, the gateway's TLS settings
/// with it, and a client that trusts it.
fn tls_pair() -> (Arc<TlsServer>, Arc<rustls::ClientConfig>) {
    let dir = std::env::temp_dir().join(format!("ug-ring-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ring.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let files = CertFiles {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    let server = TlsServer::new(&TlsSettings {
        certificates: vec![files],
        min_version: MinVersion::Tls12,
        handshake_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[test]
fn miss_then_hit_through_the_ring_pair_without_hugepages() {
    let (origin, seen) = origin();
    let (tls, client_tls) = tls_pair();
    let ring::RingSetup {
        gateway: dp,
        mut client,
        status,
        ..
    } = ring::start("ugtest", origin, None, Some(tls.clone()))
        .expect("a gateway over a ring pair, --no-huge");
    assert_eq!(status.backend(), Backend::Dpdk);
    let health = dp.health();
    assert!(health.link_up, "{health:?}");
    assert!(health.mempool_free > 0);
    let (server, port) = (ring::GATEWAY, ring::PORT);

    let first = client.run(server, port, "/page", 1, 1, Duration::from_secs(10));
    assert_eq!(first.len(), 1, "no answer through the ring");
    let text = String::from_utf8_lossy(&first[0].bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("X-Cache: MISS"), "{text}");
    assert!(text.ends_with("origin answer 1\n"), "{text}");

    // Then 50 more over 4 connections: every one a hit, the origin not asked.
    let hits = client.run(server, port, "/page", 4, 50, Duration::from_secs(10));
    assert_eq!(hits.len(), 50);
    for a in &hits {
        let text = String::from_utf8_lossy(&a.bytes);
        assert!(text.contains("X-Cache: HIT"), "{text}");
        assert!(text.ends_with("origin answer 1\n"), "{text}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // A request that panics in the engine (test builds only) costs its
    // connection; the core goes on serving the others.
    let panicked = client.run(
        server,
        port,
        "/__ultragate_test/panic",
        1,
        1,
        Duration::from_secs(2),
    );
    assert!(panicked.is_empty(), "no answer to the panicking request");
    assert_eq!(status.panics(), 1);
    let after_panic = client.run(server, port, "/page", 2, 10, Duration::from_secs(10));
    assert_eq!(after_panic.len(), 10, "the core still serves");

    // HTTPS on the same port pair (userspace rustls over smoltcp), over 3
    // connections each with its handshake: the same cache, the scheme in
    // its key (one fetch, told https; the rest hits).
    client.set_tls(Some((client_tls, "ring.test".into())));
    let https = client.run(
        server,
        ring::TLS_PORT,
        "/page",
        3,
        30,
        Duration::from_secs(20),
    );
    assert_eq!(https.len(), 30, "HTTPS answers through the ring");
    let mut misses = 0;
    for a in &https {
        let text = String::from_utf8_lossy(&a.bytes);
        misses += usize::from(text.contains("X-Cache: MISS"));
        assert!(
            text.contains("X-Cache: MISS") || text.contains("X-Cache: HIT"),
            "{text}"
        );
        assert!(text.ends_with("origin answer 2\n"), "{text}");
    }
    assert_eq!(misses, 1, "one fetch by https");
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    let after = dp.health();
    assert!(
        after.rx_packets > health.rx_packets && after.tx_packets > 0,
        "{after:?}"
    );
    dp.shutdown();
}

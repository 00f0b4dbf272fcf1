//! The TLS entry point: a per-core layer with a TLS listener fed an
//! arbitrary script of transport events on a connection from the TLS
//! port — bytes in arbitrary splits (the seeds hold real ClientHellos of
//! TLS 1.2 and 1.3 clients, which the fuzzer mutates), writes, EOF, time
//! passing (past the handshake timeout), drain. After every step: no panic
//! (not even one the layer contained), and a connection that failed its
//! handshake sent nothing but TLS records or the plain `400`.
//!
//! Script format: events, each an opcode byte and, for bytes, a length
//! byte and that many bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use ultragate_dataplane::access::AccessLog;
use ultragate_dataplane::endpoint::{Command, Endpoint, EndpointConfig, Event, Parts};
use ultragate_dataplane::http::request::RequestLimits;
use ultragate_dataplane::live::{Live, PoolSpec};
use ultragate_dataplane::proxy::EngineConfig;
use ultragate_dataplane::status::DataplaneStatus;
use ultragate_dataplane::tls::{CertFiles, MinVersion, TlsServer, TlsSettings};

/// One certificate for every run, made once.
fn server() -> Arc<TlsServer> {
    static SERVER: OnceLock<Arc<TlsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("ug-fuzz-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["fuzz.test".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let files = CertFiles {
                cert_file: dir.join("c.pem"),
                key_file: dir.join("k.pem"),
            };
            std::fs::write(&files.cert_file, cert.pem()).unwrap();
            std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
            Arc::new(
                TlsServer::new(&TlsSettings {
                    certificates: vec![files],
                    min_version: MinVersion::Tls12,
                    handshake_timeout: Duration::from_secs(10),
                })
                .unwrap(),
            )
        })
        .clone()
}

fn endpoint(now: Instant, status: Arc<DataplaneStatus>) -> Endpoint {
    let engine = Arc::new(EngineConfig {
        limits: RequestLimits {
            max_header_bytes: 2048,
            max_body_bytes: 4096,
        },
        max_response_head_bytes: 2048,
        response_timeout: Duration::from_secs(5),
        ..EngineConfig::new("origin:80".into(), (now, SystemTime::now()))
    });
    let pool = || {
        PoolSpec::new(
            vec![SocketAddr::from(([127, 0, 0, 1], 1))],
            Duration::from_secs(60),
            4,
            3,
        )
    };
    let (stats, _) = mpsc::channel();
    let parts = Parts {
        status,
        cache: None,
        live: Arc::new(Live::new(engine, pool(), pool())),
        access: Arc::new(AccessLog::new()),
        stats,
        tls: Some(server()),
    };
    let cfg = EndpointConfig {
        core: 0,
        max_connections: 4,
        max_connections_per_client: usize::MAX,
        drain_timeout: Duration::from_secs(1),
        stats_interval: Duration::from_secs(3600),
        local_admin: false,
    };
    Endpoint::new(cfg, parts, now)
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let status = Arc::new(DataplaneStatus::default());
    status.set_serving(true);
    let mut ep = endpoint(now, status.clone());
    let Some(id) = ep.accept_tls(now, SocketAddr::from(([10, 0, 0, 1], 4000))) else {
        return;
    };
    let mut sent = Vec::new();
    let mut closed = false;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 6 {
            0 | 1 => {
                let (&len, tail) = rest.split_first().unwrap_or((&0, &[]));
                let n = usize::from(len).min(tail.len());
                ep.handle(now, Event::ClientBytes(id, &tail[..n]));
                rest = &tail[n..];
            }
            2 => {
                let mut slices = [std::io::IoSlice::new(&[]); 8];
                let k = ep.client_slices(id, &mut slices);
                let n: usize = slices[..k].iter().map(|s| s.len()).sum();
                for s in &slices[..k] {
                    sent.extend_from_slice(s);
                }
                ep.handle(now, Event::ClientWritten(id, n));
            }
            3 => {
                let (&secs, tail) = rest.split_first().unwrap_or((&0, &[]));
                rest = tail;
                now += Duration::from_millis(u64::from(secs) * 250);
                ep.handle(now, Event::Timer);
            }
            4 => ep.handle(now, Event::ClientEof(id)),
            _ => ep.handle(now, Event::Drain),
        }
        while let Some(cmd) = ep.poll_command() {
            if let Command::CloseClient { client, .. } = cmd {
                assert_eq!(client, id);
                closed = true;
            }
        }
        assert_eq!(status.panics(), 0, "the layer contained a panic");
        if closed {
            break;
        }
    }
    // What went out is TLS records (content types 20–24) or the plain 400.
    if !sent.is_empty() && !sent.starts_with(b"HTTP/1.1 400 ") {
        let mut at = 0;
        while at + 5 <= sent.len() {
            assert!(
                (20..=24).contains(&sent[at]),
                "not a TLS record at {at}: {:?}",
                &sent[at..at + 5]
            );
            let len = usize::from(u16::from_be_bytes([sent[at + 3], sent[at + 4]]));
            at += 5 + len;
        }
    }
});

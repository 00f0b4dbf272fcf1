//! The load generator's connections: plain TCP, or TLS with rustls
//! (`https://` URLs), behind one type so the HTTP exchange is written once.

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How a `https://` target is reached: the client settings and the name
/// sent in SNI and verified.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

impl Tls {
    /// Trusts the CA in `ca_file` (PEM) for `name`; with `resume` false
    /// every connection makes a full handshake.
    pub fn new(ca_file: &Path, name: &str, resume: bool) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("--tls-ca {}", ca_file.display()))?
        {
            roots.add(cert.context("--tls-ca: not a PEM certificate")?)?;
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            cfg.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Self {
            connector: TlsConnector::from(Arc::new(cfg)),
            name: rustls_pki_types::ServerName::try_from(name.to_owned())
                .with_context(|| format!("--tls-name {name:?}"))?,
        })
    }
}

/// One client connection.
pub enum Stream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `addr`, with a TLS handshake when `tls` is given.
    pub async fn connect(addr: &str, tls: Option<&Tls>) -> io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        match tls {
            None => Ok(Self::Plain(s)),
            Some(t) => Ok(Self::Tls(Box::new(
                t.connector.connect(t.name.clone(), s).await?,
            ))),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

//! HTTP/2 over TLS to targets (gRPC with `backend-protocol: GRPCS`, or HTTPS + HTTP2): a
//! connector for hyper-util's pooling client that dials the target and negotiates `h2` by
//! ALPN. Target certificates are not verified, like ALB and ingress-nginx's default.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// Dials targets over TLS offering only `h2`.
#[derive(Clone)]
pub struct TlsH2Connector {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl TlsH2Connector {
    pub fn new(connect_timeout: Duration) -> Self {
        TlsH2Connector {
            tls: crate::tls::unverified_client_connector(&[b"h2"]),
            connect_timeout,
        }
    }
}

/// A TLS connection to a target on which `h2` was negotiated.
pub struct TlsH2Stream(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsH2Stream {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl Read for TlsH2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for TlsH2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for TlsH2Connector {
    type Response = TlsH2Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsH2Stream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::time::timeout(
                this.connect_timeout,
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = this.tls.connect(name, tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the target did not negotiate HTTP/2 (ALPN h2)",
                ));
            }
            Ok(TlsH2Stream(TokioIo::new(tls)))
        })
    }
}

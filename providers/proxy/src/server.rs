//! Accepting connections: plain HTTP (HTTP/1.1 and h2c with prior knowledge), TLS (ALPN h2
//! and HTTP/1.1), and the admin listener; limits, and graceful shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::http1_relay::{self, RelayContext, Relayed};
use crate::request_path::{admin_response, handle, ConnInfo, Shared};

/// Limits that protect the proxy from its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive (slowloris).
    pub header_read_timeout: Duration,
    /// Bytes of request head buffered; larger heads get 431.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    /// Streams reset by the client before the proxy answered, tolerated at once (rapid
    /// reset, CVE-2023-44487); past it the connection is closed with GOAWAY.
    pub h2_max_pending_reset_streams: usize,
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 250,
            h2_max_pending_reset_streams: 20,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(1024)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    b
}

/// Serves proxy traffic on `listener` until `shutdown` turns true, then lets open connections
/// finish for up to `drain`: HTTP/1 connections answer their in-flight request with
/// `Connection: close`, HTTP/2 connections get GOAWAY.
pub async fn serve_traffic(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let builder = Arc::new(connection_builder(&limits));
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // over the connection limit: drop it at once
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(client);
        let conn_info = ConnInfo {
            client,
            local,
            tls: tls.is_some(),
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let limits = limits.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            shared.metrics.open_connections.inc();
            let client_conn = ClientConnection {
                shared: shared.clone(),
                conn: conn_info,
                builder,
                watcher,
            };
            match tls {
                None => client_conn.serve_http1(stream, &limits, stop).await,
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream))
                            .await;
                    match accepted {
                        Ok(Ok(tls_stream))
                            if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") =>
                        {
                            client_conn.serve_with_hyper(tls_stream).await
                        }
                        Ok(Ok(tls_stream)) => {
                            client_conn.serve_http1(tls_stream, &limits, stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %client, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %client, "TLS handshake timed out"),
                    }
                }
            }
            shared.metrics.open_connections.dec();
        });
    }
    drop(listener);
    // hyper's connections are told to finish through `graceful`, the relay's through
    // `shutdown`; every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = async {
        graceful.shutdown().await;
        let _ = permits.acquire_many(all).await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::info!("drain period over; closing remaining connections");
    }
}

/// One accepted client connection and what serving it needs.
struct ClientConnection {
    shared: Arc<Shared>,
    conn: ConnInfo,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
}

impl ClientConnection {
    /// HTTP/1.1: the relay first, hyper for the rest of the connection if it hands over.
    async fn serve_http1<I>(self, io: I, limits: &Limits, stop: watch::Receiver<bool>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let relay = RelayContext::new(self.shared.clone(), self.conn, limits);
        if let Relayed::Handover(io) = http1_relay::serve(io, relay, stop).await {
            self.serve_with_hyper(io).await;
        }
    }

    /// hyper serves the connection (HTTP/2, or what the relay handed over) until it ends or
    /// the graceful shutdown closes it.
    async fn serve_with_hyper<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (shared, conn) = (self.shared, self.conn);
        let svc = service_fn(move |req| handle(shared.clone(), conn, req));
        let served = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        let _ = self.watcher.watch(served.into_owned()).await;
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    shared: Arc<Shared>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let r = admin_response(
                    &shared,
                    req.method(),
                    req.uri().path(),
                    ready.load(Ordering::Relaxed),
                );
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

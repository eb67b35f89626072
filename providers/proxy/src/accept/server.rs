//! Accepting connections: plain HTTP (HTTP/1.1 and h2c with prior knowledge), TLS (ALPN h2
//! and HTTP/1.1), and the admin listener; limits, and graceful shutdown.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::http::http1_relay::{self, RelayContext, Relayed};
use crate::http::request_path::{admin_response, handle};
use crate::http::Shared;
use crate::shared::client_connections::{ConnSlot, ConnectionTable, GuardedBody};
use crate::shared::conn::ConnInfo;
use crate::shared::settings::Limits;

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
///
/// At `max_connections`, the connection that has waited longest for a request is closed to
/// admit the new one (see [`crate::shared::client_connections`]); with every connection busy, the
/// new one is dropped.
pub async fn serve_traffic(
    listener: TcpListener,
    tls: Option<crate::accept::tls::TlsSetup>,
    shared: Arc<Shared>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let builder = Arc::new(connection_builder(&limits));
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let table = Arc::new(ConnectionTable::new(limits.max_requests_per_connection));
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
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            // Full: make room by closing the connection that has waited longest; the new
            // one waits (in its own task) for the permit that frees.
            Err(_) if table.close_longest_waiting() => {
                shared.metrics.connections_closed_for_room.inc();
                None
            }
            Err(_) => {
                // Every connection busy: drop this one at once.
                shared.metrics.connections_refused.inc();
                continue;
            }
        };
        // Registered here, in accept order, so "longest waiting" is exact.
        let registration = table.open();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(client);
        let conn_info = ConnInfo {
            client,
            local,
            tls: tls.is_some(),
            client_cert: None,
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let stop = shutdown.clone();
        let permits = permits.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match wait_for_room(&permits, &table, &shared).await {
                    Some(p) => p,
                    None => return,
                },
            };
            shared.metrics.open_connections.inc();
            let client_conn = ClientConnection {
                shared: shared.clone(),
                conn: conn_info,
                builder,
                slot: registration.slot.clone(),
                limits,
                stop,
            };
            if client_conn.limits.proxy_protocol {
                let mut stream = stream;
                let header = tokio::time::timeout(
                    client_conn.limits.header_read_timeout,
                    crate::accept::proxy_protocol::read_header(&mut stream),
                )
                .await;
                match header {
                    Ok(Ok(h)) => {
                        let mut client_conn = client_conn;
                        if let Some(source) = h.source {
                            client_conn.conn.client = source;
                        }
                        let stream = crate::http::http1_relay::Prefixed::new(h.rest, stream);
                        serve_stream(client_conn, stream, tls, client).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %client, error = %e, "PROXY header refused")
                    }
                    Err(_) => tracing::debug!(client = %client, "PROXY header timed out"),
                }
            } else {
                serve_stream(client_conn, stream, tls, client).await;
            }
            drop(registration);
            shared.metrics.open_connections.dec();
        });
    }
    drop(listener);
    // Every connection watches `shutdown` and holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!("drain period over; closing remaining connections");
    }
}

/// Serves one accepted connection: TLS first when the listener has it (the configuration
/// chosen by server name), then HTTP/1.1 or HTTP/2.
async fn serve_stream<S>(
    client_conn: ClientConnection,
    stream: S,
    tls: Option<crate::accept::tls::TlsSetup>,
    client: std::net::SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match tls {
        None => client_conn.serve_http1(stream).await,
        Some(setup) => {
            // ssl-passthrough: only while some host is passed through is the first record
            // read ahead of the handshake.
            let passing = !client_conn.shared.config.load().passthrough.is_empty();
            if !passing {
                return serve_tls(client_conn, stream, setup, client).await;
            }
            let mut stream = stream;
            let limit = client_conn.limits.tls_handshake_timeout;
            let hello = match tokio::time::timeout(
                limit,
                crate::accept::passthrough::read_first_record(&mut stream),
            )
            .await
            {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    return tracing::debug!(client = %client, error = %e, "TLS record not read")
                }
                Err(_) => return tracing::debug!(client = %client, "TLS handshake timed out"),
            };
            let group = crate::accept::passthrough::server_name(&hello).and_then(|name| {
                let cfg = client_conn.shared.config.load();
                cfg.passthrough.get(&name.to_ascii_lowercase()).cloned()
            });
            match group {
                Some(group) => {
                    client_conn.slot.busy();
                    let connect_timeout = client_conn.shared.settings.connect_timeout;
                    tokio::select! {
                        _ = crate::accept::passthrough::pass(stream, hello, group, connect_timeout) => {}
                        _ = client_conn.slot.told_to_close() => {}
                    }
                }
                None => {
                    let stream = crate::http::http1_relay::Prefixed::new(hello, stream);
                    serve_tls(client_conn, stream, setup, client).await
                }
            }
        }
    }
}

/// The proxy's own TLS handshake (the configuration chosen by server name), then HTTP/1.1
/// or HTTP/2.
async fn serve_tls<S>(
    client_conn: ClientConnection,
    stream: S,
    setup: crate::accept::tls::TlsSetup,
    client: std::net::SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The configuration is chosen by the server name: a host checking client
    // certificates asks for one.
    let handshake = tokio::time::timeout(client_conn.limits.tls_handshake_timeout, async move {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let cfg = setup.config_for(start.client_hello().server_name());
        start.into_stream(cfg).await
    });
    let accepted = tokio::select! {
        a = handshake => Some(a),
        _ = client_conn.slot.told_to_close() => None,
    };
    let mut client_conn = client_conn;
    if let Some(Ok(Ok(tls_stream))) = &accepted {
        client_conn.conn.client_cert = tls_stream.get_ref().1.peer_certificates().map(|chain| {
            Arc::new(crate::shared::conn::PeerCertificate {
                chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
            })
        });
    }
    match accepted {
        Some(Ok(Ok(tls_stream))) if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            client_conn.serve_with_hyper(tls_stream).await
        }
        Some(Ok(Ok(tls_stream))) => client_conn.serve_http1(tls_stream).await,
        Some(Ok(Err(e))) => {
            tracing::debug!(client = %client, error = %e, "TLS handshake failed")
        }
        Some(Err(_)) => {
            tracing::debug!(client = %client, "TLS handshake timed out")
        }
        None => tracing::debug!(client = %client, "closed to make room"),
    }
}

/// How long a client admitted by closing a waiting connection waits for that connection's
/// permit, per attempt.
const ROOM_WAIT: Duration = Duration::from_millis(250);
/// Connections closed for one new client at most: a connection chosen while it waited may
/// receive a request at that moment, and then finishes it before it closes.
const ROOM_ATTEMPTS: usize = 4;

/// The permit a connection chosen to make room frees. If it does not come in time (the
/// chosen connection had just received a request), another waiting connection is chosen;
/// with none left the new client is refused.
async fn wait_for_room(
    permits: &Arc<Semaphore>,
    table: &ConnectionTable,
    shared: &Shared,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    for attempt in 0..ROOM_ATTEMPTS {
        if attempt > 0 {
            if !table.close_longest_waiting() {
                break;
            }
            shared.metrics.connections_closed_for_room.inc();
        }
        if let Ok(Ok(p)) = tokio::time::timeout(ROOM_WAIT, permits.clone().acquire_owned()).await {
            return Some(p);
        }
    }
    shared.metrics.connections_refused.inc();
    None
}

/// One accepted client connection and what serving it needs.
struct ClientConnection {
    shared: Arc<Shared>,
    conn: ConnInfo,
    builder: Arc<auto::Builder<TokioExecutor>>,
    slot: Arc<ConnSlot>,
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
}

impl ClientConnection {
    /// HTTP/1.1: the relay first, hyper for the rest of the connection if it hands over.
    async fn serve_http1<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let relay = RelayContext::new(
            self.shared.clone(),
            self.conn.clone(),
            &self.limits,
            self.slot.clone(),
        );
        if let Relayed::Handover(io) = http1_relay::serve(io, relay, self.stop.clone()).await {
            self.serve_with_hyper(io).await;
        }
    }

    /// hyper serves the connection (HTTP/2, or what the relay handed over) until it ends;
    /// it is shut down gracefully (GOAWAY, or close after the response in flight) when it has
    /// been idle for the idle timeout, is told to make room, reached its request cap, or the
    /// proxy drains.
    async fn serve_with_hyper<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (shared, conn, slot) = (self.shared, self.conn, self.slot);
        let requests = slot.clone();
        let svc = service_fn(move |req| {
            let in_flight = requests.begin();
            let handled = handle(shared.clone(), conn.clone(), req);
            async move {
                let response = handled.await?;
                Ok::<_, Infallible>(response.map(|b| GuardedBody::new(b, in_flight)))
            }
        });
        let served = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(served);
        let mut stop = self.stop;
        tokio::select! {
            _ = served.as_mut() => return,
            _ = slot.idle_or_told(self.limits.idle_timeout) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        served.as_mut().graceful_shutdown();
        let _ = served.await;
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

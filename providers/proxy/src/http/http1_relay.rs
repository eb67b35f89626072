//! The HTTP/1.1 relay: the hot path for body-less requests (GET, HEAD, DELETE, ...).
//!
//! One task drives the client connection and the upstream connection: it parses the request
//! head with `httparse` straight from the read buffer, routes it, writes the upstream
//! request head in one write, parses the response head and passes the body through as it
//! comes (`Content-Length`, chunked — checked chunk by chunk, never re-encoded — or until
//! close). There is no hand-off between tasks, no header map and no body channel per
//! request; the upstream connection returns to its target's pool when the response ends.
//!
//! Everything the relay does not do itself — request bodies, upgrades (WebSocket),
//! `Expect`, HTTP/1.0, HTTP/2 (prior knowledge), absolute-form targets, anything `httparse`
//! rejects or a head over the limits, actions other than forwarding to an HTTP/1.1 target
//! group — hands the connection, with every byte read so far, to hyper and
//! [`crate::http::request_path`] for the rest of its life. So the relay only ever sees requests
//! whose framing is unambiguous; the one smuggling shape hyper would resolve rather than
//! refuse (`Content-Length` with `Transfer-Encoding`) is refused here with 400.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tollgate_contract::matching::{normalize_host, RequestFacts};

use crate::http::parse::{headers_for_conditions, normalize_path, valid_host};
use crate::http::request_path::record_response;
use crate::http::Shared;
use crate::route::config::{CompiledAction, ProxyConfig};
use crate::route::route_table::RuleIndex;
use crate::shared::client_connections::ConnSlot;
use crate::shared::conn::ConnInfo;
use crate::shared::responses::error_body;
use crate::shared::settings::Limits;
use crate::upstream::http1::{
    append_origin_form, append_upstream_headers, eq, parse_final_head, response_facts, trim,
    write_all_flush, Answer, BodyCursor, ConnectionTokens, Framing, ParsedHead, HEAD_BUF, READ_BUF,
};
use crate::upstream::{pick_weighted, UpstreamGroup};

/// Headers parsed in place; a head with more goes to hyper, which applies the real limit.
const MAX_PARSED_HEADERS: usize = 128;
/// A client connection handed to hyper: the bytes the relay already read come first.
pub struct Prefixed<S> {
    prefix: BytesMut,
    io: S,
}

impl<S> Prefixed<S> {
    /// `io`, with `prefix` (bytes already read from it) read first.
    pub fn new(prefix: BytesMut, io: S) -> Self {
        Prefixed { prefix, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How the relay left a client connection.
pub enum Relayed<S> {
    /// Closed (by either side, a timeout or shutdown).
    Done,
    /// Hyper serves the rest of the connection.
    Handover(Prefixed<S>),
}

/// What the relay needs besides the connection.
pub struct RelayContext {
    pub shared: Arc<Shared>,
    pub conn: ConnInfo,
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// The connection's place in the connection table (waiting or busy, told to close).
    pub slot: Arc<ConnSlot>,
}

impl RelayContext {
    pub fn new(shared: Arc<Shared>, conn: ConnInfo, limits: &Limits, slot: Arc<ConnSlot>) -> Self {
        RelayContext {
            shared,
            conn,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            slot,
        }
    }
}

/// A request the relay forwards itself.
pub(crate) struct ForwardPlan {
    pub(crate) head_len: usize,
    /// Held so the rule's counters stay valid while the request runs.
    cfg: Arc<ProxyConfig>,
    index: Option<RuleIndex>,
    group: Arc<UpstreamGroup>,
    head_request: bool,
    /// May be sent again after a reused connection turned out closed (RFC 9110 §9.2.2).
    idempotent: bool,
    client_close: bool,
    /// Host and path for the access log, when it is on.
    log: Option<(String, String)>,
    /// The route's CORS headers and the origin they allow, for the response head.
    cors: Option<(Arc<crate::policy::cors::CompiledCors>, http::HeaderValue)>,
    /// `Strict-Transport-Security` to set on the response.
    hsts: Option<http::HeaderValue>,
    /// The request's place in `limit-connections`, held until its response is relayed.
    _in_progress: Option<crate::policy::rate_limit::InProgressGuard>,
}

/// What to do with the bytes at the front of the client buffer.
pub(crate) enum Step {
    Incomplete,
    Forward(ForwardPlan),
    Handover,
    Reject(u16, &'static str),
}

/// Serves a client connection until it closes or needs hyper.
pub async fn serve<S>(mut io: S, ctx: RelayContext, shutdown: watch::Receiver<bool>) -> Relayed<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(HEAD_BUF);
    let mut upstream_buf = BytesMut::with_capacity(HEAD_BUF);
    let mut request_head: Vec<u8> = Vec::with_capacity(1024);
    let mut response_head: Vec<u8> = Vec::with_capacity(1024);
    let draining = shutdown.clone();
    let mut stop_rx = shutdown;
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    // The first head is timed from the start of the connection, later ones from their first
    // byte, as hyper does; between requests the connection may wait `idle_timeout`
    // (ingress-nginx's `keep-alive`), and the connection table may close it to make room.
    let head_timer = tokio::time::sleep(ctx.header_read_timeout);
    tokio::pin!(head_timer);
    let mut head_timer_armed = true;
    let mut idle_deadline = tokio::time::Instant::now() + ctx.idle_timeout;
    let idle_timer = tokio::time::sleep_until(idle_deadline);
    tokio::pin!(idle_timer);
    let response_timer = tokio::time::sleep(ctx.shared.settings.response_header_timeout);
    tokio::pin!(response_timer);

    loop {
        if !buf.is_empty() {
            match plan_request(&buf, &ctx, &mut request_head) {
                Step::Incomplete if buf.len() < ctx.max_header_bytes => {}
                Step::Incomplete | Step::Handover => {
                    ctx.shared.metrics.relay_handovers.inc();
                    return Relayed::Handover(Prefixed { prefix: buf, io });
                }
                Step::Reject(status, why) => {
                    let _ = answer_locally(&mut io, &mut response_head, status, why, true).await;
                    return Relayed::Done;
                }
                Step::Forward(mut plan) => {
                    buf.advance(plan.head_len);
                    head_timer_armed = false;
                    ctx.slot.busy();
                    plan.client_close |= ctx.slot.count_request();
                    let mut exchange = Exchange {
                        ctx: &ctx,
                        request_head: &request_head,
                        response_head: &mut response_head,
                        upstream_buf: &mut upstream_buf,
                        response_timer: response_timer.as_mut(),
                        draining: &draining,
                    };
                    if exchange.forward(&mut io, &plan).await {
                        let _ = io.shutdown().await;
                        return Relayed::Done;
                    }
                    ctx.slot.waiting();
                    // The timer itself is moved only when it fires (below): re-arming it per
                    // request would touch the timer wheel twice per request.
                    idle_deadline = tokio::time::Instant::now() + ctx.idle_timeout;
                    continue;
                }
            }
        }
        if !head_timer_armed && !buf.is_empty() {
            head_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + ctx.header_read_timeout);
            head_timer_armed = true;
        }
        if buf.capacity() - buf.len() < 1024 {
            // With the buffer consumed this moves back to its start instead of allocating.
            buf.reserve(HEAD_BUF);
        }
        let read = if head_timer_armed {
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                _ = &mut head_timer => {
                    let why = "request head not received in time";
                    let _ = answer_locally(&mut io, &mut response_head, 408, why, true).await;
                    return Relayed::Done;
                }
                _ = ctx.slot.told_to_close() => return Relayed::Done,
                _ = &mut stop => return Relayed::Done,
            }
        } else {
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                // Idle keep-alive connections close without a response, as nginx's do.
                _ = &mut idle_timer => {
                    if tokio::time::Instant::now() >= idle_deadline {
                        return Relayed::Done;
                    }
                    idle_timer.as_mut().reset(idle_deadline);
                    continue;
                }
                _ = ctx.slot.told_to_close() => return Relayed::Done,
                _ = &mut stop => return Relayed::Done,
            }
        };
        match read {
            Ok(0) | Err(_) => return Relayed::Done,
            Ok(_) => {}
        }
    }
}

/// Parses and routes the request at the front of `buf`; for a request the relay forwards,
/// writes the upstream request head into `head`.
pub(crate) fn plan_request(buf: &[u8], ctx: &RelayContext, head: &mut Vec<u8>) -> Step {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PARSED_HEADERS];
    let limit = ctx.max_headers.clamp(1, MAX_PARSED_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut storage[..limit]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Step::Incomplete,
        Err(_) => return Step::Handover,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Step::Handover;
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Step::Handover;
    }

    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut content_lengths = 0;
    let mut has_body = false;
    let mut chunked_or_other_te = false;
    // Upgrades and `Expect` are hyper's.
    let mut hyper_only = false;
    let mut connection = ConnectionTokens::default();
    let trust_forwarded = ctx.shared.settings.real_ip_from.is_some();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if eq(name, "host") {
            hosts += 1;
            host = Some(h.value);
        } else if eq(name, "content-length") {
            content_lengths += 1;
            has_body |= trim(h.value) != b"0";
        } else if eq(name, "transfer-encoding") {
            chunked_or_other_te = true;
        } else if eq(name, "upgrade") || eq(name, "expect") {
            hyper_only = true;
        } else if eq(name, "connection") {
            connection.add(h.value);
        } else if trust_forwarded && eq(name, "x-forwarded-for") {
            // The client may be another address: the general path works it out.
            hyper_only = true;
        }
    }
    // Refused before anything hands the connection over: hyper would read such a request
    // as chunked (RFC 9112 §6.3 allows either) and the README promises a 400.
    if chunked_or_other_te && content_lengths > 0 {
        return Step::Reject(400, "ambiguous message length");
    }
    if hyper_only || connection.upgrade {
        return Step::Handover;
    }
    // A missing, repeated or malformed Host is refused by the general path, in one place.
    if chunked_or_other_te || has_body || content_lengths > 1 || hosts != 1 {
        return Step::Handover;
    }
    let Some(host_raw) = host
        .filter(|h| valid_host(h))
        .and_then(|h| std::str::from_utf8(h).ok())
    else {
        return Step::Handover;
    };

    let cfg = ctx.shared.config.load_full();
    let Some(listener) = (if ctx.conn.tls { &cfg.https } else { &cfg.http }) else {
        return Step::Handover;
    };
    let host_norm = normalize_host(host_raw);
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = normalize_path(raw_path);
    let details = headers_for_conditions(
        listener.routes.needs_request_details(),
        req.headers.iter().map(|h| (h.name, h.value)),
    );
    let facts = RequestFacts {
        host: &host_norm,
        path: &path,
        method,
        query: query.unwrap_or(""),
        headers: &details,
        source_ip: Some(ctx.conn.client.ip()),
    };
    let index = listener.routes.lookup(&facts);
    // Body-less requests only: a body limit has nothing to limit here.
    let CompiledAction::Forward {
        groups,
        rewrite_target,
        upstream: None,
        cors,
        basic_auth: None,
        external_auth: None,
        rate_limit,
        affinity: None,
        hsts,
        client_cert: None,
        error_backend: None,
        ..
    } = &listener.rule(index).action
    else {
        // Per-route upstream settings are applied on the general path.
        return Step::Handover;
    };
    let Some(group) = pick_weighted(groups) else {
        return Step::Handover;
    };
    if group.http2 {
        return Step::Handover;
    }
    // CORS: headers added to the response head; a preflight is answered by the general path.
    let cors = match cors {
        None => None,
        Some(c) => {
            let origin = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("origin"))
                .and_then(|h| http::HeaderValue::from_bytes(h.value).ok());
            match c.allow(origin.as_ref()) {
                Some(_) if method == "OPTIONS" => return Step::Handover,
                Some(allowed) => Some((c.clone(), allowed)),
                None => None,
            }
        }
    };
    // Rate limits last, once the request is certain to be forwarded here: a request over a
    // limit goes to the general path, which finds it over again (a refusal changes no
    // state) and answers 503 with the route's CORS headers.
    let in_progress = match rate_limit {
        None => None,
        Some(l) => match l.admit(ctx.conn.client.ip()) {
            Ok(guard) => guard,
            Err(()) => return Step::Handover,
        },
    };
    let hsts = hsts.clone();
    let forwarded = listener.forwarded_path(index, rewrite_target.as_deref(), &path);

    head.clear();
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    append_origin_form(head, target, raw_path, query, &forwarded);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    append_upstream_headers(
        head,
        req.headers.iter().map(|h| (h.name, h.value)),
        &connection,
        host_raw.as_bytes(),
        &ctx.conn,
    );

    let group = group.clone();
    let log = ctx
        .shared
        .settings
        .access_log
        .then(|| (host_norm, path.into_owned()));
    Step::Forward(ForwardPlan {
        head_len,
        cfg,
        index,
        group,
        head_request: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        client_close: connection.close,
        log,
        cors,
        hsts,
        _in_progress: in_progress,
    })
}

/// The client's side of one forwarded request: the exchange with the targets, and the
/// answer written to the client.
struct Exchange<'a> {
    ctx: &'a RelayContext,
    request_head: &'a [u8],
    response_head: &'a mut Vec<u8>,
    upstream_buf: &'a mut BytesMut,
    response_timer: Pin<&'a mut tokio::time::Sleep>,
    /// Shutdown began: read when a response head is written, so a request already in
    /// flight when it began is answered with `Connection: close`.
    draining: &'a watch::Receiver<bool>,
}

/// What the relay needs of an upstream response head.
struct ResponseHead {
    len: usize,
    status: u16,
    framing: Framing,
    upstream_keepalive: bool,
    close_client: bool,
}

impl Exchange<'_> {
    /// Forwards the planned request and relays the answer; true when the client connection
    /// must close afterwards.
    async fn forward<S>(&mut self, client: &mut S, plan: &ForwardPlan) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        // The clock is read only for the access log.
        let started = plan.log.is_some().then(Instant::now);
        let draining = self.draining;
        let response_head = &mut *self.response_head;
        let answer = crate::upstream::http1::exchange(
            &self.ctx.shared,
            &plan.group,
            self.request_head,
            plan.idempotent,
            self.upstream_buf,
            self.response_timer.as_mut(),
            |buf| client_response_head(buf, plan, *draining.borrow(), response_head),
        )
        .await;
        match answer {
            Ok(answer) => {
                let status = answer.head.status;
                let close = self.relay_response(client, answer).await;
                self.finish(plan, status, started);
                close
            }
            Err((status, why)) => {
                let close = plan.client_close || *self.draining.borrow();
                let failed = answer_locally(client, self.response_head, status, why, close)
                    .await
                    .is_err();
                self.finish(plan, status, started);
                close || failed
            }
        }
    }

    fn finish(&self, plan: &ForwardPlan, status: u16, started: Option<Instant>) {
        record_response(
            &plan.cfg,
            plan.index,
            &self.ctx.conn,
            status,
            plan.log.as_ref(),
            started,
        );
    }

    /// Writes the response head and passes the body through; returns the upstream
    /// connection to the pool when the body ended cleanly. True when the client connection
    /// must close.
    async fn relay_response<S>(&mut self, client: &mut S, answer: Answer<ResponseHead>) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        let Answer {
            mut stream,
            head,
            in_flight,
        } = answer;
        let buf = &mut *self.upstream_buf;
        buf.advance(head.len);
        let mut body = BodyCursor::new(head.framing);
        let Ok(first) = body.scan(buf) else {
            return true; // a malformed first chunk: nothing sent yet, but no way to recover
        };
        self.response_head.extend_from_slice(&buf[..first]);
        let extra = buf.len() > first;
        buf.advance(first);
        if write_all_flush(client, self.response_head).await.is_err() {
            if body.is_done() && !extra && head.upstream_keepalive {
                in_flight.target().relay_idle.put(stream);
            }
            return true;
        }
        while !body.is_done() {
            buf.clear();
            if buf.capacity() < READ_BUF {
                buf.reserve(READ_BUF);
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return true, // until close, or truncated: the client sees it end
                Ok(_) => {}
            }
            let Ok(n) = body.scan(buf) else {
                tracing::debug!(target = %in_flight.target().addr, "malformed chunked response");
                return true;
            };
            if n < buf.len() {
                // Bytes after the end of the response: the connection is not trustworthy.
                let _ = write_all_flush(client, &buf[..n]).await;
                return true;
            }
            if write_all_flush(client, &buf[..n]).await.is_err() {
                return true;
            }
        }
        if !extra && head.upstream_keepalive {
            in_flight.target().relay_idle.put(stream);
        }
        head.close_client
    }
}

/// Parses the upstream response head at the front of `buf` and writes the client's response
/// head into `out`: hop-by-hop headers dropped, framing headers kept (the body passes
/// through as framed). `None` while incomplete.
fn client_response_head(
    buf: &mut BytesMut,
    plan: &ForwardPlan,
    draining: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PARSED_HEADERS];
    let (len, resp) = match parse_final_head(buf, &mut storage)? {
        ParsedHead::Incomplete => return Ok(None),
        ParsedHead::Final { len, response } => (len, response),
    };
    let facts = response_facts(&resp, plan.head_request)?;
    let close_client = plan.client_close || draining || facts.framing == Framing::UntilClose;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa_status(facts.status).as_slice());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut has_date, mut has_server) = (false, false);
    for h in resp.headers.iter() {
        let name = h.name;
        match name.len() {
            4 => has_date |= name.eq_ignore_ascii_case("date"),
            6 => has_server |= name.eq_ignore_ascii_case("server"),
            _ => {}
        }
        // The body passes through as framed; CORS headers the route sets replace the
        // target's.
        if facts.drops(name, true)
            || plan.cors.as_ref().is_some_and(|(c, _)| c.sets(name))
            || (plan.hsts.is_some() && name.eq_ignore_ascii_case("strict-transport-security"))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        // A proxy forwarding a response without Date adds one (RFC 9110 §6.6.1), as hyper
        // does on the general path.
        out.extend_from_slice(b"date: ");
        append_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !has_server {
        // As ingress-nginx does: every response names a server (see `request_path::SERVER`).
        out.extend_from_slice(b"server: tollgate\r\n");
    }
    if let Some((c, origin)) = &plan.cors {
        c.append_raw(origin, out);
    }
    if let Some(h) = &plan.hsts {
        out.extend_from_slice(b"strict-transport-security: ");
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status: facts.status,
        framing: facts.framing,
        upstream_keepalive: facts.upstream_keepalive,
        close_client,
    }))
}

/// Appends the current time as an HTTP date, formatted at most once per second per thread.
fn append_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static FORMATTED: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    FORMATTED.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A status code's three digits.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

/// Answers with an error the relay makes itself, as `request_path::error_response` does for
/// hyper (`out` is the buffer it is written from).
async fn answer_locally<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    why: &str,
    close: bool,
) -> std::io::Result<()> {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let body = error_body(status, why);
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nserver: tollgate\r\ndate: ",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error"),
        body.len(),
    );
    append_http_date(out);
    let _ = write!(
        out,
        "\r\n{}\r\n{body}",
        if close { "connection: close\r\n" } else { "" },
    );
    write_all_flush(io, out).await
}

//! HTTP/1.1 exchanges with targets, driven by the task of the request itself: no client
//! connection task, no channel. A request head goes out in one write on a pooled (or new)
//! connection, the response head is parsed with `httparse`, and the body is read from the
//! same connection as the client takes it; the connection returns to its target's pool when
//! the body ends cleanly.
//!
//! Used by the HTTP/1.1 relay ([`crate::http::http1_relay`], which passes bodies through as they
//! are framed) and by the general path for body-less requests from HTTP/2 and handed-over
//! HTTP/1.1 clients ([`forward_body_less`], which decodes bodies for hyper to re-frame).
//! Requests with bodies and upgrades use hyper's client (`request_path`).

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::shared::body::ProxyBody;
use crate::shared::conn::ConnInfo;
use crate::upstream::clients::UpstreamEnv;
use crate::upstream::{InFlight, TargetState, UpstreamGroup};

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Response headers parsed; a response with more is refused (502).
const MAX_RESPONSE_HEADERS: usize = 128;
/// Read buffer growth step. Buffers start smaller (a few KiB per connection keeps hundreds
/// of connections' buffers in cache) and grow by this when a body streams.
pub(crate) const READ_BUF: usize = 16 * 1024;
/// Buffer for reading heads: what a connection keeps between requests.
pub(crate) const HEAD_BUF: usize = 4096;
/// Targets tried for one request when connections fail.
const MAX_ATTEMPTS: usize = 3;
/// Longest chunk-size line (with extensions) and trailer section passed through.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// A connection to a target, plain or TLS (`backend-protocol: HTTPS`).
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(s) => s,
            UpstreamStream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the target closed the connection (or sent something unasked) while it was
    /// idle. Costs a `recv(MSG_PEEK)` when the socket's readiness is set.
    pub fn probe_closed(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        // Pending: nothing to read, the connection is open and quiet.
        self.tcp().poll_peek(&mut cx, &mut rb).is_ready()
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub(crate) fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they end at the proxy, in both directions.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The tokens of a message's `Connection` headers: `close`, `upgrade`, and the headers they
/// name (hop-by-hop too).
#[derive(Debug, Default)]
pub(crate) struct ConnectionTokens<'b> {
    pub close: bool,
    pub upgrade: bool,
    named: [&'b [u8]; 8],
    len: usize,
    /// Named headers beyond the first eight (rare; allocated only then).
    more: Vec<&'b [u8]>,
}

impl<'b> ConnectionTokens<'b> {
    /// Reads one `Connection` header value.
    pub fn add(&mut self, value: &'b [u8]) {
        for token in value.split(|b| *b == b',').map(trim) {
            if eq(token, "close") {
                self.close = true;
            } else if eq(token, "upgrade") {
                self.upgrade = true;
            } else if token.is_empty() || eq(token, "keep-alive") {
            } else if self.len == self.named.len() {
                self.more.push(token);
            } else {
                self.named[self.len] = token;
                self.len += 1;
            }
        }
    }

    /// Whether `name` was named.
    pub fn names(&self, name: &str) -> bool {
        self.named[..self.len]
            .iter()
            .chain(&self.more)
            .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Request headers a target never gets from the client: hop-by-hop ones, `Host` (the proxy
/// writes the host it routed by), and [`untrusted_request_header`]s.
fn dropped_request_header(name: &str) -> bool {
    is_hop_by_hop(name) || name.eq_ignore_ascii_case("host") || untrusted_request_header(name)
}

/// Headers that tell a target where a request came from or what it asked for, which only a
/// proxy may say. A client's own would be believed by the target, so they are dropped (or,
/// for those the proxy sets, replaced):
///
/// - `X-Forwarded-For`, `-Host`, `-Proto`, `-Port`, `X-Real-IP`: replaced with what the
///   proxy saw, as ingress-nginx does without `use-forwarded-headers`.
/// - `Forwarded` (RFC 7239): dropped; the proxy speaks `X-Forwarded-*`, and a stale
///   `Forwarded` next to them would give a target two different client addresses.
/// - `X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI`: dropped; IIS, Symfony and Zend
///   route by them, past the rule that admitted the request.
/// - `X-Forwarded-Prefix`: dropped; only the `x-forwarded-prefix` annotation may set it.
/// - `X-Forwarded-Server`, `X-Forwarded-Scheme`, `X-Forwarded-Ssl`, `X-Scheme`,
///   `X-Url-Scheme`, `Front-End-Https`: dropped; frameworks (Rack, Django, Spring) read
///   them as "the client used HTTPS".
/// - `True-Client-IP`, `X-Client-IP`, `Client-IP`, `X-Cluster-Client-IP`,
///   `CF-Connecting-IP`, `Fastly-Client-IP`, `X-Originating-IP`, `X-Remote-IP`,
///   `X-Remote-Addr`: dropped; they are read as the client's address by allow-lists and
///   rate limits.
/// - `Proxy`: dropped (httpoxy, CVE-2016-5385: CGI turns it into `HTTP_PROXY`), as
///   ingress-nginx's template does.
pub(crate) fn untrusted_request_header(name: &str) -> bool {
    const UNTRUSTED: [&str; 25] = [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
        "true-client-ip",
        "x-client-ip",
        "client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
    ];
    // Most request headers start with neither letter; they cost one comparison.
    let first = name.as_bytes().first().map(u8::to_ascii_lowercase);
    (matches!(first, Some(b'x' | b'f' | b't' | b'c'))
        && UNTRUSTED.iter().any(|u| name.eq_ignore_ascii_case(u)))
        || name.eq_ignore_ascii_case("proxy")
}

/// Appends the request target a target gets: the client's own (`raw`, query included) when
/// routing left its path (`raw_path`) as it was, else the routed path and the client's query.
pub(crate) fn append_origin_form(
    out: &mut Vec<u8>,
    raw: &str,
    raw_path: &str,
    query: Option<&str>,
    routed: &str,
) {
    if routed == raw_path {
        out.extend_from_slice(raw.as_bytes());
    } else {
        out.extend_from_slice(routed.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
    }
}

/// Ends an HTTP/1.1 request head for a target (the request line is already in `head`): the
/// client's headers minus the dropped ones and those its `Connection` headers name (`TE:
/// trailers` kept: gRPC-style clients need it end to end), then `Host` and
/// `X-Forwarded-Host` (`host`, the host the request was routed by), `X-Forwarded-For`,
/// `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Port` from what the proxy saw. These
/// are written by the proxy, so no `Connection` token can remove them.
pub(crate) fn append_upstream_headers<'h>(
    head: &mut Vec<u8>,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    connection: &ConnectionTokens<'_>,
    host: &[u8],
    conn: &ConnInfo,
) {
    for (name, value) in headers {
        if dropped_request_header(name)
            && !(eq(name.as_bytes(), "te") && eq(trim(value), "trailers"))
        {
            continue;
        }
        if connection.names(name) {
            continue;
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"host: ");
    head.extend_from_slice(host);
    head.extend_from_slice(b"\r\nx-forwarded-host: ");
    head.extend_from_slice(host);
    let ip = conn.client.ip();
    let _ = write!(
        head,
        "\r\nx-forwarded-for: {ip}\r\nx-real-ip: {ip}\r\nx-forwarded-proto: {}\r\nx-forwarded-port: {}\r\n\r\n",
        if conn.tls { "https" } else { "http" },
        conn.local.port()
    );
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head of a final response says about its body and connection.
pub(crate) struct ResponseFacts<'b> {
    pub status: u16,
    pub framing: Framing,
    /// The connection may carry another request afterwards.
    pub upstream_keepalive: bool,
    pub has_transfer_encoding: bool,
    pub connection: ConnectionTokens<'b>,
}

impl ResponseFacts<'_> {
    /// Whether a response header stops at the proxy: hop-by-hop ones (Transfer-Encoding
    /// kept when the body passes through as framed, `body_as_framed`), those `Connection`
    /// names, and a Content-Length that Transfer-Encoding overrides (RFC 9112 §6.3).
    pub fn drops(&self, name: &str, body_as_framed: bool) -> bool {
        let hop_by_hop = is_hop_by_hop(name)
            && !(body_as_framed && name.eq_ignore_ascii_case("transfer-encoding"));
        let stale_length =
            self.has_transfer_encoding && name.eq_ignore_ascii_case("content-length");
        hop_by_hop || stale_length || self.connection.names(name)
    }
}

/// A parsed final response head: its length in the buffer (with any interim 1xx responses
/// before it) and the head itself.
pub(crate) enum ParsedHead<'h, 'b> {
    Incomplete,
    Final {
        len: usize,
        response: httparse::Response<'h, 'b>,
    },
}

/// Parses the final response head in `buf`, past any interim 1xx responses.
pub(crate) fn parse_final_head<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<ParsedHead<'h, 'b>, &'static str> {
    let mut offset = 0;
    // Interim responses are rare: parse them with storage of their own, so the final head is
    // parsed once, into the caller's.
    while buf[offset..].starts_with(b"HTTP/1.1 1") || buf[offset..].starts_with(b"HTTP/1.0 1") {
        let mut interim_storage =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut interim = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut interim,
            &buf[offset..],
            &mut interim_storage,
        ) {
            Ok(httparse::Status::Complete(n)) => match interim.code {
                Some(101) => return Err("switching protocols without an upgrade request"),
                Some(code) if (100..200).contains(&code) => offset += n,
                _ => return Err("malformed response head"),
            },
            Ok(httparse::Status::Partial) => return Ok(ParsedHead::Incomplete),
            Err(_) => return Err("malformed response head"),
        }
    }
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        &buf[offset..],
        storage,
    ) {
        Ok(httparse::Status::Complete(n)) => Ok(ParsedHead::Final {
            len: offset + n,
            response,
        }),
        Ok(httparse::Status::Partial) => Ok(ParsedHead::Incomplete),
        Err(_) => Err("malformed response head"),
    }
}

/// Framing and connection facts of a final response (RFC 9112 §6.3).
pub(crate) fn response_facts<'b>(
    resp: &httparse::Response<'_, 'b>,
    head_request: bool,
) -> Result<ResponseFacts<'b>, &'static str> {
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("malformed status line");
    };
    let mut facts = ResponseFacts {
        status,
        framing: Framing::UntilClose,
        upstream_keepalive: version == 1,
        has_transfer_encoding: false,
        connection: ConnectionTokens::default(),
    };
    let mut chunked = false;
    let mut length: Option<u64> = None;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if eq(name, "transfer-encoding") {
            facts.has_transfer_encoding = true;
            // Only a final `chunked` delimits the body; anything else runs to close.
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| eq(trim(last), "chunked"));
        } else if eq(name, "content-length") {
            let v = std::str::from_utf8(trim(h.value))
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting Content-Lengths");
            }
            length = Some(v);
        } else if eq(name, "connection") {
            facts.connection.add(h.value);
        }
    }
    if facts.connection.close {
        facts.upstream_keepalive = false;
    }
    facts.framing = if head_request || status == 204 || status == 304 {
        Framing::None
    } else if facts.has_transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if facts.framing == Framing::UntilClose {
        facts.upstream_keepalive = false;
    }
    Ok(facts)
}

/// Why no response head came from a target.
enum HeadError {
    Connect,
    Timeout,
    Upstream(&'static str),
}

/// A target's answer: the connection (its buffer holds the response head and whatever of
/// the body came with it), what the caller parsed of the head, and the in-flight count.
pub(crate) struct Answer<T> {
    pub stream: UpstreamStream,
    pub head: T,
    pub in_flight: InFlight,
}

/// Sends `request_head` to a target of `group` and reads the response head into `buf`,
/// parsed by `parse` (`Ok(None)`: incomplete). Tries up to three targets when connections
/// fail (ejecting them); a pooled connection found closed before any answer is replaced
/// once by a new one when the request may be repeated. On failure, the status and reason
/// the client gets (502, 503, 504).
pub(crate) async fn exchange<T>(
    shared: &UpstreamEnv,
    group: &UpstreamGroup,
    request_head: &[u8],
    idempotent: bool,
    buf: &mut BytesMut,
    mut timer: Pin<&mut tokio::time::Sleep>,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, &'static str>,
) -> Result<Answer<T>, (u16, &'static str)> {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut tried = [unspecified; MAX_ATTEMPTS];
    let mut n_tried = 0;
    let attempts = group.targets.len().clamp(1, MAX_ATTEMPTS);
    for _ in 0..attempts {
        let Some(target) = group.pick(&tried[..n_tried]) else {
            break;
        };
        tried[n_tried] = target.addr;
        n_tried += 1;
        let in_flight = InFlight::new(target.clone());
        let sent = Instant::now();
        let answer = exchange_head(
            shared,
            &target,
            group,
            request_head,
            idempotent,
            buf,
            timer.as_mut(),
            &mut parse,
        )
        .await;
        match answer {
            Err(HeadError::Connect) => {
                target.record_connect_failure();
                tracing::debug!(target = %target.addr, "connect failed; trying another target");
            }
            Err(HeadError::Timeout) => return Err((504, "upstream did not answer in time")),
            Err(HeadError::Upstream(why)) => {
                tracing::debug!(target = %target.addr, error = why, "upstream request failed");
                return Err((502, "upstream connection failed"));
            }
            Ok((stream, head)) => {
                target.record_success();
                shared
                    .metrics
                    .upstream_latency
                    .observe(sent.elapsed().as_secs_f64());
                return Ok(Answer {
                    stream,
                    head,
                    in_flight,
                });
            }
        }
    }
    Err(if n_tried == 0 {
        (503, "no ready endpoints")
    } else {
        (502, "could not connect to any endpoint")
    })
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn exchange_head<T>(
    shared: &UpstreamEnv,
    target: &Arc<TargetState>,
    group: &UpstreamGroup,
    request_head: &[u8],
    idempotent: bool,
    buf: &mut BytesMut,
    mut timer: Pin<&mut tokio::time::Sleep>,
    parse: &mut impl FnMut(&mut BytesMut) -> Result<Option<T>, &'static str>,
) -> Result<(UpstreamStream, T), HeadError> {
    let settings = &shared.settings;
    'attempt: for fresh in [false, true] {
        let pooled = if fresh {
            None
        } else {
            target
                .relay_idle
                .take(settings.upstream_idle_timeout)
                // Only a request that may be repeated risks a connection without asking.
                .filter(|s| idempotent || !s.probe_closed())
        };
        let reused = pooled.is_some();
        let mut stream = match pooled {
            Some(s) => s,
            // Boxed: a TLS handshake's state is large and new connections are rare.
            None => Box::pin(connect(
                target.addr,
                shared,
                group.tls_for(&shared.clients.tls, target.addr.ip()),
            ))
            .await
            .ok_or(HeadError::Connect)?,
        };
        buf.clear();
        if write_all_flush(&mut stream, request_head).await.is_err() {
            if reused {
                continue 'attempt;
            }
            return Err(HeadError::Upstream("writing the request failed"));
        }
        let deadline = tokio::time::Instant::now() + settings.response_header_timeout;
        // The timer keeps an earlier request's deadline until it fires, and is re-armed only
        // then: the timer wheel is touched about once per timeout period per connection
        // rather than twice per request.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            match parse(buf) {
                Ok(Some(head)) => return Ok((stream, head)),
                Ok(None) => {}
                Err(why) => return Err(HeadError::Upstream(why)),
            }
            if buf.len() > MAX_RESPONSE_HEAD {
                return Err(HeadError::Upstream("response head too large"));
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(HEAD_BUF);
            }
            let read = tokio::select! {
                biased;
                r = stream.read_buf(buf) => r,
                _ = timer.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(HeadError::Timeout);
                    }
                    timer.as_mut().reset(deadline);
                    continue;
                }
            };
            match read {
                Ok(n) if n > 0 => {}
                _ if reused && buf.is_empty() && idempotent => continue 'attempt,
                _ => return Err(HeadError::Upstream("connection closed before a response")),
            }
        }
    }
    Err(HeadError::Upstream("no connection"))
}

async fn connect(
    addr: SocketAddr,
    shared: &UpstreamEnv,
    tls: Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Option<UpstreamStream> {
    let timeout = shared.settings.connect_timeout;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let Some((connector, name)) = tls else {
        return Some(UpstreamStream::Plain(stream));
    };
    // A target whose certificate fails the group's check is a failed connect: the next
    // target is tried, and with none left the answer is 502, as nginx's.
    let tls_stream = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(target = %addr, error = %e, "TLS to the target failed");
            return None;
        }
        Err(_) => return None,
    };
    Some(UpstreamStream::Tls(Box::new(tls_stream)))
}

pub(crate) async fn write_all_flush<S: AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Follows a chunked body as it passes, to know where it ends and where its data is;
/// refuses malformed chunk sizes rather than forward them.
#[derive(Debug, Default)]
pub(crate) struct ChunkScanner {
    state: ChunkState,
    size: u64,
    digits: usize,
    line: usize,
    trailers: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkScanner {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes framing bytes from the front of `bytes` up to and including one run of
    /// chunk data; returns how many bytes it consumed and where that data is.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(usize, Option<Range<usize>>), ()> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data => {
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    return Ok((i + n, Some(i..i + n)));
                }
                _ => {}
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::Size, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size, _) => {
                    let d = char::from(b).to_digit(16).ok_or(())?;
                    if self.digits >= 15 {
                        return Err(()); // more than 2^60 bytes: refuse rather than overflow
                    }
                    self.size = self.size * 16 + u64::from(d);
                    self.digits += 1;
                    ChunkState::Size
                }
                (ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Extension, b'\n') => return Err(()),
                (ChunkState::Extension, _) => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    ChunkState::Extension
                }
                (ChunkState::SizeLf, b'\n') => {
                    self.digits = 0;
                    self.line = 0;
                    if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::TrailerStart, b'\r') => ChunkState::EndLf,
                (ChunkState::TrailerStart | ChunkState::TrailerLine, b'\n') => return Err(()),
                (ChunkState::TrailerLine, b'\r') => ChunkState::TrailerLf,
                (ChunkState::TrailerStart | ChunkState::TrailerLine, _) => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(());
                    }
                    ChunkState::TrailerLine
                }
                (ChunkState::TrailerLf, b'\n') => ChunkState::TrailerStart,
                (ChunkState::EndLf, b'\n') => ChunkState::Done,
                _ => return Err(()),
            };
        }
        Ok((i, None))
    }
}

/// Follows a response body as it is read, whatever its framing: where it ends, and where its
/// data is. The relay passes the framing through ([`BodyCursor::scan`]); the general path
/// hands hyper the data alone ([`BodyCursor::step`]).
#[derive(Debug)]
pub(crate) struct BodyCursor {
    framing: Framing,
    /// Bytes left of a `Content-Length` body.
    remaining: u64,
    chunks: ChunkScanner,
    done: bool,
}

impl BodyCursor {
    pub fn new(framing: Framing) -> Self {
        BodyCursor {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: ChunkScanner::default(),
            done: framing == Framing::None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the body ends when the target closes the connection (which then cannot be
    /// reused).
    pub fn is_close_delimited(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// The target closed the connection: the end of a close-delimited body.
    pub fn end_at_close(&mut self) {
        if self.is_close_delimited() {
            self.done = true;
        }
    }

    /// Consumes framing bytes from the front of `bytes` up to and including one run of
    /// data; returns how many bytes it consumed and where that data is.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(usize, Option<Range<usize>>), ()> {
        if self.done {
            return Ok((0, None));
        }
        match self.framing {
            Framing::None => Ok((0, None)),
            Framing::UntilClose => Ok((bytes.len(), Some(0..bytes.len()))),
            Framing::Length(_) => {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                Ok((n, Some(0..n)))
            }
            Framing::Chunked => {
                let stepped = self.chunks.step(bytes)?;
                self.done = self.chunks.is_done();
                Ok(stepped)
            }
        }
    }

    /// How many of `bytes` belong to the body, framing included (all of them unless it ends
    /// inside).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < bytes.len() && !self.done {
            match self.step(&bytes[i..])? {
                (0, _) => break,
                (n, _) => i += n,
            }
        }
        Ok(i)
    }
}

/// Forwards a body-less request for hyper's server (HTTP/2 clients, handed-over HTTP/1.1
/// connections): `request_head` is the complete upstream request head. The response body
/// is decoded (hyper frames it again for the client) and read from the target as the client
/// takes it.
pub(crate) async fn forward_body_less(
    shared: &UpstreamEnv,
    group: &UpstreamGroup,
    request_head: &[u8],
    idempotent: bool,
    head_request: bool,
) -> Result<Response<ProxyBody>, (u16, &'static str)> {
    // Small to start with: most response heads fit, and glibc serves blocks up to 1 KiB from
    // its per-thread cache (a larger block per request churned its slower bins, visible as
    // `malloc_consolidate` in profiles); it grows when a body streams.
    let mut buf = BytesMut::with_capacity(1024);
    let timer = tokio::time::sleep(shared.settings.response_header_timeout);
    tokio::pin!(timer);
    let answer = exchange(
        shared,
        group,
        request_head,
        idempotent,
        &mut buf,
        timer,
        |buf| {
            let mut storage =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
            let (len, response) = match parse_final_head(buf, &mut storage)? {
                ParsedHead::Incomplete => return Ok(None),
                ParsedHead::Final { len, response } => (len, response),
            };
            let facts = response_facts(&response, head_request)?;
            let mut headers = HeaderMap::with_capacity(response.headers.len());
            for h in response.headers.iter() {
                // hyper frames the decoded body again.
                if facts.drops(h.name, false) {
                    continue;
                }
                let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(h.name.as_bytes()),
                    HeaderValue::from_bytes(h.value),
                ) else {
                    return Err("invalid response header");
                };
                headers.append(n, v);
            }
            if !headers.contains_key(http::header::SERVER) {
                headers.insert(http::header::SERVER, crate::shared::responses::SERVER);
            }
            let status = StatusCode::from_u16(facts.status).map_err(|_| "invalid status code")?;
            Ok(Some((
                len,
                status,
                headers,
                facts.framing,
                facts.upstream_keepalive,
            )))
        },
    )
    .await?;
    let (len, status, headers, framing, keepalive) = answer.head;
    buf.advance(len);
    let body = UpstreamBody {
        stream: Some(answer.stream),
        buf,
        cursor: BodyCursor::new(framing),
        keepalive,
        in_flight: answer.in_flight,
    };
    let mut resp = Response::new(http_body_util::BodyExt::boxed_unsync(
        http_body_util::BodyExt::map_err(body, |e| -> crate::shared::body::BodyError {
            Box::new(e)
        }),
    ));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// The body of a target's response, read from its connection as the client takes it; the
/// connection goes back to the target's pool when the body ends cleanly.
struct UpstreamBody {
    stream: Option<UpstreamStream>,
    buf: BytesMut,
    cursor: BodyCursor,
    keepalive: bool,
    in_flight: InFlight,
}

/// A target's response body failed (closed early, malformed chunks).
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: {0}")]
pub struct BodyError(&'static str);

impl UpstreamBody {
    /// The next piece of body data already in the buffer, if any.
    fn next_data(&mut self) -> Result<Option<Bytes>, BodyError> {
        while !self.buf.is_empty() && !self.cursor.is_done() {
            let (consumed, data) = self
                .cursor
                .step(&self.buf)
                .map_err(|()| BodyError("malformed chunked encoding"))?;
            let mut part = self.buf.split_to(consumed);
            if let Some(range) = data.filter(|r| !r.is_empty()) {
                part.advance(range.start);
                part.truncate(range.len());
                return Ok(Some(part.freeze()));
            }
        }
        Ok(None)
    }

    /// The body ended: keep the connection if it is clean.
    fn release(&mut self) {
        if let Some(stream) = self.stream.take() {
            if self.keepalive && self.buf.is_empty() && !self.cursor.is_close_delimited() {
                self.in_flight.target().relay_idle.put(stream);
            }
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match this.next_data() {
                Err(e) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) => {
                    if this.cursor.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
                }
                Ok(None) if this.cursor.is_done() => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(READ_BUF);
            }
            match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.cursor.is_close_delimited() => {
                    this.cursor.end_at_close();
                    this.stream = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(BodyError("target closed mid-body"))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cursor.is_done() && self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{BodyCursor, Framing};

    fn scan_all(parts: &[&[u8]]) -> Result<(usize, bool), ()> {
        let mut s = BodyCursor::new(Framing::Chunked);
        let mut total = 0;
        for p in parts {
            total += s.scan(p)?;
            if s.is_done() {
                break;
            }
        }
        Ok((total, s.is_done()))
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(scan_all(&[body]), Ok((body.len(), true)));
        // Byte by byte, the same.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(scan_all(&bytes), Ok((body.len(), true)));
        // Bytes after the end are not part of it.
        let mut more = body.to_vec();
        more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(scan_all(&[&more]), Ok((body.len(), true)));
        // Unfinished.
        assert_eq!(scan_all(&[b"4\r\nWi"]), Ok((5, false)));
    }

    #[test]
    fn chunk_data_is_found_between_the_framing() {
        let body: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, body.len()] {
            let mut s = BodyCursor::new(Framing::Chunked);
            let mut data = Vec::new();
            for part in body.chunks(piece) {
                let mut i = 0;
                while i < part.len() && !s.is_done() {
                    let (n, range) = s.step(&part[i..]).expect("well-formed");
                    if let Some(r) = range {
                        data.extend_from_slice(&part[i..][r]);
                    }
                    i += n;
                }
            }
            assert!(s.is_done());
            assert_eq!(data, b"Wikipedia", "pieces of {piece}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"zz\r\nabc\r\n"[..],
            b"\r\n",
            b"4\r\nWikiXX",
            b"4\nWiki\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\nX-T: 1\n\r\n",
        ] {
            assert_eq!(
                scan_all(&[bad]),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

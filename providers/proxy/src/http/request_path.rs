//! The proxy's general request path: route lookup → action → upstream, for one request that
//! hyper parsed — HTTP/2, and HTTP/1.1 connections the relay handed over (bodies, upgrades,
//! local answers). Body-less HTTP/1.1 requests are served by [`crate::http::http1_relay`] first.
//!
//! Nothing here takes a lock: the configuration is one atomic load (`ArcSwap`), target choice
//! uses atomics, metric handles are pre-resolved. Bodies stream both ways and are never
//! buffered whole.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tollgate_contract::matching::RequestFacts;
use tollgate_contract::Redirect;

use crate::http::parse::{headers_for_conditions, normalize_path, request_host};
use crate::http::send_timeout::SendProgress;
use crate::http::Shared;
use crate::route::config::{CompiledAction, CompiledListener, ProxyConfig};
use crate::route::route_table::RuleIndex;
use crate::shared::body::{boxed_error, empty, BodyError, ProxyBody};
use crate::shared::conn::ConnInfo;
use crate::shared::responses::{error_response, local_response, SERVER};
use crate::shared::settings::ProxySettings;
use crate::upstream::http1::{
    append_origin_form, append_upstream_headers, untrusted_request_header, ConnectionTokens,
    HOP_BY_HOP,
};
use crate::upstream::{pick_weighted, InFlight, UpstreamGroup};

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Request-smuggling shapes hyper would otherwise normalise: both `Content-Length` and
/// `Transfer-Encoding`, or several `Content-Length`s.
fn smuggling_attempt<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    (cl > 0 && h.contains_key(header::TRANSFER_ENCODING)) || cl > 1
}

/// Handles one request. Never fails: every problem becomes a response.
///
/// Routing happens before the future is returned, so the future hyper keeps for the request
/// (moved into a task per HTTP/2 stream) holds only what the response still needs: the
/// request itself is gone by then, the forwarding is boxed (see [`ForwardFuture`]).
pub fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
    // The clock is read only for the access log.
    let started = shared.settings.access_log.then(Instant::now);
    let routed = route(shared, conn.clone(), req);
    async move {
        let response = match routed.answer {
            Answer::Ready(r) => r,
            Answer::Forward(f) => f.await,
        };
        if let Some((cfg, index)) = &routed.counted {
            let status = response.status().as_u16();
            let log = routed.access_log.as_deref();
            record_response(cfg, *index, &conn, status, log, started);
        }
        Ok(response)
    }
}

/// Counts a routed request's response against its rule and, when the access log is on
/// (`log`: host and path), writes its line. Shared by the relay and the general path.
pub(crate) fn record_response(
    cfg: &ProxyConfig,
    index: Option<RuleIndex>,
    conn: &ConnInfo,
    status: u16,
    log: Option<&(String, String)>,
    started: Option<Instant>,
) {
    if let Some(l) = if conn.tls { &cfg.https } else { &cfg.http } {
        l.rule(index).counters.record(status);
    }
    if let Some((host, path)) = log {
        tracing::info!(
            target: "tollgate::access",
            client = %conn.client,
            host = %host,
            path = %path,
            status,
            micros = started.map_or(0, |s| s.elapsed().as_micros() as u64),
        );
    }
}

/// A routed request: its answer, and what is recorded once the response is known.
struct Routed {
    answer: Answer,
    /// The configuration and rule whose status counters count the response.
    counted: Option<(Arc<ProxyConfig>, Option<RuleIndex>)>,
    /// Host and path for the access log, when it is on.
    access_log: Option<Box<(String, String)>>,
}

/// What a routed request gets: a response made here, or one forwarded from a target.
enum Answer {
    Ready(Response<ProxyBody>),
    Forward(ForwardFuture),
}

/// Routes a request by the current configuration: a local answer, or the forwarding future.
fn route(shared: Arc<Shared>, mut conn: ConnInfo, req: Request<Incoming>) -> Routed {
    if let Some(trusted) = &shared.settings.real_ip_from {
        let ip =
            crate::policy::forwarded_for::real_client(trusted, conn.client.ip(), req.headers());
        conn.client = SocketAddr::new(ip, conn.client.port());
    }
    let ready = |r| Routed {
        answer: Answer::Ready(r),
        counted: None,
        access_log: None,
    };
    if smuggling_attempt(&req) {
        return ready(bad_request("ambiguous message length"));
    }
    let cfg = shared.config.load_full();
    let listener: &CompiledListener = match if conn.tls { &cfg.https } else { &cfg.http } {
        Some(l) => l,
        None => return ready(error_response(StatusCode::NOT_FOUND, "no listener")),
    };
    let (host, host_value) = match request_host(&req, conn.tls) {
        Ok(h) => h,
        Err(why) => return ready(bad_request(why)),
    };
    if let Some(r) = unusual_target(&req) {
        return ready(r);
    }
    let path = normalize_path(req.uri().path()).into_owned();
    let query = req.uri().query().unwrap_or("");
    let headers = headers_for_conditions(
        listener.routes.needs_request_details(),
        req.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    let facts = RequestFacts {
        host: &host,
        path: &path,
        method: req.method().as_str(),
        query,
        headers: &headers,
        source_ip: Some(conn.client.ip()),
    };
    let index = listener.routes.lookup(&facts);
    let rule = listener.rule(index);

    let answer = match &rule.action {
        CompiledAction::Fixed {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::NOT_FOUND);
            Answer::Ready(local_response(status, content_type, body.clone()))
        }
        CompiledAction::Redirect(r) => {
            Answer::Ready(redirect(r, &conn, &host, &path, query, &shared.settings))
        }
        CompiledAction::Forward {
            groups,
            rewrite_target,
            max_body,
            upstream,
            cors,
            basic_auth,
            external_auth,
            rate_limit,
            affinity,
            hsts,
            client_cert,
            error_backend,
        } => {
            let forwarded_path = listener.forwarded_path(index, rewrite_target.as_deref(), &path);
            // As nginx's client_max_body_size: a declared length over the limit is refused
            // before anything reaches a target (looked at only on routes with a limit).
            let over_limit = max_body.is_some_and(|max| {
                req.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|len| len > max)
            });
            // ingress-nginx answers an OPTIONS request from an allowed origin itself (the
            // preflight) and gives every other response to one the CORS headers.
            let cors = cors.as_ref().and_then(|c| {
                c.allow(req.headers().get(header::ORIGIN))
                    .map(|origin| (c.clone(), origin))
            });
            match (pick_weighted(groups), cors) {
                _ if over_limit => Answer::Ready(too_large()),
                (_, Some((c, origin))) if req.method() == Method::OPTIONS => {
                    let mut r =
                        local_response(StatusCode::NO_CONTENT, "text/plain charset=UTF-8", "");
                    c.apply(origin, r.headers_mut());
                    Answer::Ready(r)
                }
                (None, _) => Answer::Ready(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no target group",
                )),
                (Some(group), cors) => guarded_forward(
                    Forwarding {
                        shared: shared.clone(),
                        conn,
                        req,
                        group: group.clone(),
                        host: host_value,
                        path: forwarded_path,
                        max_body: *max_body,
                        upstream: upstream.clone(),
                    },
                    cors,
                    Layers {
                        rate_limit: rate_limit.as_ref(),
                        basic_auth: basic_auth.as_ref(),
                        external_auth: external_auth.as_ref(),
                        affinity: affinity.as_ref(),
                        hsts: hsts.as_ref(),
                        client_cert: client_cert.as_ref(),
                        error_backend: error_backend.as_ref(),
                    },
                    (&host, &path),
                ),
            }
        }
    };
    let access_log = shared.settings.access_log.then(|| Box::new((host, path)));
    Routed {
        answer,
        counted: Some((cfg, index)),
        access_log,
    }
}

/// A forward that has been routed, before the route's policy layers have looked at it.
struct Forwarding<'p> {
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
    group: Arc<UpstreamGroup>,
    host: HeaderValue,
    path: std::borrow::Cow<'p, str>,
    max_body: Option<u64>,
    upstream: Option<Arc<crate::route::config::CompiledUpstream>>,
}

impl Forwarding<'_> {
    fn start(self) -> ForwardFuture {
        forward(
            self.shared,
            self.conn,
            self.req,
            self.group,
            self.host,
            &self.path,
            self.max_body,
            self.upstream.as_deref(),
        )
    }
}

/// The per-request policy layers a route may carry; all `None` on most routes.
struct Layers<'c> {
    rate_limit: Option<&'c Arc<crate::policy::rate_limit::CompiledRateLimit>>,
    basic_auth: Option<&'c Arc<crate::policy::basic_auth::CompiledBasicAuth>>,
    external_auth: Option<&'c Arc<crate::policy::external_auth::CompiledExternalAuth>>,
    affinity: Option<&'c Arc<crate::upstream::affinity::CompiledAffinity>>,
    hsts: Option<&'c HeaderValue>,
    client_cert: Option<&'c Arc<crate::policy::client_cert::CompiledClientCert>>,
    error_backend: Option<&'c Arc<crate::route::config::CompiledErrorBackend>>,
}

/// A forward through the route's policy layers, in nginx's phase order (access, then
/// content): basic authentication, external authentication, then the forward, whose
/// response gets the external service's cookies and the CORS headers. Routes without these
/// layers go straight to [`forward`].
fn guarded_forward(
    mut f: Forwarding<'_>,
    cors: Option<(Arc<crate::policy::cors::CompiledCors>, HeaderValue)>,
    layers: Layers<'_>,
    routed: (&str, &str),
) -> Answer {
    use crate::policy::basic_auth::Verdict;
    let Layers {
        rate_limit,
        basic_auth,
        external_auth,
        affinity,
        hsts,
        client_cert,
        error_backend,
    } = layers;
    // ingress-nginx's default backend serves a route whose Service has no ready endpoint.
    if let Some(e) = error_backend {
        if f.group.targets.is_empty() {
            f.group = e.group.clone();
        }
    }
    // The error-page request is made from the request as it came (custom-http-errors).
    let intercept = error_backend.filter(|e| !e.codes.is_empty()).map(|e| {
        let accept = f
            .req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/html")
            .replace(['\r', '\n'], "");
        let uri = f
            .req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let head_request = f.req.method() == Method::HEAD;
        let host = String::from_utf8_lossy(f.host.as_bytes()).into_owned();
        (e.clone(), accept, uri, host, head_request)
    });
    // Client certificates are nginx's first check (the server's `ssl_verify_client`), ahead
    // of every location phase. What the check found goes to the target in `ssl-client-*`
    // headers, replacing any a client sent.
    if let Some(c) = client_cert {
        match c.check(f.conn.client_cert.as_deref()) {
            crate::policy::client_cert::CertCheck::Pass(headers) => {
                for (n, v) in headers {
                    f.req.headers_mut().insert(n, v);
                }
            }
            crate::policy::client_cert::CertCheck::Refuse {
                status,
                body,
                location,
            } => {
                let r = match location {
                    Some(l) => {
                        let mut r = error_response(StatusCode::FOUND, body);
                        r.headers_mut().insert(header::LOCATION, l);
                        r
                    }
                    None => error_response(status, body),
                };
                return Answer::Ready(r);
            }
        }
    }
    let hsts = hsts.cloned();
    let sets_headers = cors.is_some() || hsts.is_some();
    let add_headers = move |r: &mut Response<ProxyBody>| {
        if let Some((c, origin)) = &cors {
            c.apply(origin.clone(), r.headers_mut());
        }
        if let Some(h) = &hsts {
            r.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, h.clone());
        }
    };
    // nginx's preaccess phase (limit_req, limit_conn) comes before authentication; the
    // place a request takes in limit-connections is held until its response ends.
    let mut in_progress = None;
    if let Some(l) = rate_limit {
        match l.admit(f.conn.client.ip()) {
            Ok(guard) => in_progress = guard,
            Err(()) => {
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "rate limit exceeded");
                add_headers(&mut r);
                return Answer::Ready(r);
            }
        }
    }
    // The target, when the route sticks requests to one (chosen now, as the request is
    // routed; nginx's balancer sets the cookie on the proxied response).
    let mut sticky_cookie = None;
    if let Some(a) = affinity {
        let (host, path) = routed;
        let view = crate::upstream::affinity::RequestView {
            headers: f.req.headers(),
            request_uri: request_uri(&f.req),
            path,
            host,
            client: f.conn.client.ip(),
            tls: f.conn.tls,
        };
        let choice = a.choose(&f.group, &view);
        if let Some(g) = choice.group {
            f.group = g;
        }
        sticky_cookie = choice.set_cookie;
    }
    let touches_response = sets_headers || in_progress.is_some() || sticky_cookie.is_some();
    // What every answer from here on gets: the CORS and HSTS headers, and the request's
    // place in limit-connections held by its body.
    let finish = move |mut r: Response<ProxyBody>| {
        add_headers(&mut r);
        match in_progress {
            Some(g) => r.map(|b| crate::policy::rate_limit::Counted::new(b, g).boxed_unsync()),
            None => r,
        }
    };
    let mut slow_basic = None;
    if let Some(a) = basic_auth {
        match a.verdict(f.req.headers()) {
            Verdict::Allowed => {}
            Verdict::Denied => return Answer::Ready(finish(unauthorized(a))),
            Verdict::Slow {
                password,
                hash,
                key,
            } => slow_basic = Some((a.clone(), password, hash, key)),
        }
    }
    // The check is made from the request as the client sent it (credentials included).
    let check = external_auth.map(|e| {
        let (host, path) = routed;
        let view = crate::policy::external_auth::RequestView {
            method: f.req.method(),
            headers: f.req.headers(),
            scheme: if f.conn.tls { "https" } else { "http" },
            host,
            http_host: f
                .req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| f.req.uri().authority().map(|a| a.as_str()))
                .unwrap_or(host),
            request_uri: request_uri(&f.req),
            uri_path: path,
            client: f.conn.client,
        };
        (e.clone(), e.subrequest(&view))
    });
    if basic_auth.is_some() {
        // nginx sends the target none of its own basic auth's credentials (ingress-nginx's
        // template sets `proxy_set_header Authorization ""`).
        f.req.headers_mut().remove(header::AUTHORIZATION);
    }
    if slow_basic.is_none() && check.is_none() && intercept.is_none() {
        let answer = f.start();
        return if touches_response {
            Answer::Forward(Box::pin(async move {
                let mut r = answer.await;
                if let Some(c) = sticky_cookie {
                    r.headers_mut().append(header::SET_COOKIE, c);
                }
                finish(r)
            }))
        } else {
            Answer::Forward(answer)
        };
    }
    // Slow work ahead (a crypt hash on the blocking pool, a call to the auth service): the
    // path is owned so the future can outlive the route.
    let mut f = Forwarding {
        path: std::borrow::Cow::Owned(f.path.into_owned()),
        ..f
    };
    Answer::Forward(Box::pin(async move {
        if let Some((a, password, hash, key)) = slow_basic {
            let checker = a.clone();
            let ok = tokio::task::spawn_blocking(move || checker.check_slow(&password, &hash, key))
                .await
                .unwrap_or(false);
            if !ok {
                return finish(unauthorized(&a));
            }
        }
        let mut cookies = Vec::new();
        let mut always = false;
        if let Some((e, sub)) = check {
            let sub = match sub {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(%why, "external authentication cannot be asked");
                    return finish(error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "authentication failed",
                    ));
                }
            };
            let settings = &f.shared.settings;
            let (connect, read) = (settings.connect_timeout, settings.response_header_timeout);
            match e.check(sub, connect, read).await {
                crate::policy::external_auth::Outcome::Refused { status, headers } => {
                    let mut r = error_response(status, "authentication required");
                    for (n, v) in headers {
                        r.headers_mut().append(n, v);
                    }
                    return finish(r);
                }
                crate::policy::external_auth::Outcome::Allowed {
                    upstream_headers,
                    cookies: c,
                } => {
                    for (n, v) in upstream_headers {
                        match v {
                            Some(v) => f.req.headers_mut().insert(n, v),
                            None => f.req.headers_mut().remove(n),
                        };
                    }
                    cookies = c;
                    always = e.always_set_cookie();
                }
            }
        }
        let shared = f.shared.clone();
        let mut r = f.start().await;
        // custom-http-errors: a listed status is answered by the default backend instead,
        // told which by ingress-nginx's X-Code and companions (nginx's error_page asks it
        // for `/` with GET, HEAD staying HEAD).
        if let Some((e, accept, uri, host, head_request)) = intercept {
            let code = r.status().as_u16();
            if e.codes.contains(&code) {
                drop(r);
                let method = if head_request { "HEAD" } else { "GET" };
                let head = format!(
                    "{method} / HTTP/1.1\r\nhost: {host}\r\nx-code: {code}\r\nx-format: {accept}\r\nx-original-uri: {uri}\r\n{}\r\n",
                    e.fixed_headers
                );
                r = match crate::upstream::http1::forward_body_less(
                    &shared,
                    &e.group,
                    head.as_bytes(),
                    true,
                    head_request,
                )
                .await
                {
                    Ok(resp) => resp,
                    Err((status, why)) => error_response(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        why,
                    ),
                };
            }
        }
        if let Some(c) = sticky_cookie {
            r.headers_mut().append(header::SET_COOKIE, c);
        }
        if always || crate::policy::external_auth::cookie_status(r.status()) {
            for c in cookies {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        finish(r)
    }))
}

/// `$request_uri`: path and query as the client sent them.
fn request_uri<B>(req: &Request<B>) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}

/// nginx's answer to missing or wrong basic-auth credentials.
fn unauthorized(a: &crate::policy::basic_auth::CompiledBasicAuth) -> Response<ProxyBody> {
    let mut r = local_response(
        StatusCode::UNAUTHORIZED,
        "text/html",
        "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n</body>\r\n</html>\r\n",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, a.challenge());
    r
}

/// A redirect's `Location`: each part the redirect leaves out keeps the request's value
/// (scheme, host, port, path, query), except that a switch to HTTPS goes to the HTTPS port.
fn redirect(
    r: &Redirect,
    conn: &ConnInfo,
    host: &str,
    path: &str,
    query: &str,
    settings: &ProxySettings,
) -> Response<ProxyBody> {
    let request_scheme = if conn.tls { "https" } else { "http" };
    let scheme = r
        .protocol
        .as_deref()
        .unwrap_or(request_scheme)
        .to_ascii_lowercase();
    let port = match r.port {
        // 443 is "the HTTPS port", which this proxy may serve elsewhere — when the redirect
        // stays on the request's host; another host's 443 is its own.
        Some(443) if scheme == "https" && r.host.is_none() => settings.https_redirect_port,
        Some(p) => p,
        None if scheme == request_scheme => conn.local.port(),
        None if scheme == "https" => settings.https_redirect_port,
        None => 80,
    };
    let host = r.host.as_deref().unwrap_or(host);
    let default_port = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
    let mut loc = format!("{scheme}://{host}");
    if !default_port {
        loc.push_str(&format!(":{port}"));
    }
    loc.push_str(r.path.as_deref().unwrap_or(path));
    let q = r.query.as_deref().unwrap_or(query);
    if !q.is_empty() {
        loc.push('?');
        loc.push_str(q);
    }
    // ingress-nginx drops one `/` ending the whole request URI (preserve-trailing-slash off).
    if r.strip_trailing_slash && loc.ends_with('/') {
        loc.pop();
    }
    let status = StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::PERMANENT_REDIRECT);
    let mut resp = local_response(status, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Removes the headers that end at the proxy, in either direction: hop-by-hop ones (RFC 9110
/// §7.6.1) and those the message's `Connection` headers name.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| n != header::CONNECTION)
        .collect();
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    for n in &named {
        h.remove(n);
    }
}

/// Turns the client's headers into the upstream request's, in place: hop-by-hop headers
/// removed, forwarding headers a client must not set dropped (see
/// [`crate::upstream::http1::untrusted_request_header`]), `Host` and `X-Forwarded-*` set from
/// what the proxy saw and routed by — after the `Connection`-named headers are gone, so a
/// client cannot strip them.
fn prepare_upstream_headers(h: &mut HeaderMap, conn: ConnInfo, host: HeaderValue, upgrade: bool) {
    let upgrade_value = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(h);
    let untrusted: Vec<HeaderName> = h
        .keys()
        .filter(|n| untrusted_request_header(n.as_str()))
        .cloned()
        .collect();
    for n in untrusted {
        h.remove(n);
    }
    if let Some(u) = upgrade_value {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers")); // gRPC needs it
    }
    h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    h.insert(header::HOST, host);
    let ip = HeaderValue::from_str(&conn.client.ip().to_string()).ok();
    if let Some(v) = ip {
        h.insert(HeaderName::from_static("x-forwarded-for"), v.clone());
        h.insert(HeaderName::from_static("x-real-ip"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    h.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(conn.local.port()),
    );
}

/// A 400 the proxy answers itself, closing the connection: what follows a malformed or
/// ambiguous request on the same connection cannot be trusted to be framed as the client
/// meant.
fn bad_request(why: &str) -> Response<ProxyBody> {
    let mut r = error_response(StatusCode::BAD_REQUEST, why);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Request targets that are not a path: `OPTIONS *` (RFC 9110 §9.3.7) is about the server
/// itself, so the proxy answers it rather than turn `*` into a path some target would
/// serve; `*` with another method, an authority-form target outside `CONNECT`, and
/// `CONNECT` itself (the proxy is no tunnel) are refused.
fn unusual_target<B>(req: &Request<B>) -> Option<Response<ProxyBody>> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served");
        r.headers_mut().insert(header::ALLOW, ALLOWED_METHODS);
        return Some(r);
    }
    if uri.path() == "*" {
        if req.method() != Method::OPTIONS {
            return Some(bad_request("asterisk-form target is only for OPTIONS"));
        }
        let mut r = local_response(StatusCode::OK, "text/plain", "");
        r.headers_mut().insert(header::ALLOW, ALLOWED_METHODS);
        return Some(r);
    }
    if uri.authority().is_some() && uri.scheme().is_none() {
        return Some(bad_request("authority-form target outside CONNECT"));
    }
    if !uri.path().starts_with('/') {
        return Some(bad_request("request target is not a path"));
    }
    None
}

/// What `OPTIONS *` and a refused `CONNECT` list as the methods the proxy relays.
const ALLOWED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");

/// How a wait for a target's response head ended.
enum Bounded<T> {
    Done(T),
    /// The route's read timeout (proxy-read-timeout) passed first.
    TimedOut,
    /// The target stopped taking the request body for the route's proxy-send-timeout.
    Stalled,
}

/// `fut` (an exchange up to the response head) within the forward's timeouts.
async fn bounded<F: Future>(timeouts: &Timeouts, fut: F) -> Bounded<F::Output> {
    let timed = async {
        match tokio::time::timeout(timeouts.response_header, fut).await {
            Ok(r) => Bounded::Done(r),
            Err(_) => Bounded::TimedOut,
        }
    };
    match &timeouts.send {
        None => timed.await,
        Some((limit, progress)) => tokio::select! {
            r = timed => r,
            _ = progress.stalled(*limit) => Bounded::Stalled,
        },
    }
}

/// nginx's answer when `proxy_read_timeout` passes before the target answered.
fn read_timed_out() -> Response<ProxyBody> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream did not answer in time",
    )
}

/// nginx's answer when `proxy_send_timeout` passes before the target answered.
fn send_timed_out() -> Response<ProxyBody> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream did not take the request in time",
    )
}

/// How long a forwarded request may wait: the proxy's settings, or the route's own; and
/// when it goes on to another target.
#[derive(Debug, Clone)]
struct Timeouts {
    connect: Duration,
    response_header: Duration,
    next: Option<Arc<crate::route::config::NextUpstream>>,
    /// `proxy-send-timeout`, with the request body's progress it watches.
    send: Option<(Duration, Arc<SendProgress>)>,
}

/// Why one attempt at a target failed.
enum AttemptError {
    /// No connection could be made: try another target.
    Connect,
    /// The exchange failed after the request was handed over.
    Exchange(String),
}

/// Sends one request to one target over a pooled HTTP/1.1 connection. A pooled connection
/// the target closed meanwhile is replaced once, transparently, if the request was not sent.
async fn exchange_h1(
    target: &Arc<crate::upstream::TargetState>,
    mut up: Request<ProxyBody>,
    settings: &ProxySettings,
    connect_timeout: Duration,
    tls: Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Result<
    (
        Response<Incoming>,
        hyper::client::conn::http1::SendRequest<ProxyBody>,
    ),
    AttemptError,
> {
    for fresh in [false, true] {
        let mut sender = match (fresh, target.idle.take(settings.upstream_idle_timeout)) {
            (false, Some(mut s)) => match s.ready().await {
                Ok(()) => s,
                Err(_) => connect_h1(target.addr, connect_timeout, tls.clone())
                    .await
                    .ok_or(AttemptError::Connect)?,
            },
            _ => connect_h1(target.addr, connect_timeout, tls.clone())
                .await
                .ok_or(AttemptError::Connect)?,
        };
        match sender.try_send_request(up).await {
            Ok(resp) => return Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                // Not sent: the idle connection had been closed. Retry on a new one.
                Some(req) if !fresh => up = req,
                _ => return Err(AttemptError::Exchange(e.into_error().to_string())),
            },
        }
    }
    Err(AttemptError::Exchange("no connection".into()))
}

async fn connect_h1(
    addr: SocketAddr,
    connect_timeout: Duration,
    tls: Option<(
        &tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
) -> Option<hyper::client::conn::http1::SendRequest<ProxyBody>> {
    let stream =
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            _ => return None,
        };
    let _ = stream.set_nodelay(true);
    match tls {
        None => spawn_h1(stream).await,
        Some((connector, name)) => {
            let tls_stream = tokio::time::timeout(connect_timeout, connector.connect(name, stream))
                .await
                .ok()?
                .ok()?;
            spawn_h1(tls_stream).await
        }
    }
}

async fn spawn_h1<S>(io: S) -> Option<hyper::client::conn::http1::SendRequest<ProxyBody>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Some(sender)
}

/// A request's forwarding, boxed: hyper moves the request's future whole into a task per
/// HTTP/2 stream, so the large states stay out of it, and each branch allocates only its own.
type ForwardFuture = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;

/// Prepares the upstream request and returns the future that forwards it. Not `async`: a
/// future stores every local that lives across an await (moved-from ones included), so the
/// preparation's locals would make both branches' futures larger. Body-less requests to
/// HTTP/1.1 targets take the exchange without a client connection task; the future is kept
/// under 1 KiB, which glibc serves from its per-thread cache.
#[allow(clippy::too_many_arguments)]
fn forward(
    shared: Arc<Shared>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
    group: Arc<UpstreamGroup>,
    host: HeaderValue,
    path: &str,
    max_body: Option<u64>,
    upstream: Option<&crate::route::config::CompiledUpstream>,
) -> ForwardFuture {
    let upgrade = is_upgrade(&req);
    // A body-less request can be retried on another target after a connect failure.
    let replayable = hyper::body::Body::is_end_stream(req.body());
    // Per-route upstream settings take the general path below: the fast path stays as lean
    // as it is for the routes (nearly all) that have none.
    if replayable && !upgrade && !group.http2 && upstream.is_none() {
        let head = body_less_upstream_head(&req, conn, host.as_bytes(), path);
        let idempotent = req.method().is_idempotent();
        let head_request = req.method() == Method::HEAD;
        drop(req);
        return Box::pin(async move {
            let answer = crate::upstream::http1::forward_body_less(
                &shared,
                &group,
                &head,
                idempotent,
                head_request,
            )
            .await;
            match answer {
                Ok(resp) => resp,
                Err((status, why)) => error_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    why,
                ),
            }
        });
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_upstream_headers(&mut parts.headers, conn, host, upgrade);
    let mut timeouts = Timeouts {
        connect: shared.settings.connect_timeout,
        response_header: shared.settings.response_header_timeout,
        next: None,
        send: None,
    };
    if let Some(u) = upstream {
        // ingress-nginx's upstream-vhost sets only `Host`; X-Forwarded-Host keeps the
        // client's.
        if let Some(h) = &u.host {
            parts.headers.insert(header::HOST, h.clone());
        }
        if let Some(p) = &u.forwarded_prefix {
            parts
                .headers
                .insert(HeaderName::from_static("x-forwarded-prefix"), p.clone());
        }
        timeouts.connect = u.connect_timeout.unwrap_or(timeouts.connect);
        timeouts.response_header = u.read_timeout.unwrap_or(timeouts.response_header);
        timeouts.next = u.next.clone();
        if !replayable {
            timeouts.send = u.send_timeout.map(|t| (t, Arc::new(SendProgress::new())));
        }
    }
    let mut target = Vec::new();
    append_client_origin_form(&mut target, &parts.uri, path);
    let Ok(origin_form) = Uri::try_from(target) else {
        return Box::pin(std::future::ready(error_response(
            StatusCode::BAD_REQUEST,
            "invalid request target",
        )));
    };
    Box::pin(async move {
        let body_failed = Arc::new(AtomicU8::new(BODY_OK));
        let body = ClientBody {
            inner: body,
            failed: body_failed.clone(),
            left: max_body.unwrap_or(u64::MAX),
            progress: timeouts.send.as_ref().map(|(_, p)| p.clone()),
        }
        .boxed_unsync();
        forward_with_hyper_client(
            &shared,
            parts,
            (body, body_failed),
            client_upgrade,
            &group,
            origin_form,
            replayable,
            timeouts,
        )
        .await
    })
}

/// The origin-form target a target gets for a request hyper parsed (see
/// [`append_origin_form`]).
fn append_client_origin_form(out: &mut Vec<u8>, uri: &Uri, path: &str) {
    let pq = uri.path_and_query();
    append_origin_form(
        out,
        pq.map_or("", |pq| pq.as_str()),
        pq.map_or("", |pq| pq.path()),
        pq.and_then(|pq| pq.query()),
        path,
    );
}

/// The HTTP/1.1 head a target gets for a body-less request, written straight from the
/// client's headers (no header map rebuilt per request), with `path` as routed.
fn body_less_upstream_head(
    req: &Request<Incoming>,
    conn: ConnInfo,
    host: &[u8],
    path: &str,
) -> Vec<u8> {
    let mut connection = ConnectionTokens::default();
    for v in req.headers().get_all(header::CONNECTION) {
        connection.add(v.as_bytes());
    }
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    append_client_origin_form(&mut head, req.uri(), path);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    append_upstream_headers(
        &mut head,
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        &connection,
        host,
        &conn,
    );
    head
}

/// Forwards a request with a body, or an upgrade, through hyper's client. The body comes
/// with the flag its [`ClientBody`] sets when it fails or runs over the route's limit.
#[allow(clippy::too_many_arguments)]
async fn forward_with_hyper_client(
    shared: &Shared,
    mut parts: http::request::Parts,
    (body, body_failed): (ProxyBody, Arc<AtomicU8>),
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    group: &Arc<UpstreamGroup>,
    origin_form: Uri,
    replayable: bool,
    timeouts: Timeouts,
) -> Response<ProxyBody> {
    let mut body = Some(body);
    let mut tried: Vec<SocketAddr> = Vec::new();
    // ingress-nginx's proxy-next-upstream (default: another target after a connect
    // failure, up to three): only a request without a body can be sent again, and a
    // non-idempotent one only with `non_idempotent`.
    let next = timeouts.next.as_deref();
    let max = next.map_or(3, |n| if n.off { 1 } else { n.tries });
    let attempts = if replayable {
        group.targets.len().clamp(1, max.max(1))
    } else {
        1
    };
    let may_repeat = parts.method.is_idempotent() || next.is_some_and(|n| n.non_idempotent);
    let deadline = next
        .and_then(|n| n.timeout_limit)
        .map(|t| Instant::now() + t);
    let go_on = |attempt: usize, when: fn(&crate::route::config::NextUpstream) -> bool| {
        attempt + 1 < attempts
            && may_repeat
            && deadline.is_none_or(|d| Instant::now() < d)
            && next.is_some_and(when)
    };

    for attempt in 0..attempts {
        let Some(target) = group.pick(&tried) else {
            break;
        };
        tried.push(target.addr);
        let in_flight = InFlight::new(target.clone());
        let mut up = Request::new(body.take().unwrap_or_else(empty));
        *up.method_mut() = parts.method.clone();
        *up.headers_mut() = if attempts > 1 {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let sent = Instant::now();
        let result: Result<
            (
                Response<Incoming>,
                Option<hyper::client::conn::http1::SendRequest<ProxyBody>>,
            ),
            AttemptError,
        > = if group.http2 {
            let scheme = if group.tls { "https" } else { "http" };
            let uri: Uri = match format!("{scheme}://{}{}", target.addr, origin_form).parse() {
                Ok(u) => u,
                Err(_) => return error_response(StatusCode::BAD_REQUEST, "invalid request target"),
            };
            *up.uri_mut() = uri;
            *up.version_mut() = Version::HTTP_2;
            let sent = if group.tls {
                shared.clients.h2_tls.request(up)
            } else {
                shared.clients.h2.request(up)
            };
            match bounded(&timeouts, sent).await {
                Bounded::Stalled => return send_timed_out(),
                Bounded::TimedOut if go_on(attempt, |n| n.timeout) => continue,
                Bounded::TimedOut => return read_timed_out(),
                Bounded::Done(Ok(resp)) => Ok((resp, None)),
                Bounded::Done(Err(e)) if e.is_connect() => Err(AttemptError::Connect),
                Bounded::Done(Err(e)) => Err(AttemptError::Exchange(e.to_string())),
            }
        } else {
            *up.uri_mut() = origin_form.clone();
            *up.version_mut() = Version::HTTP_11;
            let exchange = exchange_h1(
                &target,
                up,
                &shared.settings,
                timeouts.connect,
                group.tls_for(&shared.clients.tls, target.addr.ip()),
            );
            match bounded(&timeouts, exchange).await {
                Bounded::Stalled => return send_timed_out(),
                Bounded::TimedOut if go_on(attempt, |n| n.timeout) => continue,
                Bounded::TimedOut => return read_timed_out(),
                Bounded::Done(r) => r.map(|(resp, s)| (resp, Some(s))),
            }
        };
        match result {
            Err(AttemptError::Connect) => {
                target.record_connect_failure();
                tracing::debug!(target = %target.addr, "connect failed; trying another target");
                continue;
            }
            Err(AttemptError::Exchange(e)) => {
                match body_failed.load(Ordering::Relaxed) {
                    // The client's body was malformed (e.g. a bad chunk size), not the target.
                    BODY_MALFORMED => return bad_request("malformed request body"),
                    BODY_TOO_LARGE => return too_large(),
                    _ => {}
                }
                tracing::debug!(target = %target.addr, error = %e, "upstream request failed");
                if go_on(attempt, |n| n.error) {
                    continue;
                }
                return error_response(StatusCode::BAD_GATEWAY, "upstream connection failed");
            }
            Ok((resp, _))
                if next.is_some_and(|n| n.statuses.contains(&resp.status().as_u16()))
                    && go_on(attempt, |_| true) =>
            {
                tracing::debug!(target = %target.addr, status = %resp.status(), "trying another target (proxy-next-upstream)");
                continue;
            }
            Ok((mut resp, sender)) => {
                target.record_success();
                shared
                    .metrics
                    .upstream_latency
                    .observe(sent.elapsed().as_secs_f64());
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_upgrade) = client_upgrade {
                        let upstream_upgrade = hyper::upgrade::on(&mut resp);
                        tokio::spawn(async move {
                            let _in_flight = in_flight;
                            if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                                let mut c = TokioIo::new(c);
                                let mut u = TokioIo::new(u);
                                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                            }
                        });
                        let (rparts, _) = resp.into_parts();
                        return Response::from_parts(rparts, empty());
                    }
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                if !rparts.headers.contains_key(header::SERVER) {
                    rparts.headers.insert(header::SERVER, SERVER);
                }
                // Keep the target's in-flight count up until the body has been sent; the
                // connection goes back to the pool when the body ends cleanly.
                let body = InFlightBody {
                    inner: rbody,
                    in_flight,
                    connection: sender,
                }
                .map_err(boxed_error)
                .boxed_unsync();
                return Response::from_parts(rparts, body);
            }
        }
    }
    if tried.is_empty() {
        error_response(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints")
    } else {
        error_response(StatusCode::BAD_GATEWAY, "could not connect to any endpoint")
    }
}

/// How a client's request body went: fine, malformed (bad chunking, reset), or over the
/// route's `proxy-body-size`.
const BODY_OK: u8 = 0;
const BODY_MALFORMED: u8 = 1;
const BODY_TOO_LARGE: u8 = 2;

pin_project_lite::pin_project! {
    /// The client's request body, remembering whether it failed or ran over the limit, so a
    /// failed upstream exchange can be blamed on the right side. `left`: bytes the body may
    /// still carry (`u64::MAX`: no limit).
    struct ClientBody {
        #[pin]
        inner: Incoming,
        failed: Arc<AtomicU8>,
        left: u64,
        // Watched by proxy-send-timeout (routes with the annotation only).
        progress: Option<Arc<SendProgress>>,
    }
}

/// A request body over the route's `proxy-body-size`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the route's proxy-body-size")]
struct BodyTooLarge;

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let this = self.project();
        if let Some(p) = this.progress.as_deref() {
            p.asked();
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.left.checked_sub(len) {
                    Some(left) => {
                        *this.left = left;
                        if let Some(p) = this.progress.as_deref() {
                            p.handed();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    None => {
                        this.failed.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        Poll::Ready(Some(Err(Box::new(BodyTooLarge))))
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.failed.store(BODY_MALFORMED, Ordering::Relaxed);
                Poll::Ready(Some(Err(boxed_error(e))))
            }
            other => other.map(|o| o.map(|r| r.map_err(boxed_error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// 413, as nginx answers a body over `client_max_body_size`; the connection closes (the rest
/// of the body is not read).
fn too_large() -> Response<ProxyBody> {
    let mut r = error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body larger than this route allows",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

pin_project_lite::pin_project! {
    /// A response body that holds its target's in-flight count until it ends, then returns
    /// the upstream connection to the target's pool.
    struct InFlightBody {
        #[pin]
        inner: Incoming,
        in_flight: InFlight,
        connection: Option<hyper::client::conn::http1::SendRequest<ProxyBody>>,
    }
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // hyper stops polling once `is_end_stream` holds, so check it after every frame too.
        let ended = match &polled {
            std::task::Poll::Ready(None) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(c) = this.connection.take() {
                this.in_flight.target().idle.put(c);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Answers health, readiness and metrics on the admin listener.
pub fn admin_response(
    shared: &Shared,
    method: &Method,
    path: &str,
    ready: bool,
) -> Response<ProxyBody> {
    match (method, path) {
        (&Method::GET, "/healthz") => local_response(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") if ready => {
            local_response(StatusCode::OK, "text/plain", "ready\n")
        }
        (&Method::GET, "/readyz") => {
            local_response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
        }
        (&Method::GET, "/metrics") => local_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        _ => local_response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn paths_are_normalized_for_routing() {
        assert_eq!(normalize_path("/a/b"), "/a/b");
        assert_eq!(normalize_path("/public/../admin"), "/admin");
        assert_eq!(normalize_path("//a///b/"), "/a/b/");
        assert_eq!(normalize_path("/a/./b/."), "/a/b/");
        assert_eq!(normalize_path("/%61dmin"), "/admin");
        assert_eq!(normalize_path("/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/%"), "/%");
    }
}

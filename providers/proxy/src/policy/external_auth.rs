//! ingress-nginx external authentication (`auth-url`, nginx's `auth_request`), one policy
//! layer of a forwarding route: before a request goes on, a body-less copy of it is sent to
//! the authentication service, and its answer decides — 2xx lets the request through (with
//! `auth-response-headers` copied onto it), 401 becomes a redirect to `auth-signin` (or a
//! 401), 403 a 403, anything else (or no answer) a 500.
//!
//! What the service receives follows ingress-nginx's template (rootfs/etc/nginx/template/
//! nginx.tmpl, the `_external-auth` location): the client's headers without the body's,
//! `Host` the auth URL's host name, `X-Original-URL`, `X-Original-Method`, `X-Sent-From`,
//! `X-Real-IP`, `X-Forwarded-For`, `X-Auth-Request-Redirect`, and with `auth-method` also
//! `X-Original-URI` and `X-Scheme`. Like nginx without `auth-keepalive`, each check is its
//! own connection. The e2e tests followed are test/e2e/annotations/auth.go's external-auth
//! cases (the sign-in redirect's `rd`, response headers replacing the client's).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An nginx variable the URLs may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Host,
    HttpHost,
    Scheme,
    RequestUri,
    EscapedRequestUri,
    Uri,
}

const VARIABLES: &[(&str, Var)] = &[
    // Longest first, so `$http_host` is not read as `$host` after a prefix.
    ("escaped_request_uri", Var::EscapedRequestUri),
    ("request_uri", Var::RequestUri),
    ("http_host", Var::HttpHost),
    ("scheme", Var::Scheme),
    ("host", Var::Host),
    ("uri", Var::Uri),
];

/// A URL with nginx variables, split once when the configuration is compiled.
#[derive(Debug)]
struct Template(Vec<Piece>);

#[derive(Debug)]
enum Piece {
    Text(String),
    Var(Var),
}

impl Template {
    fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            if i > 0 {
                pieces.push(Piece::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 1..];
            let (name, braced) = match after.strip_prefix('{') {
                Some(b) => (b, true),
                None => (after, false),
            };
            let Some((text, var)) = VARIABLES.iter().find(|(n, _)| {
                name.starts_with(n)
                    && (braced && name[n.len()..].starts_with('}')
                        || !braced
                            && !name[n.len()..]
                                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
            }) else {
                let end = name
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(name.len());
                return Err(format!(
                    "the nginx variable ${} is not supported (supported: $host, $http_host, $scheme, $request_uri, $escaped_request_uri, $uri)",
                    &name[..end]
                ));
            };
            pieces.push(Piece::Var(*var));
            rest = &name[text.len() + usize::from(braced)..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    fn expand(&self, r: &RequestView<'_>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(Var::Host) => out.push_str(r.host),
                Piece::Var(Var::HttpHost) => out.push_str(r.http_host),
                Piece::Var(Var::Scheme) => out.push_str(r.scheme),
                Piece::Var(Var::RequestUri) => out.push_str(r.request_uri),
                Piece::Var(Var::EscapedRequestUri) => out.push_str(&escape_uri(r.request_uri)),
                Piece::Var(Var::Uri) => out.push_str(r.uri_path),
            }
        }
        out
    }
}

/// What of the original request the check needs.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host the request was routed by, without a port (`$host`).
    pub host: &'a str,
    /// The `Host` header as the client sent it (`$http_host`).
    pub http_host: &'a str,
    /// Path and query as the client sent them (`$request_uri`).
    pub request_uri: &'a str,
    /// The normalized path (`$uri`).
    pub uri_path: &'a str,
    pub client: std::net::SocketAddr,
}

/// A route's external-authentication policy.
pub struct CompiledExternalAuth {
    url: Template,
    method: Option<Method>,
    signin: Option<Template>,
    redirect_param: String,
    response_headers: Vec<HeaderName>,
    request_redirect: Option<HeaderValue>,
    always_set_cookie: bool,
    /// Made only for a URL that may be `https://`.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for CompiledExternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledExternalAuth")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("signin", &self.signin)
            .finish_non_exhaustive()
    }
}

/// A check ready to send: everything taken from the request, so it can outlive it.
pub struct Subrequest {
    tls: bool,
    host: String,
    port: u16,
    request: Request<Empty<Bytes>>,
    /// The sign-in URL with the redirect parameter, for a 401.
    signin: Option<String>,
}

/// What the authentication service decided.
pub enum Outcome {
    /// Go on: set (or, with `None`, remove) these headers on the request to the target, and
    /// give the client these cookies.
    Allowed {
        upstream_headers: Vec<(HeaderName, Option<HeaderValue>)>,
        cookies: Vec<HeaderValue>,
    },
    /// Answer the client with this status and these headers.
    Refused {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// The statuses nginx's `add_header` (without `always`) adds the auth cookie to.
pub fn cookie_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

impl CompiledExternalAuth {
    /// Compiles the policy; `Err` says why it cannot run (the builder refuses such values,
    /// so this is a model from elsewhere), and the route then answers 503, as
    /// ingress-nginx's denied location does.
    pub fn compile(a: &tollgate_contract::ExternalAuth) -> Result<Arc<Self>, String> {
        let url = Template::parse(&a.url)?;
        let method = a
            .method
            .as_deref()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
            .transpose()?;
        let signin = a.signin.as_deref().map(Template::parse).transpose()?;
        let response_headers = a
            .response_headers
            .iter()
            .map(|h| HeaderName::from_bytes(h.as_bytes()).map_err(|e| format!("{h}: {e}")))
            .collect::<Result<_, _>>()?;
        let request_redirect = a
            .request_redirect
            .as_deref()
            .map(|v| HeaderValue::from_str(v).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(Arc::new(CompiledExternalAuth {
            url,
            method,
            signin,
            redirect_param: a.signin_redirect_param.clone(),
            response_headers,
            request_redirect,
            always_set_cookie: a.always_set_cookie,
            tls: (!a.url.starts_with("http://"))
                .then(|| crate::upstream::tls::unverified_client_connector(&[b"http/1.1"])),
        }))
    }

    pub fn always_set_cookie(&self) -> bool {
        self.always_set_cookie
    }

    /// The check for one request; `Err` when the expanded auth URL is unusable (a 500, as
    /// nginx answers a failed subrequest).
    pub fn subrequest(&self, r: &RequestView<'_>) -> Result<Subrequest, String> {
        let url = self.url.expand(r);
        let uri: http::Uri = url.parse().map_err(|e| format!("auth-url {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("auth-url {url:?}: not http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("auth-url {url:?}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");

        let mut headers = HeaderMap::with_capacity(r.headers.len() + 8);
        for (n, v) in r.headers {
            if !is_dropped(n) {
                headers.append(n.clone(), v.clone());
            }
        }
        let set = |h: &mut HeaderMap, n: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(n), v);
            }
        };
        set(&mut headers, "host", &host);
        set(
            &mut headers,
            "x-original-url",
            &format!("{}://{}{}", r.scheme, r.http_host, r.request_uri),
        );
        set(&mut headers, "x-original-method", r.method.as_str());
        set(&mut headers, "x-sent-from", "nginx-ingress-controller");
        let client = r.client.ip().to_string();
        set(&mut headers, "x-real-ip", &client);
        set(&mut headers, "x-forwarded-for", &client);
        match &self.request_redirect {
            Some(v) => {
                headers.insert(
                    HeaderName::from_static("x-auth-request-redirect"),
                    v.clone(),
                );
            }
            None => set(&mut headers, "x-auth-request-redirect", r.request_uri),
        }
        if self.method.is_some() {
            set(&mut headers, "x-original-uri", r.request_uri);
            set(&mut headers, "x-scheme", r.scheme);
        }
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone().unwrap_or(Method::GET);
        *request.uri_mut() = target.parse().map_err(|e| format!("auth-url path: {e}"))?;
        *request.headers_mut() = headers;

        let signin = self.signin.as_ref().map(|t| {
            let mut s = t.expand(r);
            let rd = format!(
                "{}://{}{}",
                r.scheme,
                r.http_host,
                escape_uri(r.request_uri)
            );
            let param = format!("{}=", self.redirect_param);
            match s.split_once('?') {
                None => s.push_str(&format!("?{param}{rd}")),
                Some((_, q)) if q.split('&').any(|kv| kv.starts_with(&param)) => {}
                Some(_) => s.push_str(&format!("&{param}{rd}")),
            }
            s
        });
        Ok(Subrequest {
            tls,
            host,
            port,
            request,
            signin,
        })
    }

    /// Sends the check and maps the service's answer.
    pub async fn check(&self, sub: Subrequest, connect: Duration, read: Duration) -> Outcome {
        let server_error = Outcome::Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: Vec::new(),
        };
        let Subrequest {
            tls,
            host,
            port,
            request,
            signin,
        } = sub;
        let answer = tokio::time::timeout(read + connect, async {
            let tcp = tokio::time::timeout(connect, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            if tls {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| e.to_string())?;
                let connector = self.tls.as_ref().ok_or("no TLS connector")?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                exchange(TokioIo::new(stream), request).await
            } else {
                exchange(TokioIo::new(tcp), request).await
            }
        })
        .await;
        let parts = match answer {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                tracing::warn!(%host, port, %why, "external authentication service failed");
                return server_error;
            }
            Err(_) => {
                tracing::warn!(%host, port, "external authentication service timed out");
                return server_error;
            }
        };
        let cookies: Vec<HeaderValue> = parts
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        match parts.status.as_u16() {
            200..=299 => Outcome::Allowed {
                upstream_headers: self
                    .response_headers
                    .iter()
                    .map(|n| (n.clone(), parts.headers.get(n).cloned()))
                    .collect(),
                cookies,
            },
            401 => match signin.and_then(|s| HeaderValue::from_str(&s).ok()) {
                Some(location) => Outcome::Refused {
                    status: StatusCode::FOUND,
                    headers: std::iter::once((header::LOCATION, location))
                        .chain(cookies.into_iter().map(|c| (header::SET_COOKIE, c)))
                        .collect(),
                },
                None => Outcome::Refused {
                    status: StatusCode::UNAUTHORIZED,
                    headers: parts
                        .headers
                        .get_all(header::WWW_AUTHENTICATE)
                        .iter()
                        .map(|v| (header::WWW_AUTHENTICATE, v.clone()))
                        .collect(),
                },
            },
            403 => Outcome::Refused {
                status: StatusCode::FORBIDDEN,
                headers: Vec::new(),
            },
            _ => server_error,
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection; the body of the answer is not needed.
async fn exchange<T>(io: T, request: Request<Empty<Bytes>>) -> Result<http::response::Parts, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.into_parts().0)
}

/// Headers not copied to the check: the body's (it is not sent; nginx clears
/// `Content-Length`), hop-by-hop ones, `X-Forwarded-Proto` (cleared by the template) and
/// `Host` (set to the service's).
fn is_dropped(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "x-forwarded-proto"
            | "host"
    )
}

/// nginx's `set_escape_uri`: everything but unreserved characters percent-encoded, so a
/// path and query fit in one query parameter.
pub fn escape_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks an `auth-url` or `auth-signin` value the way [`CompiledExternalAuth`] will use it
/// (for the builder's diagnostics).
pub fn check_url(url: &str) -> Result<(), String> {
    let t = Template::parse(url)?;
    // Expanded with placeholder values, the URL must be absolute http(s) with a host.
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        headers: &headers,
        scheme: "http",
        host: "example.com",
        http_host: "example.com",
        request_uri: "/",
        uri_path: "/",
        client: ([127, 0, 0, 1], 0).into(),
    };
    let expanded = t.expand(&view);
    let uri: http::Uri = expanded.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return Err("expected an http:// or https:// URL".into());
    }
    match uri.host() {
        Some(h) if !h.is_empty() && !h.contains("..") => Ok(()),
        _ => Err("the URL has no valid host".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: &Method::POST,
            headers,
            scheme: "http",
            host: "auth",
            http_host: "auth:8080",
            request_uri: "/?a=b&c=d",
            uri_path: "/",
            client: ([10, 0, 0, 7], 5555).into(),
        }
    }

    fn policy(signin: Option<&str>, method: Option<&str>) -> Arc<CompiledExternalAuth> {
        CompiledExternalAuth::compile(&tollgate_contract::ExternalAuth {
            url: "http://127.0.0.1:9/check?host=$host".into(),
            method: method.map(String::from),
            signin: signin.map(String::from),
            signin_redirect_param: "rd".into(),
            response_headers: vec!["X-User".into()],
            request_redirect: None,
            always_set_cookie: false,
        })
        .unwrap()
    }

    #[test]
    fn the_check_carries_what_ingress_nginx_sends() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(header::HOST, HeaderValue::from_static("auth:8080"));
        let sub = policy(None, None).subrequest(&view(&h)).unwrap();
        let r = &sub.request;
        assert_eq!(r.method(), Method::GET, "nginx's subrequests are GET");
        assert_eq!(r.uri(), "/check?host=auth");
        let get = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("host").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("cookie").as_deref(), Some("s=1"));
        assert_eq!(get("content-length"), None);
        assert_eq!(get("x-forwarded-proto"), None);
        assert_eq!(
            get("x-original-url").as_deref(),
            Some("http://auth:8080/?a=b&c=d")
        );
        assert_eq!(get("x-original-method").as_deref(), Some("POST"));
        assert_eq!(get("x-real-ip").as_deref(), Some("10.0.0.7"));
        assert_eq!(get("x-auth-request-redirect").as_deref(), Some("/?a=b&c=d"));
        assert_eq!(get("x-original-uri"), None);
        let sub = policy(None, Some("HEAD")).subrequest(&view(&h)).unwrap();
        assert_eq!(sub.request.method(), Method::HEAD);
        assert!(sub.request.headers().contains_key("x-original-uri"));
    }

    #[test]
    fn signin_gets_the_redirect_parameter_as_ingress_nginx_builds_it() {
        let h = HeaderMap::new();
        let signin = |s: &str| {
            policy(Some(s), None)
                .subrequest(&view(&h))
                .unwrap()
                .signin
                .unwrap()
        };
        // auth.go: `http://$host/auth/start` → `...?rd=http://auth` + QueryEscape("/?a=b&c=d").
        assert_eq!(
            signin("http://$host/auth/start"),
            "http://auth/auth/start?rd=http://auth:8080%2F%3Fa%3Db%26c%3Dd"
        );
        assert_eq!(
            signin("https://sso/start?x=1"),
            "https://sso/start?x=1&rd=http://auth:8080%2F%3Fa%3Db%26c%3Dd"
        );
        assert_eq!(
            signin("https://sso/start?rd=$escaped_request_uri"),
            "https://sso/start?rd=%2F%3Fa%3Db%26c%3Dd"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://oauth2-proxy.auth.svc/oauth2/auth").is_ok());
        assert!(check_url("https://$host/oauth2/auth").is_ok());
        assert!(check_url("https://${host}/oauth2/auth").is_ok());
        assert!(check_url("https://invalid..auth.url").is_err());
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("/relative").is_err());
        let e = check_url("http://$best_http_host/x").unwrap_err();
        assert!(e.contains("$best_http_host"), "{e}");
    }
}

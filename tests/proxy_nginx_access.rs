//! ingress-nginx access control served by the proxy, on real sockets. Authentication: basic authentication
//! from an htpasswd Secret (`auth-file`) or a user map (`auth-map`), as ingress-nginx's
//! test/e2e/annotations/auth.go pins it — 401 with the realm's challenge and nginx's page
//! without (or with wrong) credentials, the target reached with the right ones, CORS headers
//! on the 401, and an Ingress whose Secret is missing not served at all; and external
//! authentication (`auth-url`) against an authentication service on loopback, the
//! oauth2-proxy pattern end to end. Rate limits (`limit-rpm`/`-rps` with their burst,
//! `limit-connections`, `limit-allowlist`): 503 past the limit, per client, one zone per
//! Ingress, kept across configuration swaps.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use support::*;

/// `openssl passwd -apr1 -salt Vg2PvzfF bar`, as `htpasswd -c auth foo` writes it.
const FOO_BAR_APR1: &str = "$apr1$Vg2PvzfF$Y.yCbSb/.WzEyY7th3cn4/";
/// bcrypt of "password" (the e2e tests use bcrypt; cost 5 keeps the test quick).
const BCRYPT_PASSWORD: &str = "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe";

fn opaque_secret(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in pairs {
        out.push_str(&format!("  {k}: '{v}'\n"));
    }
    out
}

fn request(host: &str, credentials: Option<(&str, &str)>, extra: &str) -> String {
    let auth = credentials
        .map(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    format!("GET /x HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_as_ingress_nginx_serves_it() {
    let (app, got) = recorder().await;
    let (open, _) = recorder().await;
    let file = format!("# team a\nfoo:{FOO_BAR_APR1}\nbc:{BCRYPT_PASSWORD}\n");
    let manifests = |file: &str| {
        [
            service("app", &[app]),
            service("open", &[open]),
            opaque_secret("basic", &[("auth", &file.replace('\n', "\\n"))]).replace(": '", ": \"").replace("'\n", "\"\n"),
            opaque_secret("users", &[("foo", "{PLAIN}bar")]),
            ingress(
                "file",
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: basic, nginx.ingress.kubernetes.io/auth-realm: 'test auth'",
                &[("auth.example.com", "/", "Prefix", "app")],
            ),
            ingress(
                "cors",
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: basic, nginx.ingress.kubernetes.io/enable-cors: 'true'",
                &[("cors.example.com", "/", "Prefix", "app")],
            ),
            ingress(
                "map",
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: default/users, nginx.ingress.kubernetes.io/auth-secret-type: auth-map",
                &[("map.example.com", "/", "Prefix", "app")],
            ),
            ingress(
                "missing",
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: nothing-here",
                &[("missing.example.com", "/", "Prefix", "open")],
            ),
            ingress("open", "", &[("open.example.com", "/", "Prefix", "open")]),
        ]
        .join("---\n")
    };
    let p = TestProxy::start(&manifests(&file)).await;

    // No credentials, and wrong ones: nginx's 401 with the realm's challenge.
    for creds in [
        None,
        Some(("foo", "baz")),
        Some(("nobody", "bar")),
        Some(("bc", "bar")),
    ] {
        let r = raw(p.http, request("auth.example.com", creds, "").as_bytes()).await;
        assert!(status_line(&r).contains("401"), "{creds:?}: {r}");
        assert_eq!(
            header_of(&r, "www-authenticate").as_deref(),
            Some("Basic realm=\"test auth\""),
            "{r}"
        );
        assert!(r.contains("401 Authorization Required"), "{r}");
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing unauthenticated reached the target"
    );

    // The right credentials, by apr1 and by bcrypt (checked off the request workers), twice
    // (the second from the remembered credential): the target is reached, without them.
    for creds in [("foo", "bar"), ("bc", "password"), ("bc", "password")] {
        let r = raw(
            p.http,
            request("auth.example.com", Some(creds), "").as_bytes(),
        )
        .await;
        assert!(status_line(&r).contains("200"), "{creds:?}: {r}");
    }
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 3);
        assert!(
            got.iter().all(|h| !h.contains("authorization:")),
            "nginx does not pass its basic-auth credentials upstream: {got:?}"
        );
    }

    // With enable-cors the 401 carries the CORS headers (auth.go's CORS case).
    let r = raw(p.http, request("cors.example.com", None, "").as_bytes()).await;
    assert!(status_line(&r).contains("401"), "{r}");
    assert_eq!(
        header_of(&r, "access-control-allow-origin").as_deref(),
        Some("*"),
        "{r}"
    );

    // auth-map: each key a user.
    let r = raw(
        p.http,
        request("map.example.com", Some(("foo", "bar")), "").as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("200"), "{r}");
    let r = raw(
        p.http,
        request("map.example.com", Some(("foo", "baz")), "").as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("401"), "{r}");

    // A missing Secret: that Ingress is not served (never open), the others are.
    let r = raw(p.http, request("missing.example.com", None, "").as_bytes()).await;
    assert!(!status_line(&r).contains("200"), "{r}");
    let r = raw(p.http, request("open.example.com", None, "").as_bytes()).await;
    assert!(status_line(&r).contains("200"), "{r}");

    // A password rotated in the Secret alone (the Ingress unchanged) applies: the old one
    // is refused, the new one admitted.
    let rotated = format!("foo:{{PLAIN}}new\nbc:{BCRYPT_PASSWORD}\n");
    p.write("main.yaml", &manifests(&rotated));
    let http = p.http;
    wait_until(
        Duration::from_secs(10),
        "the rotated password",
        || async move {
            let r = raw(
                http,
                request("auth.example.com", Some(("foo", "new")), "").as_bytes(),
            )
            .await;
            status_line(&r).contains("200")
        },
    )
    .await;
    let r = raw(
        p.http,
        request("auth.example.com", Some(("foo", "bar")), "").as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("401"), "{r}");
    p.stop().await;
}

/// An authentication service as oauth2-proxy behaves: `Authorization: Basic user:password`
/// is signed in (200, `X-User`, a cookie), `X-Anonymous` is let in with no user, `X-Deny`
/// is forbidden (403), anything else 401 with a challenge and a cookie. Records each
/// request's head (lower-cased names) and whether any body byte followed it.
async fn auth_service() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    let addr = tcp_target(move |mut s| {
        let sink = sink.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = Vec::new();
            let end = loop {
                if let Some(end) = find_bytes(&buf, b"\r\n\r\n") {
                    break end;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let extra = buf.len() - (end + 4);
            sink.lock().unwrap().push(format!("{head}\nbody-bytes: {extra}"));
            let signed_in = head.contains("authorization: basic dxnlcjpwyxnzd29yza==");
            let answer: &[u8] = if signed_in {
                b"HTTP/1.1 200 OK\r\nX-User: alice\r\nSet-Cookie: alma=armud\r\ncontent-length: 0\r\n\r\n"
            } else if head.contains("x-anonymous:") {
                b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
            } else if head.contains("x-deny:") {
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"svc\"\r\nSet-Cookie: step=1\r\ncontent-length: 0\r\n\r\n"
            };
            let _ = s.write_all(answer).await;
        }
    })
    .await;
    (addr, seen)
}

/// A target that answers every request 503.
async fn unavailable() -> std::net::SocketAddr {
    tcp_target(|mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await;
        let _ = s
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_auth_as_ingress_nginx_serves_it() {
    let (app, got) = recorder().await;
    let down = unavailable().await;
    let (auth, asked) = auth_service().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{auth}/auth/check");
    let m = [
        service("app", &[app]),
        service("down", &[down]),
        ingress(
            "signin",
            &format!("nginx.ingress.kubernetes.io/auth-url: '{url}', nginx.ingress.kubernetes.io/auth-signin: 'http://$host/auth/start', nginx.ingress.kubernetes.io/auth-response-headers: 'X-User'"),
            &[("auth.example.com", "/", "Prefix", "app")],
        ),
        ingress(
            "plain",
            &format!("nginx.ingress.kubernetes.io/auth-url: '{url}', nginx.ingress.kubernetes.io/auth-signin-redirect-param: orig"),
            &[("plain.example.com", "/", "Prefix", "app")],
        ),
        ingress(
            "down",
            &format!("nginx.ingress.kubernetes.io/auth-url: '{url}'"),
            &[("down.example.com", "/", "Prefix", "down")],
        ),
        ingress(
            "always",
            &format!("nginx.ingress.kubernetes.io/auth-url: '{url}', nginx.ingress.kubernetes.io/auth-always-set-cookie: 'true'"),
            &[("always.example.com", "/", "Prefix", "down")],
        ),
        ingress(
            "unreachable",
            &format!("nginx.ingress.kubernetes.io/auth-url: 'http://{closed}/check'"),
            &[("unreachable.example.com", "/", "Prefix", "app")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;
    let get = |host: &str, path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
    };
    let signed_in = "Authorization: Basic dXNlcjpwYXNzd29yZA==\r\n"; // user:password

    // Not signed in: 302 to the sign-in page with the original URL in `rd`, escaped as
    // auth.go expects (url.QueryEscape of the request URI), with the service's cookie.
    let r = raw(p.http, get("auth.example.com", "/?a=b&c=d", "").as_bytes()).await;
    assert!(status_line(&r).contains("302"), "{r}");
    assert_eq!(
        header_of(&r, "location").as_deref(),
        Some("http://auth.example.com/auth/start?rd=http://auth.example.com%2F%3Fa%3Db%26c%3Dd"),
        "{r}"
    );
    assert_eq!(
        header_of(&r, "set-cookie").as_deref(),
        Some("step=1"),
        "{r}"
    );
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing unauthenticated reached the target"
    );

    // What the service was asked: the client's headers without its body, Host its own,
    // and ingress-nginx's X-Original-* headers.
    {
        let asked = asked.lock().unwrap();
        let head = asked.last().expect("the service was asked");
        assert!(head.starts_with("get /auth/check http/1.1"), "{head}");
        assert!(head.contains("\nhost: 127.0.0.1\r"), "{head}");
        assert!(
            head.contains("x-original-url: http://auth.example.com/?a=b&c=d"),
            "{head}"
        );
        assert!(head.contains("x-original-method: get"), "{head}");
        assert!(
            head.contains("x-sent-from: nginx-ingress-controller"),
            "{head}"
        );
        assert!(
            head.contains("x-auth-request-redirect: /?a=b&c=d"),
            "{head}"
        );
    }

    // Signed in: the target is reached, with the service's X-User replacing the client's,
    // and the client gets the service's cookie.
    let r = raw(
        p.http,
        get(
            "auth.example.com",
            "/app",
            &format!("{signed_in}X-User: mallory\r\n"),
        )
        .as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert_eq!(
        header_of(&r, "set-cookie").as_deref(),
        Some("alma=armud"),
        "{r}"
    );
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            values(&got[0], "x-user"),
            vec!["alice".to_string()],
            "{}",
            got[0]
        );
    }
    // Let in without a user: the client's own X-User never reaches the target.
    let r = raw(
        p.http,
        get(
            "auth.example.com",
            "/app",
            "X-Anonymous: 1\r\nX-User: mallory\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert!(values(&got.lock().unwrap()[1], "x-user").is_empty());

    // A POST's body goes to the target, never to the service.
    let post = format!(
        "POST /form HTTP/1.1\r\nHost: auth.example.com\r\n{signed_in}Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let before = asked.lock().unwrap().len();
    let r = raw(p.http, post.as_bytes()).await;
    assert!(status_line(&r).contains("200"), "{r}");
    {
        let asked = asked.lock().unwrap();
        let head = &asked[before];
        assert!(head.contains("x-original-method: post"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(head.ends_with("body-bytes: 0"), "{head}");
        assert!(got.lock().unwrap()[2].ends_with("hello"));
    }

    // No sign-in page: the service's 401 and challenge; its 403 is a 403.
    let r = raw(p.http, get("plain.example.com", "/", "").as_bytes()).await;
    assert!(status_line(&r).contains("401"), "{r}");
    assert_eq!(
        header_of(&r, "www-authenticate").as_deref(),
        Some("Basic realm=\"svc\""),
        "{r}"
    );
    let r = raw(
        p.http,
        get("plain.example.com", "/", "X-Deny: 1\r\n").as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("403"), "{r}");

    // The service's cookie goes on the target's 503 only with auth-always-set-cookie.
    let r = raw(p.http, get("down.example.com", "/", signed_in).as_bytes()).await;
    assert!(status_line(&r).contains("503"), "{r}");
    assert_eq!(header_of(&r, "set-cookie"), None, "{r}");
    let r = raw(p.http, get("always.example.com", "/", signed_in).as_bytes()).await;
    assert!(status_line(&r).contains("503"), "{r}");
    assert_eq!(
        header_of(&r, "set-cookie").as_deref(),
        Some("alma=armud"),
        "{r}"
    );

    // A service that cannot be reached: 500, and the target never sees the request.
    let before = got.lock().unwrap().len();
    let r = raw(
        p.http,
        get("unreachable.example.com", "/", signed_in).as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("500"), "{r}");
    assert_eq!(got.lock().unwrap().len(), before);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_as_ingress_nginx_applies_them() {
    let (app, got) = recorder().await;
    // A target that holds every response until the test lets it go.
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow = {
        let (gate, held) = (gate.clone(), held.clone());
        tcp_target(move |mut s| {
            let (gate, held) = (gate.clone(), held.clone());
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut chunk = [0u8; 4096];
                let _ = s.read(&mut chunk).await;
                let released = gate.notified();
                held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                released.await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        })
        .await
    };
    let manifests = |extra: &str| {
        let mut m = vec![
            service("app", &[app]),
            service("slow", &[slow]),
            // Burst 2 at 2 r/m: three at once, then one per 30 s — far beyond this test.
            ingress(
                "limited",
                "nginx.ingress.kubernetes.io/limit-rpm: '2', nginx.ingress.kubernetes.io/limit-burst-multiplier: '1'",
                &[("a.example.com", "/", "Prefix", "app"), ("b.example.com", "/", "Prefix", "app")],
            ),
            ingress(
                "allowed",
                "nginx.ingress.kubernetes.io/limit-rpm: '1', nginx.ingress.kubernetes.io/limit-burst-multiplier: '1', nginx.ingress.kubernetes.io/limit-allowlist: '127.0.0.0/8'",
                &[("allowed.example.com", "/", "Prefix", "app")],
            ),
            ingress(
                "conns",
                "nginx.ingress.kubernetes.io/limit-connections: '2'",
                &[("conns.example.com", "/", "Prefix", "slow")],
            ),
            ingress("open", "", &[("open.example.com", "/", "Prefix", "app")]),
        ];
        if !extra.is_empty() {
            m.push(extra.to_string());
        }
        m.join("---\n")
    };
    let p = TestProxy::start(&manifests("")).await;
    let status = |host: &'static str| {
        let http = p.http;
        async move {
            let r = raw(http, request(host, None, "").as_bytes()).await;
            status_line(&r).to_string()
        }
    };

    // One zone for the Ingress: its two hosts draw on the same bucket.
    for host in ["a.example.com", "b.example.com", "a.example.com"] {
        assert!(status(host).await.contains("200"), "{host}");
    }
    assert!(status("b.example.com").await.contains("503"));
    assert!(status("a.example.com").await.contains("503"));
    assert_eq!(
        got.lock().unwrap().len(),
        3,
        "refused requests never reach the target"
    );
    // Other Ingresses are not limited, nor allow-listed clients.
    for _ in 0..5 {
        assert!(status("open.example.com").await.contains("200"));
        assert!(status("allowed.example.com").await.contains("200"));
    }

    // A configuration swap (another Ingress added) keeps the client's bucket.
    p.write(
        "main.yaml",
        &manifests(&ingress(
            "new",
            "",
            &[("new.example.com", "/", "Prefix", "app")],
        )),
    );
    wait_until(Duration::from_secs(10), "the new Ingress", || async {
        status("new.example.com").await.contains("200")
    })
    .await;
    assert!(
        status("a.example.com").await.contains("503"),
        "the burst is not handed out again"
    );

    // limit-connections: two in progress; a third is refused at once, never reaching the
    // target; when they end, their places are free again.
    let in_flight: Vec<_> = (0..2)
        .map(|_| tokio::spawn(status("conns.example.com")))
        .collect();
    let h = held.clone();
    wait_until(Duration::from_secs(10), "two requests held", || {
        let h = h.clone();
        async move { h.load(std::sync::atomic::Ordering::SeqCst) == 2 }
    })
    .await;
    for _ in 0..3 {
        assert!(status("conns.example.com").await.contains("503"));
    }
    assert_eq!(held.load(std::sync::atomic::Ordering::SeqCst), 2);
    gate.notify_waiters();
    for t in in_flight {
        assert!(t.await.unwrap().contains("200"));
    }
    let next = tokio::spawn(status("conns.example.com"));
    let h = held.clone();
    wait_until(Duration::from_secs(10), "a third request held", || {
        let h = h.clone();
        async move { h.load(std::sync::atomic::Ordering::SeqCst) == 3 }
    })
    .await;
    gate.notify_waiters();
    assert!(next.await.unwrap().contains("200"));
    p.stop().await;
}

/// A CA, and a client certificate it signed for `cn`, as PEM (certificate, key).
struct Pki {
    ca_pem: String,
    client: (String, String),
}

fn pki(cn: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme Co");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        client: (cert.pem(), key.serialize_pem()),
    }
}

/// One GET over TLS (SNI and Host `host`), presenting `client` (certificate, key) if given;
/// the raw response.
async fn mtls_get(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
    client: Option<&(String, String)>,
) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            tollgate_proxy::upstream::tls::AnyServerCertificate(provider),
        ));
    let cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nssl-client-verify: FORGED\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// ingress-nginx's auth-tls, as test/e2e/annotations/authtls.go pins it: no certificate →
/// 400, one its CA signed → 200 with the ssl-client-* headers (a client's own never
/// reach the target), another CA's → 400; the error page as a 302; the certificate passed
/// on URL-escaped; auth-tls-match-cn → 403 when the DN does not match; plain HTTP to such a
/// host is refused, never served unchecked; a missing Secret keeps its Ingress unserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_as_ingress_nginx_checks_them() {
    let (app, got) = recorder().await;
    let good = pki("mtls.example.com-client");
    let other = pki("mtls.example.com-client");
    let hosts = [
        "mtls.example.com",
        "page.example.com",
        "pass.example.com",
        "cn.example.com",
        "cnok.example.com",
        "open.example.com",
        "nosecret.example.com",
    ];
    let (cert, key, _) = self_signed(&hosts);
    let n = "nginx.ingress.kubernetes.io";
    let tls_ingress = |name: &str, host: &str, annotations: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: tollgate\n  tls: [{{hosts: ['{host}'], secretName: server-tls}}]\n  rules:\n  - host: '{host}'\n    http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]\n"
        )
    };
    let ca_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ca}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{}",
        good.ca_pem.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let m = [
        service("app", &[app]),
        tls_secret("server-tls", &cert, &key),
        ca_secret,
        tls_ingress("mtls", "mtls.example.com", &format!("{n}/auth-tls-secret: default/ca")),
        tls_ingress("page", "page.example.com", &format!("{n}/auth-tls-secret: default/ca, {n}/auth-tls-error-page: 'http://err.example.com/error'")),
        tls_ingress("pass", "pass.example.com", &format!("{n}/auth-tls-secret: default/ca, {n}/auth-tls-pass-certificate-to-upstream: 'true'")),
        tls_ingress("cn", "cn.example.com", &format!("{n}/auth-tls-secret: default/ca, {n}/auth-tls-match-cn: 'CN=notgonnamatch'")),
        tls_ingress("cnok", "cnok.example.com", &format!("{n}/auth-tls-secret: default/ca, {n}/auth-tls-match-cn: 'CN=(itwillmatch|mtls)'")),
        tls_ingress("open", "open.example.com", ""),
        tls_ingress("nosecret", "nosecret.example.com", &format!("{n}/auth-tls-secret: default/missing")),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;

    let r = mtls_get(p.https, "mtls.example.com", "/", None).await;
    assert!(status_line(&r).contains("400"), "{r}");
    assert!(r.contains("No required SSL certificate was sent"), "{r}");
    let r = mtls_get(p.https, "mtls.example.com", "/", Some(&other.client)).await;
    assert!(
        status_line(&r).contains("400"),
        "another CA's certificate: {r}"
    );
    assert!(r.contains("The SSL certificate error"), "{r}");
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing unchecked reached the target"
    );

    let r = mtls_get(p.https, "mtls.example.com", "/", Some(&good.client)).await;
    assert!(status_line(&r).contains("200"), "{r}");
    {
        let got = got.lock().unwrap();
        let head = &got[0];
        assert_eq!(
            values(head, "ssl-client-verify"),
            vec!["SUCCESS".to_string()],
            "{head}"
        );
        let dn = values(head, "ssl-client-subject-dn");
        assert!(
            dn.len() == 1 && dn[0].contains("CN=mtls.example.com-client"),
            "{head}"
        );
        assert_eq!(
            values(head, "ssl-client-issuer-dn"),
            vec!["CN=Test CA".to_string()],
            "{head}"
        );
        assert!(values(head, "ssl-client-cert").is_empty(), "{head}");
    }

    // The error page: a 302 to it.
    let r = mtls_get(p.https, "page.example.com", "/", None).await;
    assert!(status_line(&r).contains("302"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("location: http://err.example.com/error"),
        "{r}"
    );
    // The certificate passed on, URL-escaped PEM.
    let r = mtls_get(p.https, "pass.example.com", "/", Some(&good.client)).await;
    assert!(status_line(&r).contains("200"), "{r}");
    let passed = values(&got.lock().unwrap()[1], "ssl-client-cert");
    assert!(
        passed.len() == 1 && passed[0].starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{passed:?}"
    );
    // match-cn.
    let r = mtls_get(p.https, "cn.example.com", "/", Some(&good.client)).await;
    assert!(status_line(&r).contains("403"), "{r}");
    let r = mtls_get(p.https, "cnok.example.com", "/", Some(&good.client)).await;
    assert!(status_line(&r).contains("200"), "{r}");
    // Other hosts need no certificate; plain HTTP to a checked host is refused.
    let r = mtls_get(p.https, "open.example.com", "/", None).await;
    assert!(status_line(&r).contains("200"), "{r}");
    let r = raw(
        p.http,
        b"GET / HTTP/1.1\r\nHost: mtls.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status_line(&r).contains("400"), "{r}");
    // A missing Secret: not served at all.
    let r = mtls_get(p.https, "nosecret.example.com", "/", Some(&good.client)).await;
    assert!(!status_line(&r).contains("200"), "{r}");
    p.stop().await;
}

/// ingress-nginx's `use-proxy-protocol`: the client named by a PROXY header (v1 or v2) is
/// the one allow-lists judge and X-Forwarded-For names; a connection without the header is
/// closed. And `use-forwarded-headers`: a trusted peer's X-Forwarded-For names the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_load_balancer() {
    let (app, got) = recorder().await;
    let m = [
        service("app", &[app]),
        ingress(
            "listed",
            "nginx.ingress.kubernetes.io/whitelist-source-range: 192.0.2.0/24",
            &[("listed.example.com", "/", "Prefix", "app")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start_with(&m, |o| o.limits.proxy_protocol = true).await;
    let get = "GET / HTTP/1.1\r\nHost: listed.example.com\r\nConnection: close\r\n\r\n";
    let r = raw(
        p.http,
        format!("PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\n{get}").as_bytes(),
    )
    .await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert_eq!(
        values(&got.lock().unwrap()[0], "x-forwarded-for"),
        vec!["192.0.2.7".to_string()]
    );
    let r = raw(
        p.http,
        format!("PROXY TCP4 198.51.100.7 10.0.0.1 5555 80\r\n{get}").as_bytes(),
    )
    .await;
    assert!(
        status_line(&r).contains("403"),
        "not on the allow-list: {r}"
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 192, 0, 2, 99, 10, 0, 0, 1, 0x15, 0xb3, 0, 80,
    ]);
    v2.extend_from_slice(get.as_bytes());
    let r = raw(p.http, &v2).await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert_eq!(
        values(&got.lock().unwrap()[1], "x-forwarded-for"),
        vec!["192.0.2.99".to_string()]
    );
    let r = raw(p.http, get.as_bytes()).await;
    assert!(r.is_empty(), "no PROXY header, no answer: {r}");
    p.stop().await;

    let p = TestProxy::start_with(&m, |o| {
        o.settings.real_ip_from =
            Some(tollgate_proxy::policy::forwarded_for::parse_cidrs("127.0.0.0/8").unwrap())
    })
    .await;
    let with_xff = |xff: &str| {
        format!("GET / HTTP/1.1\r\nHost: listed.example.com\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n")
    };
    let r = raw(p.http, with_xff("192.0.2.50").as_bytes()).await;
    assert!(status_line(&r).contains("200"), "{r}");
    assert_eq!(
        values(got.lock().unwrap().last().unwrap(), "x-forwarded-for"),
        vec!["192.0.2.50".to_string()]
    );
    let r = raw(p.http, with_xff("192.0.2.50, 198.51.100.1").as_bytes()).await;
    assert!(
        status_line(&r).contains("403"),
        "the rightmost untrusted address is the client: {r}"
    );
    let r = raw(p.http, get.as_bytes()).await;
    assert!(
        status_line(&r).contains("403"),
        "no header: the peer, 127.0.0.1: {r}"
    );
    p.stop().await;
}

/// An Opaque Secret of PEM values (block scalars keep their lines).
fn pem_secret(name: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in pairs {
        out.push_str(&format!("  {k}: |\n"));
        for l in v.lines() {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}

/// ingress-nginx's backend certificate settings (`proxy-ssl-*`; test/e2e/annotations/
/// proxyssl.go gives a Secret with `tls.crt`, `tls.key` and `ca.crt` and checks the
/// directives nginx gets — here what they do): a target that demands a client certificate
/// gets the Secret's; the target's own certificate is checked against `ca.crt` and
/// `proxy-ssl-name`, which `proxy-ssl-server-name: on` also sends as SNI. A name the target
/// does not carry is nginx's 502, as is a target reached without the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_follows_proxy_ssl() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncWriteExt;

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Backend CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let issue = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = issue(vec!["backend.internal".into()], "backend.internal");
    let (client_pem, client_key) = issue(vec![], "tollgate");

    // The target: TLS that demands a client certificate of the same CA; it records the
    // server name each handshake asked for.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_cert.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let names: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = names.clone();
    let backend = tcp_target(move |s| {
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            let sni = tls.get_ref().1.server_name().map(str::to_string);
            seen.lock().unwrap().push(sni);
            if !read_request_head(&mut tls).await {
                return;
            }
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\nverified-backend")
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;

    let n = "nginx.ingress.kubernetes.io";
    let ssl = |name: &str| {
        format!("{n}/backend-protocol: HTTPS, {n}/proxy-ssl-secret: default/backend-tls, {n}/proxy-ssl-verify: 'on', {n}/proxy-ssl-name: {name}, {n}/proxy-ssl-server-name: 'on'")
    };
    let m = [
        service("tls-target", &[backend]),
        pem_secret(
            "backend-tls",
            &[
                ("ca.crt", &ca_cert.pem()),
                ("tls.crt", &client_pem),
                ("tls.key", &client_key),
            ],
        ),
        ingress(
            "mtls",
            &ssl("backend.internal"),
            &[("mtls.example.com", "/", "Prefix", "tls-target")],
        ),
        ingress(
            "wrong-name",
            &ssl("other.internal"),
            &[("wrong.example.com", "/", "Prefix", "tls-target")],
        ),
        ingress(
            "no-cert",
            &format!("{n}/backend-protocol: HTTPS"),
            &[("plain.example.com", "/", "Prefix", "tls-target")],
        ),
    ]
    .join("---\n");
    let p = TestProxy::start(&m).await;

    // GET and POST (the relay's and hyper's ways to a target).
    let (status, _, body) = get(p.http, "mtls.example.com", "/").await.expect("GET");
    assert_eq!(
        (status, body.as_str()),
        (http::StatusCode::OK, "verified-backend")
    );
    let post = raw(
        p.http,
        b"POST / HTTP/1.1\r\nHost: mtls.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert!(status_line(&post).contains("200"), "{post}");
    assert!(post.ends_with("verified-backend"), "{post}");
    assert!(!names.lock().unwrap().is_empty());
    assert!(
        names
            .lock()
            .unwrap()
            .iter()
            .all(|n| n.as_deref() == Some("backend.internal")),
        "proxy-ssl-server-name sends proxy-ssl-name: {:?}",
        names.lock().unwrap()
    );

    let (status, _, _) = get(p.http, "wrong.example.com", "/").await.expect("GET");
    assert_eq!(
        status,
        http::StatusCode::BAD_GATEWAY,
        "a name the target lacks"
    );
    let (status, _, _) = get(p.http, "plain.example.com", "/").await.expect("GET");
    assert_eq!(
        status,
        http::StatusCode::BAD_GATEWAY,
        "no client certificate without proxy-ssl-secret"
    );
    p.stop().await;
}

//! ingress-nginx authentication served by the proxy, on real sockets: basic authentication
//! from an htpasswd Secret (`auth-file`) or a user map (`auth-map`), as ingress-nginx's
//! test/e2e/annotations/auth.go pins it — 401 with the realm's challenge and nginx's page
//! without (or with wrong) credentials, the target reached with the right ones, CORS headers
//! on the 401, and an Ingress whose Secret is missing not served at all.

mod support;

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

fn header_of(resp: &str, name: &str) -> Option<String> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
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

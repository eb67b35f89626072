//! Reading the Secrets behind ingress-nginx's `auth-secret` into the users a route admits.
//!
//! Done at build time, not when the Ingress is read: the Secret changes on its own (a
//! password rotated), and the Ingress's cached read must not keep the old users. An Ingress
//! whose Secret cannot be read is not served (ingress-nginx answers its paths 503, "location
//! denied"); users whose hash cannot be checked are named in a Warning and can never log in.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use tollgate_contract::{BasicAuth, Diagnostic, ObjectKind, Reason, Severity};

use super::annotations::BasicAuthRef;

/// The namespace and name of the Secret `r` names for an Ingress in `namespace`.
pub(crate) fn secret_key<'a>(r: &'a BasicAuthRef, namespace: &'a str) -> (&'a str, &'a str) {
    (r.namespace.as_deref().unwrap_or(namespace), &r.name)
}

/// The users of `secret` (already looked up by [`secret_key`]) for the Ingress `ns/name`.
/// `Err` is the Error that keeps the Ingress from being served; warnings go to `warnings`.
pub(crate) fn basic_auth(
    r: &BasicAuthRef,
    ingress: (&str, &str),
    secret: Option<&Secret>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Arc<BasicAuth>, Diagnostic> {
    let (ns, ing_name) = ingress;
    let (secret_ns, secret_name) = secret_key(r, ns);
    let annotation = "nginx.ingress.kubernetes.io/auth-secret";
    let diag = |severity, reason, message: String| {
        Diagnostic::new(
            severity,
            ObjectKind::Ingress,
            ns.to_string(),
            ing_name.to_string(),
            reason,
            message,
        )
    };
    let secret = own_secret(
        annotation,
        ingress,
        (secret_ns, secret_name),
        secret,
        "authentication",
    )?;
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let entries: Vec<(String, String)> = if r.map {
        // auth-map: every key a user, its value the hash.
        let mut e: Vec<(String, String)> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), text(&v.0).trim().to_string()))
            .chain(
                secret
                    .string_data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.trim().to_string())),
            )
            .collect();
        e.sort();
        e.dedup_by(|a, b| a.0 == b.0);
        e
    } else {
        let file = super::tls_secrets::secret_bytes(secret, "auth").map(|b| text(&b));
        let Some(file) = file else {
            return Err(diag(
                Severity::Error,
                Reason::SecretInvalid,
                format!("{annotation}: Secret {secret_ns}/{secret_name} has no key \"auth\" (an htpasswd file; or set auth-secret-type: auth-map); the Ingress is not served without its authentication"),
            ));
        };
        htpasswd_lines(&file)
    };
    let mut users = Vec::with_capacity(entries.len());
    let mut unusable = Vec::new();
    for (user, hash) in entries {
        if user.is_empty() {
            continue;
        }
        if tollgate_proxy::policy::basic_auth::hash_is_supported(&hash) {
            users.push((user, hash));
        } else {
            unusable.push(user);
        }
    }
    if !unusable.is_empty() {
        warnings.push(diag(
            Severity::Warning,
            Reason::SecretInvalid,
            format!("{annotation}: Secret {secret_ns}/{secret_name}: the password of {} is not a hash nginx accepts (crypt, $apr1$, {{SHA}}, {{SSHA}} or {{PLAIN}}); they cannot log in", unusable.join(", ")),
        ));
    }
    if users.is_empty() {
        warnings.push(diag(
            Severity::Warning,
            Reason::SecretInvalid,
            format!("{annotation}: Secret {secret_ns}/{secret_name} lists no usable user; every request gets 401"),
        ));
    }
    let mut h = Sha256::new();
    for (u, p) in &users {
        h.update(u.as_bytes());
        h.update([0]);
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.update(r.realm.as_bytes());
    let fingerprint = super::tls_secrets::hex16(&h.finalize());
    Ok(Arc::new(BasicAuth {
        realm: r.realm.clone(),
        users,
        secret: format!("{secret_ns}/{secret_name}"),
        fingerprint,
    }))
}

/// The CA of an Ingress's `auth-tls-secret` (key `ca.crt`, PEM certificates), with what to
/// do with client certificates. A Secret that is missing, of another namespace, or without
/// a usable `ca.crt` keeps the Ingress from being served (ingress-nginx answers the host 403
/// for the first two and drops the check for the last, which would serve it open).
pub(crate) fn client_cert(
    r: &super::annotations::ClientCertRef,
    ingress: (&str, &str),
    secret: Option<&Secret>,
) -> Result<Arc<tollgate_contract::ClientCertAuth>, Diagnostic> {
    let ns = ingress.0;
    let secret_ns = r.namespace.as_deref().unwrap_or(ns);
    let annotation = "nginx.ingress.kubernetes.io/auth-tls-secret";
    let name = &r.name;
    let secret = own_secret(
        annotation,
        ingress,
        (secret_ns, name),
        secret,
        "client-certificate check",
    )?;
    let ca = super::tls_secrets::secret_bytes(secret, "ca.crt")
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let usable = ca.as_deref().is_some_and(usable_ca);
    let (Some(ca), true) = (ca, usable) else {
        return Err(refusal(
            ingress,
            Reason::SecretInvalid,
            format!("{annotation}: Secret {secret_ns}/{name} has no usable ca.crt (PEM certificates); the Ingress is not served without its client-certificate check"),
        ));
    };
    let fingerprint = super::tls_secrets::hex16(&Sha256::digest(ca.as_bytes()));
    Ok(Arc::new(tollgate_contract::ClientCertAuth {
        ca_pem: ca.into(),
        ca_fingerprint: fingerprint,
        secret: format!("{secret_ns}/{name}"),
        verify: r.verify.clone(),
        depth: r.depth,
        pass_certificate: r.pass_certificate,
        error_page: r.error_page.clone(),
        match_cn: r.match_cn.clone(),
    }))
}

/// The backend TLS an Ingress's `proxy-ssl-secret` configures, as ingress-nginx reads the
/// Secret (store/backend_ssl.go): `ca.crt` is what everything hangs on — with `tls.crt` and
/// `tls.key` too, the proxy also presents that certificate; with only `tls.crt`/`tls.key`
/// ingress-nginx emits nothing (named in a Warning: the targets are neither verified nor
/// shown a certificate). A Secret that is missing, of another namespace, or holds none of
/// these keys keeps the Ingress from being served (ingress-nginx denies the location, 503).
pub(crate) fn upstream_tls(
    r: &super::annotations::ProxySslRef,
    ingress: (&str, &str),
    secret: Option<&Secret>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<Arc<tollgate_contract::UpstreamTls>>, Diagnostic> {
    let secret_ns = r.namespace.as_deref().unwrap_or(ingress.0);
    let annotation = "nginx.ingress.kubernetes.io/proxy-ssl-secret";
    let name = &r.name;
    let secret = own_secret(
        annotation,
        ingress,
        (secret_ns, name),
        secret,
        "backend TLS",
    )?;
    let has = |k: &str| super::tls_secrets::secret_bytes(secret, k).is_some();
    let Some(ca) = super::tls_secrets::secret_bytes(secret, "ca.crt") else {
        if has("tls.crt") && has("tls.key") {
            warnings.push(Diagnostic::new(
                Severity::Warning,
                ObjectKind::Ingress,
                ingress.0.to_string(),
                ingress.1.to_string(),
                Reason::SecretInvalid,
                format!("{annotation}: Secret {secret_ns}/{name} has no ca.crt, so (as ingress-nginx) the targets are not verified and no client certificate is presented"),
            ));
            return Ok(None);
        }
        return Err(refusal(
            ingress,
            Reason::SecretInvalid,
            format!("{annotation}: Secret {secret_ns}/{name} has neither ca.crt nor tls.crt and tls.key; the Ingress is not served without its backend TLS"),
        ));
    };
    let ca = String::from_utf8_lossy(&ca).into_owned();
    if !usable_ca(&ca) {
        return Err(refusal(
            ingress,
            Reason::SecretInvalid,
            format!("{annotation}: Secret {secret_ns}/{name}: ca.crt is not PEM certificates; the Ingress is not served without its backend TLS"),
        ));
    }
    let client_certificate = if has("tls.crt") || has("tls.key") {
        match super::tls_secrets::read_tls_secret(secret) {
            Ok(m) => Some(m),
            Err(why) => {
                return Err(refusal(
                    ingress,
                    Reason::SecretInvalid,
                    format!("{annotation}: Secret {secret_ns}/{name}: {why}; the Ingress is not served without its backend TLS"),
                ))
            }
        }
    } else {
        None
    };
    Ok(Some(Arc::new(tollgate_contract::UpstreamTls {
        secret: format!("{secret_ns}/{name}"),
        ca_fingerprint: super::tls_secrets::hex16(&Sha256::digest(ca.as_bytes())),
        ca_pem: ca.into(),
        client_certificate,
        verify: r.verify,
        verify_depth: r.verify_depth,
        name: r.ssl_name.clone(),
        send_server_name: r.server_name,
        protocols: r.protocols.clone(),
    })))
}

/// Whether a `ca.crt` is one or more PEM certificates and nothing unreadable.
fn usable_ca(pem: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    !certs.is_empty() && certs.iter().all(|c| c.is_ok())
}

/// An Error on the Ingress `ingress` that keeps it from being served.
fn refusal(ingress: (&str, &str), reason: Reason, message: String) -> Diagnostic {
    Diagnostic::new(
        Severity::Error,
        ObjectKind::Ingress,
        ingress.0.to_string(),
        ingress.1.to_string(),
        reason,
        message,
    )
}

/// The Secret an Ingress names in `annotation` for its `protection`, if it may use it:
/// ingress-nginx refuses Secrets of other namespaces unless the operator allows it
/// (`allow-cross-namespace-resources`, off by default since controller 1.12), so one
/// namespace's Ingress never reads another's credentials; a missing one is an Error too.
fn own_secret<'s>(
    annotation: &str,
    ingress: (&str, &str),
    (secret_ns, name): (&str, &str),
    secret: Option<&'s Secret>,
    protection: &str,
) -> Result<&'s Secret, Diagnostic> {
    if secret_ns != ingress.0 {
        return Err(refusal(
            ingress,
            Reason::AnnotationRefused,
            format!("{annotation}: Secret {secret_ns}/{name} is in another namespace; an Ingress may only use its own namespace's Secrets, so it is not served without its {protection}"),
        ));
    }
    secret.ok_or_else(|| {
        refusal(
            ingress,
            Reason::SecretNotFound,
            format!("{annotation}: Secret {secret_ns}/{name} not found; the Ingress is not served without its {protection}"),
        )
    })
}

/// An htpasswd file's `user:hash` lines, as nginx's `auth_basic_user_file` reads them: blank
/// lines and `#` comments skipped, the hash ending at the next `:` (a comment field).
fn htpasswd_lines(file: &str) -> Vec<(String, String)> {
    file.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (user, rest) = l.split_once(':')?;
            let hash = rest.split(':').next().unwrap_or_default();
            Some((user.to_string(), hash.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn auth_ref(ns: Option<&str>, map: bool) -> BasicAuthRef {
        BasicAuthRef {
            namespace: ns.map(String::from),
            name: "basic".into(),
            map,
            realm: "test auth".into(),
        }
    }

    #[test]
    fn file_and_map_forms() {
        let mut w = Vec::new();
        let file = secret(&[(
            "auth",
            "# team\nfoo:{PLAIN}bar:comment\r\n\nbad:nohash\nbaz:{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=\n",
        )]);
        let a = basic_auth(&auth_ref(None, false), ("ns", "ing"), Some(&file), &mut w).unwrap();
        assert_eq!(
            a.users,
            vec![
                ("foo".to_string(), "{PLAIN}bar".to_string()),
                (
                    "baz".to_string(),
                    "{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=".to_string()
                )
            ]
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].message.contains("bad") && !w[0].message.contains("nohash"));

        let mut w = Vec::new();
        let map = secret(&[("foo", "{PLAIN}bar\n"), ("auth", "{PLAIN}x")]);
        let b = basic_auth(
            &auth_ref(Some("ns"), true),
            ("ns", "ing"),
            Some(&map),
            &mut w,
        )
        .unwrap();
        assert_eq!(b.users.len(), 2);
        assert!(w.is_empty());
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn unusable_secrets_keep_the_ingress_from_being_served() {
        let mut w = Vec::new();
        let e = basic_auth(&auth_ref(None, false), ("ns", "ing"), None, &mut w).unwrap_err();
        assert_eq!(
            (e.severity, e.reason),
            (Severity::Error, Reason::SecretNotFound)
        );
        let no_key = secret(&[("users", "foo:{PLAIN}bar")]);
        let e =
            basic_auth(&auth_ref(None, false), ("ns", "ing"), Some(&no_key), &mut w).unwrap_err();
        assert!(e.message.contains("no key \"auth\""), "{}", e.message);
        let e = basic_auth(
            &auth_ref(Some("other"), false),
            ("ns", "ing"),
            Some(&no_key),
            &mut w,
        )
        .unwrap_err();
        assert!(e.message.contains("another namespace"), "{}", e.message);
        // An empty hash, as ingress-nginx's e2e "foo:" case: served, nobody admitted.
        let empty = secret(&[("auth", "foo:")]);
        let a = basic_auth(&auth_ref(None, false), ("ns", "ing"), Some(&empty), &mut w).unwrap();
        assert!(a.users.is_empty());
    }
}

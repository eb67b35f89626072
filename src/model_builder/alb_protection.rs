//! The AWS Load Balancer Controller's protective annotations on the load balancer itself:
//! `auth-type` with its identity provider (`auth-idp-oidc`, `auth-idp-cognito`) and session
//! settings, `wafv2-acl-arn`/`wafv2-acl-name` and `shield-advanced-protection`. Read here,
//! apart from `annotations.rs`, because they are ALB-only, carry a Secret, or must agree
//! across a group ([`settle_group`]).
//!
//! Semantics read from the controller's `docs/guide/ingress/annotations.md`
//! ("Authentication") and `pkg/ingress/model_build_actions.go` (`buildAuthAction`): the
//! authenticate action goes before the rule's own action, on HTTPS listeners only. Where
//! that controller silently skips the authentication on an HTTP listener, Tollgate refuses
//! the Ingress (`check_listeners`): an Ingress that asked for authentication is never
//! served without it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_contract::{
    ClientSecret, Diagnostic, IdentityProvider, IdpAuthentication, ListenerProtocol, ObjectKind,
    Protection, Reason, Severity, UnauthenticatedRequest, WebAcl,
};

use super::annotations::{Reader, ALB};

/// ALB's defaults (ELBv2 `AuthenticateOidcActionConfig`), which the controller keeps.
const DEFAULT_SCOPE: &str = "openid";
const DEFAULT_COOKIE: &str = "AWSELBAuthSessionCookie";
const DEFAULT_TIMEOUT: u64 = 604_800;

/// `auth-type` and its settings as the annotations give them; an OIDC provider's client
/// ID and secret are read from its Secret at build time ([`resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpAuthRef {
    pub idp: IdpRef,
    pub on_unauthenticated_request: UnauthenticatedRequest,
    pub scope: String,
    pub session_cookie: String,
    pub session_timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpRef {
    Oidc(OidcJson),
    Cognito(CognitoJson),
}

/// `auth-idp-oidc`. Unknown fields are refused: a misspelt one would otherwise be dropped
/// in silence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcJson {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub user_info_endpoint: String,
    pub secret_name: String,
    #[serde(default)]
    pub authentication_request_extra_params: BTreeMap<String, String>,
}

/// `auth-idp-cognito`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CognitoJson {
    #[serde(rename = "userPoolARN")]
    pub user_pool_arn: String,
    #[serde(rename = "userPoolClientID")]
    pub user_pool_client_id: String,
    #[serde(rename = "userPoolDomain")]
    pub user_pool_domain: String,
    #[serde(default, rename = "authenticationRequestExtraParams")]
    pub authentication_request_extra_params: BTreeMap<String, String>,
}

/// ALB takes only `https://` URLs for the provider's endpoints and issuer.
fn https_url(field: &str, v: &str) -> Result<(), String> {
    match v.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(format!("{field} {v:?} is not an https:// URL")),
    }
}

/// Reads `auth-type` and its settings; `None` when no authentication is asked for (the
/// settings without it are named as doing nothing).
pub(super) fn read_idp_auth(r: &mut Reader<'_>) -> Option<IdpAuthRef> {
    let kind_name = format!("{ALB}auth-type");
    let oidc_name = format!("{ALB}auth-idp-oidc");
    let cognito_name = format!("{ALB}auth-idp-cognito");
    let rest = [
        "auth-on-unauthenticated-request",
        "auth-scope",
        "auth-session-cookie",
        "auth-session-timeout",
    ];
    let kind = r.parse(&kind_name, |v| match v {
        "none" => Ok(None),
        "oidc" => Ok(Some(true)),
        "cognito" => Ok(Some(false)),
        _ => Err("expected none, oidc or cognito".into()),
    });
    let Some(Some(oidc)) = kind else {
        if kind.is_none() && r.errors.iter().any(|e| e.name == kind_name) {
            return None;
        }
        for n in [oidc_name.as_str(), cognito_name.as_str()]
            .into_iter()
            .map(str::to_string)
            .chain(rest.iter().map(|n| format!("{ALB}{n}")))
        {
            if r.raw(&n).is_some() {
                r.unused.push((
                    n,
                    format!("does nothing without {kind_name}: oidc or cognito"),
                ));
            }
        }
        return None;
    };
    let idp = if oidc {
        r.parse(&oidc_name, |v| {
            let j: OidcJson =
                serde_json::from_str(v).map_err(|e| format!("not the provider's JSON: {e}"))?;
            https_url("issuer", &j.issuer)?;
            https_url("authorizationEndpoint", &j.authorization_endpoint)?;
            https_url("tokenEndpoint", &j.token_endpoint)?;
            https_url("userInfoEndpoint", &j.user_info_endpoint)?;
            if j.secret_name.is_empty() {
                return Err("secretName is empty".into());
            }
            Ok(IdpRef::Oidc(j))
        })
    } else {
        r.parse(&cognito_name, |v| {
            let j: CognitoJson =
                serde_json::from_str(v).map_err(|e| format!("not the provider's JSON: {e}"))?;
            if !j.user_pool_arn.starts_with("arn:") {
                return Err(format!("userPoolARN {:?} is not an ARN", j.user_pool_arn));
            }
            if j.user_pool_client_id.is_empty() || j.user_pool_domain.is_empty() {
                return Err("userPoolClientID and userPoolDomain are required".into());
            }
            Ok(IdpRef::Cognito(j))
        })
    };
    let on_unauthenticated_request = r
        .parse(
            &format!("{ALB}auth-on-unauthenticated-request"),
            |v| match v {
                "authenticate" => Ok(UnauthenticatedRequest::Authenticate),
                "allow" => Ok(UnauthenticatedRequest::Allow),
                "deny" => Ok(UnauthenticatedRequest::Deny),
                _ => Err("expected authenticate, allow or deny".into()),
            },
        )
        .unwrap_or(UnauthenticatedRequest::Authenticate);
    let scope = r
        .parse(&format!("{ALB}auth-scope"), |v| {
            if v.is_empty() {
                Err("empty".into())
            } else {
                Ok(v.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        })
        .unwrap_or_else(|| DEFAULT_SCOPE.into());
    let session_cookie = r
        .parse(&format!("{ALB}auth-session-cookie"), |v| {
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == ';' || c == '=') {
                Err("expected a cookie name".into())
            } else {
                Ok(v.to_string())
            }
        })
        .unwrap_or_else(|| DEFAULT_COOKIE.into());
    let session_timeout_seconds = r
        .parse(&format!("{ALB}auth-session-timeout"), |v| {
            match v.parse::<u64>() {
                // ELBv2's SessionTimeout: 1 second to 7 days.
                Ok(n) if (1..=DEFAULT_TIMEOUT).contains(&n) => Ok(n),
                _ => Err("expected seconds from 1 to 604800 (7 days)".into()),
            }
        })
        .unwrap_or(DEFAULT_TIMEOUT);
    match idp {
        Some(idp) => Some(IdpAuthRef {
            idp,
            on_unauthenticated_request,
            scope,
            session_cookie,
            session_timeout_seconds,
        }),
        None => {
            let needed = if oidc { &oidc_name } else { &cognito_name };
            if !r.errors.iter().any(|e| &e.name == needed) {
                r.fail(
                    &kind_name,
                    if oidc { "oidc" } else { "cognito" },
                    format!("needs {needed}; the Ingress is not served without its authentication"),
                );
            }
            None
        }
    }
}

/// A web ACL by name (`wafv2-acl-name`, class parameters' `wafv2AclName`): WAFv2 names are
/// 1-128 letters, digits, '-' and '_'; `none` removes an association.
pub(crate) fn parse_web_acl_name(v: &str) -> Result<WebAcl, String> {
    match v {
        "none" => Ok(WebAcl::None),
        _ if !v.is_empty()
            && v.len() <= 128
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(WebAcl::Name(v.to_string()))
        }
        _ => Err("expected a web ACL name (letters, digits, '-' and '_') or none".into()),
    }
}

/// A web ACL by ARN (`wafv2-acl-arn`, class parameters' `wafv2AclArn`), or `none`.
pub(crate) fn parse_web_acl_arn(v: &str) -> Result<WebAcl, String> {
    match v {
        "none" => Ok(WebAcl::None),
        _ if v.starts_with("arn:") && v.contains(":wafv2:") && v.contains("/webacl/") => {
            Ok(WebAcl::Arn(v.to_string()))
        }
        _ => Err(
            "expected a WAFv2 web ACL ARN (arn:aws:wafv2:...:regional/webacl/...) or none".into(),
        ),
    }
}

/// `wafv2-acl-name` (which wins, as in the AWS Load Balancer Controller's
/// `buildLoadBalancerAddOns`), else `wafv2-acl-arn`; `none` in either removes an association.
/// And `shield-advanced-protection`. Absent: left as AWS has it.
pub(super) fn read_protection(r: &mut Reader<'_>) -> Protection {
    let name = r.parse(&format!("{ALB}wafv2-acl-name"), parse_web_acl_name);
    let arn_name = format!("{ALB}wafv2-acl-arn");
    let arn = r.parse(&arn_name, parse_web_acl_arn);
    if name.is_some() && arn.is_some() {
        r.unused.push((
            arn_name,
            format!("{ALB}wafv2-acl-name is set and wins, as in the AWS Load Balancer Controller"),
        ));
    }
    Protection {
        web_acl: name.or(arn),
        shield_advanced: r.bool(&format!("{ALB}shield-advanced-protection")),
    }
}

/// `listener-attributes.<PROTOCOL>-<port>` (`HTTP-80`, `HTTPS-443`): `key=value` pairs for
/// that listener, as the AWS Load Balancer Controller reads them.
pub(super) fn read_listener_attributes(
    annotations: &BTreeMap<String, String>,
    failed: &mut Vec<(String, String, String)>,
) -> BTreeMap<(ListenerProtocol, u16), BTreeMap<String, String>> {
    let named = super::alb_actions::named_annotations(
        annotations,
        &format!("{ALB}listener-attributes."),
        super::annotations::parse_key_values,
        failed,
    );
    let mut out = BTreeMap::new();
    for (listener, attributes) in named {
        let parsed = listener.split_once('-').and_then(|(proto, port)| {
            let proto = match proto {
                "HTTP" => ListenerProtocol::Http,
                "HTTPS" => ListenerProtocol::Https,
                _ => return None,
            };
            Some((proto, port.parse::<u16>().ok().filter(|p| *p > 0)?))
        });
        match parsed {
            Some(key) => {
                out.insert(key, attributes);
            }
            None => failed.push((
                format!("{ALB}listener-attributes.{listener}"),
                annotations
                    .get(&format!("{ALB}listener-attributes.{listener}"))
                    .cloned()
                    .unwrap_or_default(),
                "the name must end in HTTP-<port> or HTTPS-<port>".into(),
            )),
        }
    }
    out
}

/// One entry of `mutual-authentication`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MutualAuthJson {
    port: u16,
    mode: String,
    #[serde(default)]
    trust_store: Option<String>,
    #[serde(default)]
    ignore_client_certificate_expiry: Option<bool>,
    #[serde(default)]
    advertise_trust_store_ca_names: Option<String>,
}

/// `mutual-authentication`: a JSON list of `{port, mode, trustStore,
/// ignoreClientCertificateExpiry, advertiseTrustStoreCaNames}`, checked as the AWS Load
/// Balancer Controller checks it (`verify` needs a trust store; `off` and `passthrough`
/// take none; CA names advertised only with `verify`).
pub(super) fn read_mutual_authentication(
    r: &mut Reader<'_>,
) -> BTreeMap<u16, tollgate_contract::MutualAuthentication> {
    r.parse(&format!("{ALB}mutual-authentication"), |v| {
        let entries: Vec<MutualAuthJson> =
            serde_json::from_str(v).map_err(|e| format!("not the controller's JSON: {e}"))?;
        let mut out = BTreeMap::new();
        for e in entries {
            if e.port == 0 {
                return Err("port 0".into());
            }
            let verify = match e.mode.as_str() {
                "verify" => true,
                "off" | "passthrough" => false,
                m => {
                    return Err(format!(
                        "port {}: mode {m:?} is not off, passthrough or verify",
                        e.port
                    ))
                }
            };
            if verify && e.trust_store.as_deref().is_none_or(str::is_empty) {
                return Err(format!("port {}: verify needs a trustStore", e.port));
            }
            if !verify && (e.trust_store.is_some() || e.ignore_client_certificate_expiry.is_some())
            {
                return Err(format!(
                    "port {}: trustStore and ignoreClientCertificateExpiry are for verify only",
                    e.port
                ));
            }
            match e.advertise_trust_store_ca_names.as_deref() {
                None => {}
                Some("on" | "off") if verify => {}
                Some(_) => {
                    return Err(format!(
                        "port {}: advertiseTrustStoreCaNames is on or off, with verify only",
                        e.port
                    ))
                }
            }
            let entry = tollgate_contract::MutualAuthentication {
                mode: e.mode,
                trust_store: e.trust_store,
                ignore_client_certificate_expiry: e
                    .ignore_client_certificate_expiry
                    .unwrap_or(false),
                advertise_trust_store_ca_names: e.advertise_trust_store_ca_names,
            };
            if out.insert(e.port, entry).is_some() {
                return Err(format!("port {} is listed twice", e.port));
            }
        }
        Ok(out)
    })
    .unwrap_or_default()
}

/// Mutual TLS is ALB's on HTTPS listeners only: asking for it on a plain-HTTP one refuses
/// the Ingress (the AWS Load Balancer Controller skips it there), and on a port the Ingress
/// does not listen on it is a Warning.
pub(crate) fn check_mutual_authentication(
    wanted: &BTreeMap<u16, tollgate_contract::MutualAuthentication>,
    ports: &[(ListenerProtocol, u16)],
    ingress: (&str, &str),
    warnings: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    for (port, m) in wanted {
        match ports.iter().find(|(_, p)| p == port) {
            Some((ListenerProtocol::Http, _)) if m.mode != "off" => {
                return Err(refusal(
                    ingress,
                    Reason::AnnotationUnsupported,
                    format!("{ALB}mutual-authentication: port {port} is plain HTTP, where ALB cannot ask for client certificates; the Ingress is not served without them"),
                ))
            }
            Some(_) => {}
            None => warnings.push(Diagnostic::new(
                Severity::Warning,
                ObjectKind::Ingress,
                ingress.0.to_string(),
                ingress.1.to_string(),
                Reason::AnnotationIgnored,
                format!("{ALB}mutual-authentication: the Ingress does not listen on port {port}; that entry does nothing"),
            )),
        }
    }
    Ok(())
}

/// `load-balancer-name`, checked as ELBv2 checks names: 1-32 letters, digits or hyphens,
/// not starting or ending with a hyphen, not starting with `internal-`.
pub(super) fn read_load_balancer_name(r: &mut Reader<'_>) -> Option<String> {
    r.parse(
        &format!("{ALB}load-balancer-name"),
        valid_load_balancer_name,
    )
}

pub(crate) fn valid_load_balancer_name(v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 32
        || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || v.starts_with('-')
        || v.ends_with('-')
        || v.starts_with("internal-")
    {
        return Err("expected 1-32 letters, digits or hyphens, not starting or ending with a hyphen nor starting with internal- (ELBv2's rule)".into());
    }
    Ok(v.to_string())
}

/// The group's WAF, Shield and mutual TLS settings: the member with precedence decides, and a later
/// member asking for something else is not served (an Error: its routes would otherwise sit
/// behind a web ACL or a protection it did not ask for, or none it asked for). The AWS Load
/// Balancer Controller fails the whole group instead; here the others keep being served.
pub(super) fn settle_group(
    members: &mut Vec<&Arc<super::ingress_member::Member>>,
    id: &str,
    diags: &mut Vec<Diagnostic>,
) -> (
    Protection,
    BTreeMap<u16, tollgate_contract::MutualAuthentication>,
) {
    type Owned<T> = Option<(T, String)>;
    let mut web_acl: Owned<WebAcl> = None;
    let mut shield: Owned<bool> = None;
    let mut mtls: BTreeMap<u16, (tollgate_contract::MutualAuthentication, String)> =
        BTreeMap::new();
    members.retain(|m| {
        let p = &m.settings.protection;
        // First every disagreement; only a member with none sets anything.
        let mut conflict = Vec::new();
        if let (Some(w), Some((cur, first))) = (&p.web_acl, &web_acl) {
            if w != cur {
                conflict.push(format!(
                    "wafv2-acl {w:?} differs from {cur:?}, which Ingress {first} set first"
                ));
            }
        }
        if let (Some(on), Some((cur, first))) = (p.shield_advanced, &shield) {
            if on != *cur {
                conflict.push(format!(
                    "shield-advanced-protection {on} differs from {cur}, which Ingress {first} set first"
                ));
            }
        }
        for (port, wanted) in &m.settings.mutual_authentication {
            if let Some((_, first)) = mtls.get(port).filter(|(cur, _)| cur != wanted) {
                conflict.push(format!(
                    "mutual-authentication on port {port} differs from Ingress {first}'s"
                ));
            }
        }
        if conflict.is_empty() {
            let me = m.obj.to_string();
            if let (Some(w), None) = (&p.web_acl, &web_acl) {
                web_acl = Some((w.clone(), me.clone()));
            }
            if let (Some(on), None) = (p.shield_advanced, &shield) {
                shield = Some((on, me.clone()));
            }
            for (port, wanted) in &m.settings.mutual_authentication {
                mtls.entry(*port).or_insert_with(|| (wanted.clone(), me.clone()));
            }
            return true;
        }
        diags.push(Diagnostic::new(
            Severity::Error,
            ObjectKind::Ingress,
            m.obj.namespace.clone(),
            m.obj.name.clone(),
            Reason::GroupSettingConflict,
            format!(
                "{}: load balancer {id} has one setting for all its Ingresses, so this Ingress is not served rather than served with protection other than it asked for",
                conflict.join("; ")
            ),
        ));
        false
    });
    let protection = Protection {
        web_acl: web_acl.map(|(w, _)| w),
        shield_advanced: shield.map(|(on, _)| on),
    };
    (
        protection,
        mtls.into_iter().map(|(p, (m, _))| (p, m)).collect(),
    )
}

/// The Secret an OIDC provider names, as (namespace, name): always the Ingress's own
/// namespace, as the AWS Load Balancer Controller reads it.
pub(crate) fn secret_key<'a>(r: &'a IdpAuthRef, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    match &r.idp {
        IdpRef::Oidc(o) => Some((namespace, o.secret_name.as_str())),
        IdpRef::Cognito(_) => None,
    }
}

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

/// A Secret's key as text with trailing white space dropped (a client ID or secret written
/// with `echo` into a file ends in a newline; the AWS Load Balancer Controller trims it).
fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = super::tls_secrets::secret_bytes(secret, key)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let text = text.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

/// The authentication with its provider complete: an OIDC provider's `clientID` and
/// `clientSecret` read from `secret` (the Ingress is refused when it is missing or lacks
/// either key: it is not served without the authentication it asked for).
pub(crate) fn resolve(
    r: &IdpAuthRef,
    ingress: (&str, &str),
    secret: Option<&Secret>,
) -> Result<Arc<IdpAuthentication>, Diagnostic> {
    let (idp, extra_params) = match &r.idp {
        IdpRef::Cognito(c) => (
            IdentityProvider::Cognito {
                user_pool_arn: c.user_pool_arn.clone(),
                user_pool_client_id: c.user_pool_client_id.clone(),
                user_pool_domain: c.user_pool_domain.clone(),
            },
            c.authentication_request_extra_params.clone(),
        ),
        IdpRef::Oidc(o) => {
            let name = format!("{}/{}", ingress.0, o.secret_name);
            let annotation = format!("{ALB}auth-idp-oidc");
            let secret = secret.ok_or_else(|| {
                refusal(
                    ingress,
                    Reason::SecretNotFound,
                    format!("{annotation}: Secret {name} not found; the Ingress is not served without its authentication"),
                )
            })?;
            // `clientId` is the controller's older spelling, still read.
            let client_id =
                secret_text(secret, "clientID").or_else(|| secret_text(secret, "clientId"));
            let (Some(client_id), Some(client_secret)) =
                (client_id, secret_text(secret, "clientSecret"))
            else {
                return Err(refusal(
                    ingress,
                    Reason::SecretInvalid,
                    format!("{annotation}: Secret {name} needs the keys clientID and clientSecret; the Ingress is not served without its authentication"),
                ));
            };
            let fingerprint = super::tls_secrets::hex16(&Sha256::digest(
                format!("{client_id}\0{client_secret}").as_bytes(),
            ));
            (
                IdentityProvider::Oidc {
                    issuer: o.issuer.clone(),
                    authorization_endpoint: o.authorization_endpoint.clone(),
                    token_endpoint: o.token_endpoint.clone(),
                    user_info_endpoint: o.user_info_endpoint.clone(),
                    client_id,
                    client_secret: ClientSecret::new(name, &client_secret, fingerprint),
                },
                o.authentication_request_extra_params.clone(),
            )
        }
    };
    Ok(Arc::new(IdpAuthentication {
        idp,
        on_unauthenticated_request: r.on_unauthenticated_request,
        scope: r.scope.clone(),
        session_cookie: r.session_cookie.clone(),
        session_timeout_seconds: r.session_timeout_seconds,
        extra_params,
    }))
}

/// ALB authenticates only on HTTPS listeners: an Ingress asking for authentication that
/// would be served on plain HTTP (not only redirected to HTTPS) is refused, where the AWS
/// Load Balancer Controller serves the HTTP listener without it.
pub(crate) fn check_listeners(
    ports: &[(ListenerProtocol, u16)],
    ssl_redirect: bool,
    ingress: (&str, &str),
) -> Result<(), Diagnostic> {
    let plain: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p == ListenerProtocol::Http)
        .map(|(_, port)| port.to_string())
        .collect();
    if plain.is_empty() || ssl_redirect {
        return Ok(());
    }
    Err(refusal(
        ingress,
        Reason::AnnotationUnsupported,
        format!(
            "{ALB}auth-type: ALB authenticates only on HTTPS listeners, and this Ingress is served on plain HTTP (port {}); it is not served without its authentication: listen on HTTPS only, or add {ALB}ssl-redirect",
            plain.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::annotations::ingress_settings;
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<IdpAuthRef>, String> {
        let a: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{ALB}{k}"), v.to_string()))
            .collect();
        ingress_settings(&a).map(|s| s.idp_auth_ref).map_err(|e| {
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    const OIDC: &str = r#"{"issuer":"https://idp","authorizationEndpoint":"https://idp/a","tokenEndpoint":"https://idp/t","userInfoEndpoint":"https://idp/u","secretName":"s"}"#;

    #[test]
    fn defaults_are_albs_and_bad_values_refuse() {
        let r = read(&[("auth-type", "oidc"), ("auth-idp-oidc", OIDC)])
            .expect("valid")
            .expect("on");
        assert_eq!(r.scope, "openid");
        assert_eq!(r.session_cookie, "AWSELBAuthSessionCookie");
        assert_eq!(r.session_timeout_seconds, 604_800);
        assert_eq!(
            r.on_unauthenticated_request,
            UnauthenticatedRequest::Authenticate
        );

        for (pairs, says) in [
            (
                vec![("auth-type", "oidc")],
                "needs alb.ingress.kubernetes.io/auth-idp-oidc",
            ),
            (
                vec![("auth-type", "saml")],
                "expected none, oidc or cognito",
            ),
            (
                vec![
                    ("auth-type", "oidc"),
                    (
                        "auth-idp-oidc",
                        &OIDC.replace("https://idp/t", "http://idp/t"),
                    ),
                ],
                "tokenEndpoint",
            ),
            (
                vec![
                    ("auth-type", "oidc"),
                    ("auth-idp-oidc", &OIDC.replace("secretName", "secretname")),
                ],
                "unknown field",
            ),
            (
                vec![
                    ("auth-type", "oidc"),
                    ("auth-idp-oidc", OIDC),
                    ("auth-session-timeout", "0"),
                ],
                "from 1 to 604800",
            ),
            (
                vec![
                    ("auth-type", "cognito"),
                    (
                        "auth-idp-cognito",
                        r#"{"userPoolARN":"pool","userPoolClientID":"c","userPoolDomain":"d"}"#,
                    ),
                ],
                "is not an ARN",
            ),
        ] {
            let e = read(&pairs).expect_err("refused");
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
        // Settings without auth-type do nothing, and say so; `none` asks for nothing.
        let a: BTreeMap<String, String> =
            [(format!("{ALB}auth-scope"), "email".to_string())].into();
        let s = ingress_settings(&a).expect("valid");
        assert!(s.idp_auth_ref.is_none());
        assert_eq!(s.unused.len(), 1);
        assert_eq!(read(&[("auth-type", "none")]), Ok(None));
    }

    #[test]
    fn http_listeners_refuse_unless_they_only_redirect() {
        let https = [(ListenerProtocol::Https, 443)];
        let both = [(ListenerProtocol::Http, 80), (ListenerProtocol::Https, 443)];
        assert!(check_listeners(&https, false, ("ns", "i")).is_ok());
        assert!(check_listeners(&both, true, ("ns", "i")).is_ok());
        let e = check_listeners(&both, false, ("ns", "i")).expect_err("refused");
        assert_eq!(e.severity, Severity::Error);
        assert!(e.message.contains("port 80"), "{}", e.message);
    }
}

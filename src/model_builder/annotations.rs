//! Typed reading of the annotations Tollgate honours.
//!
//! The names are those of the AWS Load Balancer Controller (`alb.ingress.kubernetes.io/*`)
//! and of ingress-nginx (`nginx.ingress.kubernetes.io/*`), so Ingresses move over unchanged.
//! Every value is validated here; a bad one is an [`AnnotationError`] naming the annotation.

use std::collections::BTreeMap;

use tollgate_contract::{
    BackendProtocol, IpAddressType, ListenerProtocol, ProtocolVersion, Redirect, Scheme, TargetType,
};

use super::alb_actions::{
    named_annotations, parse_action, parse_conditions, AnnotatedAction, AnnotatedConditions,
};

/// The AWS Load Balancer Controller's annotation prefix.
pub const ALB: &str = "alb.ingress.kubernetes.io/";
/// ingress-nginx's annotation prefix.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";
/// The legacy Ingress class annotation.
pub const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
/// Marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// A malformed annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {name}: {problem} (value {value:?})")]
pub struct AnnotationError {
    pub name: String,
    pub value: String,
    pub problem: String,
}

/// Settings an Ingress carries in its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressSettings {
    pub group_name: Option<String>,
    pub group_order: i32,
    pub listen_ports: Option<Vec<(ListenerProtocol, u16)>>,
    /// Redirect plain HTTP to HTTPS on this port.
    pub ssl_redirect_port: Option<u16>,
    /// The redirect is ingress-nginx's (its annotations or its defaults), not ALB's.
    pub ssl_redirect_nginx: bool,
    /// ingress-nginx `preserve-trailing-slash`.
    pub preserve_trailing_slash: bool,
    /// ingress-nginx `ssl-passthrough`: TLS for its hosts is not terminated but passed to
    /// the backend of the host's `/` path (proxy only).
    pub ssl_passthrough: bool,
    pub certificate_arns: Vec<String>,
    pub ssl_policy: Option<String>,
    pub scheme: Option<Scheme>,
    pub subnets: Option<Vec<String>>,
    pub security_groups: Option<Vec<String>>,
    pub inbound_cidrs: Option<Vec<String>>,
    /// `security-group-prefix-lists`: managed prefix lists the managed security group admits.
    pub inbound_prefix_lists: Option<Vec<String>>,
    /// `manage-backend-security-group-rules`.
    pub manage_backend_rules: Option<bool>,
    /// `use-regex-path-match`: `ImplementationSpecific` paths are ALB regular expressions.
    pub use_regex_path_match: bool,
    pub ip_address_type: Option<IpAddressType>,
    pub load_balancer_attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub rewrite_target: Option<String>,
    /// ingress-nginx `proxy-body-size` in bytes; `None` when unset or `0` (no limit).
    pub max_body_bytes: Option<u64>,
    /// ingress-nginx `upstream-vhost`, `x-forwarded-prefix`, `proxy-connect-timeout` and
    /// `proxy-read-timeout`.
    pub upstream: tollgate_contract::UpstreamOptions,
    /// ingress-nginx `from-to-www-redirect`: `www.<host>` redirects (308) to `<host>` and
    /// the other way round, for each of the Ingress's hosts no Ingress lists the other form of.
    pub from_to_www: bool,
    /// ingress-nginx `enable-cors` with its `cors-*` settings.
    pub cors: Option<std::sync::Arc<tollgate_contract::CorsPolicy>>,
    /// ingress-nginx `auth-type: basic` with `auth-secret`, `auth-secret-type` and
    /// `auth-realm`, as read from the annotations; the Secret is read at build time
    /// (`auth_secrets`), which fills [`IngressSettings::basic_auth`].
    pub basic_auth_ref: Option<BasicAuthRef>,
    /// The users of [`IngressSettings::basic_auth_ref`]'s Secret.
    pub basic_auth: Option<std::sync::Arc<tollgate_contract::BasicAuth>>,
    /// AWS Load Balancer Controller `auth-type: oidc|cognito` with its settings, as read
    /// from the annotations; an OIDC provider's Secret is read at build time
    /// (`alb_protection::resolve`), which fills [`IngressSettings::idp_auth`].
    pub idp_auth_ref: Option<super::alb_protection::IdpAuthRef>,
    pub idp_auth: Option<std::sync::Arc<tollgate_contract::IdpAuthentication>>,
    /// `wafv2-acl-*` and `shield-advanced-protection` (`alb_protection::read_protection`).
    pub protection: tollgate_contract::Protection,
    /// `load-balancer-name`.
    pub load_balancer_name: Option<String>,
    /// `mutual-authentication`, by port.
    pub mutual_authentication: BTreeMap<u16, tollgate_contract::MutualAuthentication>,
    /// `listener-attributes.<PROTOCOL>-<port>`, by listener.
    pub listener_attributes: BTreeMap<(ListenerProtocol, u16), BTreeMap<String, String>>,
    /// ingress-nginx `auth-url` with its settings.
    pub external_auth: Option<std::sync::Arc<tollgate_contract::ExternalAuth>>,
    /// ingress-nginx `affinity: cookie` (its cookie's path, when `session-cookie-path` is not
    /// set, is each route's own path, filled in per route) or `upstream-hash-by`.
    pub affinity: Option<tollgate_contract::Affinity>,
    /// ingress-nginx `auth-tls-*`, as read from the annotations; the Secret's `ca.crt` is
    /// read at build time (`auth_secrets`), which fills [`IngressSettings::client_cert`].
    pub client_cert_ref: Option<ClientCertRef>,
    /// ingress-nginx `proxy-ssl-*`; its Secret read at build time into
    /// `backend.upstream_tls`.
    pub proxy_ssl_ref: Option<ProxySslRef>,
    pub client_cert: Option<std::sync::Arc<tollgate_contract::ClientCertAuth>>,
    /// ingress-nginx `default-backend` (a Service of the Ingress's namespace) and
    /// `custom-http-errors` (the codes it answers).
    pub default_backend_service: Option<String>,
    pub custom_http_errors: Vec<u16>,
    /// ingress-nginx `server-alias`: more host names served exactly as the Ingress's hosts.
    pub server_aliases: Vec<String>,
    /// `Strict-Transport-Security` for the HTTPS listener's responses (ingress-nginx's
    /// default on TLS hosts, under its defaults).
    pub hsts: Option<String>,
    /// ingress-nginx `canary: "true"` and its `canary-by-*`/`canary-weight*` settings: this
    /// Ingress serves no routes of its own but takes a share of another's (`canary.rs`).
    pub canary: Option<std::sync::Arc<CanarySpec>>,
    /// ingress-nginx `limit-rps`, `limit-rpm`, `limit-connections` with their burst and
    /// allow-list; the zone is filled in with the Ingress's name when it is read.
    pub rate_limit: Option<std::sync::Arc<tollgate_contract::RateLimit>>,
    /// Annotations that are set but do nothing (ingress-nginx ignores them too, e.g.
    /// `cors-*` without `enable-cors`): name and why, reported as Warnings.
    pub unused: Vec<(String, String)>,
    /// ingress-nginx `app-root`: a request for exactly `/` on the Ingress's hosts is
    /// redirected (302) to this path.
    pub app_root: Option<String>,
    /// ingress-nginx `temporal-redirect` / `permanent-redirect` (with their codes): every
    /// route of the Ingress answers with this redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    pub use_regex: bool,
    /// ingress-nginx's allow-list (`allowlist-source-range`, or its older name
    /// `whitelist-source-range`): only these client CIDRs reach the backends, others get 403.
    pub allow_source_ranges: Option<Vec<String>>,
    /// `denylist-source-range`: these client CIDRs get 403.
    pub deny_source_ranges: Option<Vec<String>>,
    pub backend: BackendSettings,
    /// `actions.<name>`, by name.
    pub actions: BTreeMap<String, AnnotatedAction>,
    /// `conditions.<name>`, by backend name: extra conditions for that backend's paths.
    pub conditions: BTreeMap<String, AnnotatedConditions>,
}

/// Settings that shape a target group. Read from the Ingress, then overridden by the
/// backend Service's own annotations, as the AWS Load Balancer Controller does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    pub target_type: Option<TargetType>,
    pub protocol: Option<BackendProtocol>,
    pub protocol_version: Option<ProtocolVersion>,
    pub healthcheck_path: Option<String>,
    pub healthcheck_port: Option<String>,
    pub healthcheck_protocol: Option<BackendProtocol>,
    pub healthcheck_interval_seconds: Option<u32>,
    pub healthcheck_timeout_seconds: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub success_codes: Option<String>,
    pub target_group_attributes: BTreeMap<String, String>,
    /// ingress-nginx `service-upstream`: the Service's cluster IP is the one target, and
    /// kube-proxy balances (honoured by the proxy only).
    pub service_upstream: bool,
    /// ingress-nginx `proxy-ssl-*`, its Secret read (proxy only, HTTPS groups only).
    pub upstream_tls: Option<std::sync::Arc<tollgate_contract::UpstreamTls>>,
}

impl BackendSettings {
    /// `self` with every value `over` sets replacing it.
    pub fn overridden_by(&self, over: &BackendSettings) -> BackendSettings {
        let mut attrs = self.target_group_attributes.clone();
        attrs.extend(over.target_group_attributes.clone());
        BackendSettings {
            service_upstream: over.service_upstream || self.service_upstream,
            upstream_tls: over.upstream_tls.clone().or(self.upstream_tls.clone()),
            target_type: over.target_type.or(self.target_type),
            protocol: over.protocol.or(self.protocol),
            protocol_version: over.protocol_version.or(self.protocol_version),
            healthcheck_path: over
                .healthcheck_path
                .clone()
                .or(self.healthcheck_path.clone()),
            healthcheck_port: over
                .healthcheck_port
                .clone()
                .or(self.healthcheck_port.clone()),
            healthcheck_protocol: over.healthcheck_protocol.or(self.healthcheck_protocol),
            healthcheck_interval_seconds: over
                .healthcheck_interval_seconds
                .or(self.healthcheck_interval_seconds),
            healthcheck_timeout_seconds: over
                .healthcheck_timeout_seconds
                .or(self.healthcheck_timeout_seconds),
            healthy_threshold: over.healthy_threshold.or(self.healthy_threshold),
            unhealthy_threshold: over.unhealthy_threshold.or(self.unhealthy_threshold),
            success_codes: over.success_codes.clone().or(self.success_codes.clone()),
            target_group_attributes: attrs,
        }
    }
}

type Annotations = BTreeMap<String, String>;

pub(super) struct Reader<'a> {
    annotations: &'a Annotations,
    pub(super) errors: Vec<AnnotationError>,
    /// Annotations set but doing nothing, and why (`IngressSettings::unused`).
    pub(super) unused: Vec<(String, String)>,
}

// Every annotation name the readers asked for, so a test can hold them to the registry.
/// An absolute `http`/`https` URL as a redirect to exactly that URL (ingress-nginx returns
/// it as it is: no path or query of the request appended).
pub fn parse_redirect_url(v: &str) -> Result<Redirect, String> {
    let uri: http::Uri = v.parse().map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    let (protocol, default_port) = match uri.scheme_str() {
        Some("http") => ("HTTP", 80),
        Some("https") => ("HTTPS", 443),
        _ => return Err(format!("{v:?}: only http and https URLs redirect")),
    };
    let Some(authority) = uri.authority().filter(|a| !a.as_str().contains('@')) else {
        return Err(format!("{v:?} has no host (or has user information)"));
    };
    Ok(Redirect {
        protocol: Some(protocol.into()),
        host: Some(authority.host().to_string()),
        port: Some(authority.port_u16().unwrap_or(default_port)),
        path: Some(uri.path().to_string()),
        query: Some(uri.query().unwrap_or("").to_string()),
        status_code: 0,
        strip_trailing_slash: false,
    })
}

/// A redirect status the model (and ALB, for 301 and 302) can answer with.
fn redirect_code(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(c @ (301 | 302 | 307 | 308)) => Ok(c),
        _ => Err(format!(
            "{v:?}: Tollgate redirects with 301, 302, 307 or 308"
        )),
    }
}

/// Where an Ingress's client-certificate CA is, and what to do with certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertRef {
    pub namespace: Option<String>,
    pub name: String,
    pub verify: String,
    pub depth: u32,
    pub pass_certificate: bool,
    pub error_page: Option<String>,
    pub match_cn: Option<String>,
}

/// ingress-nginx `proxy-ssl-*` as read from the annotations; the Secret is read at build
/// time (`auth_secrets::upstream_tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySslRef {
    pub namespace: Option<String>,
    pub name: String,
    pub verify: bool,
    pub verify_depth: u32,
    pub ssl_name: Option<String>,
    pub server_name: bool,
    pub protocols: Vec<String>,
}

/// ingress-nginx's backend certificate settings (internal/ingress/annotations/proxyssl): all
/// hang on `proxy-ssl-secret` — without it the others do nothing there, and are named here.
/// Defaults: verify off, depth 1, server name off, TLSv1.2. An invalid `proxy-ssl-verify`
/// falls back to off in ingress-nginx; here it is an error, since off is the weaker reading.
fn read_proxy_ssl(r: &mut Reader<'_>) -> Option<ProxySslRef> {
    let secret = r.parse(&format!("{NGINX}proxy-ssl-secret"), secret_ref);
    let on_off = |v: &str| match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".to_string()),
    };
    let verify = r.parse(&format!("{NGINX}proxy-ssl-verify"), on_off);
    let verify_depth = r.u32_in(&format!("{NGINX}proxy-ssl-verify-depth"), 0, 100);
    let ssl_name = r.parse(&format!("{NGINX}proxy-ssl-name"), |v| {
        let ok = !v.is_empty()
            && v.len() <= 253
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if ok {
            Ok(v.to_ascii_lowercase())
        } else {
            Err("expected a DNS name (nginx variables are not supported)".to_string())
        }
    });
    let server_name = r.parse(&format!("{NGINX}proxy-ssl-server-name"), on_off);
    let protocols = r.parse(&format!("{NGINX}proxy-ssl-protocols"), |v| {
        let mut p: Vec<String> = v.split_whitespace().map(str::to_string).collect();
        if p.is_empty() || p.iter().any(|t| t != "TLSv1.2" && t != "TLSv1.3") {
            return Err("expected TLSv1.2 and/or TLSv1.3, separated by spaces".to_string());
        }
        p.sort();
        p.dedup();
        Ok(p)
    });
    let Some((namespace, name)) = secret else {
        r.inert(
            &[
                "proxy-ssl-verify",
                "proxy-ssl-verify-depth",
                "proxy-ssl-name",
                "proxy-ssl-server-name",
                "proxy-ssl-protocols",
                "proxy-ssl-ciphers",
            ],
            "does nothing without nginx.ingress.kubernetes.io/proxy-ssl-secret",
        );
        return None;
    };
    if r.raw(&format!("{NGINX}proxy-ssl-ciphers"))
        .is_some_and(|(v, _)| v.trim() != "DEFAULT")
    {
        r.inert(
            &["proxy-ssl-ciphers"],
            "OpenSSL cipher lists are not applied: the proxy offers rustls's default suites",
        );
    }
    Some(ProxySslRef {
        namespace,
        name,
        verify: verify.unwrap_or(false),
        // ingress-nginx reads 0 as its default, 1.
        verify_depth: verify_depth.filter(|d| *d > 0).unwrap_or(1),
        ssl_name,
        server_name: server_name.unwrap_or(false),
        protocols: protocols.unwrap_or_else(|| vec!["TLSv1.2".to_string()]),
    })
}

/// A Secret named as `namespace/name` or `name` (the Ingress's own namespace).
fn secret_ref(v: &str) -> Result<(Option<String>, String), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    match v.split_once('/') {
        Some(("", name)) if ok(name) => Ok((None, name.to_string())),
        Some((ns, name)) if ok(ns) && ok(name) => Ok((Some(ns.to_string()), name.to_string())),
        None if ok(v) => Ok((None, v.to_string())),
        _ => Err("expected a Secret as namespace/name".into()),
    }
}

/// ingress-nginx's client-certificate authentication (internal/ingress/annotations/authtls):
/// on with `auth-tls-secret`; `auth-tls-verify-client` `on` (default), `optional`,
/// `optional_no_ca` or `off`; `auth-tls-verify-depth` (default 1); `auth-tls-error-page` a
/// URL or path; `auth-tls-match-cn` `CN=` and a regular expression matched against the
/// subject DN; `auth-tls-pass-certificate-to-upstream`.
fn read_client_cert(r: &mut Reader<'_>) -> Option<ClientCertRef> {
    let secret = r.parse(&format!("{NGINX}auth-tls-secret"), secret_ref);
    let verify = r.parse(&format!("{NGINX}auth-tls-verify-client"), |v| match v {
        "on" | "off" | "optional" | "optional_no_ca" => Ok(v.to_string()),
        _ => Err("expected on, off, optional or optional_no_ca".into()),
    });
    let depth = r.u32_in(&format!("{NGINX}auth-tls-verify-depth"), 1, 100);
    let error_page = r.parse(&format!("{NGINX}auth-tls-error-page"), |v| {
        if v.starts_with('/') || v.starts_with("http://") || v.starts_with("https://") {
            header_text(v)
        } else {
            Err("expected a URL or a path".into())
        }
    });
    let match_cn = r.parse(&format!("{NGINX}auth-tls-match-cn"), |v| {
        if !v.starts_with("CN=") {
            return Err("expected CN= and a regular expression".into());
        }
        regex::Regex::new(v)
            .map(|_| v.to_string())
            .map_err(|e| format!("not a regular expression: {e}"))
    });
    let pass = r.bool(&format!("{NGINX}auth-tls-pass-certificate-to-upstream"));
    let Some((namespace, name)) = secret else {
        r.inert(
            &[
                "auth-tls-verify-client",
                "auth-tls-verify-depth",
                "auth-tls-error-page",
                "auth-tls-match-cn",
                "auth-tls-pass-certificate-to-upstream",
            ],
            "does nothing without nginx.ingress.kubernetes.io/auth-tls-secret",
        );
        return None;
    };
    Some(ClientCertRef {
        namespace,
        name,
        verify: verify.unwrap_or_else(|| "on".into()),
        depth: depth.unwrap_or(1),
        pass_certificate: pass.unwrap_or(false),
        error_page,
        match_cn,
    })
}

/// Where an Ingress's basic-authentication users are and how to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthRef {
    /// `auth-secret`'s namespace when it names one (`namespace/name`).
    pub namespace: Option<String>,
    pub name: String,
    /// `auth-secret-type: auth-map` (a user per key) rather than `auth-file` (an htpasswd
    /// file under the key `auth`).
    pub map: bool,
    pub realm: String,
}

/// ingress-nginx's basic authentication (internal/ingress/annotations/auth): on only with
/// `auth-type`; `auth-secret` as `name` or `namespace/name`; `auth-secret-type` `auth-file`
/// (the default) or `auth-map`; `auth-realm` of letters, digits, spaces and `-._~/:`.
/// Digest authentication is refused rather than served open, as is an `auth-secret` without
/// `auth-type` (ingress-nginx would serve that Ingress without authentication, which its
/// author almost certainly did not mean).
fn read_basic_auth(r: &mut Reader<'_>) -> Option<BasicAuthRef> {
    let kind = format!("{NGINX}auth-type");
    let on = r.parse(&kind, |v| match v {
        "basic" => Ok(true),
        "digest" => Err("digest authentication is not supported; the Ingress is not served without it (use basic)".into()),
        _ => Err("expected basic".into()),
    });
    let secret_name = format!("{NGINX}auth-secret");
    let secret = r.parse(&secret_name, |v| {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        match v.split_once('/') {
            Some((ns, name)) if ok(ns) && ok(name) => Ok((Some(ns.to_string()), name.to_string())),
            None if ok(v) => Ok((None, v.to_string())),
            _ => Err("expected a Secret as name or namespace/name".into()),
        }
    });
    let map = r
        .parse(&format!("{NGINX}auth-secret-type"), |v| match v {
            "auth-file" => Ok(false),
            "auth-map" => Ok(true),
            _ => Err("expected auth-file or auth-map".into()),
        })
        .unwrap_or(false);
    let realm = r
        .parse(&format!("{NGINX}auth-realm"), |v| {
            if v.chars()
                .all(|c| c.is_ascii_alphanumeric() || " -._~/:".contains(c))
            {
                Ok(v.to_string())
            } else {
                Err("expected letters, digits, spaces and -._~/: only".into())
            }
        })
        .unwrap_or_default();
    match (on, secret) {
        (Some(true), Some((namespace, name))) => Some(BasicAuthRef {
            namespace,
            name,
            map,
            realm,
        }),
        (Some(true), None) => {
            if !r.errors.iter().any(|e| e.name == secret_name) {
                r.fail(
                    &kind,
                    "basic",
                    "auth-secret is required with auth-type: basic",
                );
            }
            None
        }
        (None, Some(_)) if !r.errors.iter().any(|e| e.name == kind) => {
            let v = r.raw(&secret_name).map(|(v, _)| v).unwrap_or_default();
            r.fail(&secret_name, v, "auth-secret without auth-type: ingress-nginx would serve this Ingress without authentication; add auth-type: basic or remove auth-secret");
            None
        }
        _ => None,
    }
}

/// ingress-nginx's external authentication (internal/ingress/annotations/authreq): on only
/// with `auth-url` (absolute http(s) with a host; nginx variables such as `$host` allowed);
/// `auth-method` one of nginx's methods; `auth-signin` a URL, its redirect parameter
/// `auth-signin-redirect-param` (default `rd`); `auth-response-headers` a list of header
/// names; `auth-request-redirect`; `auth-always-set-cookie`. ingress-nginx only logs a bad
/// sign-in URL and drops it; here every bad value keeps the Ingress from being served, as a
/// sign-in flow that silently became a bare 401 is not what its author meant.
fn read_external_auth(r: &mut Reader<'_>) -> Option<tollgate_contract::ExternalAuth> {
    use tollgate_proxy::policy::external_auth::check_url;
    let url = r.parse(&format!("{NGINX}auth-url"), |v| {
        check_url(v).map(|()| v.to_string())
    });
    let method = r.parse(&format!("{NGINX}auth-method"), |v| {
        const METHODS: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
        ];
        if METHODS.contains(&v) {
            Ok(v.to_string())
        } else {
            Err(format!("expected one of {}", METHODS.join(", ")))
        }
    });
    let signin = r.parse(&format!("{NGINX}auth-signin"), |v| {
        check_url(v).map(|()| v.to_string())
    });
    let param = r.parse(&format!("{NGINX}auth-signin-redirect-param"), |v| {
        if !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Ok(v.to_string())
        } else {
            Err("expected a query parameter name".into())
        }
    });
    let response_headers = r.parse(&format!("{NGINX}auth-response-headers"), |v| {
        let names: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        match names.iter().find(|n| {
            !n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            Some(bad) => Err(format!("{bad:?} is not a header name")),
            None => Ok(names),
        }
    });
    let request_redirect = r.parse(&format!("{NGINX}auth-request-redirect"), header_text);
    let always = r.bool(&format!("{NGINX}auth-always-set-cookie"));
    let Some(url) = url else {
        r.inert(
            &[
                "auth-method",
                "auth-signin",
                "auth-signin-redirect-param",
                "auth-response-headers",
                "auth-request-redirect",
                "auth-always-set-cookie",
            ],
            "does nothing without nginx.ingress.kubernetes.io/auth-url",
        );
        return None;
    };
    Some(tollgate_contract::ExternalAuth {
        url,
        method,
        signin,
        signin_redirect_param: param.unwrap_or_else(|| "rd".into()),
        response_headers: response_headers.unwrap_or_default(),
        request_redirect,
        always_set_cookie: always.unwrap_or(false),
    })
}

/// ingress-nginx's session affinity (internal/ingress/annotations/sessionaffinity) and
/// consistent hashing (upstreamhashby): cookie affinity wins over hashing, as its balancer
/// does. An empty cookie path is filled in with each route's path.
fn read_affinity(r: &mut Reader<'_>) -> Option<tollgate_contract::Affinity> {
    let kind = r.parse(&format!("{NGINX}affinity"), |v| match v {
        "cookie" => Ok(()),
        _ => Err("expected cookie".into()),
    });
    let _mode = r.parse(&format!("{NGINX}affinity-mode"), |v| match v {
        "balanced" | "persistent" => Ok(()),
        _ => Err("expected balanced or persistent".into()),
    });
    let name = r.parse(&format!("{NGINX}session-cookie-name"), |v| {
        if !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!#$%&'*+^`|~".contains(c))
        {
            Ok(v.to_string())
        } else {
            Err("expected a cookie name".into())
        }
    });
    let path = r.parse(&format!("{NGINX}session-cookie-path"), |v| {
        if v.starts_with('/') && !v.contains([';', ' ', ',']) {
            Ok(v.to_string())
        } else {
            Err("expected a path starting with /".into())
        }
    });
    let seconds = |v: &str| v.parse::<u64>().map_err(|_| "expected seconds".to_string());
    let expires = r.parse(&format!("{NGINX}session-cookie-expires"), seconds);
    let max_age = r.parse(&format!("{NGINX}session-cookie-max-age"), seconds);
    let domain = r.parse(&format!("{NGINX}session-cookie-domain"), |v| {
        if !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            Ok(v.to_string())
        } else {
            Err("expected a domain".into())
        }
    });
    let secure = r.bool(&format!("{NGINX}session-cookie-secure"));
    let same_site = r.parse(&format!("{NGINX}session-cookie-samesite"), |v| {
        match v.to_ascii_lowercase().as_str() {
            "none" | "lax" | "strict" => Ok(v.to_string()),
            _ => Err("expected None, Lax or Strict".into()),
        }
    });
    let conditional = r.bool(&format!("{NGINX}session-cookie-conditional-samesite-none"));
    let change = r.bool(&format!("{NGINX}session-cookie-change-on-failure"));
    let hash_name = format!("{NGINX}upstream-hash-by");
    let hash = r.parse(&hash_name, |v| {
        tollgate_proxy::upstream::affinity::parse_key(v).map(|_| v.to_string())
    });
    if kind.is_some() {
        if hash.is_some() {
            r.unused.push((
                hash_name,
                "does nothing with affinity: cookie, which takes precedence (as in ingress-nginx)"
                    .into(),
            ));
        }
        return Some(tollgate_contract::Affinity::Cookie(
            tollgate_contract::CookieAffinity {
                name: name.unwrap_or_else(|| "INGRESSCOOKIE".into()),
                path: path.unwrap_or_default(),
                expires_seconds: expires,
                max_age_seconds: max_age,
                domain,
                secure: secure.unwrap_or(false),
                same_site,
                conditional_same_site_none: conditional.unwrap_or(false),
                change_on_failure: change.unwrap_or(false),
            },
        ));
    }
    r.inert(
        &[
            "affinity-mode",
            "session-cookie-name",
            "session-cookie-path",
            "session-cookie-expires",
            "session-cookie-max-age",
            "session-cookie-domain",
            "session-cookie-secure",
            "session-cookie-samesite",
            "session-cookie-conditional-samesite-none",
            "session-cookie-change-on-failure",
        ],
        "does nothing without nginx.ingress.kubernetes.io/affinity: cookie",
    );
    hash.map(|key| tollgate_contract::Affinity::Hash { key })
}

/// ingress-nginx's defaults where they differ from ALB's, for settings the Ingress's
/// annotations leave unset (its ConfigMap defaults, docs/user-guide/nginx-configuration/
/// configmap.md): `ssl-redirect: true` on a server with TLS (308 to HTTPS), `hsts: true`
/// (`max-age=31536000; includeSubDomains` on HTTPS responses of TLS hosts), and
/// `proxy-body-size: 1m`. Its 5 s connect and 60 s read timeouts are the proxy's defaults
/// already.
pub fn apply_ingress_nginx_defaults(
    settings: &mut IngressSettings,
    annotations: Option<&Annotations>,
    has_tls: bool,
) {
    let set = |n: &str| annotations.is_some_and(|a| a.contains_key(n));
    let redirect_set = set(&format!("{NGINX}ssl-redirect"))
        || set(&format!("{NGINX}force-ssl-redirect"))
        || set(&format!("{ALB}ssl-redirect"));
    if has_tls && !redirect_set && settings.ssl_redirect_port.is_none() {
        settings.ssl_redirect_port = Some(443);
        settings.ssl_redirect_nginx = true;
    }
    if has_tls {
        settings.hsts = Some("max-age=31536000; includeSubDomains".into());
    }
    if !set(&format!("{NGINX}proxy-body-size")) && settings.max_body_bytes.is_none() {
        settings.max_body_bytes = Some(1024 * 1024);
    }
}

/// ingress-nginx's `proxy-next-upstream` (nginx's conditions, default `error timeout`),
/// `proxy-next-upstream-tries` (default 3; 0: no limit) and `-timeout` (seconds; 0: none).
fn read_next_upstream(r: &mut Reader<'_>) -> Option<tollgate_contract::NextUpstream> {
    const CONDITIONS: &[&str] = &[
        "error",
        "timeout",
        "invalid_header",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_403",
        "http_404",
        "http_429",
        "non_idempotent",
        "off",
    ];
    let conditions = r.parse(&format!("{NGINX}proxy-next-upstream"), |v| {
        let list: Vec<String> = v.split_whitespace().map(String::from).collect();
        match list.iter().find(|c| !CONDITIONS.contains(&c.as_str())) {
            Some(bad) => Err(format!("{bad:?} is not one of {}", CONDITIONS.join(", "))),
            None if list.is_empty() => Err("expected conditions such as error timeout".into()),
            None => Ok(list),
        }
    });
    let tries = r.u32_in(&format!("{NGINX}proxy-next-upstream-tries"), 0, 1000);
    let timeout = r.u32_in(&format!("{NGINX}proxy-next-upstream-timeout"), 0, 86_400);
    if conditions.is_none() && tries.is_none() && timeout.is_none() {
        return None;
    }
    Some(tollgate_contract::NextUpstream {
        conditions: conditions.unwrap_or_else(|| vec!["error".into(), "timeout".into()]),
        tries: tries.unwrap_or(3),
        timeout_seconds: timeout.unwrap_or(0),
    })
}

/// How a canary Ingress takes requests from the Ingress it is the canary of, with
/// ingress-nginx's precedence: header, then cookie, then weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    /// `canary-by-header`: `always` → canary, `never` → main (unless a value is set).
    pub header: Option<String>,
    /// `canary-by-header-value`: only this value sends to the canary.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: a value this regular expression matches (anywhere, as
    /// `ngx.re.match`) sends to the canary; read only without a header value.
    pub header_pattern: Option<String>,
    /// `canary-by-cookie`: a cookie of this name `always` → canary, `never` → main.
    pub cookie: Option<String>,
    pub weight: u32,
    /// `canary-weight-total`: 100 unless set above 100, as ingress-nginx's balancer reads it.
    pub weight_total: u32,
}

/// ingress-nginx's canary (internal/ingress/annotations/canary): `canary-*` settings without
/// `canary: "true"` are an error there ("configured but not enabled") and here.
fn read_canary(r: &mut Reader<'_>) -> Option<CanarySpec> {
    let on = r.bool(&format!("{NGINX}canary")).unwrap_or(false);
    let token = |what: &'static str| {
        move |v: &str| {
            if !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                Ok(v.to_string())
            } else {
                Err(format!("expected a {what} name"))
            }
        }
    };
    let header = r.parse(&format!("{NGINX}canary-by-header"), token("header"));
    let header_value = r.parse(&format!("{NGINX}canary-by-header-value"), header_text);
    let cookie = r.parse(&format!("{NGINX}canary-by-cookie"), token("cookie"));
    let weight = r.u32_in(&format!("{NGINX}canary-weight"), 0, u32::MAX);
    let total = r.u32_in(&format!("{NGINX}canary-weight-total"), 1, u32::MAX);
    let header_pattern = r.parse(&format!("{NGINX}canary-by-header-pattern"), |v| {
        // ingress-nginx checks the pattern is a valid regex (canary.go, IsValidRegex); it
        // runs it with PCRE, this with Rust's regex, which lacks look-around and
        // back-references: such a pattern is refused here rather than matched differently.
        if v.is_empty() {
            return Err("expected a regular expression".to_string());
        }
        match regex::Regex::new(v) {
            Ok(_) => Ok(v.to_string()),
            Err(e) => Err(format!("not a supported regular expression: {e}")),
        }
    });
    let any_set = [
        "canary-by-header",
        "canary-by-header-value",
        "canary-by-header-pattern",
        "canary-by-cookie",
        "canary-weight",
        "canary-weight-total",
    ]
    .iter()
    .find(|n| r.raw(&format!("{NGINX}{n}")).is_some())
    .map(|n| n.to_string());
    if !on {
        if let Some(n) = any_set {
            let name = format!("{NGINX}{n}");
            let v = r
                .annotations
                .get(&name)
                .map(String::as_str)
                .unwrap_or_default();
            r.fail(
                &name,
                v,
                "canary settings without nginx.ingress.kubernetes.io/canary: \"true\"",
            );
        }
        return None;
    }
    Some(CanarySpec {
        header,
        header_value,
        header_pattern,
        cookie,
        weight: weight.unwrap_or(0),
        weight_total: total.filter(|t| *t > 100).unwrap_or(100),
    })
}

/// ingress-nginx's rate limits (internal/ingress/annotations/ratelimit): on when any of
/// `limit-rps`, `limit-rpm`, `limit-connections` is above 0; the burst multiplier defaults
/// to 5; `limit-allowlist` (or its old name `limit-whitelist`) a CIDR list.
fn read_rate_limit(r: &mut Reader<'_>) -> Option<tollgate_contract::RateLimit> {
    let positive = |v: &str| match v.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number".to_string()),
    };
    let rps = r
        .parse(&format!("{NGINX}limit-rps"), positive)
        .filter(|n| *n > 0);
    let rpm = r
        .parse(&format!("{NGINX}limit-rpm"), positive)
        .filter(|n| *n > 0);
    let connections = r
        .parse(&format!("{NGINX}limit-connections"), positive)
        .filter(|n| *n > 0);
    let multiplier = r.parse(&format!("{NGINX}limit-burst-multiplier"), |v| {
        match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("expected a whole number of at least 1".to_string()),
        }
    });
    let allowlist = r
        .parse(&format!("{NGINX}limit-allowlist"), parse_source_ranges)
        .or_else(|| r.parse(&format!("{NGINX}limit-whitelist"), parse_source_ranges));
    if rps.is_none() && rpm.is_none() && connections.is_none() {
        r.inert(
            &[
                "limit-burst-multiplier",
                "limit-allowlist",
                "limit-whitelist",
            ],
            "does nothing without limit-rps, limit-rpm or limit-connections",
        );
        return None;
    }
    Some(tollgate_contract::RateLimit {
        zone: String::new(),
        rps,
        rpm,
        burst_multiplier: multiplier.unwrap_or(5),
        connections,
        allowlist: allowlist.unwrap_or_default(),
    })
}

/// ingress-nginx's CORS settings (internal/ingress/annotations/cors; semantics from its e2e
/// tests, test/e2e/annotations/cors.go): off unless `enable-cors`; origins a comma-separated
/// list of `scheme://host[:port]` with `*.` for one subdomain level, where `*` allows every
/// origin and an entry that is not an origin is left out; methods, headers, credentials
/// and max-age with ingress-nginx's defaults.
fn read_cors(r: &mut Reader<'_>) -> Option<tollgate_contract::CorsPolicy> {
    let enabled = r.bool(&format!("{NGINX}enable-cors")).unwrap_or(false);
    let origins = r.parse(&format!("{NGINX}cors-allow-origin"), |v| {
        let entries: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .collect();
        if entries.is_empty() || entries.contains(&"*") {
            return Ok(Vec::new());
        }
        // As ingress-nginx now does, an entry that is not an origin is left out (an older
        // version widened the whole list to `*`); with none left, nothing is allowed rather
        // than everything.
        let list: Vec<String> = entries
            .iter()
            .filter(|o| is_cors_origin(o))
            .map(|o| o.to_string())
            .collect();
        if list.is_empty() {
            return Err("no entry is an origin (scheme://host[:port], or *)".into());
        }
        Ok(list)
    });
    let token_list = |what: &'static str| {
        move |v: &str| {
            let ok = !v.is_empty()
                && v.split(',').all(|t| {
                    let t = t.trim();
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if ok {
                Ok(v.to_string())
            } else {
                Err(format!("expected a comma-separated list of {what}"))
            }
        }
    };
    let methods = r.parse(&format!("{NGINX}cors-allow-methods"), token_list("methods"));
    let headers = r.parse(
        &format!("{NGINX}cors-allow-headers"),
        token_list("header names"),
    );
    let expose = r.parse(&format!("{NGINX}cors-expose-headers"), |v| {
        if v == "*" {
            Ok(v.to_string())
        } else {
            token_list("header names")(v)
        }
    });
    let credentials = r.bool(&format!("{NGINX}cors-allow-credentials"));
    let max_age = r.u32_in(&format!("{NGINX}cors-max-age"), 0, u32::MAX);
    enabled.then(|| tollgate_contract::CorsPolicy {
        allow_origins: origins.unwrap_or_default(),
        allow_methods: methods.unwrap_or_else(|| "GET, PUT, POST, DELETE, PATCH, OPTIONS".into()),
        allow_headers: headers.unwrap_or_else(|| {
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization".into()
        }),
        expose_headers: expose,
        allow_credentials: credentials.unwrap_or(true),
        max_age_seconds: max_age.unwrap_or(1_728_000),
    })
}

/// `scheme://host[:port]` (any scheme: ingress-nginx allows app schemes such as
/// `tauri://localhost`), the host possibly starting with `*.`; or `null`.
fn is_cors_origin(o: &str) -> bool {
    if o == "null" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    if !scheme_ok {
        return false;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A header value sent upstream as written: printable ASCII, no nginx variables (nginx would
/// expand `$host` and the like; Tollgate sends text as it is, so it refuses rather than send
/// a literal `$host`).
fn header_text(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("expected a value".into());
    }
    if v.contains('$') {
        return Err("nginx variables ($...) are not supported; give the value itself".into());
    }
    if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("expected printable ASCII".into());
    }
    Ok(v.to_string())
}

/// An nginx size (`client_max_body_size` syntax, as ingress-nginx's `proxy-body-size`
/// takes it): a number of bytes, optionally followed by `k`/`K`, `m`/`M` or `g`/`G`.
pub fn parse_nginx_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c.to_ascii_lowercase()),
        _ => (v, 'b'),
    };
    let multiplier: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return Err(format!("{v:?}: the unit must be k, m or g")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{v:?} is not a size such as 1m, 512k or 0"))
}

#[cfg(test)]
thread_local! {
    pub(crate) static READ_NAMES: std::cell::RefCell<std::collections::BTreeSet<String>> =
        Default::default();
}

/// The readers may only read what the registry lists: an unregistered name here is a bug
/// of ours (the registry is what tells users what Tollgate honours).
pub(crate) fn note_read(name: &str) {
    debug_assert!(
        super::annotation_registry::registered(name).is_some(),
        "annotation {name} is read but not in the registry"
    );
    #[cfg(test)]
    READ_NAMES.with(|r| r.borrow_mut().insert(name.to_string()));
}

impl<'a> Reader<'a> {
    pub(super) fn raw(&self, name: &str) -> Option<(&'a str, String)> {
        note_read(name);
        self.annotations
            .get(name)
            .map(|v| (v.as_str(), name.to_string()))
    }

    /// Names each of ingress-nginx's `names` that is set as doing nothing, because of `why`.
    /// (An Ingress with any error is refused, and then these are not reported.)
    fn inert(&mut self, names: &[&str], why: &str) {
        for n in names {
            let name = format!("{NGINX}{n}");
            if self.raw(&name).is_some() {
                self.unused.push((name, why.to_string()));
            }
        }
    }

    pub(super) fn fail(&mut self, name: &str, value: &str, problem: impl Into<String>) {
        self.errors.push(AnnotationError {
            name: name.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        });
    }

    /// The first of `names` that is set.
    pub(super) fn first(&self, names: &[&str]) -> Option<(&'a str, String)> {
        names.iter().find_map(|n| self.raw(n))
    }

    pub(super) fn parse<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (v, n) = self.raw(name)?;
        match f(v.trim()) {
            Ok(t) => Some(t),
            Err(problem) => {
                self.fail(&n, v, problem);
                None
            }
        }
    }

    pub(super) fn u32_in(&mut self, name: &str, lo: u32, hi: u32) -> Option<u32> {
        self.parse(name, |v| match v.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!("expected a whole number from {lo} to {hi}")),
        })
    }

    pub(super) fn bool(&mut self, name: &str) -> Option<bool> {
        self.parse(name, |v| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected \"true\" or \"false\"".into()),
        })
    }

    pub(super) fn key_values(&mut self, name: &str) -> BTreeMap<String, String> {
        self.parse(name, parse_key_values).unwrap_or_default()
    }
}

/// `k1=v1,k2=v2` as the AWS Load Balancer Controller writes attribute and tag lists.
pub(super) fn parse_key_values(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, val) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.insert(k.to_string(), val.trim().to_string());
    }
    Ok(out)
}

/// A comma-separated list with at least one item.
fn list_of(v: &str, what: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if items.is_empty() {
        Err(format!("expected a comma-separated list of {what}"))
    } else {
        Ok(items)
    }
}

/// `10.0.0.0/8, 192.168.1.1` as ingress-nginx takes source ranges: a bare address is that
/// one address.
fn parse_source_ranges(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in list_of(v, "CIDRs")? {
        let cidr = match item.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => format!("{item}/32"),
            Ok(std::net::IpAddr::V6(_)) => format!("{item}/128"),
            Err(_) => item,
        };
        if !super::alb_actions::is_cidr(&cidr) {
            return Err(format!("{cidr:?} is not a CIDR or an IP address"));
        }
        out.push(cidr);
    }
    Ok(out)
}

fn parse_group_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_string())
    } else {
        Err("expected at most 63 lower-case letters, digits, '-' or '.', starting and ending with a letter or digit".into())
    }
}

/// `[{"HTTP": 80}, {"HTTPS": 443}]`.
fn parse_listen_ports(v: &str) -> Result<Vec<(ListenerProtocol, u16)>, String> {
    let items: Vec<BTreeMap<String, serde_json::Value>> = serde_json::from_str(v).map_err(|e| {
        format!("expected a JSON list like [{{\"HTTP\": 80}}, {{\"HTTPS\": 443}}]: {e}")
    })?;
    let mut out = Vec::new();
    for item in items {
        for (proto, port) in item {
            let proto = match proto.as_str() {
                "HTTP" => ListenerProtocol::Http,
                "HTTPS" => ListenerProtocol::Https,
                other => return Err(format!("protocol {other:?} is not HTTP or HTTPS")),
            };
            let port = port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {port} is not from 1 to 65535"))?;
            if out.iter().any(|(_, p)| *p == port) {
                return Err(format!("port {port} is listed twice"));
            }
            out.push((proto, port));
        }
    }
    if out.is_empty() {
        return Err("no ports listed".into());
    }
    out.sort_by_key(|(_, p)| *p);
    Ok(out)
}

fn parse_backend_protocol(v: &str) -> Result<BackendProtocol, String> {
    match v.to_ascii_uppercase().as_str() {
        "HTTP" => Ok(BackendProtocol::Http),
        "HTTPS" => Ok(BackendProtocol::Https),
        _ => Err("expected HTTP or HTTPS".into()),
    }
}

/// Reads the settings that shape target groups from one object's annotations
/// (an Ingress's, or a Service's).
pub fn backend_settings(annotations: &Annotations) -> (BackendSettings, Vec<AnnotationError>) {
    let mut r = Reader {
        annotations,
        errors: Vec::new(),
        unused: Vec::new(),
    };
    let s = read_backend(&mut r);
    (s, r.errors)
}

fn read_backend(r: &mut Reader<'_>) -> BackendSettings {
    let target_type = r.parse(&format!("{ALB}target-type"), |v| match v {
        "ip" => Ok(TargetType::Ip),
        "instance" => Ok(TargetType::Instance),
        _ => Err("expected ip or instance".into()),
    });
    let mut protocol = r.parse(&format!("{ALB}backend-protocol"), parse_backend_protocol);
    let mut protocol_version = r.parse(&format!("{ALB}backend-protocol-version"), |v| {
        match v.to_ascii_uppercase().as_str() {
            "HTTP1" => Ok(ProtocolVersion::Http1),
            "HTTP2" => Ok(ProtocolVersion::Http2),
            "GRPC" => Ok(ProtocolVersion::Grpc),
            _ => Err("expected HTTP1, HTTP2 or GRPC".into()),
        }
    });
    // ingress-nginx folds protocol and version into one value.
    if let Some((p, v)) = r.parse(&format!("{NGINX}backend-protocol"), |v| {
        match v.to_ascii_uppercase().as_str() {
            "HTTP" => Ok((BackendProtocol::Http, ProtocolVersion::Http1)),
            "HTTPS" => Ok((BackendProtocol::Https, ProtocolVersion::Http1)),
            "GRPC" => Ok((BackendProtocol::Http, ProtocolVersion::Grpc)),
            "GRPCS" => Ok((BackendProtocol::Https, ProtocolVersion::Grpc)),
            "H2C" => Ok((BackendProtocol::Http, ProtocolVersion::Http2)),
            _ => Err(
                "expected HTTP, HTTPS, GRPC, GRPCS or H2C (AUTO_HTTP and FCGI are not supported)"
                    .into(),
            ),
        }
    }) {
        protocol = protocol.or(Some(p));
        protocol_version = protocol_version.or(Some(v));
    }
    // A passthrough backend speaks TLS: ingress-nginx proxies the Ingress's plain-HTTP
    // requests to it over https (buildProxyPass, SSLPassthrough upstreams).
    if r.bool(&format!("{NGINX}ssl-passthrough")) == Some(true) {
        protocol = protocol.or(Some(BackendProtocol::Https));
    }
    BackendSettings {
        service_upstream: false,
        upstream_tls: None,
        target_type,
        protocol,
        protocol_version,
        healthcheck_path: r.parse(&format!("{ALB}healthcheck-path"), |v| {
            if v.starts_with('/') {
                Ok(v.to_string())
            } else {
                Err("expected a path starting with '/'".into())
            }
        }),
        healthcheck_port: r.parse(&format!("{ALB}healthcheck-port"), |v| {
            // A name is a Service port's name, resolved per target group (as the AWS Load
            // Balancer Controller resolves it): an IANA service name, at most 15 characters.
            let name = !v.is_empty()
                && v.len() <= 15
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && v.bytes().any(|b| b.is_ascii_lowercase());
            if v == "traffic-port" || v.parse::<u16>().is_ok_and(|p| p > 0) || name {
                Ok(v.to_string())
            } else {
                Err("expected traffic-port, a port number or a Service port's name".into())
            }
        }),
        healthcheck_protocol: r.parse(
            &format!("{ALB}healthcheck-protocol"),
            parse_backend_protocol,
        ),
        healthcheck_interval_seconds: r.u32_in(
            &format!("{ALB}healthcheck-interval-seconds"),
            5,
            300,
        ),
        healthcheck_timeout_seconds: r.u32_in(&format!("{ALB}healthcheck-timeout-seconds"), 2, 120),
        healthy_threshold: r.u32_in(&format!("{ALB}healthy-threshold-count"), 2, 10),
        unhealthy_threshold: r.u32_in(&format!("{ALB}unhealthy-threshold-count"), 2, 10),
        success_codes: r.parse(&format!("{ALB}success-codes"), |v| {
            let ok = v.split(',').all(|part| {
                part.split('-').all(|n| {
                    n.trim()
                        .parse::<u16>()
                        .is_ok_and(|c| (0..=599).contains(&c))
                })
            });
            if ok && !v.is_empty() {
                Ok(v.to_string())
            } else {
                Err("expected codes like 200, 200-299 or 200,302".into())
            }
        }),
        target_group_attributes: r.key_values(&format!("{ALB}target-group-attributes")),
    }
}

/// Reads every setting of an Ingress. All errors are returned, not just the first.
pub fn ingress_settings(
    annotations: &Annotations,
) -> Result<IngressSettings, Vec<AnnotationError>> {
    let mut r = Reader {
        annotations,
        errors: Vec::new(),
        unused: Vec::new(),
    };
    let group_name = r.parse(&format!("{ALB}group.name"), parse_group_name);
    let group_order = r
        .parse(&format!("{ALB}group.order"), |v| match v.parse::<i32>() {
            Ok(n) if (-1000..=1000).contains(&n) => Ok(n),
            _ => Err("expected a whole number from -1000 to 1000".into()),
        })
        .unwrap_or(0);
    let listen_ports = r.parse(&format!("{ALB}listen-ports"), parse_listen_ports);

    let alb_redirect = r.parse(&format!("{ALB}ssl-redirect"), |v| {
        v.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| "expected the HTTPS port to redirect to, e.g. '443'".to_string())
    });
    let nginx_redirect = r.bool(&format!("{NGINX}ssl-redirect")).unwrap_or(false)
        || r.bool(&format!("{NGINX}force-ssl-redirect"))
            .unwrap_or(false);
    let ssl_redirect_nginx = alb_redirect.is_none() && nginx_redirect;
    let ssl_redirect_port = alb_redirect.or(nginx_redirect.then_some(443));
    let preserve_trailing_slash = r
        .bool(&format!("{NGINX}preserve-trailing-slash"))
        .unwrap_or(false);
    let ssl_passthrough = r.bool(&format!("{NGINX}ssl-passthrough")).unwrap_or(false);

    let certificate_arns = r
        .parse(&format!("{ALB}certificate-arn"), |v| {
            let arns: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if arns.iter().all(|a| a.starts_with("arn:")) && !arns.is_empty() {
                Ok(arns)
            } else {
                Err("expected a comma-separated list of ARNs".into())
            }
        })
        .unwrap_or_default();
    let ssl_policy = r.parse(&format!("{ALB}ssl-policy"), |v| {
        if v.is_empty() {
            Err("empty".into())
        } else {
            Ok(v.to_string())
        }
    });
    let scheme = r.parse(&format!("{ALB}scheme"), |v| match v {
        "internal" => Ok(Scheme::Internal),
        "internet-facing" => Ok(Scheme::InternetFacing),
        _ => Err("expected internal or internet-facing".into()),
    });
    let subnets = r.parse(&format!("{ALB}subnets"), |v| {
        list_of(v, "subnet IDs or names")
    });
    let security_groups = r.parse(&format!("{ALB}security-groups"), |v| {
        list_of(v, "security group IDs or names")
    });
    let inbound_cidrs = r.parse(&format!("{ALB}inbound-cidrs"), |v| {
        let cidrs = list_of(v, "CIDRs")?;
        match cidrs.iter().find(|c| !super::alb_actions::is_cidr(c)) {
            Some(bad) => Err(format!("{bad:?} is not a CIDR")),
            None => Ok(cidrs),
        }
    });
    let inbound_prefix_lists = r.parse(&format!("{ALB}security-group-prefix-lists"), |v| {
        let ids = list_of(v, "prefix list IDs")?;
        match ids.iter().find(|id| !id.starts_with("pl-")) {
            Some(bad) => Err(format!("{bad:?} is not a prefix list ID (pl-...)")),
            None => Ok(ids),
        }
    });
    let manage_backend_rules = r.bool(&format!("{ALB}manage-backend-security-group-rules"));
    let use_regex_path_match = r
        .bool(&format!("{ALB}use-regex-path-match"))
        .unwrap_or(false);
    let ip_address_type = r.parse(&format!("{ALB}ip-address-type"), |v| match v {
        "ipv4" => Ok(IpAddressType::Ipv4),
        "dualstack" => Ok(IpAddressType::Dualstack),
        "dualstack-without-public-ipv4" => Ok(IpAddressType::DualstackWithoutPublicIpv4),
        _ => Err("expected ipv4, dualstack or dualstack-without-public-ipv4".into()),
    });
    let load_balancer_attributes = r.key_values(&format!("{ALB}load-balancer-attributes"));
    let tags = r.key_values(&format!("{ALB}tags"));
    let rewrite_target = r
        .first(&[&format!("{NGINX}rewrite-target")])
        .map(|(v, _)| v.to_string());
    let use_regex = r.bool(&format!("{NGINX}use-regex")).unwrap_or(false);
    let max_body_bytes = r
        .parse(&format!("{NGINX}proxy-body-size"), parse_nginx_size)
        .filter(|n| *n > 0);
    let cors = read_cors(&mut r).map(std::sync::Arc::new);
    let basic_auth_ref = read_basic_auth(&mut r);
    let idp_auth_ref = super::alb_protection::read_idp_auth(&mut r);
    let protection = super::alb_protection::read_protection(&mut r);
    let load_balancer_name = super::alb_protection::read_load_balancer_name(&mut r);
    let mutual_authentication = super::alb_protection::read_mutual_authentication(&mut r);
    let external_auth = read_external_auth(&mut r).map(std::sync::Arc::new);
    let rate_limit = read_rate_limit(&mut r);
    let canary = read_canary(&mut r).map(std::sync::Arc::new);
    let affinity = read_affinity(&mut r);
    let client_cert_ref = read_client_cert(&mut r);
    let proxy_ssl_ref = read_proxy_ssl(&mut r);
    let default_backend_service = r.parse(&format!("{NGINX}default-backend"), |v| {
        if !v.is_empty()
            && v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            Ok(v.to_string())
        } else {
            Err("expected a Service name".into())
        }
    });
    let errors_name = format!("{NGINX}custom-http-errors");
    let custom_http_errors = r
        .parse(&errors_name, |v| {
            v.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| match c.parse::<u16>() {
                    Ok(n) if (400..=599).contains(&n) => Ok(n),
                    _ => Err(format!("{c:?} is not an HTTP error status (400-599)")),
                })
                .collect::<Result<Vec<u16>, String>>()
        })
        .unwrap_or_default();
    if !custom_http_errors.is_empty() && default_backend_service.is_none() {
        r.unused.push((errors_name, "does nothing without nginx.ingress.kubernetes.io/default-backend (Tollgate has no global default backend)".into()));
    }
    let server_aliases = r
        .parse(&format!("{NGINX}server-alias"), |v| {
            let hosts: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(String::from)
                .collect();
            match hosts
                .iter()
                .find_map(|h| super::ingress_member::parse_host(h).err().map(|e| (h, e)))
            {
                Some((h, e)) => Err(format!("{h:?}: {e}")),
                None if hosts.is_empty() => Err("expected host names".into()),
                None => Ok(hosts),
            }
        })
        .unwrap_or_default();
    if cors.is_none() {
        r.inert(
            &[
                "cors-allow-origin",
                "cors-allow-methods",
                "cors-allow-headers",
                "cors-expose-headers",
                "cors-allow-credentials",
                "cors-max-age",
            ],
            "does nothing without nginx.ingress.kubernetes.io/enable-cors: \"true\"",
        );
    }
    let from_to_www = r
        .bool(&format!("{NGINX}from-to-www-redirect"))
        .unwrap_or(false);
    // ingress-nginx puts these into the location's proxy settings
    // (internal/ingress/annotations/upstreamvhost, xforwardedprefix, proxy): the value of
    // `proxy_set_header Host`, an `X-Forwarded-Prefix` header, and proxy_connect_timeout /
    // proxy_read_timeout / proxy_send_timeout in whole seconds.
    let upstream = tollgate_contract::UpstreamOptions {
        host: r.parse(&format!("{NGINX}upstream-vhost"), header_text),
        forwarded_prefix: r.parse(&format!("{NGINX}x-forwarded-prefix"), header_text),
        connect_timeout_seconds: r.u32_in(&format!("{NGINX}proxy-connect-timeout"), 1, 86_400),
        read_timeout_seconds: r.u32_in(&format!("{NGINX}proxy-read-timeout"), 1, 86_400),
        send_timeout_seconds: r.u32_in(&format!("{NGINX}proxy-send-timeout"), 1, 86_400),
        next_upstream: read_next_upstream(&mut r),
    };
    // ingress-nginx's redirect parser (internal/ingress/annotations/redirect) looks at the
    // temporal redirect first; each code falls back to 302/301.
    let temporal = r.parse(&format!("{NGINX}temporal-redirect"), parse_redirect_url);
    let temporal_code = r.parse(&format!("{NGINX}temporal-redirect-code"), redirect_code);
    let permanent = r.parse(&format!("{NGINX}permanent-redirect"), parse_redirect_url);
    let permanent_code = r.parse(&format!("{NGINX}permanent-redirect-code"), redirect_code);
    let app_root = r.parse(&format!("{NGINX}app-root"), |v| {
        if v == "/" {
            return Err("an app-root of / would redirect / to itself".into());
        }
        super::ingress_member::parse_path(Some(v), "Exact", false).map(|p| p.path)
    });
    let redirect = match (temporal, permanent) {
        (Some(t), _) => Some(Redirect {
            status_code: temporal_code.unwrap_or(302),
            ..t
        }),
        (None, Some(p)) => Some(Redirect {
            status_code: permanent_code.unwrap_or(301),
            ..p
        }),
        (None, None) => None,
    };
    // ingress-nginx reads allowlist-source-range first, whitelist-source-range as its alias.
    let allow_source_ranges = r
        .parse(
            &format!("{NGINX}allowlist-source-range"),
            parse_source_ranges,
        )
        .or_else(|| {
            r.parse(
                &format!("{NGINX}whitelist-source-range"),
                parse_source_ranges,
            )
        });
    let deny_source_ranges = r.parse(
        &format!("{NGINX}denylist-source-range"),
        parse_source_ranges,
    );
    let mut backend = read_backend(&mut r);
    // ingress-nginx writes the proxy_ssl_* directives anyway, but only `proxy_pass https://`
    // uses them (buildProxyPass); a Service's own backend-protocol annotation may still make
    // the group HTTPS, so this is a warning, not a refusal.
    if proxy_ssl_ref.is_some() && backend.protocol != Some(BackendProtocol::Https) {
        r.inert(
            &["proxy-ssl-secret"],
            "does nothing unless the backend protocol is HTTPS, and this Ingress does not set backend-protocol: HTTPS",
        );
    }
    // ingress-nginx's load-balance: round_robin, or ewma (least latency of two picked at
    // random), which the least-outstanding-requests algorithm of both providers stands for.
    if let Some(algorithm) = r.parse(&format!("{NGINX}load-balance"), |v| match v {
        "round_robin" => Ok("round_robin"),
        "ewma" => Ok("least_outstanding_requests"),
        _ => Err("expected round_robin or ewma".into()),
    }) {
        backend
            .target_group_attributes
            .entry("load_balancing.algorithm.type".into())
            .or_insert_with(|| algorithm.into());
    }
    // proxy-buffering / proxy-request-buffering: bodies are streamed either way; the values
    // are checked so a typo is named.
    for n in ["proxy-buffering", "proxy-request-buffering"] {
        let _ = r.parse(&format!("{NGINX}{n}"), |v| match v {
            "on" | "off" => Ok(()),
            _ => Err("expected on or off".into()),
        });
    }
    backend.service_upstream = r.bool(&format!("{NGINX}service-upstream")).unwrap_or(false);
    let mut failed = Vec::new();
    let actions = named_annotations(
        annotations,
        &format!("{ALB}actions."),
        parse_action,
        &mut failed,
    );
    let conditions = named_annotations(
        annotations,
        &format!("{ALB}conditions."),
        parse_conditions,
        &mut failed,
    );
    let listener_attributes =
        super::alb_protection::read_listener_attributes(annotations, &mut failed);
    for (name, value, problem) in failed {
        r.fail(&name, &value, problem);
    }
    // A source range and a source-ip condition on one path would need both to hold, which
    // one rule cannot say: refused rather than half enforced.
    if allow_source_ranges.is_some() || deny_source_ranges.is_some() {
        for (backend, c) in &conditions {
            if !c.extra.source_ips.is_empty() {
                r.fail(
                    &format!("{ALB}conditions.{backend}"),
                    "",
                    "a source-ip condition cannot be combined with an ingress-nginx allow- or deny-list on the same Ingress",
                );
            }
        }
    }

    if let (true, Some(tollgate_contract::Affinity::Cookie(c))) =
        (use_regex || rewrite_target.is_some(), &affinity)
    {
        if c.path.is_empty() {
            r.unused.push((
                format!("{NGINX}affinity"),
                "with use-regex, the cookie's path is the path's regular expression, as ingress-nginx warns; set session-cookie-path".into(),
            ));
        }
    }
    if r.errors.is_empty() {
        Ok(IngressSettings {
            group_name,
            group_order,
            listen_ports,
            ssl_redirect_port,
            ssl_redirect_nginx,
            preserve_trailing_slash,
            ssl_passthrough,
            certificate_arns,
            ssl_policy,
            scheme,
            subnets,
            security_groups,
            inbound_cidrs,
            inbound_prefix_lists,
            manage_backend_rules,
            use_regex_path_match,
            ip_address_type,
            load_balancer_attributes,
            tags,
            // ingress-nginx treats a rewrite target as turning paths into regular expressions.
            use_regex: use_regex || rewrite_target.is_some(),
            allow_source_ranges,
            deny_source_ranges,
            rewrite_target,
            max_body_bytes,
            upstream,
            cors,
            basic_auth_ref,
            basic_auth: None,
            idp_auth_ref,
            idp_auth: None,
            protection,
            load_balancer_name,
            mutual_authentication,
            listener_attributes,
            external_auth,
            rate_limit: rate_limit.map(std::sync::Arc::new),
            canary,
            affinity,
            hsts: None,
            server_aliases,
            client_cert_ref,
            proxy_ssl_ref,
            client_cert: None,
            default_backend_service,
            custom_http_errors,
            unused: r.unused,
            from_to_www,
            app_root,
            redirect,
            backend,
            actions,
            conditions,
        })
    } else {
        Err(r.errors)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn nginx_sizes() {
        use super::parse_nginx_size as size;
        assert_eq!(size("1m"), Ok(1 << 20));
        assert_eq!(size("8M"), Ok(8 << 20));
        assert_eq!(size("512k"), Ok(512 << 10));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert_eq!(size("10"), Ok(10));
        assert_eq!(size("0"), Ok(0));
        for bad in ["", "m", "1t", "-1", "1.5m", "99999999999999999999g"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every annotation the readers read is in the registry as honoured by some provider,
    /// and every annotation the registry says a provider honours is read.
    #[test]
    fn the_registry_and_the_readers_agree() {
        use crate::model_builder::annotation_registry::{registered, Support, REGISTRY};
        READ_NAMES.with(|r| r.borrow_mut().clear());
        let _ = ingress_settings(&Annotations::new());
        let _ = backend_settings(&Annotations::new());
        let read = READ_NAMES.with(|r| r.borrow().clone());
        assert!(read.len() > 30, "{read:?}");
        for name in &read {
            let spec =
                registered(name).unwrap_or_else(|| panic!("{name} is read but not registered"));
            assert!(
                spec.aws != Support::Ignored || spec.proxy != Support::Ignored,
                "{name} is read, but the registry says no provider honours it"
            );
        }
        for spec in REGISTRY {
            if spec.aws == Support::Ignored && spec.proxy == Support::Ignored {
                continue;
            }
            let name = format!("{}{}", spec.prefix.as_str(), spec.name);
            assert!(
                read.contains(&name),
                "the registry says {name} is honoured, but no reader reads it"
            );
        }
    }

    #[test]
    fn reads_alb_settings() {
        let s = ingress_settings(&ann(&[
            ("alb.ingress.kubernetes.io/group.name", "shop"),
            ("alb.ingress.kubernetes.io/group.order", "-5"),
            (
                "alb.ingress.kubernetes.io/listen-ports",
                r#"[{"HTTPS":443},{"HTTP":80}]"#,
            ),
            ("alb.ingress.kubernetes.io/ssl-redirect", "443"),
            ("alb.ingress.kubernetes.io/target-type", "instance"),
            ("alb.ingress.kubernetes.io/tags", "team=a, env=prod"),
        ]))
        .unwrap();
        assert_eq!(s.group_name.as_deref(), Some("shop"));
        assert_eq!(s.group_order, -5);
        assert_eq!(
            s.listen_ports,
            Some(vec![
                (ListenerProtocol::Http, 80),
                (ListenerProtocol::Https, 443)
            ])
        );
        assert_eq!(s.ssl_redirect_port, Some(443));
        assert_eq!(s.backend.target_type, Some(TargetType::Instance));
        assert_eq!(s.tags.get("env").map(String::as_str), Some("prod"));
    }

    #[test]
    fn reports_every_bad_value() {
        let errs = ingress_settings(&ann(&[
            ("alb.ingress.kubernetes.io/group.name", "Bad_Name"),
            ("alb.ingress.kubernetes.io/group.order", "5000"),
            ("alb.ingress.kubernetes.io/listen-ports", "[{\"FTP\":21}]"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "yes"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "alb.ingress.kubernetes.io/group.name",
                "alb.ingress.kubernetes.io/group.order",
                "alb.ingress.kubernetes.io/listen-ports",
                "nginx.ingress.kubernetes.io/ssl-redirect"
            ]
        );
    }

    #[test]
    fn upstream_options_are_read_and_bad_ones_named() {
        let s = ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/upstream-vhost", "internal.svc"),
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/shop"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "3"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
        ]))
        .expect("valid");
        assert_eq!(s.upstream.host.as_deref(), Some("internal.svc"));
        assert_eq!(s.upstream.forwarded_prefix.as_deref(), Some("/shop"));
        assert_eq!(s.upstream.connect_timeout_seconds, Some(3));
        assert_eq!(s.upstream.read_timeout_seconds, Some(3600));

        let errs = ingress_settings(&ann(&[
            (
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "$service_name.svc",
            ),
            (
                "nginx.ingress.kubernetes.io/x-forwarded-prefix",
                "/caf\u{e9}",
            ),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "60s"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "0"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nginx.ingress.kubernetes.io/upstream-vhost",
                "nginx.ingress.kubernetes.io/x-forwarded-prefix",
                "nginx.ingress.kubernetes.io/proxy-connect-timeout",
                "nginx.ingress.kubernetes.io/proxy-read-timeout",
            ]
        );
        assert!(errs[0].problem.contains("variables"), "{}", errs[0].problem);
    }

    #[test]
    fn basic_auth_is_read_as_ingress_nginx_reads_it_and_never_half_set() {
        let s = ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "team/basic"),
            ("nginx.ingress.kubernetes.io/auth-secret-type", "auth-map"),
            ("nginx.ingress.kubernetes.io/auth-realm", "Team A: sign in"),
        ]))
        .unwrap();
        assert_eq!(
            s.basic_auth_ref,
            Some(BasicAuthRef {
                namespace: Some("team".into()),
                name: "basic".into(),
                map: true,
                realm: "Team A: sign in".into()
            })
        );
        let refused = |pairs: &[(&str, &str)]| -> Vec<String> {
            ingress_settings(&ann(pairs))
                .unwrap_err()
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        let t = "nginx.ingress.kubernetes.io/auth-type";
        let sec = "nginx.ingress.kubernetes.io/auth-secret";
        assert_eq!(refused(&[(t, "digest"), (sec, "s")]), vec![t.to_string()]);
        assert_eq!(refused(&[(t, "basic")]), vec![t.to_string()]);
        assert_eq!(refused(&[(sec, "s")]), vec![sec.to_string()]);
        assert_eq!(
            refused(&[(t, "basic"), (sec, "a/b/c")]),
            vec![sec.to_string()]
        );
        assert_eq!(
            refused(&[
                (t, "basic"),
                (sec, "s"),
                ("nginx.ingress.kubernetes.io/auth-realm", "\"x\"")
            ]),
            vec!["nginx.ingress.kubernetes.io/auth-realm".to_string()]
        );
    }

    #[test]
    fn external_auth_is_read_and_leftovers_are_named() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        let s = ingress_settings(&ann(&[
            (&n("auth-url"), "https://$host/oauth2/auth"),
            (
                &n("auth-signin"),
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
            (
                &n("auth-response-headers"),
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
            (&n("auth-method"), "GET"),
        ]))
        .unwrap();
        let a = s.external_auth.expect("on with auth-url");
        assert_eq!(a.signin_redirect_param, "rd");
        assert_eq!(a.response_headers.len(), 2);
        assert!(s.unused.is_empty());
        let names = |pairs: &[(&str, &str)]| -> Vec<String> {
            ingress_settings(&ann(pairs))
                .unwrap_err()
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(
            names(&[(&n("auth-url"), "https://invalid..auth.url")]),
            vec![n("auth-url")]
        );
        assert_eq!(
            names(&[(&n("auth-url"), "http://a/$remote_user")]),
            vec![n("auth-url")]
        );
        assert_eq!(
            names(&[(&n("auth-url"), "http://a/"), (&n("auth-method"), "get")]),
            vec![n("auth-method")]
        );
        assert_eq!(
            names(&[
                (&n("auth-url"), "http://a/"),
                (&n("auth-response-headers"), "X:Y")
            ]),
            vec![n("auth-response-headers")]
        );
        // Set without what turns them on: served, and each named in a Warning.
        let s = ingress_settings(&ann(&[
            (&n("auth-signin"), "https://sso/start"),
            (&n("cors-allow-origin"), "https://a.example"),
        ]))
        .unwrap();
        let unused: Vec<&str> = s.unused.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(unused, vec![n("auth-signin"), n("cors-allow-origin")]);
    }

    #[test]
    fn rate_limits_are_read_as_ingress_nginx_reads_them() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        let s = ingress_settings(&ann(&[
            (&n("limit-rps"), "10"),
            (&n("limit-connections"), "0"),
            (&n("limit-whitelist"), "10.0.0.0/8, 192.168.0.1/32"),
        ]))
        .unwrap();
        let l = s.rate_limit.expect("on with limit-rps");
        assert_eq!(
            (l.rps, l.rpm, l.connections, l.burst_multiplier),
            (Some(10), None, None, 5)
        );
        assert_eq!(l.allowlist.len(), 2);
        let s = ingress_settings(&ann(&[
            (&n("limit-rpm"), "0"),
            (&n("limit-burst-multiplier"), "3"),
        ]))
        .unwrap();
        assert!(s.rate_limit.is_none(), "0 turns a limit off");
        assert_eq!(s.unused.len(), 1);
        let e = ingress_settings(&ann(&[
            (&n("limit-rps"), "ten"),
            (&n("limit-allowlist"), "nope"),
        ]))
        .unwrap_err();
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn canary_is_read_as_ingress_nginx_reads_it() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        let s = ingress_settings(&ann(&[
            (&n("canary"), "true"),
            (&n("canary-by-header"), "X-Canary"),
            (&n("canary-weight"), "10"),
            (&n("canary-weight-total"), "50"),
        ]))
        .unwrap();
        let c = s.canary.expect("a canary");
        assert_eq!(
            (c.weight, c.weight_total),
            (10, 100),
            "a total of 100 or less is ignored"
        );
        assert_eq!(c.header.as_deref(), Some("X-Canary"));
        let e = ingress_settings(&ann(&[(&n("canary-weight"), "10")])).unwrap_err();
        assert_eq!(
            e[0].name,
            n("canary-weight"),
            "canary settings without canary"
        );
        assert!(ingress_settings(&ann(&[(&n("canary"), "false")]))
            .unwrap()
            .canary
            .is_none());
    }

    #[test]
    fn affinity_is_read_as_ingress_nginx_reads_it() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        let s = ingress_settings(&ann(&[
            (&n("affinity"), "cookie"),
            (&n("upstream-hash-by"), "$request_uri"),
        ]))
        .unwrap();
        match s.affinity {
            Some(tollgate_contract::Affinity::Cookie(c)) => {
                assert_eq!(c.name, "INGRESSCOOKIE");
                assert!(c.path.is_empty(), "filled in per route");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.unused.len(),
            1,
            "hash-by yields to the cookie: {:?}",
            s.unused
        );
        let s = ingress_settings(&ann(&[(&n("upstream-hash-by"), "$http_x_user")])).unwrap();
        assert!(matches!(
            s.affinity,
            Some(tollgate_contract::Affinity::Hash { .. })
        ));
        let e = ingress_settings(&ann(&[
            (&n("affinity"), "ip"),
            (&n("session-cookie-samesite"), "Sometimes"),
            (&n("upstream-hash-by"), "$upstream_addr"),
        ]))
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn backend_tls_is_read_as_ingress_nginx_reads_it() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        // Defaults (proxyssl/main.go): verify off, depth 1, server name off, TLSv1.2.
        let s = ingress_settings(&ann(&[(&n("proxy-ssl-secret"), "team/backend")])).unwrap();
        let r = s.proxy_ssl_ref.expect("on with proxy-ssl-secret");
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.name.as_str(),
                r.verify,
                r.verify_depth,
                r.server_name
            ),
            (Some("team"), "backend", false, 1, false)
        );
        assert_eq!(r.protocols, vec!["TLSv1.2".to_string()]);
        // Without backend-protocol: HTTPS it does nothing, and says so.
        assert_eq!(s.unused.len(), 1, "{:?}", s.unused);
        let s = ingress_settings(&ann(&[
            (&n("proxy-ssl-secret"), "team/backend"),
            (&n("backend-protocol"), "HTTPS"),
        ]))
        .unwrap();
        assert!(s.unused.is_empty(), "{:?}", s.unused);
        // Without the Secret the rest does nothing, and says so.
        let s = ingress_settings(&ann(&[
            (&n("proxy-ssl-verify"), "on"),
            (&n("proxy-ssl-name"), "backend.internal"),
        ]))
        .unwrap();
        assert!(s.proxy_ssl_ref.is_none());
        assert_eq!(s.unused.len(), 2);
        // An unreadable verify is refused rather than read as off; nginx variables too.
        let e = ingress_settings(&ann(&[
            (&n("proxy-ssl-secret"), "team/backend"),
            (&n("proxy-ssl-verify"), "yes"),
            (&n("proxy-ssl-name"), "$host"),
            (&n("proxy-ssl-protocols"), "TLSv1 TLSv1.2"),
        ]))
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn client_certificates_are_read_as_ingress_nginx_reads_them() {
        let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
        let s = ingress_settings(&ann(&[(&n("auth-tls-secret"), "team/ca")])).unwrap();
        let r = s.client_cert_ref.expect("on with auth-tls-secret");
        assert_eq!(
            (r.verify.as_str(), r.depth, r.pass_certificate),
            ("on", 1, false)
        );
        assert_eq!(r.namespace.as_deref(), Some("team"));
        let e = ingress_settings(&ann(&[
            (&n("auth-tls-secret"), "ca"),
            (&n("auth-tls-verify-client"), "maybe"),
            (&n("auth-tls-match-cn"), "O=Acme"),
            (&n("auth-tls-error-page"), "nowhere"),
        ]))
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        let s = ingress_settings(&ann(&[(&n("auth-tls-verify-client"), "on")])).unwrap();
        assert!(s.client_cert_ref.is_none());
        assert_eq!(s.unused.len(), 1, "named as doing nothing");
    }

    #[test]
    fn cors_is_read_as_ingress_nginx_reads_it() {
        assert!(
            ingress_settings(&ann(&[(
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.test"
            )]))
            .expect("valid")
            .cors
            .is_none(),
            "off unless enable-cors"
        );
        let c = ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.test, http://*.b.test:8080",
            ),
        ]))
        .expect("valid")
        .cors
        .expect("on");
        assert_eq!(c.allow_origins, ["https://a.test", "http://*.b.test:8080"]);
        assert!(c.allow_credentials);
        assert_eq!(c.max_age_seconds, 1_728_000);
        // As ingress-nginx now: an entry that is not an origin is left out, never widening
        // the list; a list with none is refused.
        let c = ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "a.test:8080, https://b.test",
            ),
        ]))
        .expect("valid")
        .cors
        .expect("on");
        assert_eq!(c.allow_origins, ["https://b.test"]);
        assert!(ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "a.test:8080"
            ),
        ]))
        .is_err());
        let errs = ingress_settings(&ann(&[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-methods",
                "GET; DROP",
            ),
            ("nginx.ingress.kubernetes.io/cors-max-age", "-1"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "nginx.ingress.kubernetes.io/cors-allow-methods",
                "nginx.ingress.kubernetes.io/cors-max-age"
            ]
        );
    }

    #[test]
    fn nginx_backend_protocol_maps_to_version() {
        let (s, errs) = backend_settings(&ann(&[(
            "nginx.ingress.kubernetes.io/backend-protocol",
            "GRPC",
        )]));
        assert!(errs.is_empty());
        assert_eq!(s.protocol_version, Some(ProtocolVersion::Grpc));
        assert_eq!(s.protocol, Some(BackendProtocol::Http));
    }

    #[test]
    fn service_annotations_override_ingress() {
        let (ing, _) = backend_settings(&ann(&[(
            "alb.ingress.kubernetes.io/healthcheck-path",
            "/a",
        )]));
        let (svc, _) = backend_settings(&ann(&[(
            "alb.ingress.kubernetes.io/healthcheck-path",
            "/b",
        )]));
        assert_eq!(
            ing.overridden_by(&svc).healthcheck_path.as_deref(),
            Some("/b")
        );
    }
}

//! The annotation registry: every `alb.ingress.kubernetes.io/*` annotation the AWS Load
//! Balancer Controller documents and every `nginx.ingress.kubernetes.io/*` annotation
//! ingress-nginx documents, with what each Tollgate provider does with it.
//!
//! Why one table: users arrive with Ingresses written for those controllers, and the worst
//! thing Tollgate can do is drop an annotation in silence — above all one that protects
//! something. Every key under the two prefixes is judged here ([`check`]); the readers in
//! `annotations.rs` may only read names this table lists (a debug assertion and a test hold
//! them to it), and the README's annotation reference is rendered from it ([`markdown`]).
//!
//! Sources of the lists (read, not guessed):
//! - AWS Load Balancer Controller `pkg/annotations/constants.go` (v3.x, Ingress suffixes) and
//!   `docs/guide/ingress/annotations.md` (the Ingress/Service "Location" column);
//! - ingress-nginx `docs/user-guide/nginx-configuration/annotations-risk.md` (v1.15, every
//!   key its parsers register) plus the keys its `annotations.md` documents only in the text.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use tollgate_contract::{Reason, Severity};

use super::annotations::{ALB, NGINX};

/// Which provider consumes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    Aws,
    Proxy,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 2] = [ProviderKind::Aws, ProviderKind::Proxy];
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Aws => "aws",
            ProviderKind::Proxy => "proxy",
        })
    }
}

/// Whose annotation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prefix {
    Alb,
    Nginx,
}

impl Prefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Alb => ALB,
            Prefix::Nginx => NGINX,
        }
    }
}

/// What ignoring the annotation would do to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// It protects something (authentication, allow-lists, WAF, client certificates, rate
    /// limits...): serving the Ingress without it opens a hole, so it is not served.
    Protective,
    /// Raw proxy configuration: never applied, always refused.
    Snippet,
    /// Anything else: not doing it is a Warning.
    Other,
}

/// What one provider does with an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Honoured,
    /// Honoured in part; the text says what is not done.
    Partial(&'static str),
    Ignored,
}

/// Where the annotation is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Ingress,
    /// On an Ingress, and on the Services its backends name (the Service wins), as the AWS
    /// Load Balancer Controller reads them.
    IngressAndService,
    /// On an Ingress only, where the AWS Load Balancer Controller reads it on Services too:
    /// on a Service a protective one is refused rather than ignored.
    IngressNotService,
}

/// The object an annotation was found on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnObject {
    Ingress,
    Service,
}

/// One registered annotation.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub prefix: Prefix,
    /// The name after the prefix. For a family (`actions.<name>`) this is `actions.`.
    pub name: &'static str,
    pub family: bool,
    pub risk: Risk,
    pub applies: Applies,
    pub aws: Support,
    pub proxy: Support,
    /// Values that ask for nothing (`auth-type: none`): there is nothing to honour.
    pub inert: &'static [&'static str],
    /// What it does, in a few words: the diagnostics say this is not done.
    pub does: &'static str,
}

impl Spec {
    pub fn support(&self, provider: ProviderKind) -> Support {
        match self.risk {
            // Raw configuration is never applied, whatever the provider.
            Risk::Snippet => Support::Ignored,
            _ => match provider {
                ProviderKind::Aws => self.aws,
                ProviderKind::Proxy => self.proxy,
            },
        }
    }

    /// The full annotation name (`…/actions.*` for a family).
    pub fn full_name(&self) -> String {
        if self.family {
            format!("{}{}*", self.prefix.as_str(), self.name)
        } else {
            format!("{}{}", self.prefix.as_str(), self.name)
        }
    }

    fn is_inert(&self, value: &str) -> bool {
        let norm: String = value
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        self.inert.iter().any(|v| *v == norm)
    }
}

use Applies::{Ingress as I, IngressAndService as IS, IngressNotService as INS};
use Risk::{Other, Protective as Prot, Snippet};
use Support::{Honoured as H, Ignored as X};

const fn alb(
    name: &'static str,
    risk: Risk,
    applies: Applies,
    aws: Support,
    proxy: Support,
    does: &'static str,
) -> Spec {
    Spec {
        prefix: Prefix::Alb,
        name,
        family: false,
        risk,
        applies,
        aws,
        proxy,
        inert: &[],
        does,
    }
}

const fn nginx(name: &'static str, risk: Risk, proxy: Support, does: &'static str) -> Spec {
    Spec {
        prefix: Prefix::Nginx,
        name,
        family: false,
        risk,
        applies: I,
        aws: X,
        proxy,
        inert: &[],
        does,
    }
}

impl Spec {
    const fn inert(mut self, values: &'static [&'static str]) -> Spec {
        self.inert = values;
        self
    }
    const fn family(mut self) -> Spec {
        self.family = true;
        self
    }
    const fn aws(mut self, s: Support) -> Spec {
        self.aws = s;
        self
    }
}

const ONLY_80_443: Support = Support::Partial(
    "the proxy serves the model's ports 80 (HTTP) and 443 (HTTPS) on its own listen addresses; routes on other ports are not served",
);
const TG_ATTRIBUTES_PROXY: Support = Support::Partial(
    "only load_balancing.algorithm.type is applied; stickiness, slow start and deregistration delay are not",
);
const CANARY_HEADER: Support = Support::Partial(
    "the header's value is compared without regard to case, and * or ? in canary-by-header-value match as wildcards (ingress-nginx compares exactly)",
);
const CANARY_PATTERN: Support = Support::Partial(
    "Rust's regular expressions, not PCRE: a pattern with look-around or back-references is refused",
);
const OPEN_TO_ALL: &[&str] = &["0.0.0.0/0", "0.0.0.0/0,::/0", "::/0,0.0.0.0/0"];

/// The registry. Keep each prefix in the order its source lists it.
#[rustfmt::skip]
pub static REGISTRY: &[Spec] = &[
    // ---- AWS Load Balancer Controller (pkg/annotations/constants.go) ----
    alb("load-balancer-name", Other, I, H, X, "a custom load balancer name"),
    alb("group.name", Other, I, H, H, "Ingress grouping into one load balancer"),
    alb("group.order", Other, I, H, H, "rule precedence within a group"),
    alb("tags", Other, IS, H, X, "AWS tags on the load balancer's resources"),
    alb("ip-address-type", Other, I, H, X, "the load balancer's IP address type"),
    alb("scheme", Prot, I, H, X, "an internal (not internet-facing) load balancer").inert(&["internet-facing"]),
    alb("subnets", Other, I, H, X, "the load balancer's subnets"),
    alb("customer-owned-ipv4-pool", Other, I, X, X, "an Outposts customer-owned IPv4 pool"),
    alb("load-balancer-attributes", Other, I, H, X, "load balancer attributes"),
    alb("wafv2-acl-arn", Prot, I, H, X, "a WAFv2 web ACL in front of the load balancer").inert(&["none"]),
    alb("wafv2-acl-name", Prot, I, H, X, "a WAFv2 web ACL in front of the load balancer").inert(&["none"]),
    alb("waf-acl-id", Prot, I, X, X, "a WAF Classic web ACL in front of the load balancer").inert(&["none"]),
    alb("web-acl-id", Prot, I, X, X, "a WAF Classic web ACL in front of the load balancer").inert(&["none"]),
    alb("shield-advanced-protection", Prot, I, H, X, "AWS Shield Advanced protection").inert(&["false"]),
    alb("security-groups", Prot, I, H, X, "the load balancer's own security groups"),
    alb("listen-ports", Other, I, H, ONLY_80_443, "the listener ports"),
    alb("ssl-redirect", Other, I, H, H, "redirecting HTTP to HTTPS"),
    alb("inbound-cidrs", Prot, I, H, H, "allowing clients only from these CIDRs").inert(OPEN_TO_ALL),
    alb("certificate-arn", Other, I, H, X, "ACM certificates on the HTTPS listener"),
    alb("ssl-policy", Other, I, H, X, "the HTTPS listener's TLS security policy"),
    alb("target-type", Other, IS, H, H, "ip or instance targets"),
    alb("backend-protocol", Other, IS, H, H, "HTTP or HTTPS to the targets"),
    alb("backend-protocol-version", Other, IS, H, H, "HTTP1, HTTP2 or GRPC to the targets"),
    alb("target-group-attributes", Other, IS, H, TG_ATTRIBUTES_PROXY, "target group attributes"),
    alb("healthcheck-port", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("healthcheck-protocol", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("healthcheck-path", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("healthcheck-interval-seconds", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("healthcheck-timeout-seconds", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("healthy-threshold-count", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("unhealthy-threshold-count", Other, IS, H, X, "active health checks (the proxy ejects failing targets passively)"),
    alb("success-codes", Other, IS, H, X, "health check success codes"),
    alb("auth-type", Prot, INS, H, X, "OIDC or Cognito authentication before the backend").inert(&["none"]),
    alb("auth-idp-cognito", Other, INS, H, X, "the Cognito identity provider of auth-type"),
    alb("auth-idp-oidc", Other, INS, H, X, "the OIDC identity provider of auth-type"),
    alb("auth-on-unauthenticated-request", Other, INS, H, X, "what auth-type does with unauthenticated requests"),
    alb("auth-scope", Other, INS, H, X, "the scopes auth-type asks for"),
    alb("auth-session-cookie", Other, INS, H, X, "auth-type's session cookie name"),
    alb("auth-session-timeout", Other, INS, H, X, "auth-type's session timeout"),
    alb("jwt-validation", Prot, IS, X, X, "JWT validation before the backend"),
    alb("target-node-labels", Other, IS, X, X, "registering only the nodes with these labels"),
    alb("manage-backend-security-group-rules", Other, I, H, X, "managing the targets' security group rules"),
    alb("mutual-authentication", Prot, I, H, X, "client-certificate (mutual TLS) authentication"),
    alb("security-group-prefix-lists", Prot, I, H, X, "allowing clients only from these prefix lists"),
    alb("listener-attributes.", Other, I, H, X, "listener attributes (e.g. HSTS and other response headers)").family(),
    alb("multi-cluster-target-group", Other, IS, X, X, "sharing target groups with other clusters"),
    alb("minimum-load-balancer-capacity", Other, I, X, X, "a load balancer capacity reservation"),
    alb("ipam-ipv4-pool-id", Other, I, X, X, "an IPAM IPv4 pool"),
    alb("enable-frontend-nlb", Other, I, X, X, "a Network Load Balancer in front of the ALB").inert(&["false"]),
    alb("frontend-nlb-scheme", Other, I, X, X, "the frontend NLB's scheme"),
    alb("frontend-nlb-subnets", Other, I, X, X, "the frontend NLB's subnets"),
    alb("frontend-nlb-security-groups", Other, I, X, X, "the frontend NLB's security groups"),
    alb("frontend-nlb-listener-port-mapping", Other, I, X, X, "the frontend NLB's port mapping"),
    alb("frontend-nlb-eip-allocations", Other, I, X, X, "the frontend NLB's Elastic IPs"),
    alb("frontend-nlb-healthcheck-port", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-protocol", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-path", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-interval-seconds", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-timeout-seconds", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-healthy-threshold-count", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-unhealthy-threshold-count", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-healthcheck-success-codes", Other, I, X, X, "the frontend NLB's health check"),
    alb("frontend-nlb-attributes", Other, I, X, X, "the frontend NLB's attributes"),
    alb("frontend-nlb-tags", Other, I, X, X, "the frontend NLB's tags"),
    alb("use-regex-path-match", Other, I, H, H, "regular-expression path conditions"),
    alb("target-control-port.", Other, IS, X, X, "a target control port").family(),
    alb("create-acm-cert", Other, I, X, X, "requesting ACM certificates").inert(&["false"]),
    alb("acm-pca-arn", Other, I, X, X, "issuing certificates from ACM Private CA"),
    alb("dry-run-plan", Other, I, X, X, "writing the plan back to the Ingress (see `tollgate plan`)"),
    alb("actions.", Other, I, H, H, "custom actions for use-annotation backends").family(),
    alb("conditions.", Other, I, H, H, "extra rule conditions for a backend").family(),
    alb("transforms.", Other, I, X, X, "host-header and URL rewrites").family(),
    // ---- ingress-nginx (annotations-risk.md; annotations.md text) ----
    nginx("server-alias", Other, Support::Partial("an alias another Ingress also serves is settled path by path by precedence, not dropped whole as ingress-nginx drops it"), "extra host names for the server"),
    nginx("allowlist-source-range", Prot, H, "allowing clients only from these CIDRs").aws(H),
    nginx("whitelist-source-range", Prot, H, "allowing clients only from these CIDRs").aws(H),
    nginx("backend-protocol", Other, H, "the protocol to the backend").aws(H),
    nginx("auth-realm", Other, H, "the basic-authentication realm"),
    nginx("auth-secret", Prot, H, "basic-authentication credentials"),
    nginx("auth-secret-type", Other, H, "the basic-authentication secret's form"),
    nginx("auth-type", Prot, Support::Partial("basic only; digest is refused"), "basic or digest authentication"),
    nginx("canary", Other, H, "a canary Ingress splitting traffic").inert(&["false"]).aws(H),
    nginx("canary-by-cookie", Other, H, "canary routing by cookie"),
    nginx("canary-by-header", Other, H, "canary routing by header").aws(CANARY_HEADER),
    nginx("canary-by-header-pattern", Other, CANARY_PATTERN, "canary routing by header pattern"),
    nginx("canary-by-header-value", Other, H, "canary routing by header value").aws(CANARY_HEADER),
    nginx("canary-weight", Other, H, "a canary traffic weight").aws(H),
    nginx("canary-weight-total", Other, H, "the canary weight total").aws(H),
    nginx("auth-tls-error-page", Other, H, "the client-certificate error page"),
    nginx("auth-tls-match-cn", Prot, H, "requiring a client-certificate CN"),
    nginx("auth-tls-pass-certificate-to-upstream", Other, H, "passing the client certificate upstream").inert(&["false"]),
    nginx("auth-tls-secret", Prot, H, "client-certificate verification"),
    nginx("auth-tls-verify-client", Prot, H, "client-certificate verification").inert(&["off"]),
    nginx("auth-tls-verify-depth", Other, H, "the client-certificate chain depth"),
    nginx("client-body-buffer-size", Other, X, "the request-body buffer size"),
    nginx("configuration-snippet", Snippet, X, "raw nginx configuration").inert(&[""]),
    nginx("connection-proxy-header", Other, X, "the Connection header sent upstream"),
    nginx("cors-allow-credentials", Other, H, "CORS"),
    nginx("cors-allow-headers", Other, H, "CORS"),
    nginx("cors-allow-methods", Other, H, "CORS"),
    nginx("cors-allow-origin", Other, H, "CORS"),
    nginx("cors-expose-headers", Other, H, "CORS"),
    nginx("cors-max-age", Other, H, "CORS"),
    nginx("enable-cors", Other, H, "CORS headers and preflight answers").inert(&["false"]),
    nginx("custom-http-errors", Other, H, "intercepting error codes to the default backend"),
    nginx("custom-headers", Other, X, "extra response headers from a ConfigMap"),
    nginx("default-backend", Other, H, "a per-Ingress default backend Service"),
    nginx("denylist-source-range", Prot, H, "refusing clients from these CIDRs").aws(H),
    nginx("disable-proxy-intercept-errors", Other, X, "not intercepting upstream errors"),
    nginx("enable-global-auth", Other, X, "the global external authentication"),
    nginx("auth-always-set-cookie", Other, H, "external authentication's cookies"),
    nginx("auth-cache-duration", Other, X, "external-authentication caching"),
    nginx("auth-cache-key", Other, X, "external-authentication caching"),
    nginx("auth-keepalive", Other, X, "external-authentication keepalive"),
    nginx("auth-keepalive-requests", Other, X, "external-authentication keepalive"),
    nginx("auth-keepalive-share-vars", Other, X, "external-authentication keepalive"),
    nginx("auth-keepalive-timeout", Other, X, "external-authentication keepalive"),
    nginx("auth-method", Other, H, "external authentication's method"),
    nginx("auth-proxy-set-headers", Other, X, "headers sent to external authentication"),
    nginx("auth-request-redirect", Other, H, "external authentication's X-Auth-Request-Redirect"),
    nginx("auth-response-headers", Other, H, "headers copied from external authentication"),
    nginx("auth-signin", Prot, H, "redirecting unauthenticated clients to sign in"),
    nginx("auth-signin-redirect-param", Other, H, "the sign-in redirect parameter"),
    nginx("auth-snippet", Snippet, X, "raw nginx configuration for external authentication").inert(&[""]),
    nginx("auth-url", Prot, H, "external authentication (e.g. oauth2-proxy)"),
    nginx("fastcgi-index", Other, X, "FastCGI"),
    nginx("fastcgi-params-configmap", Other, X, "FastCGI"),
    nginx("http2-push-preload", Other, X, "HTTP/2 server push"),
    nginx("load-balance", Other, Support::Partial("ewma is served as least outstanding requests (two targets drawn, the less busy chosen)"), "the load-balancing algorithm").aws(Support::Partial("ewma is ALB's least_outstanding_requests")),
    nginx("enable-access-log", Other, X, "turning the access log off").inert(&["true"]),
    nginx("enable-rewrite-log", Other, X, "the rewrite log").inert(&["false"]),
    nginx("mirror-host", Other, X, "mirroring requests"),
    nginx("mirror-request-body", Other, X, "mirroring requests"),
    nginx("mirror-target", Other, X, "mirroring requests"),
    nginx("enable-modsecurity", Prot, X, "the ModSecurity web application firewall").inert(&["false"]),
    nginx("enable-owasp-core-rules", Prot, X, "the OWASP ModSecurity core rules").inert(&["false"]),
    nginx("modsecurity-snippet", Snippet, X, "raw ModSecurity configuration").inert(&[""]),
    nginx("modsecurity-transaction-id", Other, X, "the ModSecurity transaction id"),
    nginx("enable-opentelemetry", Other, X, "OpenTelemetry tracing").inert(&["false"]),
    nginx("opentelemetry-operation-name", Other, X, "OpenTelemetry tracing"),
    nginx("opentelemetry-trust-incoming-span", Other, X, "OpenTelemetry tracing"),
    nginx("proxy-body-size", Other, H, "a request-body size limit (413)"),
    nginx("proxy-buffer-size", Other, X, "response buffering"),
    nginx("proxy-buffering", Other, Support::Partial("responses are always streamed, as with off; on does not buffer them"), "response buffering"),
    nginx("proxy-buffers-number", Other, X, "response buffering"),
    nginx("proxy-busy-buffers-size", Other, X, "response buffering"),
    nginx("proxy-connect-timeout", Other, Support::Partial("not for HTTP/2 and gRPC backends, which connect within the read timeout"), "the upstream connect timeout"),
    nginx("proxy-cookie-domain", Other, X, "rewriting Set-Cookie domains"),
    nginx("proxy-cookie-path", Other, X, "rewriting Set-Cookie paths"),
    nginx("proxy-http-version", Other, X, "the upstream HTTP version"),
    nginx("proxy-max-temp-file-size", Other, X, "response buffering to disk"),
    nginx("proxy-next-upstream", Other, Support::Partial("requests with a body are not sent again (bodies are streamed, not buffered); invalid_header counts as error"), "the retry policy"),
    nginx("proxy-next-upstream-timeout", Other, H, "the retry policy"),
    nginx("proxy-next-upstream-tries", Other, H, "the retry policy"),
    nginx("proxy-read-timeout", Other, Support::Partial("the time until the target's response headers; a pause between body chunks is not limited"), "the upstream read timeout"),
    nginx("proxy-redirect-from", Other, X, "rewriting upstream Location headers"),
    nginx("proxy-redirect-to", Other, X, "rewriting upstream Location headers"),
    nginx("proxy-request-buffering", Other, Support::Partial("request bodies are always streamed, as with off; on does not buffer them before the target is contacted"), "request buffering"),
    nginx("proxy-send-timeout", Other, Support::Partial("a target that stops taking the request body this long before its response began is answered 504; once the response began, a pause is not limited"), "the upstream send timeout"),
    nginx("proxy-ssl-ciphers", Other, Support::Partial("only DEFAULT: the proxy offers rustls's default suites, and names any other list in a warning"), "upstream TLS ciphers"),
    nginx("proxy-ssl-name", Other, Support::Partial("a DNS name, checked and (with proxy-ssl-server-name) sent; nginx variables such as $host are refused; without it a verified target's name is not checked (ingress-nginx checks upstream_balancer)"), "the upstream TLS server name"),
    nginx("proxy-ssl-protocols", Other, H, "upstream TLS protocols"),
    nginx("proxy-ssl-secret", Other, H, "the upstream TLS client certificate and CA"),
    nginx("proxy-ssl-server-name", Other, H, "SNI to the upstream"),
    nginx("proxy-ssl-verify", Prot, H, "verifying the upstream's certificate").inert(&["off"]),
    nginx("proxy-ssl-verify-depth", Other, H, "the upstream certificate chain depth"),
    nginx("limit-allowlist", Other, H, "exempting CIDRs from rate limits"),
    nginx("limit-whitelist", Other, H, "exempting CIDRs from rate limits"),
    nginx("limit-burst-multiplier", Other, H, "the rate limits' burst"),
    nginx("limit-connections", Prot, H, "a per-client connection limit").inert(&["0"]),
    nginx("limit-rate", Other, X, "response bandwidth limits"),
    nginx("limit-rate-after", Other, X, "response bandwidth limits"),
    nginx("limit-rpm", Prot, H, "a per-client request-rate limit").inert(&["0"]),
    nginx("limit-rps", Prot, H, "a per-client request-rate limit").inert(&["0"]),
    nginx("from-to-www-redirect", Other, H, "redirecting between www.<host> and <host>").inert(&["false"]),
    nginx("permanent-redirect", Other, H, "a permanent redirect").aws(H),
    nginx("permanent-redirect-code", Other, H, "the permanent redirect's code").aws(H),
    nginx("temporal-redirect", Other, H, "a temporary redirect").aws(H),
    nginx("temporal-redirect-code", Other, H, "the temporary redirect's code").aws(H),
    nginx("app-root", Other, H, "redirecting / to the application root").aws(H),
    nginx("force-ssl-redirect", Other, H, "redirecting HTTP to HTTPS").aws(H),
    nginx("preserve-trailing-slash", Other, H, "keeping the trailing slash in redirects"),
    nginx("rewrite-target", Other, H, "rewriting the upstream path"),
    nginx("ssl-redirect", Other, H, "redirecting HTTP to HTTPS").aws(H),
    nginx("use-regex", Other, H, "regular-expression paths").inert(&["false"]),
    nginx("ssl-ciphers", Other, X, "the server's TLS ciphers"),
    nginx("ssl-prefer-server-ciphers", Other, X, "preferring the server's TLS ciphers"),
    nginx("ssl-passthrough", Other, Support::Partial("TLS for the Ingress's exact hosts goes, untouched, to the endpoints of the host's '/' path (ingress-nginx dials the Service's cluster IP); other paths are not reached over HTTPS; no --enable-ssl-passthrough flag is needed"), "TLS passthrough to the backend").inert(&["false"]),
    nginx("satisfy", Other, X, "combining authentication methods"),
    nginx("server-snippet", Snippet, X, "raw nginx server configuration").inert(&[""]),
    nginx("service-upstream", Other, H, "routing to the Service's cluster IP").inert(&["false"]),
    nginx("affinity", Other, H, "cookie session affinity"),
    nginx("affinity-canary-behavior", Other, X, "cookie session affinity"),
    nginx("affinity-mode", Other, Support::Partial("balanced is served as persistent: a session stays on its pod while the pod exists, and is not moved when pods are added"), "cookie session affinity"),
    nginx("session-cookie-change-on-failure", Other, H, "cookie session affinity"),
    nginx("session-cookie-conditional-samesite-none", Other, H, "cookie session affinity"),
    nginx("session-cookie-domain", Other, H, "cookie session affinity"),
    nginx("session-cookie-expires", Other, H, "cookie session affinity"),
    nginx("session-cookie-max-age", Other, H, "cookie session affinity"),
    nginx("session-cookie-name", Other, H, "cookie session affinity"),
    nginx("session-cookie-partitioned", Other, X, "cookie session affinity"),
    nginx("session-cookie-path", Other, H, "cookie session affinity"),
    nginx("session-cookie-samesite", Other, H, "cookie session affinity"),
    nginx("session-cookie-secure", Other, H, "cookie session affinity"),
    nginx("stream-snippet", Snippet, X, "raw nginx stream configuration").inert(&[""]),
    nginx("upstream-hash-by", Other, H, "consistent hashing to the backends"),
    nginx("upstream-hash-by-subset", Other, X, "consistent hashing to the backends"),
    nginx("upstream-hash-by-subset-size", Other, X, "consistent hashing to the backends"),
    nginx("upstream-vhost", Other, H, "the Host header sent upstream"),
    nginx("use-port-in-redirects", Other, X, "the port in redirects"),
    nginx("relative-redirects", Other, X, "relative redirects"),
    nginx("x-forwarded-prefix", Other, H, "the X-Forwarded-Prefix header"),
];

/// The registry by full name (a family under its name with the trailing dot): every
/// annotation of every Ingress is looked up on every build, so not a scan of the table.
fn index() -> &'static HashMap<String, &'static Spec> {
    static INDEX: OnceLock<HashMap<String, &'static Spec>> = OnceLock::new();
    INDEX.get_or_init(|| {
        REGISTRY
            .iter()
            .map(|s| (format!("{}{}", s.prefix.as_str(), s.name), s))
            .collect()
    })
}

/// The registered annotation exactly named `full_name`, a family by its name with the
/// trailing dot (`…/actions.`): what the readers in `annotations.rs` ask for.
pub fn registered(full_name: &str) -> Option<&'static Spec> {
    index().get(full_name).copied()
}

/// The registered annotation `full_name` is, if any (a family matches any name below it).
pub fn lookup(full_name: &str) -> Option<&'static Spec> {
    let (prefix, rest) = split(full_name)?;
    let index = index();
    if let Some(s) = index.get(full_name).filter(|s| !s.family) {
        return Some(s);
    }
    // A family member (`actions.<name>`), or a family named without its dot.
    let family = match rest.split_once('.') {
        Some((head, tail)) if !tail.is_empty() => format!("{}{head}.", prefix.as_str()),
        Some(_) => return None,
        None => format!("{full_name}."),
    };
    index.get(&family).copied().filter(|s| s.family)
}

fn split(full_name: &str) -> Option<(Prefix, &str)> {
    if let Some(rest) = full_name.strip_prefix(ALB) {
        Some((Prefix::Alb, rest))
    } else {
        full_name
            .strip_prefix(NGINX)
            .map(|rest| (Prefix::Nginx, rest))
    }
}

/// What the registry says about one annotation found on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub annotation: String,
    pub severity: Severity,
    pub reason: Reason,
    pub message: String,
}

/// Judges every annotation under the two prefixes on one object, for one provider. Errors
/// mean the object must not be served as it is (a protective annotation this provider does
/// not honour, or a snippet); Warnings name what is not done.
pub fn check(
    annotations: &BTreeMap<String, String>,
    on: OnObject,
    provider: ProviderKind,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, value) in annotations {
        let Some((prefix, rest)) = split(key) else {
            continue;
        };
        let Some(spec) = lookup(key) else {
            let closest = closest_name(prefix, rest);
            out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Warning,
                reason: Reason::AnnotationUnknown,
                message: format!(
                    "annotation {key} is not a known {} annotation and does nothing; did you mean {closest}?",
                    match prefix {
                        Prefix::Alb => "AWS Load Balancer Controller",
                        Prefix::Nginx => "ingress-nginx",
                    }
                ),
            });
            continue;
        };
        if on == OnObject::Service
            && spec.applies == Applies::IngressNotService
            && spec.risk == Risk::Protective
            && !spec.is_inert(value)
        {
            out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Error,
                reason: Reason::AnnotationUnsupported,
                message: format!(
                    "annotation {key} is read on Ingresses only; on a Service {} does not happen, so the Service is not served rather than served without it: put the annotation on the Ingress",
                    spec.does
                ),
            });
            continue;
        }
        if on == OnObject::Service && spec.applies != Applies::IngressAndService {
            out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Warning,
                reason: Reason::AnnotationIgnored,
                message: format!(
                    "annotation {key} is read on Ingresses only; on a Service it does nothing ({} does not happen)",
                    spec.does
                ),
            });
            continue;
        }
        if spec.is_inert(value) {
            continue;
        }
        if spec.risk == Risk::Snippet {
            out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Error,
                reason: Reason::AnnotationRefused,
                message: format!(
                    "annotation {key} injects {} and is refused: Tollgate never applies raw proxy configuration, and serving without it could drop what it enforced; express it with supported annotations",
                    spec.does
                ),
            });
            continue;
        }
        match (spec.support(provider), spec.risk) {
            (Support::Honoured, _) => {}
            (Support::Partial(what), _) => out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Warning,
                reason: Reason::AnnotationIgnored,
                message: format!(
                    "annotation {key} is honoured only in part by the {provider} provider: {what}"
                ),
            }),
            (Support::Ignored, Risk::Protective) => out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Error,
                reason: Reason::AnnotationUnsupported,
                message: format!(
                    "annotation {key} asks for {}, which the {provider} provider does not implement; not serving it rather than serving it without that protection",
                    spec.does
                ),
            }),
            (Support::Ignored, _) => out.push(Finding {
                annotation: key.clone(),
                severity: Severity::Warning,
                reason: Reason::AnnotationIgnored,
                message: format!(
                    "annotation {key} is not honoured by the {provider} provider: {} does not happen",
                    spec.does
                ),
            }),
        }
    }
    out
}

/// The registered name under `prefix` closest to `rest` by edit distance.
fn closest_name(prefix: Prefix, rest: &str) -> String {
    REGISTRY
        .iter()
        .filter(|s| s.prefix == prefix)
        .min_by_key(|s| edit_distance(rest, s.name.trim_end_matches('.')))
        .map(Spec::full_name)
        .unwrap_or_default()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn support_cell(s: Support) -> String {
    match s {
        Support::Honoured => "honoured".into(),
        Support::Partial(what) => format!("partly: {what}"),
        Support::Ignored => "not honoured".into(),
    }
}

/// The README's annotation reference, rendered from the registry.
pub fn markdown() -> String {
    let mut out = String::from("| annotation | kind | on | aws | proxy |\n|---|---|---|---|---|\n");
    let count = |p: ProviderKind, prefix: Prefix| {
        REGISTRY
            .iter()
            .filter(|s| s.prefix == prefix && s.support(p) != Support::Ignored)
            .count()
    };
    for s in REGISTRY {
        let kind = match s.risk {
            Risk::Protective => "protective: refused where not honoured",
            Risk::Snippet => "snippet: always refused",
            Risk::Other => "warning where not honoured",
        };
        let on = match s.applies {
            Applies::Ingress | Applies::IngressNotService => "Ingress",
            Applies::IngressAndService => "Ingress, Service",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {on} | {} | {} |\n",
            s.full_name(),
            support_cell(s.support(ProviderKind::Aws)),
            support_cell(s.support(ProviderKind::Proxy)),
        ));
    }
    out.push_str(&format!(
        "\n{} annotations registered. Honoured (fully or in part): aws {} of the AWS Load Balancer Controller's and {} of ingress-nginx's; proxy {} and {}.\n",
        REGISTRY.len(),
        count(ProviderKind::Aws, Prefix::Alb),
        count(ProviderKind::Aws, Prefix::Nginx),
        count(ProviderKind::Proxy, Prefix::Alb),
        count(ProviderKind::Proxy, Prefix::Nginx),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn one(pairs: &[(&str, &str)], on: OnObject, p: ProviderKind) -> Vec<(Severity, Reason)> {
        check(&ann(pairs), on, p)
            .into_iter()
            .map(|f| (f.severity, f.reason))
            .collect()
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for s in REGISTRY {
            assert!(seen.insert(s.full_name()), "{} twice", s.full_name());
            assert_eq!(s.family, s.name.ends_with('.'));
            assert!(!s.does.is_empty());
        }
    }

    #[test]
    fn protective_not_honoured_is_an_error() {
        let f = one(
            &[("alb.ingress.kubernetes.io/jwt-validation", "{}")],
            OnObject::Ingress,
            ProviderKind::Aws,
        );
        assert_eq!(f, [(Severity::Error, Reason::AnnotationUnsupported)]);
        let f = one(
            &[("alb.ingress.kubernetes.io/auth-type", "oidc")],
            OnObject::Ingress,
            ProviderKind::Proxy,
        );
        assert_eq!(f, [(Severity::Error, Reason::AnnotationUnsupported)]);
        let f = one(
            &[("nginx.ingress.kubernetes.io/enable-modsecurity", "true")],
            OnObject::Ingress,
            ProviderKind::Proxy,
        );
        assert_eq!(f, [(Severity::Error, Reason::AnnotationUnsupported)]);
        let f = one(
            &[("nginx.ingress.kubernetes.io/auth-url", "http://auth/check")],
            OnObject::Ingress,
            ProviderKind::Aws,
        );
        assert_eq!(f, [(Severity::Error, Reason::AnnotationUnsupported)]);
        // security-groups is honoured by aws, not by the proxy.
        let groups = [("alb.ingress.kubernetes.io/security-groups", "sg-1")];
        assert!(one(&groups, OnObject::Ingress, ProviderKind::Aws).is_empty());
        assert_eq!(
            one(&groups, OnObject::Ingress, ProviderKind::Proxy),
            [(Severity::Error, Reason::AnnotationUnsupported)]
        );
    }

    #[test]
    fn protective_with_an_inert_value_says_nothing() {
        for (k, v) in [
            ("alb.ingress.kubernetes.io/auth-type", "none"),
            ("alb.ingress.kubernetes.io/inbound-cidrs", "0.0.0.0/0, ::/0"),
            ("nginx.ingress.kubernetes.io/enable-modsecurity", "false"),
        ] {
            assert!(
                one(&[(k, v)], OnObject::Ingress, ProviderKind::Proxy).is_empty(),
                "{k}: {v}"
            );
        }
    }

    #[test]
    fn snippets_are_refused_by_every_provider() {
        for p in ProviderKind::ALL {
            let f = one(
                &[(
                    "nginx.ingress.kubernetes.io/configuration-snippet",
                    "more_set_headers \"X-Frame-Options: DENY\";",
                )],
                OnObject::Ingress,
                p,
            );
            assert_eq!(f, [(Severity::Error, Reason::AnnotationRefused)], "{p}");
        }
    }

    #[test]
    fn other_not_honoured_is_a_warning() {
        let f = check(
            &ann(&[("nginx.ingress.kubernetes.io/mirror-target", "http://mirror")]),
            OnObject::Ingress,
            ProviderKind::Proxy,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].reason, Reason::AnnotationIgnored);
        assert!(f[0].message.contains("mirror-target"), "{}", f[0].message);
        assert!(f[0].message.contains("proxy provider"), "{}", f[0].message);
    }

    #[test]
    fn honoured_says_nothing() {
        for p in ProviderKind::ALL {
            assert!(one(
                &[
                    ("nginx.ingress.kubernetes.io/ssl-redirect", "true"),
                    ("alb.ingress.kubernetes.io/group.order", "3"),
                    ("alb.ingress.kubernetes.io/actions.x", "{}"),
                ],
                OnObject::Ingress,
                p
            )
            .is_empty());
        }
    }

    #[test]
    fn unknown_names_get_the_closest_known_name() {
        let f = check(
            &ann(&[("nginx.ingress.kubernetes.io/rewrite-targt", "/")]),
            OnObject::Ingress,
            ProviderKind::Proxy,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].reason, Reason::AnnotationUnknown);
        assert!(
            f[0].message
                .contains("did you mean nginx.ingress.kubernetes.io/rewrite-target?"),
            "{}",
            f[0].message
        );
        // Other prefixes are not ours to judge.
        assert!(check(
            &ann(&[
                ("example.com/whatever", "x"),
                ("kubernetes.io/ingress.class", "a")
            ]),
            OnObject::Ingress,
            ProviderKind::Aws
        )
        .is_empty());
    }

    #[test]
    fn families_match_their_members_only() {
        assert!(lookup("alb.ingress.kubernetes.io/actions.ssl-redirect").is_some());
        assert!(lookup("alb.ingress.kubernetes.io/listener-attributes.HTTPS-443").is_some());
        assert!(lookup("alb.ingress.kubernetes.io/actionsx").is_none());
        assert!(lookup("alb.ingress.kubernetes.io/actions.").is_none());
    }

    #[test]
    fn ingress_only_annotations_on_a_service_are_warned() {
        let f = one(
            &[("alb.ingress.kubernetes.io/scheme", "internal")],
            OnObject::Service,
            ProviderKind::Aws,
        );
        assert_eq!(f, [(Severity::Warning, Reason::AnnotationIgnored)]);
        let f = one(
            &[("alb.ingress.kubernetes.io/auth-type", "cognito")],
            OnObject::Service,
            ProviderKind::Aws,
        );
        assert_eq!(f, [(Severity::Error, Reason::AnnotationUnsupported)]);
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}

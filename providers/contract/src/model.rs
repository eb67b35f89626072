//! The provider-neutral desired-state model.
//!
//! Load balancers → listeners → ordered rules → actions → weighted target groups → targets.
//! Every collection is kept in a deterministic order so that two builds of the same cluster
//! state serialize byte-for-byte identically (providers diff on it; snapshots test it).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Everything Tollgate wants to exist, for every load balancer it manages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    /// One per Ingress group, sorted by [`LoadBalancer::id`].
    pub load_balancers: Vec<LoadBalancer>,
}

impl DesiredState {
    /// The load balancer with this id, if any.
    pub fn load_balancer(&self, id: &str) -> Option<&LoadBalancer> {
        self.load_balancers.iter().find(|lb| lb.id == id)
    }
}

/// A reference to a namespaced Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One load balancer: an AWS ALB, or one routing domain of the in-cluster proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Stable identity: `group/<name>` for an explicit Ingress group,
    /// `ingress/<namespace>/<name>` for an Ingress that is its own group.
    pub id: String,
    /// The Ingresses built into this load balancer, in precedence order (`group.order`,
    /// then oldest, then namespace/name): the first wins any conflict. Shared: the builder
    /// hands the same list on while the members are the same (issue 16).
    pub ingresses: Arc<[ObjectRef]>,
    /// `internal` or `internet-facing` (AWS); ignored by the proxy.
    pub scheme: Scheme,
    /// Subnets, security groups, inbound CIDRs and IP address type (AWS); ignored by the
    /// proxy.
    #[serde(default, skip_serializing_if = "Network::is_default")]
    pub network: Network,
    /// The name the load balancer is created with (AWS Load Balancer Controller
    /// `load-balancer-name`); `None`: one derived from the cluster and the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// WAF and Shield in front of the load balancer (AWS); ignored by the proxy, which
    /// refuses Ingresses asking for them.
    #[serde(default, skip_serializing_if = "Protection::is_default")]
    pub protection: Protection,
    /// Provider-specific settings collected from annotations, already validated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Tags for the cloud resources (AWS `tags` annotation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Sorted by port.
    pub listeners: Vec<Listener>,
    /// Every target group any rule or default action of this load balancer forwards to,
    /// sorted by id.
    pub target_groups: Vec<TargetGroup>,
    /// Hosts whose TLS is passed through, not terminated (proxy only), sorted by host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_passthrough: Vec<TlsPassthrough>,
}

/// ingress-nginx `ssl-passthrough`: a TLS connection whose server name is `host` is not
/// terminated but passed, bytes as they come, to a target of `target_group` (the group of
/// the host's `/` path, as ingress-nginx picks it). ALB cannot do this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsPassthrough {
    /// Lower-case, exact (ingress-nginx matches the server name exactly; no wildcards).
    pub host: String,
    pub target_group: String,
}

impl LoadBalancer {
    /// The target group with this id, if any.
    pub fn target_group(&self, id: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|tg| tg.id == id)
    }

    /// The listener on this port, if any.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }
}

/// The AWS Load Balancer Controller's `wafv2-acl-*` and `shield-advanced-protection`:
/// each `None` when no member asked, and then left as it is in AWS (that controller's
/// reading: an absent annotation leaves an association made elsewhere alone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_acl: Option<WebAcl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shield_advanced: Option<bool>,
}

impl Protection {
    pub fn is_default(&self) -> bool {
        *self == Protection::default()
    }
}

/// Which WAFv2 web ACL is associated with the load balancer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "by", content = "value")]
pub enum WebAcl {
    /// `none`: no web ACL; one associated is removed.
    None,
    Arn(String),
    /// Looked up among the region's web ACLs (scope `REGIONAL`).
    Name(String),
}

/// Where a cloud load balancer lives and who may reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Subnet IDs or `Name` tags; empty: discovered by the cluster's subnet tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Security group IDs or names; empty: a security group Tollgate manages, open on the
    /// listener ports to `inbound_cidrs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Who the managed security group lets in; empty: everyone (`0.0.0.0/0`, and `::/0` when
    /// dual-stack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_cidrs: Vec<String>,
    /// Managed prefix lists (`pl-...`) the managed security group admits; with no CIDRs
    /// given, only these (AWS Load Balancer Controller `security-group-prefix-lists`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_prefix_lists: Vec<String>,
    /// Whether the targets' security groups admit the load balancer when its security
    /// groups are given (`manage-backend-security-group-rules`); `None`: the controller's
    /// default. With a managed security group they always do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_backend_security_group_rules: Option<bool>,
    #[serde(default)]
    pub ip_address_type: IpAddressType,
}

impl Network {
    /// Whether nothing was asked for (everything discovered or managed).
    pub fn is_default(&self) -> bool {
        *self == Network::default()
    }
}

/// IPv4 only, IPv4 and IPv6, or IPv6 with private IPv4 only (internet-facing ALBs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpAddressType {
    #[default]
    Ipv4,
    Dualstack,
    #[serde(rename = "dualstack-without-public-ipv4")]
    DualstackWithoutPublicIpv4,
}

impl IpAddressType {
    /// The ELBv2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            IpAddressType::Ipv4 => "ipv4",
            IpAddressType::Dualstack => "dualstack",
            IpAddressType::DualstackWithoutPublicIpv4 => "dualstack-without-public-ipv4",
        }
    }

    /// Whether clients reach it over IPv6.
    pub fn has_ipv6(self) -> bool {
        self != IpAddressType::Ipv4
    }
}

/// Whether a cloud load balancer is reachable from the internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    #[default]
    Internal,
    InternetFacing,
}

impl Scheme {
    /// The ELBv2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Internal => "internal",
            Scheme::InternetFacing => "internet-facing",
        }
    }
}

/// Front-end protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    Http,
    Https,
}

impl fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerProtocol::Http => "HTTP",
            ListenerProtocol::Https => "HTTPS",
        })
    }
}

/// A port the load balancer accepts connections on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// Certificates offered on an HTTPS listener, selected by SNI. Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_policy: Option<String>,
    /// Evaluated in order; the first rule whose conditions all hold decides.
    pub rules: crate::RuleList,
    /// What answers when no rule matches.
    pub default_action: Action,
    /// Authentication before the default action (its Ingress's `auth-type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_authenticate: Option<Arc<IdpAuthentication>>,
    /// Listener attributes (AWS `listener-attributes.<PROTOCOL>-<port>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Client certificates on an HTTPS listener (AWS `mutual-authentication`); `None`:
    /// left as the listener has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_authentication: Option<MutualAuthentication>,
}

/// ALB's mutual TLS on a listener, as the AWS Load Balancer Controller's
/// `mutual-authentication` JSON gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MutualAuthentication {
    /// `off`, `passthrough` (the certificate is passed to the targets, unverified) or
    /// `verify` (checked against `trust_store`).
    pub mode: String,
    /// A trust store ARN, or a name to look up; `verify` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_store: Option<String>,
    #[serde(default)]
    pub ignore_client_certificate_expiry: bool,
    /// `on` or `off`; `verify` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_trust_store_ca_names: Option<String>,
}

/// A certificate for an HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "source")]
pub enum Certificate {
    /// A `kubernetes.io/tls` Secret named in an Ingress `tls` section.
    Secret {
        secret: ObjectRef,
        /// The hosts the Ingress lists for this Secret (may be empty: then the
        /// certificate's own names decide).
        hosts: Vec<String>,
        /// The PEM material, checked to be well-formed by the builder.
        material: TlsMaterial,
    },
    /// An ACM (or IAM) certificate ARN given by annotation.
    Arn { arn: String },
    /// A certificate the provider looks up for this TLS host (ACM discovery, as the AWS Load
    /// Balancer Controller does when no `certificate-arn` is given). The proxy has no
    /// certificate store to search and serves such hosts with its default certificate.
    Discover { host: String },
}

/// PEM-encoded certificate chain and private key. Serializes as a fingerprint only, so a
/// printed plan never contains key material but still changes when the Secret rotates.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TlsMaterial {
    /// Shared: every build hands the same Secret's material on, and 3,000 certificates
    /// copied per build were megabytes of churn (issue 16).
    pub cert_chain_pem: Arc<str>,
    pub private_key_pem: Arc<str>,
    /// Hex digest of chain and key, computed by whoever builds the value.
    pub fingerprint: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Serialize for TlsMaterial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Printed<'a> {
            fingerprint: &'a str,
        }
        Printed {
            fingerprint: &self.fingerprint,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TlsMaterial {
    /// A deserialized model carries only the fingerprint; key material never round-trips.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Printed {
            fingerprint: String,
        }
        let p = Printed::deserialize(d)?;
        Ok(TlsMaterial {
            cert_chain_pem: Arc::from(""),
            private_key_pem: Arc::from(""),
            fingerprint: p.fingerprint,
        })
    }
}

/// A routing rule: all conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The Ingress this rule came from (the winner, when several claimed the same route).
    pub ingress: ObjectRef,
    pub conditions: Conditions,
    /// Authenticate with an identity provider before the action (AWS Load Balancer
    /// Controller `auth-type: oidc|cognito`); only on HTTPS listeners. Shared: every rule of
    /// the Ingress carries the same settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<Arc<IdpAuthentication>>,
    pub action: Action,
}

/// ALB's `authenticate-oidc` / `authenticate-cognito` action, as the AWS Load Balancer
/// Controller builds it from `auth-*` annotations (docs/guide/ingress/annotations.md,
/// "Authentication").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdpAuthentication {
    pub idp: IdentityProvider,
    pub on_unauthenticated_request: UnauthenticatedRequest,
    /// Space-separated scopes (`openid` unless `auth-scope` says otherwise).
    pub scope: String,
    pub session_cookie: String,
    pub session_timeout_seconds: u64,
    /// `authenticationRequestExtraParams` of the provider's JSON.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
}

/// Who authenticates the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum IdentityProvider {
    /// An OpenID Connect provider; the client ID and secret come from a Secret.
    Oidc {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        user_info_endpoint: String,
        client_id: String,
        client_secret: ClientSecret,
    },
    Cognito {
        user_pool_arn: String,
        user_pool_client_id: String,
        user_pool_domain: String,
    },
}

/// What ALB does with a request that carries no valid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnauthenticatedRequest {
    /// Sends the client to the identity provider.
    Authenticate,
    /// Lets it through to the target without claims.
    Allow,
    /// Answers 401.
    Deny,
}

impl UnauthenticatedRequest {
    /// The ELBv2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnauthenticatedRequest::Authenticate => "authenticate",
            UnauthenticatedRequest::Allow => "allow",
            UnauthenticatedRequest::Deny => "deny",
        }
    }
}

/// An OIDC client secret. Printed and compared by its fingerprint only, so a plan or a
/// model dump holds no secret, and a rotated Secret still reads as a change (AWS never
/// returns the secret; the AWS provider keeps the fingerprint in a tag on the rule).
#[derive(Clone)]
pub struct ClientSecret {
    /// Hex digest of the value: what is compared.
    pub fingerprint: String,
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
    value: Arc<str>,
}

impl ClientSecret {
    pub fn new(secret: String, value: &str, fingerprint: String) -> Self {
        ClientSecret {
            fingerprint,
            secret,
            value: Arc::from(value),
        }
    }

    /// The secret itself: only for the call that hands it to AWS.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl PartialEq for ClientSecret {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ClientSecret {}

impl PartialOrd for ClientSecret {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClientSecret {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fingerprint.cmp(&other.fingerprint)
    }
}

impl std::hash::Hash for ClientSecret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecret")
            .field("secret", &self.secret)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrintedClientSecret {
    secret: String,
    fingerprint: String,
}

impl Serialize for ClientSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PrintedClientSecret {
            secret: self.secret.clone(),
            fingerprint: self.fingerprint.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClientSecret {
    /// A deserialized model has an empty secret; secrets never round-trip.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = PrintedClientSecret::deserialize(d)?;
        Ok(ClientSecret::new(p.secret, "", p.fingerprint))
    }
}

/// The conditions of a rule. Absent means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Each entry must hold; within an entry any value may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    /// Upper-case HTTP methods; any of them matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// CIDRs; the client address must fall in one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    /// Regular expressions one of which must be found in the request's host (lower-case,
    /// without port): ALB `host-header` `RegexValues`, only on rules without `host`. The
    /// reference evaluation in `matching` reports them as not matching, as regex paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_regexes: Vec<String>,
}

/// A host condition. Hosts are lower-case DNS names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    /// The whole host, e.g. `foo.bar.com`.
    Exact(String),
    /// `*.bar.com`: stored as the suffix `bar.com`; matches exactly one more label.
    Wildcard(String),
}

impl HostMatch {
    /// Whether a request host (already lower-case, port stripped) satisfies this condition.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => match host.split_once('.') {
                Some((first, rest)) => !first.is_empty() && rest == suffix,
                None => false,
            },
        }
    }
}

impl Serialize for HostMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.strip_prefix("*.") {
            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
            None => HostMatch::Exact(s),
        })
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// How a path condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix split by `/`: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not
    /// `/foobar`. A trailing `/` in the pattern is ignored.
    Prefix,
    /// An anchored-at-start regular expression (ingress-nginx `use-regex`), matched
    /// case-insensitively as nginx does; honoured by the proxy only.
    Regex,
    /// An ALB path pattern (an `ImplementationSpecific` path with `*` or `?`, as the AWS
    /// Load Balancer Controller's documentation writes `path: /*`): the whole path,
    /// case-sensitive, `*` any run of characters, `?` exactly one.
    Glob,
    /// An ALB regular expression (`use-regex-path-match`, `regexValues`), held without the
    /// leading `/` the AWS Load Balancer Controller strips: searched in the path,
    /// case-sensitive. The proxy evaluates it with Rust's regex; a pattern that does not
    /// compile there is refused when the model is built.
    AlbRegex,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    pub kind: PathKind,
    pub path: String,
}

impl PathMatch {
    /// Whether a request path (without query string) satisfies this condition.
    ///
    /// `Regex` and `AlbRegex` cannot be evaluated without a regex engine and is reported as not matching
    /// here; data paths compile it themselves.
    pub fn matches(&self, request_path: &str) -> bool {
        match self.kind {
            PathKind::Exact => self.path == request_path,
            PathKind::Prefix => prefix_matches(&self.path, request_path),
            PathKind::Regex | PathKind::AlbRegex => false,
            PathKind::Glob => crate::matching::path_glob_matches(&self.path, request_path),
        }
    }
}

/// Element-wise prefix match, as the Ingress specification defines `Prefix`.
pub fn prefix_matches(pattern: &str, request_path: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    if pattern.is_empty() {
        return true; // `/` matches every path
    }
    match request_path.strip_prefix(pattern) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A header condition: the header must be present with one of the values
/// (`*` and `?` wildcards allowed, case-insensitive, as ALB does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    pub name: String,
    pub values: Vec<String>,
    /// The values are regular expressions matched anywhere in the header's value, case
    /// sensitive (ingress-nginx's canary header rules, which compare exactly or with
    /// `ngx.re.match`). Only the proxy evaluates them: ALB has no such condition, and the
    /// reference evaluation in `matching` reports them as not matching, as it does regex paths.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
}

/// A query-string condition: one of the key/value pairs must be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryMatch {
    pub pairs: Vec<QueryPair>,
}

/// A query key (optional: any key) and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub value: String,
}

/// What a rule (or a listener's default) does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

/// Forward to one or more weighted target groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    pub target_groups: Vec<WeightedTargetGroup>,
    /// Seconds of target-group stickiness; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness_seconds: Option<u32>,
    /// ingress-nginx `rewrite-target`; honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_target: Option<String>,
    /// ingress-nginx `proxy-body-size`: larger request bodies get 413; honoured by the proxy
    /// only (ALB has no such limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// How the request is sent to the target (ingress-nginx annotations); honoured by the
    /// proxy only.
    #[serde(default, skip_serializing_if = "UpstreamOptions::is_default")]
    pub upstream: UpstreamOptions,
    /// ingress-nginx `enable-cors` and its settings; honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Arc<CorsPolicy>>,
    /// ingress-nginx `auth-type: basic`: requests without a listed user's password get 401;
    /// honoured by the proxy only. Shared: every rule of the Ingress carries the same list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// ingress-nginx `auth-url` and its settings: each request is first asked of an
    /// authentication service; honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<Arc<ExternalAuth>>,
    /// ingress-nginx `limit-rps`, `limit-rpm`, `limit-connections`; honoured by the proxy
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Arc<RateLimit>>,
    /// ingress-nginx `affinity: cookie` or `upstream-hash-by`: which target of the group a
    /// request goes to; honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Arc<Affinity>>,
    /// `Strict-Transport-Security` set on the responses (ingress-nginx's default on TLS
    /// hosts, with its defaults switched on); honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// ingress-nginx `auth-tls-*`: client certificates checked against a CA; honoured by
    /// the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<Arc<ClientCertAuth>>,
    /// ingress-nginx `default-backend` with `custom-http-errors`; honoured by the proxy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_backend: Option<Arc<ErrorBackend>>,
}

/// ingress-nginx's per-Ingress default backend: it serves the route when its Service has no
/// ready endpoint, and answers the responses whose status is in `codes` (told which by
/// `X-Code` and the other headers ingress-nginx's custom error pages receive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBackend {
    pub target_group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// The Ingress (for `X-Namespace`, `X-Ingress-Name`).
    pub ingress: ObjectRef,
    /// The route's own Service and port (`X-Service-Name`, `X-Service-Port`).
    pub service: String,
    pub service_port: String,
}

/// ingress-nginx's client-certificate authentication. Serializes without the CA's PEM (a
/// fingerprint stands for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertAuth {
    /// The Secret's `ca.crt`: the CAs a client certificate must chain to.
    #[serde(skip)]
    pub ca_pem: Arc<str>,
    /// Hex digest of `ca_pem`.
    pub ca_fingerprint: String,
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
    /// `on`, `optional`, `optional_no_ca` or `off`.
    pub verify: String,
    /// `auth-tls-verify-depth`: the longest chain accepted (1: signed by a listed CA).
    pub depth: u32,
    /// `auth-tls-pass-certificate-to-upstream`: the certificate, URL-escaped PEM, in
    /// `ssl-client-cert`.
    pub pass_certificate: bool,
    /// `auth-tls-error-page`: where a refused client is redirected instead of a 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_page: Option<String>,
    /// `auth-tls-match-cn`: a regular expression the subject DN must match (else 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_cn: Option<String>,
}

/// How requests stick to targets, as ingress-nginx's sticky and chash balancers do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Affinity {
    /// `affinity: cookie`: a cookie names the target; a request without a usable one gets a
    /// target as usual and the cookie.
    Cookie(CookieAffinity),
    /// `upstream-hash-by`: the target is a consistent hash of this nginx-variable template
    /// (`$request_uri`, `$remote_addr`, `$http_<name>`, `$cookie_<name>`, `$arg_<name>`...).
    Hash { key: String },
}

/// ingress-nginx's `session-cookie-*` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CookieAffinity {
    pub name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Secure` even on plain HTTP (on HTTPS it is always set, as ingress-nginx does).
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
    /// Leave `SameSite=None` out for browsers known to mishandle it.
    pub conditional_same_site_none: bool,
    /// A sticky target that is failing is replaced (with a new cookie) instead of kept.
    pub change_on_failure: bool,
}

/// ingress-nginx's rate limits: per client address, per replica, shared by every route of
/// the Ingress named by `zone`; a request over a limit gets 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// `namespace/name` of the Ingress whose routes share the limits.
    pub zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// `limit-burst-multiplier`: the burst is the rate times this (default 5).
    pub burst_multiplier: u32,
    /// Requests in progress per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// `limit-allowlist`: CIDRs whose clients are never limited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
}

/// ingress-nginx's external authentication (nginx `auth_request`): a request goes on only if
/// the service at `url` answers 2xx; 401 becomes a redirect to `signin` (or a 401), 403 a
/// 403, anything else a 500. URLs may hold the nginx variables `$host`, `$http_host`,
/// `$scheme`, `$request_uri`, `$escaped_request_uri` and `$uri`, expanded per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuth {
    /// `http://` or `https://` (certificate not verified, as nginx's default).
    pub url: String,
    /// `auth-method`: the subrequest's method (else `GET`, as nginx's subrequests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `auth-signin`: where a 401 sends the browser, with the original URL in
    /// `signin_redirect_param`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<String>,
    pub signin_redirect_param: String,
    /// `auth-response-headers`: copied from the service's 2xx answer onto the request sent
    /// to the target (a client's own value of one never reaches the target).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// `auth-request-redirect`: sent as `X-Auth-Request-Redirect` (else the request URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`: the service's `Set-Cookie` goes on every response, not
    /// only on successful and redirect ones.
    #[serde(default)]
    pub always_set_cookie: bool,
}

/// ingress-nginx's basic authentication: the users of an htpasswd file (`auth-file`) or map
/// (`auth-map`) read from a Secret. Serializes without the password hashes, so a printed plan
/// holds none, but with a fingerprint that changes when the Secret does.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// Sent in `WWW-Authenticate: Basic realm="..."`.
    pub realm: String,
    /// User name and password hash (crypt(3), `$apr1$`, `{SHA}`, `{SSHA}` or `{PLAIN}`), in
    /// the Secret's order; the first entry of a user wins, as in nginx's file scan.
    pub users: Vec<(String, String)>,
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
    /// Hex digest of the users and hashes.
    pub fingerprint: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secret", &self.secret)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrintedBasicAuth {
    realm: String,
    users: usize,
    secret: String,
    fingerprint: String,
}

impl Serialize for BasicAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PrintedBasicAuth {
            realm: self.realm.clone(),
            users: self.users.len(),
            secret: self.secret.clone(),
            fingerprint: self.fingerprint.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for BasicAuth {
    /// A deserialized model has no users (so it lets nobody in); hashes never round-trip.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = PrintedBasicAuth::deserialize(d)?;
        Ok(BasicAuth {
            realm: p.realm,
            users: Vec::new(),
            secret: p.secret,
            fingerprint: p.fingerprint,
        })
    }
}

/// ingress-nginx's CORS answer: preflights (`OPTIONS` from an allowed origin) answered 204
/// by the proxy, other responses to an allowed origin given the `Access-Control-*` headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Allowed origins (`scheme://host[:port]`, `*.` for any subdomain); empty: any origin,
    /// answered `*`.
    pub allow_origins: Vec<String>,
    pub allow_methods: String,
    pub allow_headers: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    pub allow_credentials: bool,
    pub max_age_seconds: u32,
}

/// ingress-nginx's per-Ingress settings of the request sent upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamOptions {
    /// `upstream-vhost`: the `Host` header sent to the target instead of the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `x-forwarded-prefix`: sent as `X-Forwarded-Prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_prefix: Option<String>,
    /// `proxy-connect-timeout`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_seconds: Option<u32>,
    /// `proxy-read-timeout`, seconds: how long the target may take to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout_seconds: Option<u32>,
    /// `proxy-send-timeout`, seconds: how long the target may stop taking the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_timeout_seconds: Option<u32>,
    /// `proxy-next-upstream` and its `-tries`/`-timeout`: when a request goes on to another
    /// target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream: Option<NextUpstream>,
}

/// ingress-nginx's `proxy-next-upstream`: the conditions (`error`, `timeout`, `http_500`...,
/// `non_idempotent`, `off`), at most `tries` targets (0: every one) within `timeout_seconds`
/// (0: no limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NextUpstream {
    pub conditions: Vec<String>,
    pub tries: u32,
    pub timeout_seconds: u32,
}

impl UpstreamOptions {
    pub fn is_default(&self) -> bool {
        *self == UpstreamOptions::default()
    }
}

/// A target group and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTargetGroup {
    pub target_group: String,
    pub weight: u32,
}

/// An HTTP redirect. Absent fields keep the request's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// 301, 302, 307 or 308.
    pub status_code: u16,
    /// Drop one `/` ending the request's path and query (ingress-nginx's HTTPS redirect
    /// without `preserve-trailing-slash`); honoured by the proxy only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_trailing_slash: bool,
}

/// A response the load balancer produces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedResponse {
    pub status_code: u16,
    pub content_type: String,
    pub body: String,
}

impl FixedResponse {
    /// The controller's own default backend: 404 when no rule matches.
    pub fn not_found() -> Self {
        FixedResponse {
            status_code: 404,
            content_type: "text/plain; charset=utf-8".into(),
            body: "404 page not found\n".into(),
        }
    }

    /// What a client outside an Ingress's allowed source ranges gets.
    pub fn forbidden() -> Self {
        FixedResponse {
            status_code: 403,
            content_type: "text/plain; charset=utf-8".into(),
            body: "403 forbidden\n".into(),
        }
    }

    /// What a route to a backend that cannot be resolved answers.
    pub fn service_unavailable(reason: &str) -> Self {
        FixedResponse {
            status_code: 503,
            content_type: "text/plain; charset=utf-8".into(),
            body: format!("503 service unavailable: {reason}\n"),
        }
    }
}

/// Protocol spoken to the targets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
}

/// HTTP version spoken to the targets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProtocolVersion {
    #[default]
    Http1,
    Http2,
    Grpc,
}

/// Whether targets are pod IPs or node instances on a NodePort.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    #[default]
    Ip,
    Instance,
}

/// Active health check settings (the AWS Load Balancer Controller's defaults).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub path: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub protocol: BackendProtocol,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// e.g. `200`, `200-299`, `200,302`.
    pub success_codes: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".into(),
            port: "traffic-port".into(),
            protocol: BackendProtocol::Http,
            interval_seconds: 15,
            timeout_seconds: 5,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            success_codes: "200".into(),
        }
    }
}

/// A forward's target group named by `targetGroupName` (a target group made outside
/// Kubernetes): this prefix and the name; the AWS provider looks the ARN up. A forward's
/// target group starting with `arn:` is one named by its ARN. Neither is in
/// [`LoadBalancer::target_groups`].
pub const TARGET_GROUP_NAME: &str = "aws-target-group-name:";

/// A set of targets behind one Service port, with the settings that make it distinct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroup {
    /// Stable and unique within its load balancer: `<namespace>/<service>:<port>`, with a
    /// suffix when the same port is used with different settings.
    pub id: String,
    pub service: ObjectRef,
    /// The Service port (`spec.ports[].port`).
    pub service_port: u16,
    pub protocol: BackendProtocol,
    pub protocol_version: ProtocolVersion,
    pub target_type: TargetType,
    pub health_check: HealthCheck,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// How the proxy's TLS to these targets is checked and what it presents (ingress-nginx
    /// `proxy-ssl-*`; proxy only, HTTPS groups only). None: encrypted, not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<Arc<UpstreamTls>>,
    /// Sorted by address then port.
    pub targets: Vec<Target>,
}

/// ingress-nginx `proxy-ssl-*` (internal/ingress/annotations/proxyssl): the CAs a target's
/// certificate is checked against, the name it must carry, and the certificate the proxy
/// presents, from the `proxy-ssl-secret` Secret. Printed as fingerprints only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// `namespace/name` of the Secret, for messages.
    pub secret: String,
    /// The Secret's `ca.crt`.
    #[serde(skip)]
    pub ca_pem: Arc<str>,
    /// Hex digest of `ca_pem`.
    pub ca_fingerprint: String,
    /// The Secret's `tls.crt` and `tls.key`, presented when a target asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<TlsMaterial>,
    /// `proxy-ssl-verify: on`: a target whose certificate does not chain to the CAs (or
    /// does not carry `name`) is not used.
    pub verify: bool,
    /// `proxy-ssl-verify-depth`: intermediate certificates allowed below the CA.
    pub verify_depth: u32,
    /// `proxy-ssl-name`: the name the certificate is checked for, and sent as SNI when
    /// `send_server_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `proxy-ssl-server-name: on`.
    pub send_server_name: bool,
    /// `proxy-ssl-protocols`: `TLSv1.2` and/or `TLSv1.3`.
    pub protocols: Vec<String>,
}

impl UpstreamTls {
    /// What makes two connections to a target interchangeable: the same CAs, client
    /// certificate, name and checks. Groups alike in this share an id suffix (builder) and a
    /// connection pool (proxy).
    pub fn profile(&self) -> String {
        format!(
            "{}|{}|{:?}|{}|{}|{}|{:?}",
            self.ca_fingerprint,
            self.client_certificate
                .as_ref()
                .map_or("", |c| c.fingerprint.as_str()),
            self.name,
            self.verify,
            self.verify_depth,
            self.send_server_name,
            self.protocols
        )
    }
}

/// One endpoint of a target group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The pod IP (ip mode) or the node's instance ID (instance mode).
    pub address: TargetAddress,
    /// The pod's container port, or the Service's NodePort.
    pub port: u16,
    /// The node hosting the endpoint, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The EC2 instance of that node (its `providerID`), when known: the AWS provider finds
    /// a pod's network interface, and so its security group, among the instance's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub state: TargetState,
}

/// Where to reach a target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetAddress {
    Ip(IpAddr),
    Instance(String),
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddress::Ip(ip) => write!(f, "{ip}"),
            TargetAddress::Instance(id) => f.write_str(id),
        }
    }
}

/// EndpointSlice conditions of a target, folded into one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetState {
    /// Ready: receives new requests.
    Ready,
    /// Its containers are ready and only Tollgate's readiness gate holds the pod back: the
    /// ALB registers it (its health check is what opens the gate, as with the AWS Load
    /// Balancer Controller's gate); the proxy sends it nothing.
    GatePending,
    /// Not ready and not terminating: registered nowhere.
    NotReady,
    /// Terminating: gets no new requests; in-flight ones may finish.
    Terminating,
}

impl TargetState {
    /// Whether new requests may be sent to a target in this state.
    pub fn accepts_new_requests(self) -> bool {
        matches!(self, TargetState::Ready)
    }

    /// Whether a cloud load balancer registers it (a gate-pending pod too).
    pub fn registered(self) -> bool {
        matches!(self, TargetState::Ready | TargetState::GatePending)
    }
}

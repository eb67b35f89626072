//! The validating admission webhook for Ingress create and update: `kubectl apply` of an
//! Ingress Tollgate would reject is refused with the diagnostics' text, and what Tollgate
//! only warns about comes back as AdmissionReview `warnings`, which kubectl prints — as the
//! AWS Load Balancer Controller's and ingress-nginx's webhooks do.
//!
//! The verdict ([`review`]) is the pure builder run on the current snapshot with the
//! incoming Ingress in place: its own problems and its conflicts with the other Ingresses of
//! the class are exactly what the controller would report after admission. `deploy/`
//! registers it with `failurePolicy: Ignore` and a short timeout, so Tollgate being down
//! never blocks Ingress writes.
//!
//! TLS: a certificate and key from files (a mounted Secret, or cert-manager's), or a CA and
//! serving certificate generated at start, whose CA is patched into the
//! ValidatingWebhookConfiguration's `caBundle`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_contract::{ObjectKind, Reason, Severity};

use crate::model_builder::class_selection::ClassSelector;
use crate::sources::SourceState;
use crate::{build, BuildOptions, ClusterSnapshot};

/// The path the webhook answers on.
pub const PATH: &str = "/validate-ingress";

/// How the webhook is served.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub tls: WebhookTls,
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum WebhookTls {
    /// PEM files (a mounted Secret).
    Files { cert: PathBuf, key: PathBuf },
    /// Generated at start for these DNS names or IP addresses; the CA is patched into the
    /// `caBundle` of this ValidatingWebhookConfiguration, if named. With `secret`
    /// (namespace, name), the first replica stores what it generated there and the others
    /// serve the same: one CA in the `caBundle` must verify every replica.
    Generate {
        names: Vec<String>,
        configuration: Option<String>,
        secret: Option<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook certificate: {0}")]
    Certificate(String),
    #[error("cannot listen on {addr} for the webhook: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot patch the caBundle of ValidatingWebhookConfiguration {name}: {source}")]
    Patch { name: String, source: kube::Error },
    #[error("cannot read or store the webhook certificate in Secret {name}: {source}")]
    Secret { name: String, source: kube::Error },
}

/// The verdict on one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Why it is refused (empty when allowed).
    pub message: String,
    pub warnings: Vec<String>,
}

/// Judges `ingress` as it would be after the write, against the rest of `snapshot`. `now`
/// stands in for a missing creationTimestamp (a create), so a new Ingress is the newest in
/// precedence, as it will be.
pub fn review(
    snapshot: &ClusterSnapshot,
    opts: &BuildOptions,
    mut ingress: Ingress,
    now: Time,
) -> Verdict {
    let allowed = |warnings| Verdict {
        allowed: true,
        message: String::new(),
        warnings,
    };
    let classes = ClassSelector::new(&snapshot.ingress_classes, opts);
    if !classes.claims(&ingress, &mut Vec::new()) {
        return allowed(Vec::new());
    }
    if ingress.metadata.creation_timestamp.is_none() {
        ingress.metadata.creation_timestamp = Some(now);
    }
    let ns = ingress
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = ingress.metadata.name.clone().unwrap_or_default();
    let mut snap = snapshot.clone();
    let incoming = Arc::new(ingress);
    match snap.ingresses.iter_mut().find(|i| {
        i.metadata.namespace.as_deref().unwrap_or("default") == ns
            && i.metadata.name.as_deref() == Some(name.as_str())
    }) {
        Some(slot) => *slot = incoming,
        None => snap.ingresses.push(incoming),
    }
    let out = build(&snap, opts);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    // A conflict the write creates for another Ingress (this one wins a host and path the
    // other served, by precedence or by a creation-time tie) is refused too: the other
    // Ingress would silently lose a route. Conflicts that existed before are not this
    // write's doing.
    let before: std::collections::BTreeSet<_> = build(snapshot, opts)
        .diagnostics
        .into_iter()
        .filter(|d| is_conflict(d.reason))
        .collect();
    for d in out.diagnostics.iter().filter(|d| {
        is_conflict(d.reason)
            && d.subject.kind == ObjectKind::Ingress
            && !(d.subject.namespace == ns && d.subject.name == name)
            && !before.contains(*d)
    }) {
        errors.push(format!(
            "{:?}: Ingress {}/{} would lose what it serves: {}",
            d.reason, d.subject.namespace, d.subject.name, d.message
        ));
    }
    for d in out.diagnostics.iter().filter(|d| {
        d.subject.kind == ObjectKind::Ingress && d.subject.namespace == ns && d.subject.name == name
    }) {
        // Losing a host/path to another Ingress is a conflict the write would create: refused,
        // as ingress-nginx's webhook refuses a duplicate host and path.
        // A Secret it names may be created after it (and the snapshot holds only the
        // Secrets existing Ingresses name): not refused, but kubectl shows the warning.
        let missing_secret = d.reason == tollgate_contract::Reason::SecretNotFound;
        if (d.severity == Severity::Error && !missing_secret) || is_conflict(d.reason) {
            errors.push(format!("{:?}: {}", d.reason, d.message));
        } else if d.severity == Severity::Warning || missing_secret {
            warnings.push(format!("{:?}: {}", d.reason, d.message));
        }
    }
    if errors.is_empty() {
        allowed(warnings)
    } else {
        Verdict {
            allowed: false,
            message: format!(
                "Tollgate refuses Ingress {ns}/{name}: {}",
                errors.join("; ")
            ),
            warnings,
        }
    }
}

fn is_conflict(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::RouteConflict | Reason::DefaultBackendConflict
    )
}

/// The AdmissionReview answer for one request body.
fn answer(body: &[u8], state: &SourceState, opts: &BuildOptions) -> serde_json::Value {
    let review_in: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return failure("", &format!("the request is not an AdmissionReview: {e}")),
    };
    let request = &review_in["request"];
    let uid = request["uid"].as_str().unwrap_or_default();
    let ingress: Ingress = match serde_json::from_value(request["object"].clone()) {
        Ok(i) => i,
        Err(e) => return failure(uid, &format!("request.object is not an Ingress: {e}")),
    };
    let mut ingress = ingress;
    if ingress.metadata.namespace.is_none() {
        ingress.metadata.namespace = request["namespace"].as_str().map(str::to_string);
    }
    if ingress.metadata.name.is_none() {
        ingress.metadata.name = request["name"].as_str().map(str::to_string);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let v = review(&state.snapshot, opts, ingress, now);
    let mut response = serde_json::json!({"uid": uid, "allowed": v.allowed});
    if !v.allowed {
        response["status"] =
            serde_json::json!({"code": 422, "reason": "Invalid", "message": v.message});
    }
    if !v.warnings.is_empty() {
        response["warnings"] = serde_json::json!(v.warnings);
    }
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// A malformed request is allowed (the webhook must never be what blocks a write), with a
/// warning saying why it was not checked.
fn failure(uid: &str, why: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true, "warnings": [format!("Tollgate did not check this Ingress: {why}")]},
    })
}

/// Aborts the server when dropped, so the webhook lives exactly as long as its owner.
pub struct WebhookServer {
    task: tokio::task::JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving the webhook.
pub async fn start(
    opts: &WebhookOptions,
    client: kube::Client,
    states: watch::Receiver<Arc<SourceState>>,
    build_opts: BuildOptions,
) -> Result<WebhookServer, WebhookError> {
    let (cert_chain, key) = match &opts.tls {
        WebhookTls::Files { cert, key } => read_pem(cert, key)?,
        WebhookTls::Generate {
            names,
            configuration,
            secret,
        } => {
            let material = match secret {
                Some((ns, name)) => shared_material(&client, ns, name, names).await?,
                None => generate(names)?,
            };
            if let Some(name) = configuration {
                patch_ca_bundle(&client, name, &material.ca).await?;
            }
            material.parse()?
        }
    };
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WebhookError::Certificate(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(cert_chain, key)
    .map_err(|e| WebhookError::Certificate(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WebhookError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(opts.listen);
    let build_opts = Arc::new(build_opts);
    tracing::info!(%addr, "admission webhook listening");
    let task = tokio::spawn(async move {
        // Connections belong to this task: when it is aborted, the API server's keep-alive
        // connections close with it (a stopped Tollgate must stop answering).
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let acceptor = acceptor.clone();
            let states = states.clone();
            let build_opts = build_opts.clone();
            connections.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let states = states.clone();
                    let build_opts = build_opts.clone();
                    async move { Ok::<_, Infallible>(handle(req, &states, &build_opts).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(WebhookServer { task, addr })
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    states: &watch::Receiver<Arc<SourceState>>,
    opts: &BuildOptions,
) -> Response<Full<Bytes>> {
    let pods = req.uri().path() == crate::readiness_gate::PATH;
    if req.method() != Method::POST || !(pods || req.uri().path() == PATH) {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    // An AdmissionReview carries one object; Kubernetes caps objects well below this.
    let body = match Limited::new(req.into_body(), 8 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let state = states.borrow().clone();
    let out = if pods {
        crate::readiness_gate::mutate(&body, &state.snapshot, opts)
    } else {
        answer(&body, &state, opts)
    };
    let mut resp = Response::new(Full::new(Bytes::from(out.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

type CertAndKey = (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
);

fn read_pem(cert: &PathBuf, key: &PathBuf) -> Result<CertAndKey, WebhookError> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| WebhookError::Certificate(format!("{}: {e}", cert.display())))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| WebhookError::Certificate(format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

/// A CA and a serving certificate with its key, as PEM.
#[derive(Debug, Clone)]
struct Material {
    ca: String,
    cert: String,
    key: String,
}

impl Material {
    fn parse(&self) -> Result<CertAndKey, WebhookError> {
        use rustls_pki_types::pem::PemObject;
        let bad = |e: rustls_pki_types::pem::Error| WebhookError::Certificate(e.to_string());
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(self.cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key.as_bytes()).map_err(bad)?;
        Ok((chain, key))
    }
}

/// A CA and a serving certificate for `names` (an IP literal becomes an IP SAN).
fn generate(names: &[String]) -> Result<Material, WebhookError> {
    let err = |e: rcgen::Error| WebhookError::Certificate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate webhook CA");
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let leaf_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    for n in names {
        leaf_params.subject_alt_names.push(match n.parse() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| WebhookError::Certificate(format!("{n}: {e}")))?,
            ),
        });
    }
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate webhook");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;
    Ok(Material {
        ca: ca.pem(),
        cert: leaf.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// The material every replica serves: read from the Secret, or generated and stored there
/// by whichever replica comes first (a create that loses the race reads the winner's).
async fn shared_material(
    client: &kube::Client,
    ns: &str,
    name: &str,
    names: &[String],
) -> Result<Material, WebhookError> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let stored = |s: &Secret| -> Option<Material> {
        let d = s.data.as_ref()?;
        let text = |k: &str| String::from_utf8(d.get(k)?.0.clone()).ok();
        Some(Material {
            ca: text("ca.crt")?,
            cert: text("tls.crt")?,
            key: text("tls.key")?,
        })
    };
    let serr = |source| WebhookError::Secret {
        name: format!("{ns}/{name}"),
        source,
    };
    if let Some(m) = api
        .get_opt(name)
        .await
        .map_err(serr)?
        .as_ref()
        .and_then(stored)
    {
        return Ok(m);
    }
    let m = generate(names)?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("ca.crt", &m.ca), ("tls.crt", &m.cert), ("tls.key", &m.key)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(m),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let theirs = api.get(name).await.map_err(serr)?;
            stored(&theirs).ok_or_else(|| {
                WebhookError::Certificate(format!(
                    "Secret {ns}/{name} lacks ca.crt, tls.crt or tls.key"
                ))
            })
        }
        Err(e) => Err(serr(e)),
    }
}

/// Writes the CA into every webhook of the named configuration (read, change, replace: a
/// conflicting write by someone else fails the replace rather than being overwritten).
async fn patch_ca_bundle(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<(), WebhookError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let perr = |source| WebhookError::Patch {
        name: name.to_string(),
        source,
    };
    let mut cfg = api.get(name).await.map_err(perr)?;
    for w in cfg.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()));
    }
    api.replace(name, &PostParams::default(), &cfg)
        .await
        .map_err(perr)?;
    // The pod readiness gate's mutating webhook, served by the same server, when deployed.
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut cfg) = api.get_opt(name).await.map_err(perr)? {
        for w in cfg.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()));
        }
        api.replace(name, &PostParams::default(), &cfg)
            .await
            .map_err(perr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::manifest_dir::parse_manifests;

    fn ingress(name: &str, class: &str, host: &str, annotations: &str) -> Ingress {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: {class}\n  rules: [{{host: {host}, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        );
        serde_yaml_ng::from_str(&yaml).expect("ingress")
    }

    fn cluster() -> ClusterSnapshot {
        let (snap, _) = parse_manifests(
            "c.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: old, namespace: default, creationTimestamp: '2020-01-01T00:00:00Z'}\nspec:\n  ingressClassName: tollgate\n  rules: [{host: old.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n",
            false,
        );
        snap
    }

    /// One load balancer for every Ingress, as the proxy serves them: hosts can collide.
    fn proxy() -> BuildOptions {
        BuildOptions {
            grouping: crate::Grouping::Single("proxy".into()),
            provider: crate::ProviderKind::Proxy,
            ..BuildOptions::default()
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    #[test]
    fn other_classes_are_not_ours_to_judge() {
        let v = review(
            &cluster(),
            &BuildOptions::default(),
            ingress(
                "x",
                "nginx",
                "x.example.com",
                "nginx.ingress.kubernetes.io/use-regex: maybe",
            ),
            now(),
        );
        assert!(v.allowed && v.warnings.is_empty(), "{v:?}");
    }

    #[test]
    fn errors_deny_and_warnings_warn() {
        let bad = review(
            &cluster(),
            &BuildOptions::default(),
            ingress(
                "x",
                "tollgate",
                "x.example.com",
                "nginx.ingress.kubernetes.io/use-regex: maybe",
            ),
            now(),
        );
        assert!(!bad.allowed);
        assert!(bad.message.contains("use-regex"), "{}", bad.message);
        let warned = review(
            &cluster(),
            &BuildOptions::default(),
            ingress(
                "x",
                "tollgate",
                "x.example.com",
                "nginx.ingress.kubernetes.io/proxy-read-timeout: '9'",
            ),
            now(),
        );
        assert!(warned.allowed, "{warned:?}");
        assert_eq!(warned.warnings.len(), 1, "{warned:?}");
    }

    #[test]
    fn conflicts_deny_whichever_side_loses() {
        // Newer: loses the host to the existing Ingress.
        let v = review(
            &cluster(),
            &proxy(),
            ingress("new", "tollgate", "old.example.com", ""),
            now(),
        );
        assert!(!v.allowed);
        assert!(v.message.contains("RouteConflict"), "{}", v.message);
        // Explicitly first by group.order: would take the route from the existing one.
        let v = review(
            &cluster(),
            &proxy(),
            ingress(
                "new",
                "tollgate",
                "old.example.com",
                "alb.ingress.kubernetes.io/group.order: '-5'",
            ),
            now(),
        );
        assert!(!v.allowed, "{v:?}");
        assert!(
            v.message.contains("Ingress default/old would lose"),
            "{}",
            v.message
        );
        // Updating the existing Ingress itself is no conflict.
        let v = review(
            &cluster(),
            &proxy(),
            ingress("old", "tollgate", "old.example.com", ""),
            now(),
        );
        assert!(v.allowed, "{v:?}");
    }
}

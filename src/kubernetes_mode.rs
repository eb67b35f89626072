//! Running against the Kubernetes API instead of a manifest directory: the client, the
//! source, leader election and the status writer, bundled for `tollgate proxy` and
//! `tollgate aws`.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::ingress_status::{IngressStatusWriter, PublishedAddress};
use crate::leader_election::{always_leader, elect, LeaderElectionError, Leadership, LeaseOptions};
use crate::sources::kubernetes::{KubeSource, KubeSourceError, KubeSourceOptions};
use crate::sources::manifest_dir::{ManifestDirError, ManifestDirSource};
use crate::sources::{Source, SourceSpec};

/// How to reach and use the Kubernetes API.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config` or the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// Leader election; `None` runs as the only writer.
    pub lease: Option<LeaseOptions>,
    /// This replica's name (Events' reportingInstance, the Lease holder identity).
    pub instance: String,
    /// proxy mode: a Service (namespace/name) whose load-balancer address, external IPs or
    /// cluster IP is published in Ingress status, when no fixed address is configured.
    pub publish_service: Option<(String, String)>,
    pub source: KubeSourceOptions,
    /// The validating admission webhook, if served by this process (boxed: most runs have
    /// none, and `SourceSpec` carries these options by value).
    pub webhook: Option<Box<crate::admission_webhook::WebhookOptions>>,
}

/// Why the Kubernetes wiring could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeModeError {
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] KubeSourceError),
    #[error(transparent)]
    Leader(#[from] LeaderElectionError),
    #[error(transparent)]
    Webhook(#[from] crate::admission_webhook::WebhookError),
}

/// A connected client, the running source, leadership and the status writer.
pub struct KubeContext {
    pub client: Client,
    pub source: KubeSource,
    pub leadership: Leadership,
    pub writer: IngressStatusWriter,
    pub publish_service: Option<(String, String)>,
    /// Serving as long as the context lives.
    pub webhook: Option<crate::admission_webhook::WebhookServer>,
}

/// Starts the source a command was given: a watched manifest directory, or the Kubernetes
/// API (then also leadership and the status writer, once every kind has been listed).
pub async fn start_source<E>(
    spec: &SourceSpec,
    build: &crate::BuildOptions,
) -> Result<(Box<dyn Source>, Option<KubeContext>), E>
where
    E: From<ManifestDirError> + From<KubeModeError>,
{
    Ok(match spec {
        SourceSpec::Manifests(dir) => (Box::new(ManifestDirSource::spawn(dir.clone())?), None),
        SourceSpec::Kubernetes(k) => {
            let mut ctx = KubeContext::start(k).await?;
            ctx.source.wait_synced().await;
            // The webhook judges against the cluster as listed: started once synced.
            if let Some(w) = &k.webhook {
                let server = crate::admission_webhook::start(
                    w,
                    ctx.client.clone(),
                    ctx.source.subscribe(),
                    build.clone(),
                )
                .await
                .map_err(KubeModeError::from)?;
                ctx.webhook = Some(server);
            }
            (Box::new(ctx.source.clone()), Some(ctx))
        }
    })
}

/// Builds a client from `opts.kubeconfig` or the environment.
pub async fn connect(opts: &KubeOptions) -> Result<Client, KubeModeError> {
    let cfg = match &opts.kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| KubeModeError::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeModeError::Config(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeModeError::Config(e.to_string()))?,
    };
    Client::try_from(cfg).map_err(|e| KubeModeError::Config(e.to_string()))
}

impl KubeContext {
    /// Connects, starts the watchers and, if configured, leader election.
    pub async fn start(opts: &KubeOptions) -> Result<Self, KubeModeError> {
        let client = connect(opts).await?;
        let source = KubeSource::spawn(client.clone(), opts.source.clone()).await?;
        let leadership = match &opts.lease {
            Some(l) => elect(client.clone(), l).await?,
            None => always_leader(),
        };
        Ok(KubeContext {
            writer: IngressStatusWriter::new(client.clone(), opts.instance.clone()),
            client,
            source,
            leadership,
            publish_service: opts.publish_service.clone(),
            webhook: None,
        })
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        *self.leadership.borrow()
    }

    /// The addresses of the publish Service: load-balancer ingress, else external IPs, else
    /// its cluster IP. Empty when there is no such Service.
    pub async fn publish_service_addresses(&self) -> Vec<PublishedAddress> {
        let Some((ns, name)) = &self.publish_service else {
            return Vec::new();
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let svc = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "cannot read the publish Service");
                return Vec::new();
            }
        };
        let lb: Vec<PublishedAddress> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| {
                i.hostname
                    .clone()
                    .map(PublishedAddress::Hostname)
                    .or_else(|| i.ip.clone().map(PublishedAddress::Ip))
            })
            .collect();
        if !lb.is_empty() {
            return lb;
        }
        let spec = svc.spec.unwrap_or_default();
        let external: Vec<PublishedAddress> = spec
            .external_ips
            .unwrap_or_default()
            .into_iter()
            .map(PublishedAddress::Ip)
            .collect();
        if !external.is_empty() {
            return external;
        }
        spec.cluster_ip
            .filter(|ip| !ip.is_empty() && ip != "None")
            .map(PublishedAddress::Ip)
            .into_iter()
            .collect()
    }
}

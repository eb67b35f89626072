//! The `tollgate` command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tollgate::admission_webhook::{WebhookOptions, WebhookTls};
use tollgate::kubernetes_mode::KubeOptions;
use tollgate::leader_election::LeaseOptions;
use tollgate::model_builder::annotation_registry::{self, OnObject};
use tollgate::model_builder::CONTROLLER_NAME;
use tollgate::proxy_command::{run_proxy, ProxyRunOptions};
use tollgate::sources::kubernetes::KubeSourceOptions;
use tollgate::sources::manifest_dir::load_dir;
use tollgate::sources::SourceSpec;
use tollgate::{build, BuildOptions, Grouping, ProviderKind};
use tollgate_contract::{DesiredState, Diagnostic, Severity, TargetType};
use tollgate_proxy::{Limits, ProxySettings};

#[global_allocator]
static ALLOCATOR: tollgate::allocator::CarvingAllocator = tollgate::allocator::CarvingAllocator;

/// Tollgate: a Kubernetes ingress controller. It turns networking.k8s.io/v1 Ingress objects
/// into AWS Application Load Balancers, or serves them itself as a reverse proxy.
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the desired load-balancer model built from a directory of manifests, with every
    /// diagnostic, and touch nothing.
    ///
    /// Exit status: 0 when every object was built (warnings allowed), 2 when any object or
    /// part of one was rejected (an Error diagnostic, including unparsable files), 1 when the
    /// command itself failed (e.g. the directory cannot be read).
    Plan(PlanArgs),

    /// Serve the Ingresses in a directory of manifests as a reverse proxy: HTTP/1.1, HTTP/2
    /// (h2c and TLS with ALPN), WebSocket and gRPC, TLS from Secrets by SNI. Every change to
    /// the files is applied live, without a restart and without failing a request.
    ///
    /// SIGTERM or Ctrl-C stops accepting connections, lets open ones finish for
    /// --drain-seconds, then exits.
    Proxy(ProxyArgs),

    /// Build Application Load Balancers in AWS for the Ingresses in a directory of manifests:
    /// observe Tollgate's resources by tags, plan, apply. With --once, converge and exit (status
    /// 0 only when AWS matches the manifests); otherwise follow the files as they change.
    ///
    /// Credentials and region come from the default AWS chain (environment, profile, IRSA);
    /// --aws-endpoint-url (or AWS_ENDPOINT_URL) points at an emulator.
    Aws(AwsArgs),

    /// Print the annotation registry as a Markdown table: every AWS Load Balancer Controller
    /// and ingress-nginx annotation, and what each provider does with it.
    Annotations,

    /// Print the TollgateClassParams CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,

    /// Run a backend that answers every request with what it saw (JSON), echoes POST /echo
    /// bodies, WebSocket messages and gRPC frames: for demos and tests.
    Echo(EchoArgs),
}

#[derive(Args)]
struct ProxyArgs {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    kube: KubeArgs,

    /// Service (NAMESPACE/NAME) whose address is written into Ingress status when
    /// --publish-address is not given: its load-balancer ingress, external IPs or cluster IP.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    publish_service: Option<String>,

    /// Address for plain HTTP (the Ingresses' port 80).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    http_listen: SocketAddr,

    /// Address for HTTPS (the Ingresses' port 443).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    https_listen: SocketAddr,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10254")]
    admin_listen: SocketAddr,

    /// Port written into ssl-redirect Locations (default: the port of --https-listen).
    #[arg(long, value_name = "PORT")]
    https_redirect_port: Option<u16>,

    /// Seconds to wait for a connection to a target.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,

    /// Seconds to wait for a target's response headers.
    #[arg(long, default_value_t = 60.0)]
    response_timeout: f64,

    /// Seconds an idle keepalive connection to a target is kept.
    #[arg(long, default_value_t = 60.0)]
    upstream_idle_timeout: f64,

    /// Seconds open connections may finish after SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    drain_seconds: f64,

    /// Most client connections open at once. At the limit, the connection that has waited
    /// longest for a request is closed to admit a new one; with all busy, it is refused.
    #[arg(long, default_value_t = 20_000)]
    max_connections: usize,

    /// Seconds a keep-alive client connection (or an HTTP/2 one with no stream open) may
    /// wait for its next request (ingress-nginx's `keep-alive`).
    #[arg(long, default_value_t = 75.0)]
    client_idle_timeout: f64,

    /// Requests a client connection may carry before it is closed (ingress-nginx's
    /// `keep-alive-requests`); 0 for no cap.
    #[arg(long, default_value_t = 0)]
    max_requests_per_connection: u32,

    /// Seconds a client may take to send request headers (slowloris guard).
    #[arg(long, default_value_t = 10.0)]
    header_read_timeout: f64,

    /// Log one JSON line per request (target tollgate::access).
    #[arg(long)]
    access_log: bool,

    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client,
    /// as a load balancer in front sends it (ingress-nginx's use-proxy-protocol);
    /// connections without one are closed.
    #[arg(long)]
    use_proxy_protocol: bool,

    /// Take the client's address from X-Forwarded-For when the connection comes from
    /// --proxy-real-ip-cidr (ingress-nginx's use-forwarded-headers), for allow-lists,
    /// rate limits and the X-Forwarded-For sent on.
    #[arg(long)]
    use_forwarded_headers: bool,

    /// The proxies trusted with --use-forwarded-headers (comma-separated CIDRs;
    /// ingress-nginx's proxy-real-ip-cidr, whose default trusts every address).
    #[arg(long, value_name = "CIDRS", default_value = "0.0.0.0/0,::/0")]
    proxy_real_ip_cidr: String,

    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,

    /// Start an echo backend on every loopback target address in the manifests, so the
    /// examples answer without anything else running.
    #[arg(long)]
    serve_echo_backends: bool,

    /// Address reported as the load balancer's address (Ingress status).
    #[arg(long, value_name = "HOST")]
    publish_address: Option<String>,

    /// Threads serving traffic (default: one per CPU core).
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
}

#[derive(Args)]
struct AwsArgs {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    kube: KubeArgs,

    /// Cluster name: written into the tollgate.io/cluster tag, hashed into resource names,
    /// and used to find subnets (kubernetes.io/cluster/NAME).
    #[arg(long, default_value = "default")]
    cluster_name: String,

    /// AWS API endpoint (an emulator such as moto server or LocalStack Pro).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    aws_endpoint_url: Option<String>,

    /// AWS region (default: from the environment or profile).
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    region: Option<String>,

    /// The cluster's VPC: subnet discovery stays inside it and, when no subnet carries a
    /// role tag, picks subnets by their route tables (as the AWS Load Balancer Controller's
    /// --aws-vpc-id). Default: the VPC of the discovered subnets.
    #[arg(long, env = "AWS_VPC_ID", value_name = "VPC_ID")]
    aws_vpc_id: Option<String>,

    /// The security group every load balancer carries and the targets' security groups
    /// admit (the AWS Load Balancer Controller's shared backend security group): `auto`
    /// (Tollgate creates one per cluster, and adds and removes the rules on the pods' and
    /// nodes' groups), `off` (no group, no rules: open the targets' groups yourself), or the
    /// ID of your own group (`sg-...`, used and never deleted).
    #[arg(long, default_value = "auto", value_name = "auto|off|SG_ID")]
    aws_backend_security_group: String,

    /// Manage the targets' rules also for load balancers whose Ingresses name their own
    /// security groups, when they do not say (`manage-backend-security-group-rules`).
    #[arg(long)]
    aws_manage_backend_security_group_rules: bool,

    /// How long a pod's readiness gate waits for the ALB to report the pod healthy before it
    /// opens anyway, with an Event on the pod: a stuck ALB never freezes a rollout.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    readiness_gate_timeout_seconds: u64,

    /// Converge once and exit: 0 when AWS matches, 2 when something was rejected or failed.
    #[arg(long)]
    once: bool,

    /// Most rules per listener (ALB's quota; raise it if your account's limit is higher).
    #[arg(long, default_value_t = 100)]
    max_rules_per_listener: usize,

    /// Seconds between resyncs in continuous mode: one tag look-up, and a full re-read only
    /// if the set of Tollgate's resources moved.
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,

    /// Seconds between full re-reads of AWS (changes someone made inside Tollgate's
    /// resources) in continuous mode.
    #[arg(long, default_value_t = 3600)]
    full_resync_seconds: u64,

    /// Address for /healthz, /readyz and /metrics in continuous mode.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:10254")]
    admin_listen: SocketAddr,

    /// Most AWS requests per second per API family (ELBv2, EC2, ACM, tagging), retries
    /// included; 0 for no limit.
    #[arg(long, default_value_t = 10.0)]
    aws_api_rate: f64,

    /// Requests an idle API family may make at once before the rate applies.
    #[arg(long, default_value_t = 20)]
    aws_api_burst: u32,
}

#[derive(Args)]
struct EchoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18080")]
    listen: SocketAddr,

    /// Name reported in every answer.
    #[arg(long, default_value = "echo")]
    name: String,
}

/// How to use the Kubernetes API when no --manifests is given.
#[derive(Args, Clone)]
struct KubeArgs {
    /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Do not elect a leader: this replica writes to AWS and to Ingress status on its own.
    #[arg(long)]
    no_leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tollgate")]
    lease_namespace: String,

    /// Name of the leader-election Lease (default: tollgate-proxy or tollgate-aws).
    #[arg(long)]
    lease_name: Option<String>,

    /// Seconds a Lease stays valid without renewal: the longest a dead leader is waited for.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,

    /// This replica's name: the Lease holder identity and the Events' reporting instance.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,

    /// Serve the validating admission webhook for Ingresses (HTTPS, path /validate-ingress)
    /// on this address. Kubernetes API mode only.
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,

    /// The webhook's serving certificate chain (PEM), e.g. from a mounted Secret. Without it,
    /// a CA and certificate are generated at start for --webhook-dns-name.
    #[arg(long, requires = "webhook_key_file")]
    webhook_cert_file: Option<PathBuf>,

    /// The webhook certificate's private key (PEM).
    #[arg(long, requires = "webhook_cert_file")]
    webhook_key_file: Option<PathBuf>,

    /// A name (or IP address) the generated webhook certificate is for; repeatable
    /// (default: tollgate-webhook.<lease namespace>.svc).
    #[arg(long)]
    webhook_dns_name: Vec<String>,

    /// The ValidatingWebhookConfiguration whose caBundle gets the generated CA.
    #[arg(long)]
    webhook_configuration: Option<String>,
}

impl KubeArgs {
    fn options(&self, mode: &str, publish_service: Option<&str>) -> anyhow::Result<KubeOptions> {
        let instance = self.instance.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "tollgate".into())
                + &format!("-{}", std::process::id())
        });
        let publish_service = match publish_service {
            Some(s) => {
                let (ns, name) = s
                    .split_once('/')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("--publish-service must be NAMESPACE/NAME, got {s:?}")
                    })?;
                Some((ns.to_string(), name.to_string()))
            }
            None => None,
        };
        let duration = Duration::from_secs(self.lease_duration_seconds.max(3));
        Ok(KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            lease: (!self.no_leader_elect).then(|| LeaseOptions {
                namespace: self.lease_namespace.clone(),
                name: self
                    .lease_name
                    .clone()
                    .unwrap_or_else(|| format!("tollgate-{mode}")),
                identity: instance.clone(),
                duration,
                grace: (duration / 3).max(Duration::from_secs(1)),
            }),
            instance,
            publish_service,
            source: KubeSourceOptions {
                watch_nodes: mode == "aws",
                ..KubeSourceOptions::default()
            },
            webhook: self.webhook_listen.map(|listen| {
                Box::new(WebhookOptions {
                    listen,
                    tls: match (&self.webhook_cert_file, &self.webhook_key_file) {
                        (Some(cert), Some(key)) => WebhookTls::Files {
                            cert: cert.clone(),
                            key: key.clone(),
                        },
                        _ => WebhookTls::Generate {
                            names: if self.webhook_dns_name.is_empty() {
                                vec![format!("tollgate-webhook.{}.svc", self.lease_namespace)]
                            } else {
                                self.webhook_dns_name.clone()
                            },
                            configuration: self.webhook_configuration.clone(),
                            // Every replica serves what the first one generated.
                            secret: Some((
                                self.lease_namespace.clone(),
                                "tollgate-webhook-tls".to_string(),
                            )),
                        },
                    },
                })
            }),
        })
    }
}

fn source_spec(
    model: &ModelArgs,
    kube: &KubeArgs,
    mode: &str,
    publish_service: Option<&str>,
) -> anyhow::Result<SourceSpec> {
    Ok(match &model.manifests {
        Some(dir) => SourceSpec::Manifests(dir.clone()),
        None => SourceSpec::Kubernetes(Box::new(kube.options(mode, publish_service)?)),
    })
}

/// Options shared by every command that builds the model.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Directory of Kubernetes manifests (YAML, multi-document, or JSON; `kind: List`
    /// included), read recursively. Hidden files are skipped. Without it, `proxy` and `aws`
    /// watch the Kubernetes API (kubeconfig or in-cluster service account).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,

    /// Claim Ingresses of this class name (spec.ingressClassName or the legacy
    /// kubernetes.io/ingress.class annotation) even when no IngressClass object names
    /// Tollgate's controller. IngressClasses with spec.controller
    /// `tollgate.io/ingress-controller` are always claimed.
    #[arg(long, value_name = "NAME", default_value = "tollgate")]
    ingress_class: String,

    /// Also claim Ingresses that name no class when no default IngressClass is Tollgate's.
    #[arg(long)]
    watch_ingress_without_class: bool,

    /// Target type for backends without an alb.ingress.kubernetes.io/target-type annotation.
    #[arg(long, value_enum, default_value_t = TargetTypeArg::Ip)]
    default_target_type: TargetTypeArg,

    /// Give Ingresses ingress-nginx's defaults where they differ from ALB's: a redirect to
    /// HTTPS and HSTS when an Ingress has `tls`, a 1m request body limit (annotations that
    /// set these still win; a class's TollgateClassParams `defaults` overrides this flag).
    #[arg(long)]
    ingress_nginx_defaults: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetTypeArg {
    Ip,
    Instance,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Yaml)]
    output: OutputFormat,

    /// Gather every Ingress into one load balancer, as the in-cluster proxy serves them,
    /// instead of one per Ingress group (and judge annotations as the proxy provider does).
    #[arg(long)]
    single_load_balancer: bool,

    /// Build for this provider: `proxy` is --single-load-balancer; `aws` also prints the ALB
    /// resources and the changes against an empty account. Without it: aws's grouping and
    /// annotation support, no AWS plan. The `annotations` section always shows both.
    #[arg(long, value_enum)]
    provider: Option<ProviderArg>,

    /// Cluster name written into the AWS tags (tollgate.io/cluster) and hashed into names.
    #[arg(long, default_value = "default")]
    cluster_name: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    Aws,
    Proxy,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

impl ModelArgs {
    fn options(&self, grouping: Grouping, provider: ProviderKind) -> BuildOptions {
        BuildOptions {
            provider,
            controller_name: CONTROLLER_NAME.into(),
            ingress_class: Some(self.ingress_class.clone()),
            watch_ingress_without_class: self.watch_ingress_without_class,
            grouping,
            default_target_type: match self.default_target_type {
                TargetTypeArg::Ip => TargetType::Ip,
                TargetTypeArg::Instance => TargetType::Instance,
            },
            ingress_nginx_defaults: self.ingress_nginx_defaults,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanOutput<'a> {
    diagnostics: &'a [Diagnostic],
    /// Per Ingress (`namespace/name`), the annotations a provider does not honour.
    annotations: BTreeMap<String, Vec<NotHonoured>>,
    model: &'a DesiredState,
}

/// One annotation of one Ingress that some provider does not honour, with what that
/// provider says (absent: honoured).
#[derive(Serialize)]
struct NotHonoured {
    annotation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
}

/// What each provider does not honour on each Ingress of the snapshot.
fn not_honoured(snapshot: &tollgate::ClusterSnapshot) -> BTreeMap<String, Vec<NotHonoured>> {
    let mut out = BTreeMap::new();
    for ing in &snapshot.ingresses {
        let Some(annotations) = ing.metadata.annotations.as_ref() else {
            continue;
        };
        let mut rows: BTreeMap<String, NotHonoured> = BTreeMap::new();
        for provider in ProviderKind::ALL {
            for f in annotation_registry::check(annotations, OnObject::Ingress, provider) {
                let row = rows.entry(f.annotation.clone()).or_insert(NotHonoured {
                    annotation: f.annotation.clone(),
                    aws: None,
                    proxy: None,
                });
                let said = Some(format!("{:?}: {}", f.severity, f.message));
                match provider {
                    ProviderKind::Aws => row.aws = said,
                    ProviderKind::Proxy => row.proxy = said,
                }
            }
        }
        if !rows.is_empty() {
            let key = format!(
                "{}/{}",
                ing.metadata.namespace.as_deref().unwrap_or("default"),
                ing.metadata.name.as_deref().unwrap_or_default()
            );
            out.insert(key, rows.into_values().collect());
        }
    }
    out
}

fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .model
        .manifests
        .as_ref()
        .context("tollgate plan needs --manifests DIR")?;
    let (snapshot, mut diagnostics) = load_dir(dir)?;
    let (grouping, provider) =
        if args.single_load_balancer || matches!(args.provider, Some(ProviderArg::Proxy)) {
            (Grouping::Single("proxy".into()), ProviderKind::Proxy)
        } else {
            (Grouping::ByIngressGroup, ProviderKind::Aws)
        };
    let out = build(&snapshot, &args.model.options(grouping, provider));
    diagnostics.extend(out.diagnostics);
    diagnostics.sort();
    let printed = PlanOutput {
        diagnostics: &diagnostics,
        annotations: not_honoured(&snapshot),
        model: &out.model,
    };
    let text = match args.output {
        OutputFormat::Yaml => serde_yaml_ng::to_string(&printed).context("rendering YAML")?,
        OutputFormat::Json => {
            serde_json::to_string_pretty(&printed).context("rendering JSON")? + "\n"
        }
    };
    print!("{text}");
    if let Some(ProviderArg::Aws) = args.provider {
        let (stacks, stack_diags) = tollgate_aws::alb_stack::build_stacks(
            &args.cluster_name,
            &out.model,
            &tollgate_aws::alb_stack::AlbLimits::default(),
        );
        diagnostics.extend(stack_diags);
        let plan =
            tollgate_aws::plan::plan(&stacks, &tollgate_aws::inventory::Inventory::default());
        diagnostics.extend(plan.diagnostics.iter().cloned());
        diagnostics.sort();
        diagnostics.dedup();
        println!("---\n# AWS plan against an empty account");
        for line in plan.to_string().lines() {
            println!("# {line}");
        }
    }
    for d in &diagnostics {
        if d.severity >= Severity::Warning {
            eprintln!("{d}");
        }
    }
    let rejected = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Ok(if rejected {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("--{what} must be a non-negative number of seconds"))
}

fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let opts = ProxyRunOptions {
        source: source_spec(
            &args.model,
            &args.kube,
            "proxy",
            args.publish_service.as_deref(),
        )?,
        build: args
            .model
            .options(Grouping::Single("proxy".into()), ProviderKind::Proxy),
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        admin_listen: args.admin_listen,
        settings: ProxySettings {
            connect_timeout: seconds(args.connect_timeout, "connect-timeout")?,
            response_header_timeout: seconds(args.response_timeout, "response-timeout")?,
            upstream_idle_timeout: seconds(args.upstream_idle_timeout, "upstream-idle-timeout")?,
            https_redirect_port: args.https_redirect_port.unwrap_or(args.https_listen.port()),
            access_log: args.access_log,
            real_ip_from: if args.use_forwarded_headers {
                Some(
                    tollgate_proxy::policy::forwarded_for::parse_cidrs(&args.proxy_real_ip_cidr)
                        .map_err(|e| anyhow::anyhow!("--proxy-real-ip-cidr: {e}"))?,
                )
            } else {
                None
            },
        },
        limits: Limits {
            max_connections: args.max_connections,
            header_read_timeout: seconds(args.header_read_timeout, "header-read-timeout")?,
            idle_timeout: seconds(args.client_idle_timeout, "client-idle-timeout")?,
            max_requests_per_connection: args.max_requests_per_connection,
            proxy_protocol: args.use_proxy_protocol,
            ..Limits::default()
        },
        drain: seconds(args.drain_seconds, "drain-seconds")?,
        serve_echo_backends: args.serve_echo_backends,
        publish_address: args.publish_address,
    };
    // One worker: a current-thread runtime drives I/O and tasks on the same thread, with no
    // hand-off between threads (measured: far fewer context switches per request).
    let mut rt = match args.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all();
    if let Some(n) = args.worker_threads.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    let rt = rt.build().context("starting the Tokio runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            let _ = tx.send(true);
        });
        run_proxy(opts, rx).await
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn echo(args: EchoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the Tokio runtime")?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(listen = %args.listen, name = %args.name, "echo backend listening");
        tokio::select! {
            _ = tollgate::echo_backend::serve_echo(l, args.name) => {},
            _ = wait_for_stop_signal() => {},
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn aws(args: AwsArgs) -> anyhow::Result<ExitCode> {
    let opts = tollgate::aws_command::AwsRunOptions {
        source: source_spec(&args.model, &args.kube, "aws", None)?,
        build: args
            .model
            .options(Grouping::ByIngressGroup, ProviderKind::Aws),
        cluster: args.cluster_name,
        endpoint: args.aws_endpoint_url,
        region: args.region,
        vpc_id: args.aws_vpc_id,
        limits: tollgate_aws::alb_stack::AlbLimits {
            rules_per_listener: args.max_rules_per_listener,
            backend_security_group: match args.aws_backend_security_group.as_str() {
                "auto" => tollgate_aws::alb_stack::BackendSecurityGroup::Managed,
                "off" => tollgate_aws::alb_stack::BackendSecurityGroup::Off,
                id if id.starts_with("sg-") => {
                    tollgate_aws::alb_stack::BackendSecurityGroup::Given(id.to_string())
                }
                other => anyhow::bail!(
                    "--aws-backend-security-group must be auto, off or a security group ID (sg-...), not {other:?}"
                ),
            },
            manage_backend_rules: args.aws_manage_backend_security_group_rules,
            ..Default::default()
        },
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        full_resync: Duration::from_secs(args.full_resync_seconds.max(1)),
        admin_listen: Some(args.admin_listen),
        pace: tollgate_aws::api_pacing::Pace {
            per_second: if args.aws_api_rate.is_finite() && args.aws_api_rate >= 0.0 {
                args.aws_api_rate
            } else {
                anyhow::bail!("--aws-api-rate must be a number of requests per second, 0 or more")
            },
            burst: args.aws_api_burst,
        },
        readiness_gate_timeout: Duration::from_secs(args.readiness_gate_timeout_seconds.max(1)),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the Tokio runtime")?;
    rt.block_on(async move {
        if args.once {
            let (r, inventory) = tollgate::aws_command::run_once(&opts).await?;
            for lb in &inventory.load_balancers {
                println!("{}\t{}\t{}", lb.stack, lb.name, lb.dns_name);
            }
            for d in &r.diagnostics {
                if d.severity >= Severity::Warning {
                    eprintln!("{d}");
                }
            }
            let rejected = r.diagnostics.iter().any(|d| d.severity == Severity::Error);
            Ok(if r.converged && !rejected {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        } else {
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_stop_signal().await;
                let _ = tx.send(true);
            });
            tollgate::aws_command::run_continuous(&opts, rx).await?;
            Ok(ExitCode::SUCCESS)
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = matches!(&cli.command, Command::Proxy(a) if a.log_json);
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let result = match cli.command {
        Command::Plan(a) => plan(a),
        Command::Proxy(a) => proxy(a),
        Command::Echo(a) => echo(a),
        Command::Crd => tollgate::class_params::crd_yaml()
            .map(|y| {
                print!("{y}");
                ExitCode::SUCCESS
            })
            .context("rendering the CRD"),
        Command::Aws(a) => aws(a),
        Command::Annotations => {
            print!("{}", annotation_registry::markdown());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

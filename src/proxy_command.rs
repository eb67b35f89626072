//! `tollgate proxy`: a source feeding the model builder feeding the proxy provider, plus
//! the listeners that carry traffic.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_contract::{DesiredState, Diagnostic, TargetAddress};
use tollgate_proxy::{Limits, Proxy, ProxySettings};

use crate::ingress_status::{PublishedAddress, SyncReport};
use crate::kubernetes_mode::{start_source, KubeContext};
use crate::sources::{SourceSpec, SourceState};
use crate::{BuildOptions, BuildOutput};

/// How long configuration changes must pause before freed memory is handed back to the
/// system (`release_free_memory`).
const TRIM_AFTER_QUIET: Duration = Duration::from_secs(1);

/// Everything `tollgate proxy` is told.
#[derive(Debug, Clone)]
pub struct ProxyRunOptions {
    pub source: SourceSpec,
    pub build: BuildOptions,
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub settings: ProxySettings,
    pub limits: Limits,
    /// How long open connections may finish after shutdown begins.
    pub drain: Duration,
    /// Start an echo backend on every loopback target address in the model (demo mode).
    pub serve_echo_backends: bool,
    pub publish_address: Option<String>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRunError {
    #[error(transparent)]
    Source(#[from] crate::sources::manifest_dir::ManifestDirError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes_mode::KubeModeError),
    #[error(transparent)]
    Proxy(#[from] tollgate_proxy::ProxyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyRunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyRunError::Listen { addr, source })
}

/// Listening sockets for the proxy, already bound.
pub struct ProxyListeners {
    pub http: TcpListener,
    pub https: TcpListener,
    pub admin: TcpListener,
}

/// Binds the addresses in `opts`, then runs until `shutdown` turns true, drains and returns.
pub async fn run_proxy(
    opts: ProxyRunOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ProxyRunError> {
    let listeners = ProxyListeners {
        http: bind(opts.http_listen).await?,
        https: bind(opts.https_listen).await?,
        admin: bind(opts.admin_listen).await?,
    };
    run_proxy_on(opts, listeners, shutdown).await
}

/// Runs on listeners bound by the caller (tests bind port 0).
pub async fn run_proxy_on(
    opts: ProxyRunOptions,
    listeners: ProxyListeners,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProxyRunError> {
    let proxy = Proxy::new(opts.settings.clone(), opts.publish_address.clone())?;
    let (source, kube) = start_source::<ProxyRunError>(&opts.source, &opts.build).await?;
    let ProxyListeners { http, https, admin } = listeners;
    tracing::info!(
        http = ?http.local_addr().ok(),
        https = ?https.local_addr().ok(),
        admin = ?admin.local_addr().ok(),
        source = ?opts.source,
        "proxy listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = proxy.tls_acceptor()?;
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(tollgate_proxy::accept::server::serve_traffic(
        http,
        None,
        proxy.shared(),
        opts.limits.clone(),
        stop_rx.clone(),
        opts.drain,
    ));
    servers.spawn(tollgate_proxy::accept::server::serve_traffic(
        https,
        Some(acceptor),
        proxy.shared(),
        opts.limits.clone(),
        stop_rx.clone(),
        opts.drain,
    ));
    servers.spawn(tollgate_proxy::accept::server::serve_admin(
        admin,
        proxy.shared(),
        proxy.ready_flag(),
        stop_rx.clone(),
    ));

    let mut states = source.subscribe();
    // Status is written off the configuration path: a slow API server never delays routing.
    let (status_tx, status_rx) = watch::channel(None);
    if let Some(ctx) = kube {
        servers.spawn(write_status(
            ctx,
            status_rx,
            opts.publish_address.clone(),
            stop_rx.clone(),
        ));
    }
    let mut reported: BTreeSet<Diagnostic> = BTreeSet::new();
    let mut echo_started: HashSet<SocketAddr> = HashSet::new();
    // Upstream connections nobody asks for are closed after the idle timeout.
    let mut sweep = tokio::time::interval(
        (opts.settings.upstream_idle_timeout / 2).max(Duration::from_millis(250)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // An Ingress that turns invalid keeps being served as its last valid version.
    let mut last_good = crate::LastKnownGood::default();
    loop {
        let state = states.borrow_and_update().clone();
        let out = last_good.build(&state.snapshot, &opts.build);
        // Our own status writes come back as watch events: the snapshot changed, the model
        // did not. Recompiling the route table for them was most of the work of writing
        // 1,000 statuses; the status task still gets the new snapshot to compare against.
        let unchanged = status_tx
            .borrow()
            .as_ref()
            .is_some_and(|prev| prev.1.model == out.model);
        if !unchanged {
            let generation = proxy.apply_model(&out.model);
            tracing::info!(
                generation,
                source_generation = state.generation,
                "configuration applied"
            );
        }
        // Log each diagnostic once, when it first appears.
        let now: BTreeSet<Diagnostic> = state
            .diagnostics
            .iter()
            .chain(&out.diagnostics)
            .cloned()
            .collect();
        for d in now.difference(&reported) {
            crate::log_diagnostic(d);
        }
        reported = now;
        if opts.serve_echo_backends {
            start_echo_backends(&out.model, &mut echo_started).await;
        }
        // What this replaces (snapshot, model, configuration) is freed on a blocking thread,
        // not before the next change can be applied; memory goes back to the system once
        // changes pause (a trim per change was a fifth of a change's CPU at 10,000 Ingresses).
        let replaced = status_tx.send_replace(Some(Arc::new((state, out))));
        let retired = proxy.take_retired();
        tokio::task::spawn_blocking(move || drop((replaced, retired)));
        let trim = tokio::time::sleep(TRIM_AFTER_QUIET);
        tokio::pin!(trim);
        let mut trimmed = false;
        let stop = loop {
            tokio::select! {
                changed = states.changed() => break changed.is_err(),
                _ = shutdown.wait_for(|s| *s) => break true,
                _ = sweep.tick() => proxy.close_idle_upstreams(),
                _ = &mut trim, if !trimmed => {
                    trimmed = true;
                    tokio::task::spawn_blocking(crate::release_free_memory);
                }
            }
        };
        if stop {
            break;
        }
    }
    tracing::info!(
        drain_seconds = opts.drain.as_secs_f64(),
        "shutting down: no new connections, draining"
    );
    proxy.ready_flag().store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    Ok(())
}

async fn start_echo_backends(model: &DesiredState, started: &mut HashSet<SocketAddr>) {
    for lb in &model.load_balancers {
        for tg in &lb.target_groups {
            for t in &tg.targets {
                let TargetAddress::Ip(ip) = t.address else {
                    continue;
                };
                let addr = SocketAddr::new(ip, t.port);
                if !ip.is_loopback() || started.contains(&addr) {
                    continue;
                }
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        started.insert(addr);
                        let name = format!("{}:{}", tg.service, tg.service_port);
                        tracing::info!(%addr, backend = %name, "echo backend started");
                        tokio::spawn(crate::echo_backend::serve_echo(l, name));
                    }
                    Err(e) => tracing::warn!(%addr, error = %e, "echo backend not started"),
                }
            }
        }
    }
}

/// The latest applied state, for the status writer.
type Applied = Option<Arc<(Arc<SourceState>, BuildOutput)>>;

/// Writes Ingress status, conditions and Events whenever this replica leads and a new state
/// has been applied; retries failed writes with back-off.
async fn write_status(
    mut ctx: KubeContext,
    mut applied: watch::Receiver<Applied>,
    publish_address: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut leadership = ctx.leadership.clone();
    let mut retry = Duration::from_millis(500);
    loop {
        let current = applied.borrow_and_update().clone();
        let mut failed = false;
        if let (Some(cur), true) = (current, ctx.is_leader()) {
            let (state, out) = &*cur;
            let addresses: Vec<PublishedAddress> = match &publish_address {
                Some(a) => vec![PublishedAddress::parse(a)],
                None => ctx.publish_service_addresses().await,
            };
            let mut report = SyncReport {
                diagnostics: state.diagnostics.clone(),
                ..Default::default()
            };
            report.diagnostics.extend(out.diagnostics.iter().cloned());
            for lb in &out.model.load_balancers {
                for r in lb.ingresses.iter() {
                    report
                        .addresses
                        .insert((r.namespace.clone(), r.name.clone()), addresses.clone());
                }
            }
            let errors = ctx.writer.sync(&state.snapshot.ingresses, &report).await;
            for e in &errors {
                tracing::warn!(error = %e, "status write failed; will retry");
            }
            failed = !errors.is_empty();
            crate::release_free_memory();
        }
        let backoff = tokio::time::sleep(if failed {
            retry
        } else {
            Duration::from_secs(3600)
        });
        retry = if failed {
            (retry * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            changed = leadership.changed() => if changed.is_err() { return },
            _ = backoff => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

//! `tollgate aws`: a source feeding the model builder feeding the AWS provider — the AWS
//! counterpart of `tollgate proxy`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tollgate_aws::alb_stack::{build_stacks, AlbLimits, AlbStack};
use tollgate_aws::aws_api::{Aws, AwsError};
use tollgate_aws::inventory::Inventory;
use tollgate_aws::plan::plan;
use tollgate_contract::Diagnostic;

use crate::sources::manifest_dir::{load_dir, ManifestDirError, ManifestDirSource};
use crate::sources::Source;
use crate::{build, BuildOptions, ClusterSnapshot};

/// Everything `tollgate aws` is told.
#[derive(Debug, Clone)]
pub struct AwsRunOptions {
    pub manifests: PathBuf,
    pub build: BuildOptions,
    pub cluster: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub limits: AlbLimits,
    /// How often the inventory is re-read from AWS in continuous mode.
    pub resync: Duration,
}

/// Why `tollgate aws` stopped.
#[derive(Debug, thiserror::Error)]
pub enum AwsRunError {
    #[error(transparent)]
    Source(#[from] ManifestDirError),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// The result of one reconcile.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Builder, stack and apply diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// Mutating calls made.
    pub changes_applied: usize,
    /// Whether AWS now matches the desired state (a second plan is empty, nothing failed).
    pub converged: bool,
}

/// The ALB stacks for a snapshot, with every diagnostic met on the way.
pub fn desired_stacks(
    snapshot: &ClusterSnapshot,
    opts: &AwsRunOptions,
) -> (Vec<AlbStack>, Vec<Diagnostic>) {
    let out = build(snapshot, &opts.build);
    let (stacks, stack_diags) = build_stacks(&opts.cluster, &out.model, &opts.limits);
    let mut diags = out.diagnostics;
    diags.extend(stack_diags);
    (stacks, diags)
}

/// Plans against `inventory` (kept current by our own writes) and applies.
pub async fn reconcile(
    aws: &Aws,
    inventory: &mut Inventory,
    snapshot: &ClusterSnapshot,
    opts: &AwsRunOptions,
) -> Reconciled {
    let (stacks, mut diagnostics) = desired_stacks(snapshot, opts);
    let p = plan(&stacks, inventory);
    diagnostics.extend(p.diagnostics.iter().cloned());
    if !p.is_empty() {
        tracing::info!(changes = p.changes.len(), "applying AWS plan\n{p}");
    }
    let failures = aws.apply(&p, &stacks, inventory).await;
    let failed = !failures.is_empty();
    diagnostics.extend(failures);
    let after = plan(&stacks, inventory);
    diagnostics.sort();
    diagnostics.dedup();
    Reconciled {
        // Every apply failure is in `failed`; a second plan tells whether AWS matches.
        converged: !failed && after.is_empty(),
        changes_applied: p.changes.len(),
        diagnostics,
    }
}

fn log_diagnostics(diags: &[Diagnostic]) {
    diags.iter().for_each(crate::log_diagnostic);
}

/// Reads the manifests once, converges AWS to them, and reports whether it converged.
pub async fn run_once(opts: &AwsRunOptions) -> Result<(Reconciled, Inventory), AwsRunError> {
    let (snapshot, source_diags) = load_dir(&opts.manifests)?;
    log_diagnostics(&source_diags);
    let aws = Aws::connect(
        &opts.cluster,
        opts.endpoint.as_deref(),
        opts.region.as_deref(),
    )
    .await;
    let mut inventory = aws.observe().await?;
    let mut r = reconcile(&aws, &mut inventory, &snapshot, opts).await;
    log_diagnostics(&r.diagnostics);
    r.diagnostics.extend(source_diags);
    tracing::info!(calls = ?aws.calls.snapshot(), converged = r.converged, "AWS reconcile done");
    Ok((r, inventory))
}

/// Follows the manifest directory until `shutdown`, re-reading AWS every `opts.resync`.
pub async fn run_continuous(
    opts: &AwsRunOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AwsRunError> {
    let source = ManifestDirSource::spawn(opts.manifests.clone())?;
    let aws = Arc::new(
        Aws::connect(
            &opts.cluster,
            opts.endpoint.as_deref(),
            opts.region.as_deref(),
        )
        .await,
    );
    let mut inventory = aws.observe().await?;
    let mut last_observe = Instant::now();
    let mut states = source.subscribe();
    let mut retry = tokio::time::interval(Duration::from_secs(30));
    loop {
        if last_observe.elapsed() >= opts.resync {
            match aws.observe().await {
                Ok(inv) => inventory = inv,
                Err(e) => {
                    tracing::warn!(error = %e, "AWS resync failed; planning against the last inventory")
                }
            }
            last_observe = Instant::now();
        }
        let state = states.borrow_and_update().clone();
        log_diagnostics(&state.diagnostics);
        let r = reconcile(&aws, &mut inventory, &state.snapshot, opts).await;
        log_diagnostics(&r.diagnostics);
        for lb in &inventory.load_balancers {
            tracing::info!(stack = %lb.stack, dns = %lb.dns_name, "load balancer address");
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return Ok(()) },
            _ = retry.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
}

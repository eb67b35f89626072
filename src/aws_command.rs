//! `tollgate aws`: a source feeding the model builder feeding the AWS provider — the AWS
//! counterpart of `tollgate proxy`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use tokio::sync::watch;
use tollgate_aws::alb_stack::{build_stacks, AlbLimits, AlbStack};
use tollgate_aws::apply_scope::{Scope, StackIndex};
use tollgate_aws::aws_api::{Aws, AwsError};
use tollgate_aws::inventory::Inventory;
use tollgate_aws::plan::plan_scoped;
use tollgate_contract::{DesiredState, Diagnostic, ObjectKind, ObjectRef};

use crate::admin_server::{serve_aws_admin, AwsAdminState};
use crate::ingress_status::{PublishedAddress, SyncReport, FINALIZER};
use crate::kubernetes_mode::{start_source, KubeContext, KubeModeError};
use crate::sources::kubernetes::KubeSource;
use crate::sources::manifest_dir::{load_dir, ManifestDirError};
use crate::sources::{Source, SourceSpec, SourceState};
use crate::{build, load_balancer_id, BuildOptions, BuildOutput, ClusterSnapshot};

/// Everything `tollgate aws` is told.
#[derive(Debug, Clone)]
pub struct AwsRunOptions {
    pub source: SourceSpec,
    pub build: BuildOptions,
    pub cluster: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// The cluster's VPC (`--aws-vpc-id`); discovered from the subnets when absent.
    pub vpc_id: Option<String>,
    pub limits: AlbLimits,
    /// How often continuous mode checks AWS by one tag look-up (a full re-read follows only
    /// when the set of Tollgate's resources moved).
    pub resync: Duration,
    /// How often continuous mode re-reads everything (drift inside a resource).
    pub full_resync: Duration,
    /// Where continuous mode serves /healthz, /readyz and /metrics.
    pub admin_listen: Option<SocketAddr>,
    /// Tollgate's own request rate limit per AWS API family.
    pub pace: tollgate_aws::api_pacing::Pace,
    /// How long a pod's readiness gate waits for the ALB to report it healthy before it
    /// opens anyway (`readiness_gate`).
    pub readiness_gate_timeout: Duration,
}

/// Why `tollgate aws` stopped.
#[derive(Debug, thiserror::Error)]
pub enum AwsRunError {
    #[error(transparent)]
    Source(#[from] ManifestDirError),
    #[error(transparent)]
    Kubernetes(#[from] KubeModeError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    /// Stacks with a failed change or a change still pending: their deleted Ingresses keep
    /// their finalizer. The empty name: a change of no one stack (shared resources) is
    /// pending or failed, and every deleted Ingress keeps its finalizer.
    pub unconverged_stacks: BTreeSet<String>,
    /// The Ingresses of each desired stack.
    pub ingresses_by_stack: BTreeMap<String, Vec<ObjectRef>>,
}

/// The ALB stacks for a snapshot, with every diagnostic met on the way.
pub fn desired_stacks(
    snapshot: &ClusterSnapshot,
    opts: &AwsRunOptions,
) -> (Vec<AlbStack>, Vec<Diagnostic>) {
    stacks_of(&build(snapshot, &opts.build), opts)
}

/// The ALB stacks for a built model, with the builder's and the stacks' diagnostics.
fn stacks_of(out: &BuildOutput, opts: &AwsRunOptions) -> (Vec<AlbStack>, Vec<Diagnostic>) {
    let (stacks, stack_diags) = build_stacks(&opts.cluster, &out.model, &opts.limits);
    let mut diags = out.diagnostics.clone();
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
    let out = crate::LastKnownGood::default().build(snapshot, &opts.build);
    reconcile_model(aws, inventory, out, opts).await
}

/// Each stack as it was desired when AWS last matched it, so that a reconcile plans only the
/// stacks whose desired state changed (issue 16: one Ingress's change plans its stack, not
/// 10,000). Valid only while the inventory is kept by our own writes: forget it whenever
/// AWS is re-read, so that drift is still found.
#[derive(Debug, Default)]
pub struct SettledStacks(HashMap<String, AlbStack>);

impl SettledStacks {
    pub fn forget(&mut self) {
        self.0.clear();
    }

    /// The stacks desired exactly as when they last matched AWS.
    fn unchanged(&self, stacks: &[AlbStack]) -> BTreeSet<String> {
        stacks
            .iter()
            .filter(|s| self.0.get(&s.stack) == Some(s))
            .map(|s| s.stack.clone())
            .collect()
    }

    /// Remembers the stacks AWS now matches; forgets the others and those no longer desired.
    fn record(&mut self, stacks: &[AlbStack], unconverged: &BTreeSet<String>) {
        let desired: HashSet<&str> = stacks.iter().map(|s| s.stack.as_str()).collect();
        self.0
            .retain(|k, _| desired.contains(k.as_str()) && !unconverged.contains(k));
        for s in stacks {
            if unconverged.contains(&s.stack) || self.0.get(&s.stack) == Some(s) {
                continue;
            }
            self.0.insert(s.stack.clone(), s.clone());
        }
    }
}

/// [`reconcile`] for a model already built from the snapshot, planning every stack.
pub async fn reconcile_model(
    aws: &Aws,
    inventory: &mut Inventory,
    out: BuildOutput,
    opts: &AwsRunOptions,
) -> Reconciled {
    reconcile_changed(aws, inventory, out, opts, &mut SettledStacks::default()).await
}

/// [`reconcile_model`], planning only the stacks not `settled` as they are desired now.
pub async fn reconcile_changed(
    aws: &Aws,
    inventory: &mut Inventory,
    out: BuildOutput,
    opts: &AwsRunOptions,
    settled: &mut SettledStacks,
) -> Reconciled {
    let (stacks, mut diagnostics) = stacks_of(&out, opts);
    let unchanged = settled.unchanged(&stacks);
    if let Err(e) = aws.look_up_names(&stacks, inventory).await {
        // Stacks naming subnets or security groups by tag are reported as unresolved.
        tracing::warn!(error = %e, "cannot look up subnet and security group names");
    }
    // Boxed: its state is large, and the reconcile future holds it only while it runs.
    if let Err(e) = Box::pin(aws.look_up_addons(&stacks, inventory)).await {
        // Stacks managing WAF or Shield are then left as they are (plan_protection).
        tracing::warn!(error = %e, "cannot look up WAF and Shield");
        diagnostics.push(Diagnostic::new(
            tollgate_contract::Severity::Warning,
            ObjectKind::LoadBalancer,
            "",
            "",
            tollgate_contract::Reason::ApplyFailed,
            format!("cannot look up WAF web ACLs or Shield Advanced ({e}); load balancers managing either are left as they are"),
        ));
    }
    if let Err(e) = aws.look_up_target_security_groups(&stacks, inventory).await {
        // Rules are then only added, never revoked, until the look-up succeeds.
        tracing::warn!(error = %e, "cannot look up the targets' security groups");
        diagnostics.push(Diagnostic::new(
            tollgate_contract::Severity::Warning,
            ObjectKind::LoadBalancer,
            "",
            String::new(),
            tollgate_contract::Reason::ApplyFailed,
            format!(
                "cannot look up the targets' security groups, so their rules are not changed: {e}"
            ),
        ));
    }
    let held = &out.held_load_balancers;
    let p = plan_scoped(&stacks, inventory, held, &unchanged);
    diagnostics.extend(p.diagnostics.iter().cloned());
    if !p.is_empty() {
        tracing::info!(changes = p.changes.len(), "applying AWS plan\n{p}");
    }
    let failures = aws.apply(&p, &stacks, inventory).await;
    let failed = !failures.is_empty();
    let mut unconverged_stacks: BTreeSet<String> =
        failures.iter().map(|d| d.subject.name.clone()).collect();
    diagnostics.extend(failures);
    let after = plan_scoped(&stacks, inventory, held, &unchanged);
    if !after.changes.is_empty() {
        let index = StackIndex::new(inventory, &stacks);
        // A pending change of no one stack (certificates, the backend security group and its
        // rules) holds every deleted Ingress's finalizer: the empty name stands for it.
        unconverged_stacks.extend(after.changes.iter().map(|c| match index.scope(c) {
            Scope::Stack(s) => s.to_string(),
            Scope::Before | Scope::After => String::new(),
        }));
    }
    // A held or undeletable stack is not what is desired: its deleted Ingresses keep their
    // finalizer.
    unconverged_stacks.extend(after.blocked_stacks.iter().cloned());
    if !failed {
        // A stack its plan has something to say about (a subnet or security group not found,
        // an HTTPS listener without a certificate, no room for priorities) is planned again
        // next time: its diagnostics must keep being reported, and what was missing may
        // appear.
        let mut unsettled = unconverged_stacks.clone();
        unsettled.extend(
            p.diagnostics
                .iter()
                .chain(&after.diagnostics)
                .map(|d| d.subject.name.clone()),
        );
        settled.record(&stacks, &unsettled);
    } else {
        settled.forget();
    }
    diagnostics.sort();
    diagnostics.dedup();
    Reconciled {
        // Every apply failure is in `failed`; a second plan tells whether AWS matches.
        converged: !failed && after.is_empty(),
        changes_applied: p.changes.len(),
        diagnostics,
        unconverged_stacks,
        ingresses_by_stack: out
            .model
            .load_balancers
            .iter()
            .map(|lb| (lb.id.clone(), lb.ingresses.to_vec()))
            .collect(),
    }
}

fn log_diagnostics(diags: &[Diagnostic]) {
    diags.iter().for_each(crate::log_diagnostic);
}

impl AwsRunOptions {
    /// AWS clients for these options: endpoint, region and pacing.
    pub async fn connect(&self) -> Aws {
        Aws::connect_paced(
            &self.cluster,
            self.endpoint.as_deref(),
            self.region.as_deref(),
            self.pace,
        )
        .await
        .with_vpc(self.vpc_id.clone())
        .with_backend(self.limits.backend_security_group.clone())
    }
}

/// Reads the source once, converges AWS to it, and reports whether it converged.
pub async fn run_once(opts: &AwsRunOptions) -> Result<(Reconciled, Inventory), AwsRunError> {
    let (snapshot, source_diags) = match &opts.source {
        SourceSpec::Manifests(dir) => load_dir(dir)?,
        SourceSpec::Kubernetes(k) => {
            let client = crate::kubernetes_mode::connect(k).await?;
            let source = KubeSource::spawn(client, k.source.clone())
                .await
                .map_err(KubeModeError::from)?;
            source.wait_synced().await;
            let state = source.subscribe().borrow().clone();
            (state.snapshot.clone(), state.diagnostics.clone())
        }
    };
    log_diagnostics(&source_diags);
    let aws = opts.connect().await;
    let mut inventory = aws.observe().await?;
    let mut r = reconcile(&aws, &mut inventory, &snapshot, opts).await;
    log_diagnostics(&r.diagnostics);
    r.diagnostics.extend(source_diags);
    tracing::info!(calls = ?aws.calls.snapshot(), converged = r.converged, "AWS reconcile done");
    Ok((r, inventory))
}

/// Follows the source until `shutdown`, re-reading AWS every `opts.resync`. With the
/// Kubernetes API as the source, only the Lease holder writes to AWS and to the cluster.
pub async fn run_continuous(
    opts: &AwsRunOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AwsRunError> {
    let (source, mut kube) = start_source::<AwsRunError>(&opts.source, &opts.build).await?;
    let aws = Arc::new(opts.connect().await);
    let admin = Arc::new(AwsAdminState::default());
    if let Some(addr) = opts.admin_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AwsRunError::Listen { addr, source })?;
        tokio::spawn(serve_aws_admin(
            l,
            admin.clone(),
            aws.clone(),
            shutdown.clone(),
        ));
    }
    // The source has listed everything: a follower is as ready as it gets.
    admin.ready.store(true, Ordering::Relaxed);
    let mut inventory: Option<Inventory> = None;
    let mut last_observe = Instant::now();
    let mut last_full_observe = Instant::now();
    let mut states = source.subscribe();
    let mut leadership = kube.as_ref().map(|k| k.leadership.clone());
    let mut retry = tokio::time::interval(Duration::from_secs(30));
    // An Ingress that turns invalid keeps its load balancer as its last valid version built
    // it; after a restart, its load balancer is held as AWS has it.
    let mut last_good = crate::LastKnownGood::default();
    let mut settled = SettledStacks::default();
    let mut gates_waiting = false;
    let mut gate_recorder = None;
    let gate_interval =
        (opts.readiness_gate_timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
    loop {
        let leading = leadership.as_ref().is_none_or(|l| *l.borrow());
        admin.leader.store(leading, Ordering::Relaxed);
        if leading {
            // A new leader reads AWS afresh: another replica may have written. Then a cheap
            // resync (one tag look-up) every `resync`, a full re-read every `full_resync`.
            let full = inventory.is_none() || last_full_observe.elapsed() >= opts.full_resync;
            if full || last_observe.elapsed() >= opts.resync {
                let read = match inventory.as_mut() {
                    Some(inv) if !full => aws.resync(inv).await.map(|reread| {
                        if reread {
                            settled.forget();
                        }
                    }),
                    _ => aws.observe().await.map(|inv| {
                        inventory = Some(inv);
                        settled.forget();
                    }),
                };
                match read {
                    Ok(()) if full => last_full_observe = Instant::now(),
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "reading AWS failed; will retry"),
                }
                last_observe = Instant::now();
            }
            if let Some(inv) = inventory.as_mut() {
                let state = states.borrow_and_update().clone();
                log_diagnostics(&state.diagnostics);
                let out = last_good.build(&state.snapshot, &opts.build);
                if let Some(ctx) = kube.as_ref() {
                    add_finalizers(ctx, &state.snapshot, &out.model).await;
                }
                // What the readiness gate needs of the model: the target groups holding the
                // waiting pods, taken before the model goes to the reconcile.
                let now = k8s_openapi::jiff::Timestamp::now();
                let waiting = crate::readiness_gate::waiting(&state.snapshot, now);
                let gate_groups = gate_target_groups(&out.model, &waiting, opts);
                let started = Instant::now();
                let r = reconcile_changed(&aws, inv, out, opts, &mut settled).await;
                admin.reconciles.fetch_add(1, Ordering::Relaxed);
                if !r.converged {
                    admin.reconcile_failures.fetch_add(1, Ordering::Relaxed);
                }
                admin
                    .last_plan_size
                    .store(r.changes_applied as u64, Ordering::Relaxed);
                admin.last_apply_micros.store(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                log_diagnostics(&r.diagnostics);
                for lb in &inv.load_balancers {
                    tracing::debug!(stack = %lb.stack, dns = %lb.dns_name, "load balancer address");
                }
                if let Some(ctx) = kube.as_mut() {
                    report_to_cluster(ctx, &state, &r, inv, opts).await;
                }
                if let Some(ctx) = kube.as_ref() {
                    let recorder = gate_recorder
                        .get_or_insert_with(|| crate::readiness_gate::recorder(&ctx.client));
                    let health = Some((&*aws, &*inv, &gate_groups));
                    gates_waiting = open_gates(&ctx.client, recorder, health, &waiting, opts).await;
                }
                crate::release_free_memory();
            } else if let Some(ctx) = kube.as_ref() {
                // AWS cannot be read: no gate opens on health, but each still opens at its
                // timeout (a stuck ALB, or AWS out of reach, never freezes a rollout).
                let state = states.borrow().clone();
                let waiting = crate::readiness_gate::waiting(
                    &state.snapshot,
                    k8s_openapi::jiff::Timestamp::now(),
                );
                let recorder = gate_recorder
                    .get_or_insert_with(|| crate::readiness_gate::recorder(&ctx.client));
                gates_waiting = open_gates(&ctx.client, recorder, None, &waiting, opts).await;
            }
        } else {
            inventory = None;
            settled.forget();
        }
        let lost_or_won = async {
            match leadership.as_mut() {
                Some(l) => {
                    if l.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return Ok(()) },
            _ = lost_or_won => {}
            _ = retry.tick() => {}
            _ = tokio::time::sleep(gate_interval), if gates_waiting => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Pod IP → (target group name, port) of each group holding it.
type GateGroups = BTreeMap<String, Vec<(String, u16)>>;

/// For each IP of a waiting pod, the model's `ip` target groups (as AWS names them) and
/// the port it is registered on there. Empty when no pod waits.
fn gate_target_groups(
    model: &DesiredState,
    waiting: &[crate::readiness_gate::Waiting],
    opts: &AwsRunOptions,
) -> GateGroups {
    if waiting.is_empty() {
        return BTreeMap::new();
    }
    let ips: HashSet<&str> = waiting
        .iter()
        .flat_map(|w| w.ips.iter().map(String::as_str))
        .collect();
    crate::readiness_gate::target_groups_by_ip(model, &ips, |stack, tg| {
        tollgate_aws::alb_stack::target_group_name(&opts.cluster, stack, tg)
    })
}

/// Opens the readiness gates of `waiting` pods the ALB reports healthy (one
/// `DescribeTargetHealth` per target group holding a waiting pod), or that waited
/// `readiness_gate_timeout`. Without `health` (AWS could not be read) only the timeout
/// opens a gate. Returns whether some still wait.
async fn open_gates(
    client: &kube::Client,
    recorder: &kube::runtime::events::Recorder,
    health: Option<(&Aws, &Inventory, &GateGroups)>,
    waiting: &[crate::readiness_gate::Waiting],
    opts: &AwsRunOptions,
) -> bool {
    use crate::readiness_gate::{decide, open, Verdict};
    let mut reported: BTreeMap<String, BTreeMap<(String, u16), String>> = BTreeMap::new();
    let mut still_waiting = false;
    for w in waiting {
        let verdict = match health {
            None if w.waited < opts.readiness_gate_timeout => Verdict::Wait,
            None => Verdict::TimedOut("AWS could not be read".into()),
            Some((aws, inv, by_ip)) => {
                let mut seen = Vec::new();
                for ip in &w.ips {
                    for (name, port) in by_ip.get(ip).into_iter().flatten() {
                        let Some(arn) = inv
                            .target_groups
                            .iter()
                            .find(|t| &t.spec.name == name)
                            .map(|t| t.arn.clone())
                        else {
                            seen.push((name.clone(), None));
                            continue;
                        };
                        if !reported.contains_key(&arn) {
                            let states = match aws.target_health(&arn).await {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::warn!(error = %e, target_group = %name, "cannot read target health");
                                    BTreeMap::new()
                                }
                            };
                            reported.insert(arn.clone(), states);
                        }
                        let state = reported
                            .get(&arn)
                            .and_then(|h| h.get(&(ip.clone(), *port)))
                            .cloned();
                        seen.push((name.clone(), state));
                    }
                }
                decide(w, &seen, opts.readiness_gate_timeout)
            }
        };
        if verdict == Verdict::Wait {
            still_waiting = true;
            continue;
        }
        tracing::info!(pod = %w.name, namespace = %w.namespace, ?verdict, "opening the readiness gate");
        if let Err(e) = open(client, recorder, w, &verdict).await {
            tracing::warn!(error = %e, pod = %w.name, "cannot open the readiness gate");
            still_waiting = true;
        }
    }
    still_waiting
}

/// Puts the finalizer on every claimed Ingress before its resources are created, so a delete
/// waits for the clean-up.
async fn add_finalizers(ctx: &KubeContext, snapshot: &ClusterSnapshot, model: &DesiredState) {
    let claimed: BTreeSet<(&str, &str)> = model
        .load_balancers
        .iter()
        .flat_map(|lb| lb.ingresses.iter())
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    let ings: Vec<&Ingress> = snapshot
        .ingresses
        .iter()
        .filter(|i| {
            claimed.contains(&(
                i.metadata.namespace.as_deref().unwrap_or_default(),
                i.metadata.name.as_deref().unwrap_or_default(),
            ))
        })
        .map(|i| &**i)
        .collect();
    for e in ctx.writer.add_finalizers(&ings).await {
        tracing::warn!(error = %e, "cannot add the finalizer");
    }
}

/// Status (the ALB's DNS name), conditions, Events, and finalizers released for Ingresses
/// whose load balancer no longer holds anything of theirs.
async fn report_to_cluster(
    ctx: &mut KubeContext,
    state: &SourceState,
    r: &Reconciled,
    inv: &Inventory,
    opts: &AwsRunOptions,
) {
    let mut report = SyncReport {
        diagnostics: r.diagnostics.clone(),
        ..Default::default()
    };
    report.diagnostics.extend(state.diagnostics.iter().cloned());
    // A load balancer's problem (a failed AWS call, a certificate not found) is every one of
    // its Ingresses' problem: that is where users look (Events, the Synced condition). An
    // Ingress being deleted is in no stack of the model, but its load balancer's problem
    // (deletion protection, a failed delete) is what holds its finalizer: it is told too.
    let mut members: BTreeMap<String, Vec<ObjectRef>> = r.ingresses_by_stack.clone();
    for ing in state
        .snapshot
        .ingresses
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_some())
    {
        members
            .entry(load_balancer_id(&state.snapshot, &opts.build, ing))
            .or_default()
            .push(ObjectRef::new(
                ing.metadata.namespace.as_deref().unwrap_or_default(),
                ing.metadata.name.as_deref().unwrap_or_default(),
            ));
    }
    let per_ingress: Vec<Diagnostic> = r
        .diagnostics
        .iter()
        .filter(|d| d.subject.kind == ObjectKind::LoadBalancer)
        .flat_map(|d| {
            members
                .get(&d.subject.name)
                .into_iter()
                .flatten()
                .map(move |i| {
                    let mut d = d.clone();
                    d.subject.kind = ObjectKind::Ingress;
                    d.subject.namespace = i.namespace.clone();
                    d.subject.name = i.name.clone();
                    d
                })
        })
        .collect();
    report.diagnostics.extend(per_ingress);
    for (stack, ings) in &r.ingresses_by_stack {
        let addrs: Vec<PublishedAddress> = inv
            .load_balancers
            .iter()
            .filter(|lb| &lb.stack == stack && !lb.dns_name.is_empty())
            .map(|lb| PublishedAddress::Hostname(lb.dns_name.clone()))
            .collect();
        for i in ings {
            report
                .addresses
                .insert((i.namespace.clone(), i.name.clone()), addrs.clone());
        }
    }
    for e in ctx.writer.sync(&state.snapshot.ingresses, &report).await {
        tracing::warn!(error = %e, "status write failed; will retry");
    }
    let claimed: BTreeSet<(&str, &str)> = r
        .ingresses_by_stack
        .values()
        .flatten()
        .map(|i| (i.namespace.as_str(), i.name.as_str()))
        .collect();
    for ing in &state.snapshot.ingresses {
        if !ing.finalizers().iter().any(|f| f == FINALIZER) {
            continue;
        }
        let key = (
            ing.metadata.namespace.as_deref().unwrap_or_default(),
            ing.metadata.name.as_deref().unwrap_or_default(),
        );
        let release = if ing.metadata.deletion_timestamp.is_some() {
            let stack = load_balancer_id(&state.snapshot, &opts.build, ing);
            // "": something shared (the backend security group, an imported certificate) is
            // not cleaned up yet.
            !r.unconverged_stacks.contains(&stack) && !r.unconverged_stacks.contains("")
        } else {
            // No longer ours (class changed): released once everything converged.
            !claimed.contains(&key) && r.unconverged_stacks.is_empty()
        };
        if release {
            match ctx.writer.remove_finalizer(ing).await {
                Ok(()) => {
                    tracing::info!(ingress = %format!("{}/{}", key.0, key.1), "AWS resources gone; finalizer removed")
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove the finalizer"),
            }
        }
    }
}

//! The AWS provider at scale, against the emulator (moto server, see localstack/README.md):
//! 500 Ingresses in 50 groups (10 Services × 3 endpoints). Cold converge time and AWS calls;
//! a no-op resync (a full re-read, then the plan) and its calls; one changed path.
//!
//! Last, the cold converge again behind a proxy adding 20 ms to every call (an AWS API's
//! round trip; loopback has none), once applying one stack at a time and once
//! [`APPLY_CONCURRENCY`] at a time, each against a fresh emulator.
//!
//! Run: `cargo bench --profile dev --bench aws_groups`. Figures go to docs/performance.md.
//! Tollgate's own per-API pacing is off here: the emulator is not AWS, and the figures are
//! about how many calls Tollgate makes, not how fast an account may make them.

#[path = "../tests/support/fault_proxy.rs"]
#[allow(dead_code)]
mod fault_proxy;
#[path = "../tests/support/moto.rs"]
#[allow(dead_code)]
mod moto;
#[path = "../tests/support/strict_aws.rs"]
#[allow(dead_code)]
mod strict_aws;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tollgate::aws_command::{reconcile, AwsRunOptions};
use tollgate::sources::manifest_dir::load_dir;
use tollgate::sources::SourceSpec;
use tollgate::{BuildOptions, Grouping};
use tollgate_aws::api_pacing::Pace;
use tollgate_aws::aws_api::{is_mutating, APPLY_CONCURRENCY};

const GROUPS: usize = 50;
const PER_GROUP: usize = 10;
const SERVICES: usize = 10;

fn manifests(changed: Option<(usize, usize)>) -> String {
    let mut m = String::new();
    for s in 0..SERVICES {
        let _ = write!(
            m,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{s}-1, labels: {{kubernetes.io/service-name: svc{s}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n- {{addresses: [10.1.{s}.1], conditions: {{ready: true}}}}\n- {{addresses: [10.1.{s}.2], conditions: {{ready: true}}}}\n- {{addresses: [10.1.{s}.3], conditions: {{ready: true}}}}\n---\n"
        );
    }
    for g in 0..GROUPS {
        for i in 0..PER_GROUP {
            let path = if changed == Some((g, i)) { "/v2" } else { "/" };
            let _ = write!(
                m,
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: g{g}-i{i}, annotations: {{alb.ingress.kubernetes.io/group.name: g{g}}}}}\nspec:\n  ingressClassName: tollgate\n  rules:\n  - host: i{i}.g{g}.example.com\n    http: {{paths: [{{path: '{path}', pathType: Prefix, backend: {{service: {{name: svc{}, port: {{number: 80}}}}}}}}]}}\n---\n",
                i % SERVICES
            );
        }
    }
    m.push_str("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: tollgate}\nspec: {controller: tollgate.io/ingress-controller}\n");
    m
}

fn options(dir: &Path, endpoint: &str) -> AwsRunOptions {
    AwsRunOptions {
        source: SourceSpec::Manifests(dir.to_path_buf()),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: "bench".into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        vpc_id: None,
        limits: Default::default(),
        resync: Duration::from_secs(300),
        full_resync: Duration::from_secs(3600),
        admin_listen: None,
        pace: Pace {
            per_second: 0.0,
            burst: 0,
        },
        readiness_gate_timeout: tollgate::readiness_gate::DEFAULT_TIMEOUT,
    }
}

/// Observes AWS afresh, plans and applies; returns (elapsed, reads by operation, mutating
/// calls, converged).
async fn round(
    opts: &AwsRunOptions,
    full_observe: bool,
) -> (Duration, BTreeMap<&'static str, u64>, u64, bool) {
    let SourceSpec::Manifests(dir) = &opts.source else {
        unreachable!()
    };
    let (snapshot, _) = load_dir(dir).expect("manifests");
    let aws = opts.connect().await;
    let t0 = Instant::now();
    let mut inv = if full_observe {
        aws.observe().await.expect("observe")
    } else {
        Default::default()
    };
    let r = reconcile(&aws, &mut inv, &snapshot, opts).await;
    let elapsed = t0.elapsed();
    let calls = aws.calls.snapshot();
    let reads = calls
        .iter()
        .filter(|(op, _)| !is_mutating(op))
        .map(|(op, (ok, err))| (*op, ok + err))
        .collect();
    (elapsed, reads, aws.calls.mutating(), r.converged)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let m = moto::start_moto();
        moto::seed_cluster(&m.endpoint, "bench", 0).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("all.yaml"), manifests(None)).expect("write");
        // moto itself: the strict proxy's own look-ups would be timed with Tollgate's.
        let opts = options(dir.path(), &m.raw_endpoint);

        let (t, reads, mutating, converged) = round(&opts, true).await;
        assert!(converged, "cold converge");
        println!(
            "cold: {:.1} s, {mutating} mutating calls, {} reads {reads:?}",
            t.as_secs_f64(),
            reads.values().sum::<u64>()
        );
        let (t, reads, mutating, converged) = round(&opts, true).await;
        assert!(converged);
        println!(
            "no-op resync (full re-read): {:.2} s, {mutating} mutating, {} reads {reads:?}",
            t.as_secs_f64(),
            reads.values().sum::<u64>()
        );
        // What continuous mode does every --resync-seconds: one tag look-up against the
        // inventory its own writes kept current, then the plan.
        let aws = opts.connect().await;
        let mut inv = aws.observe().await.expect("observe");
        let (snapshot, _) = load_dir(dir.path()).expect("manifests");
        let before = aws.calls.snapshot();
        let t0 = Instant::now();
        let reread = aws.resync(&mut inv).await.expect("resync");
        let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
        assert!(r.converged && !reread);
        let after = aws.calls.snapshot();
        let delta: BTreeMap<&str, u64> = after
            .iter()
            .map(|(op, (ok, err))| {
                let (ok0, err0) = before.get(op).copied().unwrap_or((0, 0));
                (*op, ok + err - ok0 - err0)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        println!(
            "no-op resync (tag look-up, inventory kept): {:.3} s, {} mutating, calls {delta:?}",
            t0.elapsed().as_secs_f64(),
            delta
                .iter()
                .filter(|(op, _)| is_mutating(op))
                .map(|(_, n)| n)
                .sum::<u64>()
        );
        std::fs::write(dir.path().join("all.yaml"), manifests(Some((7, 3)))).expect("write");
        let (t, _, mutating, converged) = round(&opts, true).await;
        assert!(converged);
        println!(
            "one changed path: {mutating} mutating calls ({:.2} s with the re-read)",
            t.as_secs_f64()
        );
        drop(m);

        for concurrency in [1, APPLY_CONCURRENCY] {
            let m = moto::start_moto();
            moto::seed_cluster(&m.endpoint, "bench", 0).await;
            let slow =
                fault_proxy::start_latency_proxy(&m.raw_endpoint, Duration::from_millis(20)).await;
            std::fs::write(dir.path().join("all.yaml"), manifests(None)).expect("write");
            let opts = options(dir.path(), &slow.endpoint);
            let (snapshot, _) = load_dir(dir.path()).expect("manifests");
            let mut aws = opts.connect().await;
            aws.apply_concurrency = concurrency;
            let t0 = Instant::now();
            let mut inv = aws.observe().await.expect("observe");
            let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
            assert!(r.converged, "cold converge behind latency");
            println!(
                "cold, 20 ms per call, {concurrency} stack(s) at once: {:.1} s, {} mutating calls",
                t0.elapsed().as_secs_f64(),
                aws.calls.mutating()
            );
        }
    });
}

//! Model build time for a large cluster: 10,000 paths across 1,000 hosts (1,000 Ingresses,
//! 10 paths each, 100 Services with EndpointSlices). Target: under 50 ms per build.

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tollgate::{build, BuildOptions, ClusterSnapshot, Grouping, LastKnownGood, ProviderKind};

fn meta(name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some("default".into()),
        ..Default::default()
    }
}

fn large_cluster(hosts: usize, paths_per_host: usize, services: usize) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::default();
    for s in 0..services {
        snap.services.push(
            Service {
                metadata: meta(format!("svc{s}")),
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
        );
        let mut m = meta(format!("svc{s}-x"));
        m.labels = Some([("kubernetes.io/service-name".to_string(), format!("svc{s}"))].into());
        snap.endpoint_slices.push(
            EndpointSlice {
                metadata: m,
                address_type: "IPv4".into(),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    ..Default::default()
                }]),
                endpoints: (0..10)
                    .map(|e| Endpoint {
                        addresses: vec![format!("10.{}.{}.{}", s / 250, s % 250, e + 1)],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }
            .into(),
        );
    }
    for h in 0..hosts {
        let paths = (0..paths_per_host)
            .map(|p| HTTPIngressPath {
                path: Some(format!("/api/v{p}/items")),
                path_type: if p % 3 == 0 { "Exact" } else { "Prefix" }.into(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: format!("svc{}", (h * paths_per_host + p) % services),
                        port: Some(ServiceBackendPort {
                            number: Some(80),
                            name: None,
                        }),
                    }),
                    resource: None,
                },
            })
            .collect();
        snap.ingresses.push(
            Ingress {
                metadata: meta(format!("ing{h}")),
                spec: Some(IngressSpec {
                    ingress_class_name: Some("tollgate".into()),
                    rules: Some(vec![IngressRule {
                        host: Some(format!("host{h}.example.com")),
                        http: Some(HTTPIngressRuleValue { paths }),
                    }]),
                    ..Default::default()
                }),
                status: None,
            }
            .into(),
        );
    }
    snap
}

fn bench(c: &mut Criterion) {
    let snap = large_cluster(1000, 10, 100);
    let mut g = c.benchmark_group("build_10k_paths_1k_hosts");
    g.sample_size(20);
    g.bench_function("single_load_balancer", |b| {
        let opts = BuildOptions {
            grouping: Grouping::Single("proxy".into()),
            ..BuildOptions::default()
        };
        b.iter(|| build(&snap, &opts))
    });
    g.bench_function("one_load_balancer_per_ingress", |b| {
        let opts = BuildOptions::default();
        b.iter(|| build(&snap, &opts))
    });
    // The same Ingresses carrying what migrated ones do (ingress-nginx and AWS Load
    // Balancer Controller annotations, honoured or not): the registry judges each of them.
    let mut annotated = snap.clone();
    for ing in &mut annotated.ingresses {
        let mut i = (**ing).clone();
        i.metadata.annotations = Some(
            [
                ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
                ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
                ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120"),
                ("alb.ingress.kubernetes.io/group.order", "1"),
                ("alb.ingress.kubernetes.io/healthcheck-path", "/healthz"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        *ing = std::sync::Arc::new(i);
    }
    let proxy = BuildOptions {
        grouping: Grouping::Single("proxy".into()),
        provider: ProviderKind::Proxy,
        ..BuildOptions::default()
    };
    g.bench_function("single_load_balancer_5_annotations_each", |b| {
        b.iter(|| build(&annotated, &proxy))
    });
    // What the run loops call: the pure build behind the last-known-good cache, on a
    // snapshot whose objects did not change (the steady state of a watch).
    g.bench_function(
        "last_known_good_single_load_balancer_5_annotations_each",
        |b| {
            let mut lkg = LastKnownGood::default();
            b.iter(|| lkg.build(&annotated, &proxy))
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

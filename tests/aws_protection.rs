//! The AWS Load Balancer Controller's protective load balancer features against the
//! emulator, calls counted (issue 14): `auth-type` OIDC and Cognito — created, a no-op
//! resync with zero mutating calls, a rotated client secret and a changed setting each
//! re-sent, removed, and nothing left when the Ingresses go — and the Ingresses that are
//! refused rather than served without the protection they ask for.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use support::moto::{seed_cluster, start_moto, test_credentials};
use tollgate::aws_command::{reconcile, run_once, AwsRunOptions};
use tollgate::sources::manifest_dir::load_dir;
use tollgate::{BuildOptions, Grouping};
use tollgate_aws::alb_stack::{AlbLimits, TAG_CLIENT_SECRET};
use tollgate_aws::aws_api::Aws;

const CLUSTER: &str = "prot";

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.0.11], conditions: {ready: true}}
"#;

fn options(dir: &Path, endpoint: &str) -> AwsRunOptions {
    AwsRunOptions {
        source: tollgate::sources::SourceSpec::Manifests(dir.to_path_buf()),
        build: BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
        cluster: CLUSTER.into(),
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        vpc_id: None,
        limits: AlbLimits::default(),
        resync: Duration::from_secs(300),
        full_resync: Duration::from_secs(3600),
        admin_listen: None,
        pace: tollgate_aws::api_pacing::Pace {
            per_second: 0.0,
            burst: 0,
        },
    }
}

fn oidc_secret(client_secret: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: oidc}}\ntype: Opaque\ndata: {{clientID: {}, clientSecret: {}}}\n",
        b64("tollgate-client\n"),
        b64(client_secret)
    )
}

/// An HTTPS-only Ingress with a default backend and one path, authenticated by `auth`
/// (extra annotations, one `key: value` per line, indented for the map).
fn app(cert: &str, auth: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  annotations:
    alb.ingress.kubernetes.io/scheme: internet-facing
    alb.ingress.kubernetes.io/listen-ports: '[{{"HTTPS": 443}}]'
    alb.ingress.kubernetes.io/certificate-arn: {cert}
{auth}
spec:
  ingressClassName: tollgate
  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}
  rules:
  - host: app.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#
    )
}

const OIDC: &str = r#"    alb.ingress.kubernetes.io/auth-type: oidc
    alb.ingress.kubernetes.io/auth-idp-oidc: '{"issuer":"https://idp.example.com","authorizationEndpoint":"https://idp.example.com/auth","tokenEndpoint":"https://idp.example.com/token","userInfoEndpoint":"https://idp.example.com/userinfo","secretName":"oidc","authenticationRequestExtraParams":{"prompt":"login"}}'
    alb.ingress.kubernetes.io/auth-scope: openid email"#;

async fn fresh_reconcile(opts: &AwsRunOptions) -> (BTreeMap<&'static str, (u64, u64)>, bool) {
    let tollgate::sources::SourceSpec::Manifests(dir) = &opts.source else {
        panic!("manifest source expected");
    };
    let (snapshot, _) = load_dir(dir).expect("manifests");
    let aws = opts.connect().await;
    let mut inv = aws.observe().await.expect("observe");
    let r = reconcile(&aws, &mut inv, &snapshot, opts).await;
    (aws.calls.snapshot(), r.converged)
}

fn mutating(calls: &BTreeMap<&'static str, (u64, u64)>) -> Vec<(String, u64)> {
    calls
        .iter()
        .filter(|(op, (ok, err))| tollgate_aws::aws_api::is_mutating(op) && ok + err > 0)
        .map(|(op, (ok, err))| (op.to_string(), ok + err))
        .collect()
}

/// Every rule of the HTTPS listener and its default, as (actions types in order, client
/// ID, scope, secret tag), read straight from the API.
async fn https_actions(
    aws: &Aws,
) -> Vec<(Vec<String>, Option<String>, Option<String>, Option<String>)> {
    let lbs = aws
        .elbv2
        .describe_load_balancers()
        .send()
        .await
        .expect("lbs");
    let mut out = Vec::new();
    for lb in lbs.load_balancers() {
        let ls = aws
            .elbv2
            .describe_listeners()
            .load_balancer_arn(lb.load_balancer_arn().unwrap_or_default())
            .send()
            .await
            .expect("listeners");
        for l in ls.listeners() {
            let rules = aws
                .elbv2
                .describe_rules()
                .listener_arn(l.listener_arn().unwrap_or_default())
                .send()
                .await
                .expect("rules");
            for r in rules.rules() {
                let mut actions = r.actions().to_vec();
                actions.sort_by_key(|a| a.order().unwrap_or(i32::MAX));
                let types = actions
                    .iter()
                    .map(|a| {
                        a.r#type()
                            .map(|t| t.as_str().to_string())
                            .unwrap_or_default()
                    })
                    .collect();
                let oidc = actions.iter().find_map(|a| a.authenticate_oidc_config());
                let tagged = if r.is_default() == Some(true) {
                    l.listener_arn()
                } else {
                    r.rule_arn()
                };
                let tags = aws
                    .elbv2
                    .describe_tags()
                    .resource_arns(tagged.unwrap_or_default())
                    .send()
                    .await
                    .expect("tags");
                let secret_tag = tags
                    .tag_descriptions()
                    .iter()
                    .flat_map(|d| d.tags())
                    .find(|t| t.key() == Some(TAG_CLIENT_SECRET))
                    .and_then(|t| t.value())
                    .map(str::to_string);
                out.push((
                    types,
                    oidc.and_then(|c| c.client_id()).map(str::to_string),
                    oidc.and_then(|c| c.scope()).map(str::to_string),
                    secret_tag,
                ));
            }
        }
    }
    out
}

async fn certificate(aws: &Aws) -> String {
    aws.acm
        .request_certificate()
        .domain_name("app.example.com")
        .send()
        .await
        .expect("certificate")
        .certificate_arn()
        .expect("arn")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_authentication_is_created_kept_rotated_changed_and_removed() {
    test_credentials();
    let moto = start_moto();
    seed_cluster(&moto.endpoint, CLUSTER, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), &moto.endpoint);
    let aws = opts.connect().await;
    let cert = certificate(&aws).await;
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("s3cret")).unwrap();
    std::fs::write(dir.path().join("app.yaml"), app(&cert, OIDC)).unwrap();

    // Created: the rule and the listener's default both authenticate first.
    let (r, _) = Box::pin(run_once(&opts)).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let seen = https_actions(&aws).await;
    assert_eq!(seen.len(), 2, "one rule and the default: {seen:?}");
    for (types, client_id, scope, tag) in &seen {
        assert_eq!(types, &["authenticate-oidc", "forward"], "{seen:?}");
        assert_eq!(
            client_id.as_deref(),
            Some("tollgate-client"),
            "the trailing newline trimmed"
        );
        assert_eq!(scope.as_deref(), Some("openid email"));
        assert!(
            tag.is_some(),
            "the secret's fingerprint is tagged: {seen:?}"
        );
    }
    let first_tag = seen[0].3.clone();

    // A no-op resync, AWS read afresh: nothing mutating (the secret is known by its tag).
    let (calls, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [], "a no-op resync");

    // The Secret rotated: the rule and the default are sent again, with their tags.
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("rotated")).unwrap();
    let (calls, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    assert_eq!(
        mutating(&calls),
        [
            ("AddTags".to_string(), 2),
            ("ModifyListener".to_string(), 1),
            ("ModifyRule".to_string(), 1)
        ]
    );
    let seen = https_actions(&aws).await;
    assert!(
        seen.iter().all(|s| s.3.is_some() && s.3 != first_tag),
        "{seen:?}"
    );
    let (calls, _) = Box::pin(fresh_reconcile(&opts)).await;
    assert_eq!(mutating(&calls), [], "settled after the rotation");

    // A setting changed: the scope.
    std::fs::write(
        dir.path().join("app.yaml"),
        app(&cert, &OIDC.replace("openid email", "openid profile")),
    )
    .unwrap();
    let (calls, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    assert_eq!(
        mutating(&calls),
        [
            ("AddTags".to_string(), 2),
            ("ModifyListener".to_string(), 1),
            ("ModifyRule".to_string(), 1)
        ]
    );
    assert!(https_actions(&aws)
        .await
        .iter()
        .all(|s| s.2.as_deref() == Some("openid profile")));

    // Authentication removed: forwards only.
    std::fs::write(dir.path().join("app.yaml"), app(&cert, "")).unwrap();
    let (calls, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    assert_eq!(
        mutating(&calls),
        [
            ("ModifyListener".to_string(), 1),
            ("ModifyRule".to_string(), 1)
        ]
    );
    assert!(https_actions(&aws).await.iter().all(|s| s.0 == ["forward"]));
    let (calls, _) = Box::pin(fresh_reconcile(&opts)).await;
    assert_eq!(mutating(&calls), []);

    // Cognito instead.
    let cognito = r#"    alb.ingress.kubernetes.io/auth-type: cognito
    alb.ingress.kubernetes.io/auth-idp-cognito: '{"userPoolARN":"arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_abc","userPoolClientID":"client","userPoolDomain":"login"}'
    alb.ingress.kubernetes.io/auth-on-unauthenticated-request: deny"#;
    std::fs::write(dir.path().join("app.yaml"), app(&cert, cognito)).unwrap();
    let (_, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    assert!(https_actions(&aws)
        .await
        .iter()
        .all(|s| s.0 == ["authenticate-cognito", "forward"]));
    let (calls, _) = Box::pin(fresh_reconcile(&opts)).await;
    assert_eq!(mutating(&calls), [], "a no-op resync with Cognito");

    // Every Ingress gone: nothing left.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = Box::pin(fresh_reconcile(&opts)).await;
    assert!(converged);
    let left = aws.observe().await.expect("observe");
    assert!(
        left.load_balancers.is_empty() && left.target_groups.is_empty(),
        "{left:#?}"
    );
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

/// Served unprotected nowhere: authentication on a plain-HTTP listener (which ALB cannot
/// do, and the AWS Load Balancer Controller skips), or with its Secret missing, refuses the
/// Ingress with an Error naming why; nothing is created for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_that_cannot_be_applied_refuses_the_ingress() {
    test_credentials();
    let moto = start_moto();
    seed_cluster(&moto.endpoint, CLUSTER, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), &moto.endpoint);
    let aws = opts.connect().await;
    let cert = certificate(&aws).await;
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();

    // Plain HTTP next to HTTPS, no redirect.
    let both = app(&cert, OIDC).replace(
        r#"'[{"HTTPS": 443}]'"#,
        r#"'[{"HTTP": 80}, {"HTTPS": 443}]'"#,
    );
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("s3cret")).unwrap();
    std::fs::write(dir.path().join("app.yaml"), &both).unwrap();
    let (r, inv) = Box::pin(run_once(&opts)).await.expect("run");
    assert!(inv.load_balancers.is_empty(), "not served: {inv:#?}");
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.severity == tollgate_contract::Severity::Error
                && d.message.contains("only on HTTPS listeners")),
        "{:#?}",
        r.diagnostics
    );

    // With ssl-redirect, HTTP only redirects: served, HTTPS authenticated.
    let redirected = both.replace(
        "    alb.ingress.kubernetes.io/auth-type: oidc",
        "    alb.ingress.kubernetes.io/ssl-redirect: '443'\n    alb.ingress.kubernetes.io/auth-type: oidc",
    );
    std::fs::write(dir.path().join("app.yaml"), &redirected).unwrap();
    let (r, inv) = Box::pin(run_once(&opts)).await.expect("run");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.load_balancers.len(), 1);
    let seen = https_actions(&aws).await;
    assert!(
        seen.iter().any(|s| s.0 == ["redirect"])
            && seen.iter().any(|s| s.0 == ["authenticate-oidc", "forward"]),
        "{seen:?}"
    );

    // The Secret gone: an Error, and the last served version is what the controller's
    // last-known-good keeps (here, a fresh run has none: nothing is created or changed).
    std::fs::remove_file(dir.path().join("secret.yaml")).unwrap();
    let tollgate::sources::SourceSpec::Manifests(d) = &opts.source else {
        unreachable!()
    };
    let (snapshot, _) = load_dir(d).expect("manifests");
    let out = tollgate::build(&snapshot, &opts.build);
    assert!(
        out.diagnostics
            .iter()
            .any(|d| d.severity == tollgate_contract::Severity::Error
                && d.message.contains("Secret default/oidc not found")),
        "{:#?}",
        out.diagnostics
    );
    assert!(out.model.load_balancers.is_empty());
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

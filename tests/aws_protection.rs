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
        readiness_gate_timeout: tollgate::readiness_gate::DEFAULT_TIMEOUT,
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

/// A fresh emulator seeded for the cluster, a manifest directory holding SERVICES, the
/// options for both, and an ACM certificate for the HTTPS listener.
struct Emulated {
    moto: support::moto::Moto,
    dir: tempfile::TempDir,
    opts: AwsRunOptions,
    aws: Aws,
    cert: String,
}

async fn emulated() -> Emulated {
    test_credentials();
    let moto = start_moto();
    seed_cluster(&moto.endpoint, CLUSTER, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).expect("services");
    let opts = options(dir.path(), &moto.endpoint);
    let aws = opts.connect().await;
    let cert = certificate(&aws).await;
    Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_authentication_is_created_kept_rotated_changed_and_removed() {
    let Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("s3cret")).unwrap();
    std::fs::write(dir.path().join("app.yaml"), app(&cert, OIDC)).unwrap();

    // Created: the rule and the listener's default both authenticate first.
    let (r, _) = run_once(&opts).await.expect("converge");
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
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [], "a no-op resync");

    // The Secret rotated: the rule and the default are sent again, with their tags.
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("rotated")).unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
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
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "settled after the rotation");

    // A setting changed: the scope.
    std::fs::write(
        dir.path().join("app.yaml"),
        app(&cert, &OIDC.replace("openid email", "openid profile")),
    )
    .unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
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
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(
        mutating(&calls),
        [
            ("ModifyListener".to_string(), 1),
            ("ModifyRule".to_string(), 1)
        ]
    );
    assert!(https_actions(&aws).await.iter().all(|s| s.0 == ["forward"]));
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), []);

    // Cognito instead.
    let cognito = r#"    alb.ingress.kubernetes.io/auth-type: cognito
    alb.ingress.kubernetes.io/auth-idp-cognito: '{"userPoolARN":"arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_abc","userPoolClientID":"client","userPoolDomain":"login"}'
    alb.ingress.kubernetes.io/auth-on-unauthenticated-request: deny"#;
    std::fs::write(dir.path().join("app.yaml"), app(&cert, cognito)).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert!(https_actions(&aws)
        .await
        .iter()
        .all(|s| s.0 == ["authenticate-cognito", "forward"]));
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "a no-op resync with Cognito");

    // Every Ingress gone: nothing left.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
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
    let Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;

    // Plain HTTP next to HTTPS, no redirect.
    let both = app(&cert, OIDC).replace(
        r#"'[{"HTTPS": 443}]'"#,
        r#"'[{"HTTP": 80}, {"HTTPS": 443}]'"#,
    );
    std::fs::write(dir.path().join("secret.yaml"), oidc_secret("s3cret")).unwrap();
    std::fs::write(dir.path().join("app.yaml"), &both).unwrap();
    let (r, inv) = run_once(&opts).await.expect("run");
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
    let (r, inv) = run_once(&opts).await.expect("run");
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

async fn web_acl(aws: &Aws, name: &str) -> String {
    aws.wafv2
        .create_web_acl()
        .name(name)
        .scope(aws_sdk_wafv2::types::Scope::Regional)
        .default_action(
            aws_sdk_wafv2::types::DefaultAction::builder()
                .allow(aws_sdk_wafv2::types::AllowAction::builder().build())
                .build(),
        )
        .visibility_config(
            aws_sdk_wafv2::types::VisibilityConfig::builder()
                .sampled_requests_enabled(false)
                .cloud_watch_metrics_enabled(false)
                .metric_name(name)
                .build()
                .expect("visibility"),
        )
        .send()
        .await
        .expect("web ACL")
        .summary()
        .and_then(|s| s.arn())
        .expect("arn")
        .to_string()
}

/// The web ACL associated with the only load balancer, read straight from WAFv2.
async fn associated(aws: &Aws) -> Option<String> {
    let lbs = aws
        .elbv2
        .describe_load_balancers()
        .send()
        .await
        .expect("lbs");
    let arn = lbs
        .load_balancers()
        .first()?
        .load_balancer_arn()?
        .to_string();
    aws.wafv2
        .get_web_acl_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .expect("get")
        .web_acl()
        .map(|a| a.arn().to_string())
}

async fn protections(aws: &Aws) -> Vec<(String, String)> {
    aws.shield
        .list_protections()
        .send()
        .await
        .map(|r| {
            r.protections()
                .iter()
                .map(|p| {
                    (
                        p.name().unwrap_or_default().to_string(),
                        p.resource_arn().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// WAF: associated before the listeners exist, kept with no call, swapped for another ACL
/// named by name, removed with `none`, and an unknown name leaves everything as it is.
/// Shield: refused without a subscription (nothing created), then protected, kept, and
/// unprotected; deleting the Ingress deletes Tollgate's protection with its load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_acl_and_shield_are_associated_kept_changed_and_removed() {
    let Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;
    let first = web_acl(&aws, "first").await;
    let second = web_acl(&aws, "second").await;
    let with = |lines: &str| app(&cert, lines);

    std::fs::write(
        dir.path().join("app.yaml"),
        with(&format!(
            "    alb.ingress.kubernetes.io/wafv2-acl-arn: {first}"
        )),
    )
    .unwrap();
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(associated(&aws).await.as_deref(), Some(first.as_str()));
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [], "a no-op resync");
    assert_eq!(
        calls.get("GetWebACLForResource"),
        Some(&(1, 0)),
        "one look-up for the one load balancer"
    );

    // The plan puts the association before the listeners: never served without the ACL.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    std::fs::write(
        dir.path().join("app.yaml"),
        with(&format!(
            "    alb.ingress.kubernetes.io/wafv2-acl-arn: {first}"
        )),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let (stacks, _) = tollgate::aws_command::desired_stacks(&snapshot, &opts);
    let inv = aws.observe().await.expect("observe");
    let plan = tollgate_aws::plan::plan(&stacks, &inv);
    let text: Vec<String> = plan.changes.iter().map(|c| c.to_string()).collect();
    let acl_at = text
        .iter()
        .position(|c| c.contains("web ACL"))
        .expect("associated");
    let listener_at = text
        .iter()
        .position(|c| c.contains("listener"))
        .expect("listener");
    assert!(acl_at < listener_at, "{text:#?}");
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);

    // By name, another ACL: one association, replacing the first.
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/wafv2-acl-name: second"),
    )
    .unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [("AssociateWebACL".to_string(), 1)]);
    assert_eq!(associated(&aws).await.as_deref(), Some(second.as_str()));

    // A name no ACL has: an Error, and nothing changes.
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/wafv2-acl-name: missing"),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let mut inv = aws.observe().await.expect("observe");
    let before = aws.calls.mutating();
    let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
    assert_eq!(aws.calls.mutating(), before, "nothing changed");
    assert!(
        r.diagnostics.iter().any(|d| d
            .message
            .contains("no regional WAFv2 web ACL is named missing")),
        "{:#?}",
        r.diagnostics
    );
    assert!(
        r.unconverged_stacks.contains("ingress/default/app"),
        "{:?}",
        r.unconverged_stacks
    );
    assert_eq!(associated(&aws).await.as_deref(), Some(second.as_str()));

    // none: removed.
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/wafv2-acl-arn: none"),
    )
    .unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [("DisassociateWebACL".to_string(), 1)]);
    assert_eq!(associated(&aws).await, None);

    // Shield Advanced without a subscription: refused, nothing created for a new stack.
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/shield-advanced-protection: 'true'"),
    )
    .unwrap();
    let (r, inv) = run_once(&opts).await.expect("run");
    assert!(inv.load_balancers.is_empty(), "not created unprotected");
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("no active Shield Advanced subscription")),
        "{:#?}",
        r.diagnostics
    );
    aws.shield
        .create_subscription()
        .send()
        .await
        .expect("subscribe");
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(
        r.converged && r.unconverged_stacks.is_empty(),
        "{:#?}",
        r.diagnostics
    );
    let lb = inv.load_balancers[0].arn.clone();
    assert_eq!(
        protections(&aws).await,
        [("managed by tollgate".to_string(), lb.clone())]
    );
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "a no-op resync with Shield");
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/shield-advanced-protection: 'false'"),
    )
    .unwrap();
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [("DeleteProtection".to_string(), 1)]);
    assert!(protections(&aws).await.is_empty());

    // Protected again, then every Ingress gone: the protection goes with the load balancer.
    std::fs::write(
        dir.path().join("app.yaml"),
        with("    alb.ingress.kubernetes.io/shield-advanced-protection: 'true'"),
    )
    .unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(protections(&aws).await.len(), 1);
    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert!(
        protections(&aws).await.is_empty(),
        "no protection left behind"
    );
    let left = aws.observe().await.expect("observe");
    assert!(left.load_balancers.is_empty() && left.target_groups.is_empty());
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

/// Members of one group asking for different web ACLs: the one with precedence is served,
/// the other refused (never served behind an ACL it did not ask for, or without its own).
#[test]
fn a_member_asking_for_another_web_acl_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let member = |name: &str, order: i32, acl: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations:\n    alb.ingress.kubernetes.io/group.name: g\n    alb.ingress.kubernetes.io/group.order: '{order}'\n    alb.ingress.kubernetes.io/wafv2-acl-name: {acl}\nspec:\n  ingressClassName: tollgate\n  rules:\n  - host: {name}.example.com\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
        )
    };
    std::fs::write(
        dir.path().join("a.yaml"),
        member("a", 1, "one") + "---\n" + &member("b", 2, "two") + "---\n" + &member("c", 3, "one"),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let out = tollgate::build(
        &snapshot,
        &BuildOptions {
            grouping: Grouping::ByIngressGroup,
            ..BuildOptions::default()
        },
    );
    let lb = &out.model.load_balancers[0];
    let names: Vec<&str> = lb.ingresses.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(
        lb.protection.web_acl,
        Some(tollgate_contract::WebAcl::Name("one".into()))
    );
    assert!(
        out.diagnostics.iter().any(|d| d.subject.name == "b"
            && d.severity == tollgate_contract::Severity::Error
            && d.message.contains("not served")),
        "{:#?}",
        out.diagnostics
    );
}

/// `load-balancer-name`: the load balancer is created with it; a later change cannot rename
/// it (ELBv2 cannot) and is reported, with no call; a name another group took first falls
/// back to the derived one, with a Warning; an invalid one refuses the Ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_name_names_the_load_balancer_at_creation() {
    let Emulated {
        moto: _moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;
    let named = |name: &str| {
        app(
            &cert,
            &format!("    alb.ingress.kubernetes.io/load-balancer-name: {name}"),
        )
    };
    std::fs::write(dir.path().join("app.yaml"), named("shop-public")).unwrap();
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(inv.load_balancers[0].name, "shop-public");
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "a no-op resync");

    // Renamed: reported, nothing changed.
    std::fs::write(dir.path().join("app.yaml"), named("shop-renamed")).unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let mut inv = aws.observe().await.expect("observe");
    let r = reconcile(&aws, &mut inv, &snapshot, &opts).await;
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("cannot rename")),
        "{:#?}",
        r.diagnostics
    );
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), []);
    assert_eq!(
        aws.observe().await.expect("observe").load_balancers[0].name,
        "shop-public"
    );

    // Another group asking for the same name: derived name, with a Warning.
    std::fs::write(dir.path().join("app.yaml"), named("shop-public")).unwrap();
    std::fs::write(
        dir.path().join("other.yaml"),
        named("shop-public")
            .replace("name: app\n", "name: other\n")
            .replace("app.example.com", "other.example.com"),
    )
    .unwrap();
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let mut names: Vec<&str> = inv.load_balancers.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"shop-public"), "{names:?}");
    assert!(r
        .diagnostics
        .iter()
        .any(|d| d.message.contains("is taken by load balancer")));

    // Invalid: refused.
    std::fs::write(
        dir.path().join("other.yaml"),
        named("-bad-").replace("name: app\n", "name: other\n"),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let out = tollgate::build(&snapshot, &opts.build);
    assert!(out.diagnostics.iter().any(|d| d.subject.name == "other"
        && d.severity == tollgate_contract::Severity::Error
        && d.message.contains("load-balancer-name")));

    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("other.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    let left = aws.observe().await.expect("observe");
    assert!(left.load_balancers.is_empty() && left.target_groups.is_empty());
}

async fn listener_attributes(aws: &Aws) -> BTreeMap<String, String> {
    let lbs = aws
        .elbv2
        .describe_load_balancers()
        .send()
        .await
        .expect("lbs");
    let lb = lbs.load_balancers()[0]
        .load_balancer_arn()
        .unwrap_or_default()
        .to_string();
    let ls = aws
        .elbv2
        .describe_listeners()
        .load_balancer_arn(lb)
        .send()
        .await
        .expect("listeners");
    let arn = ls.listeners()[0]
        .listener_arn()
        .unwrap_or_default()
        .to_string();
    aws.elbv2
        .describe_listener_attributes()
        .listener_arn(arn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .iter()
        .filter_map(|a| Some((a.key()?.to_string(), a.value()?.to_string())))
        .collect()
}

/// `listener-attributes.HTTPS-443`: set on the listener when it is created, no call while
/// they hold, one call when one changes; a name that is not `<PROTOCOL>-<port>` refuses the
/// Ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_attributes_are_set_kept_and_changed() {
    let Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;
    let with = |v: &str| {
        app(
            &cert,
            &format!("    alb.ingress.kubernetes.io/listener-attributes.HTTPS-443: {v}"),
        )
    };
    std::fs::write(
        dir.path().join("app.yaml"),
        with("routing.http.response.server.enabled=false"),
    )
    .unwrap();
    let (r, _) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    assert_eq!(
        listener_attributes(&aws)
            .await
            .get("routing.http.response.server.enabled")
            .map(String::as_str),
        Some("false")
    );
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "a no-op resync");
    assert_eq!(calls.get("DescribeListenerAttributes"), Some(&(1, 0)));

    std::fs::write(
        dir.path().join("app.yaml"),
        with("routing.http.response.server.enabled=true"),
    )
    .unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(
        mutating(&calls),
        [("ModifyListenerAttributes".to_string(), 1)]
    );
    assert_eq!(
        listener_attributes(&aws)
            .await
            .get("routing.http.response.server.enabled")
            .map(String::as_str),
        Some("true")
    );

    std::fs::write(
        dir.path().join("app.yaml"),
        app(
            &cert,
            "    alb.ingress.kubernetes.io/listener-attributes.HTTPS443: a=b",
        ),
    )
    .unwrap();
    let (snapshot, _) = load_dir(dir.path()).expect("manifests");
    let out = tollgate::build(&snapshot, &opts.build);
    assert!(out
        .diagnostics
        .iter()
        .any(|d| d.severity == tollgate_contract::Severity::Error
            && d.message.contains("HTTPS-<port>")));

    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

/// `mutual-authentication` on the HTTPS listener: sent with the listener, no call while it
/// holds (the strict proxy keeps what moto drops), one ModifyListener when it changes; on a
/// plain-HTTP port, or with `verify` and no trust store, the Ingress is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_authentication_is_set_kept_and_changed() {
    let Emulated {
        moto,
        dir,
        opts,
        aws,
        cert,
    } = emulated().await;
    let store =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:truststore/clients/0123456789abcdef";
    let with = |v: &str| {
        app(
            &cert,
            &format!("    alb.ingress.kubernetes.io/mutual-authentication: '{v}'"),
        )
    };
    let verify = format!(r#"[{{"port":443,"mode":"verify","trustStore":"{store}"}}]"#);
    std::fs::write(dir.path().join("app.yaml"), with(&verify)).unwrap();
    let (r, inv) = run_once(&opts).await.expect("converge");
    assert!(r.converged, "{:#?}", r.diagnostics);
    let m = inv.load_balancers[0].listeners[0]
        .mutual_authentication
        .clone()
        .expect("recorded");
    assert_eq!(
        (m.mode.as_str(), m.trust_store.as_deref()),
        ("verify", Some(store))
    );
    let read = |aws: &Aws| {
        let aws = aws.elbv2.clone();
        async move {
            let lbs = aws.describe_load_balancers().send().await.expect("lbs");
            let lb = lbs.load_balancers()[0]
                .load_balancer_arn()
                .unwrap_or_default()
                .to_string();
            let ls = aws
                .describe_listeners()
                .load_balancer_arn(lb)
                .send()
                .await
                .expect("ls");
            ls.listeners()[0]
                .mutual_authentication()
                .and_then(|m| m.mode().map(str::to_string))
        }
    };
    assert_eq!(read(&aws).await.as_deref(), Some("verify"));
    let (calls, _) = fresh_reconcile(&opts).await;
    assert_eq!(mutating(&calls), [], "a no-op resync");

    std::fs::write(
        dir.path().join("app.yaml"),
        with(r#"[{"port":443,"mode":"passthrough"}]"#),
    )
    .unwrap();
    let (calls, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert_eq!(mutating(&calls), [("ModifyListener".to_string(), 1)]);
    assert_eq!(read(&aws).await.as_deref(), Some("passthrough"));

    // Refused: verify without a trust store; verify on a plain-HTTP port.
    for (value, says) in [
        (
            r#"[{"port":443,"mode":"verify"}]"#.to_string(),
            "verify needs a trustStore",
        ),
        (
            format!(r#"[{{"port":80,"mode":"verify","trustStore":"{store}"}}]"#),
            "plain HTTP",
        ),
    ] {
        let text = with(&value).replace(
            r#"'[{"HTTPS": 443}]'"#,
            r#"'[{"HTTP": 80}, {"HTTPS": 443}]'"#,
        );
        std::fs::write(dir.path().join("app.yaml"), text).unwrap();
        let (snapshot, _) = load_dir(dir.path()).expect("manifests");
        let out = tollgate::build(&snapshot, &opts.build);
        assert!(
            out.diagnostics
                .iter()
                .any(|d| d.severity == tollgate_contract::Severity::Error
                    && d.message.contains(says)),
            "{says}: {:#?}",
            out.diagnostics
        );
    }

    std::fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let (_, converged) = fresh_reconcile(&opts).await;
    assert!(converged);
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());
}

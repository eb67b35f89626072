//! deploy/iam-policy.json allows every AWS operation the provider calls: each call site in
//! providers/aws/src/aws_api.rs goes through `counted("Operation", …)`, read from the source.

use std::collections::BTreeSet;

fn service_of(operation: &str) -> &'static str {
    match operation {
        "GetResources" => "tag",
        "DescribeSubnets"
        | "DescribeRouteTables"
        | "DescribeVpcs"
        | "DescribeSecurityGroups"
        | "DescribeInstances"
        | "DescribeNetworkInterfaces"
        | "CreateSecurityGroup"
        | "DeleteSecurityGroup"
        | "AuthorizeSecurityGroupIngress"
        | "RevokeSecurityGroupIngress"
        | "CreateTags" => "ec2",
        op if op.contains("Certificate") && !op.contains("Listener") => "acm",
        op if op.contains("WebACL") => "wafv2",
        "CreateProtection" | "DeleteProtection" | "DescribeProtection" | "DescribeSubscription" => {
            "shield"
        }
        _ => "elasticloadbalancing",
    }
}

#[test]
fn the_policy_allows_every_operation_the_provider_calls() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/providers/aws/src/aws_api.rs"))
        .expect("aws_api.rs");
    // Calls whose typed error is needed are recorded with `calls.record("Operation", …)`.
    let called: BTreeSet<String> = ["counted(", "calls.record("]
        .iter()
        .flat_map(|marker| source.split(marker).skip(1))
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .map(|op| format!("{}:{op}", service_of(op)))
        .collect();
    assert!(called.contains("shield:DescribeSubscription"), "{called:?}");
    assert!(called.len() > 20, "{called:?}");
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/iam-policy.json")).expect("policy"),
    )
    .expect("policy is JSON");
    let allowed: BTreeSet<String> = policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| s["Action"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = called.difference(&allowed).collect();
    assert!(
        missing.is_empty(),
        "not allowed by deploy/iam-policy.json: {missing:?}"
    );
}

fn policy() -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/iam-policy.json")).expect("policy"),
    )
    .expect("policy is JSON")
}

fn actions(s: &serde_json::Value) -> Vec<String> {
    match &s["Action"] {
        serde_json::Value::String(a) => vec![a.clone()],
        v => v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    }
}

const CLUSTER_TAG: &str = "tollgate.io/cluster";

/// Whether statement `s` lets the role put the cluster tag on a resource it did not create:
/// the self-tagging bypass (tag anything, then modify or delete it as "ours").
fn allows_adding_the_cluster_tag_to_existing(s: &serde_json::Value) -> bool {
    let cond = &s["Condition"];
    let request_tag_forbidden =
        cond["Null"][format!("aws:RequestTag/{CLUSTER_TAG}")].as_str() == Some("true");
    let only_at_creation = cond["StringEquals"]["elasticloadbalancing:CreateAction"].is_string()
        || cond["StringEquals"]["elasticloadbalancing:CreateAction"].is_array()
        || cond["StringEquals"]["ec2:CreateAction"].is_string();
    !(request_tag_forbidden || only_at_creation)
}

#[test]
fn tags_are_settable_at_creation_only_and_never_add_the_cluster_tag_later() {
    let policy = policy();
    let statements = policy["Statement"].as_array().expect("statements");
    for op in [
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:RemoveTags",
        "ec2:CreateTags",
        "ec2:DeleteTags",
    ] {
        for s in statements
            .iter()
            .filter(|s| actions(s).iter().any(|a| a == op))
        {
            assert!(
                !allows_adding_the_cluster_tag_to_existing(s),
                "{op} in statement {} can tag existing resources with {CLUSTER_TAG}: {s}",
                s["Sid"]
            );
        }
    }
    // ELBv2 and EC2 tagging is scoped to the resource types Tollgate creates.
    for s in statements.iter().filter(|s| {
        actions(s)
            .iter()
            .any(|a| a == "elasticloadbalancing:AddTags" || a == "ec2:CreateTags")
    }) {
        assert_ne!(s["Resource"], "*", "tagging on every resource: {s}");
    }
}

#[test]
fn mutations_need_the_cluster_tag_on_the_resource_or_in_the_request() {
    let policy = policy();
    let statements = policy["Statement"].as_array().expect("statements");
    let unconditioned_ok = [
        // Listeners and rules have no tags of their own (as in the AWS Load Balancer
        // Controller's policy); they are scoped to ALB ARNs instead.
        "ListenersAndRulesOfOwnLoadBalancers",
        // A security group is created in a VPC: the VPC is a resource of that call too.
        "CreateSecurityGroupsInAnyVpc",
        // Only the client-secret tag, never the cluster tag, on listeners and rules.
        "RecordTheOidcClientSecretOnListenersAndRules",
        // WAFv2 and Shield resources carry no cluster tag; the load balancer's side of an
        // association is SetWebAclOnOwnLoadBalancers, conditioned on the tag (as in the
        // AWS Load Balancer Controller's policy, which leaves these on "*").
        "WafAssociationsAndShieldProtections",
        "ReadEverywhere",
    ];
    for s in statements {
        let sid = s["Sid"].as_str().unwrap_or_default();
        if unconditioned_ok.contains(&sid) {
            continue;
        }
        let null = &s["Condition"]["Null"];
        let conditioned = null[format!("aws:ResourceTag/{CLUSTER_TAG}")].as_str() == Some("false")
            || null[format!("aws:RequestTag/{CLUSTER_TAG}")].as_str() == Some("false");
        assert!(
            conditioned,
            "statement {sid} mutates without the cluster tag: {s}"
        );
    }
    let read_only = statements
        .iter()
        .find(|s| s["Sid"] == "ReadEverywhere")
        .expect("ReadEverywhere");
    for a in actions(read_only) {
        let op = a.split(':').nth(1).unwrap_or_default();
        assert!(
            ["Describe", "List", "Get"]
                .iter()
                .any(|p| op.starts_with(p)),
            "{a} is not read-only"
        );
    }
    let listeners = statements
        .iter()
        .find(|s| s["Sid"] == "ListenersAndRulesOfOwnLoadBalancers")
        .expect("listener statement");
    assert_ne!(listeners["Resource"], "*");
}

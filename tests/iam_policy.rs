//! deploy/iam-policy.json allows every AWS operation the provider calls: each call site in
//! providers/aws/src/aws_api.rs goes through `counted("Operation", …)`, read from the source.

use std::collections::BTreeSet;

fn service_of(operation: &str) -> &'static str {
    match operation {
        "GetResources" => "tag",
        "DescribeSubnets"
        | "DescribeVpcs"
        | "DescribeSecurityGroups"
        | "DescribeInstances"
        | "CreateSecurityGroup"
        | "DeleteSecurityGroup"
        | "AuthorizeSecurityGroupIngress"
        | "RevokeSecurityGroupIngress"
        | "CreateTags" => "ec2",
        op if op.contains("Certificate") && !op.contains("Listener") => "acm",
        _ => "elasticloadbalancing",
    }
}

#[test]
fn the_policy_allows_every_operation_the_provider_calls() {
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/providers/aws/src/aws_api.rs"))
        .expect("aws_api.rs");
    let called: BTreeSet<String> = source
        .split("counted(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .map(|op| format!("{}:{op}", service_of(op)))
        .collect();
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

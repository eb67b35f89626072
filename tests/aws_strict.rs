//! The strict proxy every AWS test runs behind (tests/support/strict_aws.rs) rejects what
//! AWS rejects and the emulator accepts: checked here call by call against moto itself, so
//! that a check that stops working is noticed, not trusted.

mod support;

use support::moto::{seed, start_moto, test_credentials};

async fn clients(endpoint: &str) -> (aws_sdk_ec2::Client, aws_sdk_elasticloadbalancingv2::Client) {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    (
        aws_sdk_ec2::Client::new(&conf),
        aws_sdk_elasticloadbalancingv2::Client::new(&conf),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_aws_rejects_are_rejected_and_recorded() {
    test_credentials();
    let moto = start_moto();
    seed(&moto.endpoint, 0).await;
    let (ec2, elb) = clients(&moto.endpoint).await;
    let (raw_ec2, raw_elb) = clients(&moto.raw_endpoint).await;
    let subnets = ec2.describe_subnets().send().await.expect("subnets");
    let mut by_zone: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in subnets.subnets() {
        if let (Some(z), Some(id)) = (s.availability_zone(), s.subnet_id()) {
            by_zone
                .entry(z.to_string())
                .or_default()
                .push(id.to_string());
        }
    }
    let one_zone: Vec<String> = by_zone
        .values()
        .find(|ids| ids.len() >= 2)
        .cloned()
        .expect("a zone with two subnets (moto's default VPC has one per zone; the seed adds more)")
        .into_iter()
        .take(2)
        .collect();

    // Two subnets in one zone: moto creates the load balancer, AWS refuses.
    let create = |client: &aws_sdk_elasticloadbalancingv2::Client, name: &str| {
        client
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(one_zone.clone()))
            .send()
    };
    assert!(
        create(&raw_elb, "lenient").await.is_ok(),
        "moto is kind here"
    );
    let refused = create(&elb, "strict").await;
    assert!(refused.is_err(), "the strict proxy refuses");
    assert_eq!(moto.violations().len(), 1, "{:?}", moto.violations());
    assert!(moto.violations()[0].contains("same Availability Zone"));
    moto.clear_violations();

    // Creating a load balancer whose name exists returns it, as AWS does (a retry after a
    // lost answer); moto would make a second one.
    let two_zones: Vec<String> = by_zone
        .values()
        .filter_map(|ids| ids.first().cloned())
        .take(2)
        .collect();
    let again = || {
        elb.create_load_balancer()
            .name("twice")
            .set_subnets(Some(two_zones.clone()))
            .send()
    };
    let first = again().await.expect("create");
    let second = again().await.expect("create again");
    assert_eq!(
        first.load_balancers()[0].load_balancer_arn(),
        second.load_balancers()[0].load_balancer_arn(),
        "the same load balancer"
    );
    assert!(moto.violations().is_empty(), "{:?}", moto.violations());

    // A group another group's rule names cannot be deleted.
    let vpc = subnets.subnets()[0]
        .vpc_id()
        .unwrap_or_default()
        .to_string();
    let group = |name: &'static str| {
        let (ec2, vpc) = (ec2.clone(), vpc.clone());
        async move {
            ec2.create_security_group()
                .group_name(name)
                .description(name)
                .vpc_id(vpc)
                .send()
                .await
                .expect("group")
                .group_id()
                .expect("id")
                .to_string()
        }
    };
    let (source, target) = (group("source").await, group("target").await);
    ec2.authorize_security_group_ingress()
        .group_id(&target)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(80)
                .to_port(80)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&source)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("rule");
    let refused = ec2.delete_security_group().group_id(&source).send().await;
    assert!(refused.is_err());
    assert!(
        moto.violations()
            .iter()
            .any(|v| v.contains("DependencyViolation")),
        "{:?}",
        moto.violations()
    );
    moto.clear_violations();
    // The target group itself has no dependents: deleted.
    ec2.delete_security_group()
        .group_id(&target)
        .send()
        .await
        .expect("a group nothing names is deleted");
    assert!(raw_ec2.describe_security_groups().send().await.is_ok());
    assert!(moto.violations().is_empty());
}

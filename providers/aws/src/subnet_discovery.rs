//! Which subnets a load balancer goes into when the Ingress names none, as the AWS Load
//! Balancer Controller documents it (`docs/deploy/subnet_discovery.md`): candidates carry the
//! role tag of the scheme (`kubernetes.io/role/elb` for internet-facing,
//! `kubernetes.io/role/internal-elb` for internal); the cluster tag is optional (EKS and its
//! tooling no longer put it on subnets) but a subnet tagged for other clusters only is not
//! ours; a subnet with fewer than 8 free addresses is skipped; one subnet per Availability
//! Zone (one tagged for this cluster first, then the lowest ID); an ALB needs two zones.
//!
//! When no subnet carries the scheme's role tag, the controller (since v2.12.1) takes the
//! subnets of the cluster's VPC whose reachability matches the scheme ([`by_reachability`]):
//! public when the route table a subnet uses routes to an internet gateway. Tollgate does the
//! same when it knows the VPC (`--aws-vpc-id`).
//!
//! Pure: the SDK half (`aws_api`) describes the subnets and route tables and calls
//! [`choose`].

use std::collections::BTreeMap;

/// What discovery needs to know of one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFacts {
    pub id: String,
    pub vpc: String,
    pub zone: String,
    /// Cluster names of its `kubernetes.io/cluster/<name>` tags.
    pub clusters: Vec<String>,
    pub free_addresses: i32,
}

/// The documented minimum of free addresses for a load balancer's subnet.
pub const MIN_FREE_ADDRESSES: i32 = 8;

/// The subnets (one per zone, sorted) and their VPC, or why there are none to use.
pub fn choose(cluster: &str, candidates: &[SubnetFacts]) -> Result<(Vec<String>, String), String> {
    let ours = |s: &SubnetFacts| s.clusters.iter().any(|c| c == cluster);
    let mut skipped = Vec::new();
    let usable: Vec<&SubnetFacts> = candidates
        .iter()
        .filter(|s| {
            let foreign = !s.clusters.is_empty() && !ours(s);
            let full = s.free_addresses < MIN_FREE_ADDRESSES;
            if foreign {
                skipped.push(format!("{} (tagged for another cluster)", s.id));
            } else if full {
                skipped.push(format!("{} ({} free addresses)", s.id, s.free_addresses));
            }
            !foreign && !full
        })
        .collect();
    let why_not = || {
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", skipped.join(", "))
        }
    };
    // One VPC: the one with subnets tagged for this cluster if several VPCs have candidates.
    let mut vpcs: BTreeMap<&str, bool> = BTreeMap::new();
    for s in &usable {
        *vpcs.entry(s.vpc.as_str()).or_default() |= ours(s);
    }
    let vpc = match vpcs.len() {
        0 => return Err(format!("no role-tagged subnet is usable{}", why_not())),
        1 => vpcs
            .keys()
            .next()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        _ => {
            let tagged: Vec<&&str> = vpcs.iter().filter(|(_, t)| **t).map(|(v, _)| v).collect();
            match tagged.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return Err(format!(
                        "role-tagged subnets are in several VPCs ({}); tag the cluster's with kubernetes.io/cluster/{cluster} or name the subnets",
                        vpcs.keys().copied().collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        }
    };
    let mut by_zone: BTreeMap<&str, &SubnetFacts> = BTreeMap::new();
    for s in usable.iter().filter(|s| s.vpc == vpc) {
        let better = |cur: &SubnetFacts| (!ours(s), &s.id) < (!ours(cur), &cur.id);
        match by_zone.get(s.zone.as_str()) {
            Some(cur) if !better(cur) => {}
            _ => {
                by_zone.insert(s.zone.as_str(), s);
            }
        }
    }
    if by_zone.len() < 2 {
        return Err(format!(
            "an Application Load Balancer needs subnets in at least two Availability Zones; usable role-tagged subnets cover {}{}",
            by_zone.keys().copied().collect::<Vec<_>>().join(", "),
            why_not()
        ));
    }
    let mut ids: Vec<String> = by_zone.values().map(|s| s.id.clone()).collect();
    ids.sort();
    Ok((ids, vpc))
}

/// Subnets an Ingress names, held to what ALB requires of them — all known (`facts`: ID →
/// VPC and zone), in one VPC, one per Availability Zone, at least two zones — as [`choose`]
/// holds discovered ones; their VPC.
pub fn check_named(
    ids: &[String],
    facts: &BTreeMap<String, (String, String)>,
) -> Result<String, String> {
    let mut vpcs = std::collections::BTreeSet::new();
    let mut zones: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in ids {
        let Some((vpc, zone)) = facts.get(id) else {
            return Err(format!("{id} does not exist"));
        };
        vpcs.insert(vpc.as_str());
        zones.entry(zone.as_str()).or_default().push(id);
    }
    if vpcs.len() > 1 {
        return Err(format!(
            "they are in several VPCs ({})",
            vpcs.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some((zone, twins)) = zones.iter().find(|(_, v)| v.len() > 1) {
        return Err(format!(
            "{} are all in {zone}; an Application Load Balancer takes one subnet per Availability Zone",
            twins.join(", ")
        ));
    }
    if zones.len() < 2 {
        return Err(
            "an Application Load Balancer needs subnets in at least two Availability Zones".into(),
        );
    }
    Ok(vpcs.into_iter().next().unwrap_or_default().to_string())
}

/// What reachability needs to know of one route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTableFacts {
    pub vpc: String,
    /// The VPC's main route table: subnets without an association of their own use it.
    pub main: bool,
    /// Subnets explicitly associated with it.
    pub subnets: Vec<String>,
    /// Some route's target is an internet gateway (`igw-…`).
    pub to_internet_gateway: bool,
}

/// The subnets of `vpc` whose reachability matches the scheme: public (a route to an
/// internet gateway in the route table the subnet uses — its own association, else the
/// VPC's main table) for internet-facing, private for internal.
pub fn by_reachability(
    vpc: &str,
    internal: bool,
    subnets: &[SubnetFacts],
    tables: &[RouteTableFacts],
) -> Vec<SubnetFacts> {
    let tables: Vec<&RouteTableFacts> = tables.iter().filter(|t| t.vpc == vpc).collect();
    let main_is_public = tables.iter().any(|t| t.main && t.to_internet_gateway);
    subnets
        .iter()
        .filter(|s| s.vpc == vpc)
        .filter(|s| {
            let public = match tables.iter().find(|t| t.subnets.contains(&s.id)) {
                Some(t) => t.to_internet_gateway,
                None => main_is_public,
            };
            public != internal
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, vpc: &str, zone: &str, clusters: &[&str], free: i32) -> SubnetFacts {
        SubnetFacts {
            id: id.into(),
            vpc: vpc.into(),
            zone: zone.into(),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            free_addresses: free,
        }
    }

    #[test]
    fn one_per_zone_cluster_tagged_first_then_lowest_id() {
        let (ids, vpc) = choose(
            "c",
            &[
                s("subnet-b2", "vpc-1", "a", &[], 100),
                s("subnet-a1", "vpc-1", "a", &[], 100),
                s("subnet-z9", "vpc-1", "b", &["c"], 100),
                s("subnet-b1", "vpc-1", "b", &[], 100),
                s("subnet-c1", "vpc-1", "c", &[], 100),
            ],
        )
        .expect("chosen");
        assert_eq!(ids, ["subnet-a1", "subnet-c1", "subnet-z9"]);
        assert_eq!(vpc, "vpc-1");
    }

    #[test]
    fn the_cluster_tag_is_optional_but_another_clusters_subnet_is_not_ours() {
        let (ids, _) = choose(
            "c",
            &[
                s("subnet-1", "vpc-1", "a", &["other"], 100),
                s("subnet-2", "vpc-1", "a", &[], 100),
                s("subnet-3", "vpc-1", "b", &["other", "c"], 100),
            ],
        )
        .expect("chosen");
        assert_eq!(ids, ["subnet-2", "subnet-3"]);
    }

    #[test]
    fn nearly_full_subnets_are_skipped_and_two_zones_are_required() {
        let err = choose(
            "c",
            &[
                s("subnet-1", "vpc-1", "a", &[], 100),
                s("subnet-2", "vpc-1", "b", &[], 7),
            ],
        )
        .expect_err("one zone left");
        assert!(err.contains("at least two Availability Zones"), "{err}");
        assert!(err.contains("subnet-2 (7 free addresses)"), "{err}");
        assert!(choose("c", &[]).is_err());
    }

    #[test]
    fn reachability_follows_the_route_table_a_subnet_uses() {
        let subnets = [
            s("subnet-pub-a", "vpc-1", "a", &[], 100),
            s("subnet-pub-b", "vpc-1", "b", &[], 100),
            s("subnet-priv-a", "vpc-1", "a", &[], 100),
            s("subnet-priv-b", "vpc-1", "b", &[], 100),
            s("subnet-main", "vpc-1", "c", &[], 100),
            s("subnet-other", "vpc-2", "a", &[], 100),
        ];
        let t = |main: bool, subnets: &[&str], igw: bool| RouteTableFacts {
            vpc: "vpc-1".into(),
            main,
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            to_internet_gateway: igw,
        };
        let tables = [
            t(false, &["subnet-pub-a", "subnet-pub-b"], true),
            t(false, &["subnet-priv-a", "subnet-priv-b"], false),
            t(true, &[], false),
        ];
        let ids = |v: Vec<SubnetFacts>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(by_reachability("vpc-1", false, &subnets, &tables)),
            ["subnet-pub-a", "subnet-pub-b"]
        );
        assert_eq!(
            ids(by_reachability("vpc-1", true, &subnets, &tables)),
            ["subnet-priv-a", "subnet-priv-b", "subnet-main"],
            "a subnet without an association uses the main table (private here)"
        );
        let mut public_main = tables.clone();
        public_main[2].to_internet_gateway = true;
        assert_eq!(
            ids(by_reachability("vpc-1", false, &subnets, &public_main)),
            ["subnet-pub-a", "subnet-pub-b", "subnet-main"]
        );
    }

    #[test]
    fn named_subnets_are_held_to_albs_rules() {
        let facts: BTreeMap<String, (String, String)> = [
            ("subnet-a1", "vpc-1", "a"),
            ("subnet-a2", "vpc-1", "a"),
            ("subnet-b1", "vpc-1", "b"),
            ("subnet-c2", "vpc-2", "c"),
        ]
        .iter()
        .map(|(i, v, z)| (i.to_string(), (v.to_string(), z.to_string())))
        .collect();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_named(&ids(&["subnet-a1", "subnet-b1"]), &facts),
            Ok("vpc-1".to_string())
        );
        let err = |v: &[&str]| check_named(&ids(v), &facts).expect_err("refused");
        assert!(err(&["subnet-a1", "subnet-a2"]).contains("one subnet per Availability Zone"));
        assert!(err(&["subnet-a1"]).contains("at least two Availability Zones"));
        assert!(err(&["subnet-a1", "subnet-c2"]).contains("several VPCs"));
        assert!(err(&["subnet-a1", "subnet-zz"]).contains("subnet-zz does not exist"));
    }

    #[test]
    fn several_vpcs_pick_the_clusters_or_fail() {
        let (ids, vpc) = choose(
            "c",
            &[
                s("subnet-1", "vpc-1", "a", &[], 100),
                s("subnet-2", "vpc-1", "b", &[], 100),
                s("subnet-3", "vpc-2", "a", &["c"], 100),
                s("subnet-4", "vpc-2", "b", &[], 100),
            ],
        )
        .expect("the cluster's VPC");
        assert_eq!(
            (ids.as_slice(), vpc.as_str()),
            (
                &["subnet-3".to_string(), "subnet-4".to_string()][..],
                "vpc-2"
            )
        );
        let err = choose(
            "c",
            &[
                s("subnet-1", "vpc-1", "a", &[], 100),
                s("subnet-3", "vpc-2", "a", &[], 100),
            ],
        )
        .expect_err("ambiguous");
        assert!(err.contains("several VPCs"), "{err}");
    }
}

//! Properties of rule placement: priorities follow the desired order, stay in range, never
//! collide, keep what already fits, and a single addition or change costs a single call.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tollgate_aws::alb_stack::{AlbAction, AlbCondition, RuleSpec};
use tollgate_aws::inventory::ObservedRule;
use tollgate_aws::priorities::{place_rules, Placement, MAX_PRIORITY};

fn rule(n: u8) -> RuleSpec {
    RuleSpec {
        conditions: vec![AlbCondition::PathPattern(vec![format!("/p{n}")])],
        authenticate: None,
        action: AlbAction::FixedResponse {
            status_code: "200".into(),
            content_type: "text/plain".into(),
            body: String::new(),
        },
    }
}

fn observed(contents: &[u8], prios: &[u32]) -> Vec<ObservedRule> {
    contents
        .iter()
        .zip(prios)
        .enumerate()
        .map(|(i, (c, p))| ObservedRule {
            arn: format!("arn:{i}"),
            priority: *p,
            content: rule(*c),
        })
        .collect()
}

fn existing_strategy() -> impl Strategy<Value = Vec<ObservedRule>> {
    prop::collection::vec((0u8..12, 1u32..400), 0..10).prop_map(|v| {
        let mut seen = BTreeSet::new();
        let v: Vec<(u8, u32)> = v.into_iter().filter(|(_, p)| seen.insert(*p)).collect();
        let (c, p): (Vec<u8>, Vec<u32>) = v.into_iter().unzip();
        observed(&c, &p)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn placements_are_valid(existing in existing_strategy(), desired in prop::collection::vec(0u8..12, 0..12)) {
        let desired: Vec<RuleSpec> = desired.into_iter().map(rule).collect();
        let plan = place_rules(&desired, &existing).expect("room under 50000");
        prop_assert_eq!(plan.placements.len(), desired.len());
        let prios: Vec<u32> = plan.placements.iter().map(Placement::priority).collect();
        prop_assert!(prios.windows(2).all(|w| w[0] < w[1]), "increasing: {:?}", prios);
        prop_assert!(prios.iter().all(|p| (1..=MAX_PRIORITY).contains(p)));
        // New priorities never collide with any existing rule's.
        let taken: BTreeSet<u32> = existing.iter().map(|r| r.priority).collect();
        for pl in &plan.placements {
            match pl {
                Placement::Create { priority } => prop_assert!(!taken.contains(priority)),
                Placement::Move { to, .. } => prop_assert!(!taken.contains(to)),
                Placement::Keep { arn, priority } | Placement::Modify { arn, priority } => {
                    prop_assert!(existing.iter().any(|e| &e.arn == arn && e.priority == *priority));
                }
            }
        }
        // Every existing rule is used once or deleted.
        let mut used: Vec<&String> = plan.placements.iter().filter_map(|p| match p {
            Placement::Keep { arn, .. } | Placement::Modify { arn, .. } | Placement::Move { arn, .. } => Some(arn),
            Placement::Create { .. } => None,
        }).collect();
        used.extend(plan.delete.iter());
        used.sort();
        let all: Vec<&String> = existing.iter().map(|e| &e.arn).collect::<BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(used, all);
    }

    #[test]
    fn converged_lists_stay_put_and_one_edit_costs_one_call(n in 1usize..12, at in 0usize..12, new_content in 20u8..30) {
        let contents: Vec<u8> = (0..n as u8).collect();
        let prios: Vec<u32> = (1..=n as u32).map(|i| i * 10).collect();
        let existing = observed(&contents, &prios);
        let desired: Vec<RuleSpec> = contents.iter().map(|c| rule(*c)).collect();
        let same = place_rules(&desired, &existing).expect("fits");
        let all_kept = same.placements.iter().all(|p| matches!(p, Placement::Keep { .. }));
        prop_assert!(all_kept, "{:?}", same);
        prop_assert!(same.delete.is_empty());

        // Insert one rule anywhere: one create, nothing else moves.
        let at = at.min(n);
        let mut inserted = desired.clone();
        inserted.insert(at, rule(new_content));
        let plan = place_rules(&inserted, &existing).expect("fits");
        let creates = plan.placements.iter().filter(|p| matches!(p, Placement::Create { .. })).count();
        let others = plan.placements.iter().filter(|p| !matches!(p, Placement::Keep { .. } | Placement::Create { .. })).count();
        prop_assert_eq!((creates, others, plan.delete.len()), (1, 0, 0));

        // Change one rule's content in place: one modify, nothing else.
        let at = at.min(n - 1);
        let mut changed = desired.clone();
        changed[at] = rule(new_content);
        let plan = place_rules(&changed, &existing).expect("fits");
        let modifies = plan.placements.iter().filter(|p| matches!(p, Placement::Modify { .. })).count();
        let keeps = plan.placements.iter().filter(|p| matches!(p, Placement::Keep { .. })).count();
        prop_assert_eq!((modifies, keeps, plan.delete.len()), (1, n - 1, 0));
    }
}

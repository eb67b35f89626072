//! Rule priorities that stay put: rules are matched to what exists by content, existing
//! priorities are kept wherever they already follow the desired order, a changed rule is
//! modified in place when its priority still fits, and new rules go into the gaps. Adding a
//! rule never renumbers the others.

use std::collections::BTreeSet;

use crate::alb_stack::RuleSpec;
use crate::inventory::ObservedRule;

/// Highest priority ALB accepts.
pub const MAX_PRIORITY: u32 = 50_000;
/// Spacing between priorities handed out after the last existing rule.
pub const SPACING: u32 = 10;

/// What to do for one desired rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// An existing rule already has this content and a priority that fits.
    Keep { arn: String, priority: u32 },
    /// An existing rule has this content but must move (set-rule-priorities).
    Move { arn: String, from: u32, to: u32 },
    /// An existing rule in the right place gets new content (modify-rule).
    Modify { arn: String, priority: u32 },
    /// A new rule.
    Create { priority: u32 },
}

impl Placement {
    pub fn priority(&self) -> u32 {
        match self {
            Placement::Keep { priority, .. }
            | Placement::Modify { priority, .. }
            | Placement::Create { priority } => *priority,
            Placement::Move { to, .. } => *to,
        }
    }
}

/// The priority plan for one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityPlan {
    /// One per desired rule, in desired order; priorities strictly increase.
    pub placements: Vec<Placement>,
    /// Existing rules nobody wants any more.
    pub delete: Vec<String>,
}

/// Indices of a longest strictly increasing subsequence of `xs`.
fn longest_increasing(xs: &[u32]) -> Vec<usize> {
    let mut tails: Vec<usize> = Vec::new(); // index of the smallest tail of each length
    let mut prev: Vec<Option<usize>> = vec![None; xs.len()];
    for i in 0..xs.len() {
        let pos = tails.partition_point(|&t| xs[t] < xs[i]);
        prev[i] = pos.checked_sub(1).map(|p| tails[p]);
        if pos == tails.len() {
            tails.push(i);
        } else {
            tails[pos] = i;
        }
    }
    let mut out = Vec::new();
    let mut cur = tails.last().copied();
    while let Some(i) = cur {
        out.push(i);
        cur = prev[i];
    }
    out.reverse();
    out
}

/// `k` free priorities strictly between `lo` and `hi`, spread out; `None` if there is no room.
fn fill_gap(lo: u32, hi: u32, k: usize, taken: &BTreeSet<u32>) -> Option<Vec<u32>> {
    if k == 0 {
        return Some(Vec::new());
    }
    let free: Vec<u32> = if hi > MAX_PRIORITY {
        // Open-ended: step by SPACING after `lo`.
        let mut v = Vec::with_capacity(k);
        let mut p = lo;
        while v.len() < k {
            p = p.checked_add(SPACING)?;
            if p > MAX_PRIORITY {
                return None;
            }
            if !taken.contains(&p) {
                v.push(p);
            }
        }
        return Some(v);
    } else {
        ((lo + 1)..hi).filter(|p| !taken.contains(p)).collect()
    };
    if free.len() < k {
        return None;
    }
    // Evenly spaced picks leave room on both sides for later insertions.
    Some((1..=k).map(|i| free[i * free.len() / (k + 1)]).collect())
}

/// Places `desired` rules (in evaluation order) against the `existing` rules of a listener.
/// `None` when the priorities cannot fit under [`MAX_PRIORITY`].
pub fn place_rules(desired: &[RuleSpec], existing: &[ObservedRule]) -> Option<PriorityPlan> {
    let taken: BTreeSet<u32> = existing.iter().map(|r| r.priority).collect();
    // 1. Match by content (each existing rule at most once).
    let mut used = vec![false; existing.len()];
    let matched: Vec<Option<usize>> = desired
        .iter()
        .map(|d| {
            let found = existing
                .iter()
                .enumerate()
                .filter(|(i, e)| !used[*i] && e.content == *d)
                .min_by_key(|(_, e)| e.priority)
                .map(|(i, _)| i);
            if let Some(i) = found {
                used[i] = true;
            }
            found
        })
        .collect();
    // 2. Keep the matched rules whose priorities already increase in desired order.
    let with_match: Vec<usize> = (0..desired.len())
        .filter(|&i| matched[i].is_some())
        .collect();
    let prios: Vec<u32> = with_match
        .iter()
        .filter_map(|&i| matched[i].map(|e| existing[e].priority))
        .collect();
    let mut keep: BTreeSet<usize> = longest_increasing(&prios)
        .into_iter()
        .map(|k| with_match[k])
        .collect();
    let unmatched_existing: Vec<usize> = (0..existing.len()).filter(|&i| !used[i]).collect();

    // 3. Place the rest; when a gap has no room, the kept rule bounding it moves too.
    let (placements, reused) = loop {
        match place_between_kept(
            desired.len(),
            &matched,
            &keep,
            existing,
            &unmatched_existing,
            &taken,
        ) {
            Ok(done) => break done,
            Err(Some(blocking)) => {
                keep.remove(&blocking);
            }
            Err(None) => return None,
        }
    };
    let placements: Vec<Placement> = placements.into_iter().collect::<Option<_>>()?;
    let delete = unmatched_existing
        .into_iter()
        .filter(|e| !reused.contains(e))
        .map(|e| existing[e].arn.clone())
        .collect();
    Some(PriorityPlan { placements, delete })
}

type Placed = (Vec<Option<Placement>>, BTreeSet<usize>);

/// Places every desired rule given the kept ones. `Err(Some(i))`: no room in the gap before
/// kept rule `i`; `Err(None)`: no room at all under [`MAX_PRIORITY`].
fn place_between_kept(
    n: usize,
    matched: &[Option<usize>],
    keep: &BTreeSet<usize>,
    existing: &[ObservedRule],
    unmatched_existing: &[usize],
    taken: &BTreeSet<u32>,
) -> Result<Placed, Option<usize>> {
    let mut modifiable: Vec<usize> = unmatched_existing.to_vec();
    modifiable.sort_by_key(|&i| existing[i].priority);
    let mut placements: Vec<Option<Placement>> = vec![None; n];
    let mut reused = BTreeSet::new();
    let mut i = 0;
    let mut lo = 0u32;
    while i <= n {
        // The run of rules up to the next kept one (or the end).
        let start = i;
        while i < n && !keep.contains(&i) {
            i += 1;
        }
        let hi = if i < n {
            matched[i]
                .map(|e| existing[e].priority)
                .unwrap_or(MAX_PRIORITY + 1)
        } else {
            MAX_PRIORITY + 1
        };
        let run: Vec<usize> = (start..i).collect();
        // Unmatched existing rules inside this gap, in priority order, can take changed
        // content in place (modify-rule) for the first rules of the run.
        let in_gap: Vec<usize> = modifiable
            .iter()
            .copied()
            .filter(|&e| {
                existing[e].priority > lo && existing[e].priority < hi && !reused.contains(&e)
            })
            .collect();
        let mut gap_rules = in_gap.into_iter();
        let mut next_lo = lo;
        let mut pending = Vec::new();
        for &d in &run {
            if matched[d].is_none() && pending.is_empty() {
                if let Some(e) = gap_rules.next() {
                    reused.insert(e);
                    next_lo = existing[e].priority;
                    placements[d] = Some(Placement::Modify {
                        arn: existing[e].arn.clone(),
                        priority: existing[e].priority,
                    });
                    continue;
                }
            }
            pending.push(d);
        }
        let Some(fresh) = fill_gap(next_lo, hi, pending.len(), taken) else {
            return Err(if i < n { Some(i) } else { None });
        };
        for (d, p) in pending.into_iter().zip(fresh) {
            placements[d] = Some(match matched[d] {
                Some(e) => Placement::Move {
                    arn: existing[e].arn.clone(),
                    from: existing[e].priority,
                    to: p,
                },
                None => Placement::Create { priority: p },
            });
        }
        if i < n {
            if let Some(e) = matched[i] {
                placements[i] = Some(Placement::Keep {
                    arn: existing[e].arn.clone(),
                    priority: existing[e].priority,
                });
                lo = existing[e].priority;
            }
        }
        i += 1;
    }
    Ok((placements, reused))
}

//! A listener's ordered rules, held as shared chunks.
//!
//! At cluster scale a listener has tens of thousands of rules and a change touches a handful.
//! The builder emits one chunk per host and keeps the chunks of hosts a change did not touch
//! (the same allocation from one build to the next); the proxy compiles only chunks it has not
//! seen. Chunking is a representation, not a meaning: equality, iteration, indexing and the
//! serialized form are those of the flat list, so a list built as one chunk equals the same
//! rules built as many.

use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Rule;

/// Rules in evaluation order (first match wins), as a sequence of shared chunks.
#[derive(Clone, Default)]
pub struct RuleList {
    /// No chunk is empty.
    chunks: Vec<Arc<[Rule]>>,
    len: usize,
}

impl RuleList {
    /// The rules of `chunks`, in order; empty chunks are dropped.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Arc<[Rule]>>) -> Self {
        let chunks: Vec<Arc<[Rule]>> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len()).sum();
        RuleList { chunks, len }
    }

    /// The chunks; a consumer that caches per chunk keys on their allocation.
    pub fn chunks(&self) -> &[Arc<[Rule]>] {
        &self.chunks
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The rule at position `i` of the flat list.
    pub fn get(&self, mut i: usize) -> Option<&Rule> {
        for c in &self.chunks {
            if i < c.len() {
                return c.get(i);
            }
            i -= c.len();
        }
        None
    }

    /// The rules as one flat vector.
    pub fn to_vec(&self) -> Vec<Rule> {
        self.iter().cloned().collect()
    }
}

impl PartialEq for RuleList {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        // Same chunking: compare chunk by chunk, an unchanged chunk by its allocation.
        if self.chunks.len() == other.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| a.len() == b.len())
        {
            return self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a[..] == b[..]);
        }
        self.iter().eq(other.iter())
    }
}

impl Eq for RuleList {}

impl fmt::Debug for RuleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Index<usize> for RuleList {
    type Output = Rule;
    fn index(&self, i: usize) -> &Rule {
        match self.get(i) {
            Some(r) => r,
            None => panic!("rule index {i} out of range for {} rules", self.len),
        }
    }
}

impl From<Vec<Rule>> for RuleList {
    fn from(rules: Vec<Rule>) -> Self {
        RuleList::from_chunks([Arc::from(rules)])
    }
}

impl FromIterator<Rule> for RuleList {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        RuleList::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a RuleList {
    type Item = &'a Rule;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Arc<[Rule]>>,
        std::slice::Iter<'a, Rule>,
        fn(&'a Arc<[Rule]>) -> std::slice::Iter<'a, Rule>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl Serialize for RuleList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RuleList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Rule>::deserialize(d).map(RuleList::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Conditions, FixedResponse, ObjectRef};

    fn rule(n: &str) -> Rule {
        Rule {
            ingress: ObjectRef::new("ns", n),
            conditions: Conditions::default(),
            authenticate: None,
            action: Action::FixedResponse(FixedResponse::not_found()),
        }
    }

    #[test]
    fn chunking_is_not_meaning() {
        let flat = RuleList::from(vec![rule("a"), rule("b"), rule("c")]);
        let chunked = RuleList::from_chunks([
            Arc::from(vec![rule("a")]),
            Arc::from(Vec::new()),
            Arc::from(vec![rule("b"), rule("c")]),
        ]);
        assert_eq!(flat, chunked);
        assert_eq!(chunked.len(), 3);
        assert_eq!(chunked.chunks().len(), 2);
        assert_eq!(chunked[2].ingress.name, "c");
        assert!(chunked.get(3).is_none());
        assert_eq!(
            serde_json::to_string(&flat).ok(),
            serde_json::to_string(&chunked).ok()
        );
        let other = RuleList::from_chunks([
            Arc::from(vec![rule("a")]),
            Arc::from(vec![rule("b"), rule("d")]),
        ]);
        assert_ne!(chunked, other);
        assert_ne!(flat, other);
    }
}

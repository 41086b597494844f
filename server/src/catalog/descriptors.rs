//! Generic descriptor rules (`descriptors:`), compiled for Envoy's Rate Limit Service, with the
//! matching rules of Envoy's own ratelimit service: entry by entry, a rule for the entry's key
//! and value beats a rule for the key alone (any value); the limit is the one on the rule the
//! descriptor's last entry lands on. A descriptor that walks off the tree has no limit.
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::DescriptorDomainConfig;
use crate::config::envoy::{DescriptorConfig, RateUnit};
use crate::limiter::Limit;

/// A limit found for a descriptor.
#[derive(Debug)]
pub struct Rule {
    /// The bucket; `None` for `unlimited`.
    pub limit: Option<Limit>,
    /// Count, never deny.
    pub shadow: bool,
    /// As configured (for the answer's `current_limit`).
    pub requests_per_unit: u64,
    /// As configured.
    pub unit: Option<RateUnit>,
    /// As configured.
    pub name: Option<String>,
}

#[derive(Debug, Default)]
struct Level {
    /// key → value → node.
    exact: HashMap<String, HashMap<String, Node>>,
    /// key → node (any value).
    any: HashMap<String, Node>,
}

#[derive(Debug)]
struct Node {
    rule: Option<Arc<Rule>>,
    children: Level,
}

/// Every domain's rules.
#[derive(Debug, Default)]
pub struct DescriptorRules {
    domains: HashMap<String, Level>,
    prefix: String,
}

fn compile(list: &[DescriptorConfig]) -> Level {
    let mut level = Level::default();
    for d in list {
        let rule = d.rate_limit.as_ref().and_then(|l| {
            // Validated config: an invalid limit cannot happen; it would be dropped.
            let limit = l.limit().ok()?;
            Some(Arc::new(Rule {
                limit,
                shadow: d.shadow_mode,
                requests_per_unit: l.requests_per_unit,
                unit: l.unit,
                name: l.name.clone(),
            }))
        });
        let node = Node {
            rule,
            children: compile(&d.descriptors),
        };
        match &d.value {
            Some(v) => {
                level
                    .exact
                    .entry(d.key.clone())
                    .or_default()
                    .insert(v.clone(), node);
            }
            None => {
                level.any.insert(d.key.clone(), node);
            }
        }
    }
    level
}

impl DescriptorRules {
    /// Compiles `descriptors:`; bucket hashes go under `prefix`.
    pub fn build(domains: &[DescriptorDomainConfig], prefix: &str) -> Self {
        Self {
            domains: domains
                .iter()
                .map(|d| (d.domain.clone(), compile(&d.descriptors)))
                .collect(),
            prefix: prefix.to_string(),
        }
    }

    /// Whether `domain` has rules.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The rule for a descriptor (its `(key, value)` entries, in order), if any.
    pub fn lookup<'e>(
        &self,
        domain: &str,
        entries: impl ExactSizeIterator<Item = (&'e str, &'e str)>,
    ) -> Option<Arc<Rule>> {
        let mut level = self.domains.get(domain)?;
        let last = entries.len().checked_sub(1)?;
        for (i, (k, v)) in entries.enumerate() {
            let node = level
                .exact
                .get(k)
                .and_then(|m| m.get(v))
                .or_else(|| level.any.get(k))?;
            if i == last {
                return node.rule.clone();
            }
            level = &node.children;
        }
        None
    }

    /// The store hash holding a descriptor's bucket: `<prefix>:{d:<hex>}`, where hex is 128 bits
    /// of SHA-256 over the domain and every entry (length-prefixed), so any value is a bounded,
    /// brace-free key name with its own hash tag.
    pub fn bucket_hash<'e>(
        &self,
        domain: &str,
        entries: impl Iterator<Item = (&'e str, &'e str)>,
    ) -> Arc<str> {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        part(domain);
        for (k, v) in entries {
            part(k);
            part(v);
        }
        let digest = h.finalize();
        format!("{}:{{d:{}}}", self.prefix, hex::encode(&digest[..16])).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> DescriptorRules {
        let cfg = crate::config::parse(yaml, &|_| None).expect("valid config");
        DescriptorRules::build(&cfg.descriptors, "tg")
    }

    const RULES: &str = r#"
descriptors:
  - domain: edge
    descriptors:
      - key: remote_address
        rate_limit: { unit: second, requests_per_unit: 10 }
      - key: generic_key
        value: slow
        rate_limit: { unit: minute, requests_per_unit: 2 }
      - key: generic_key
        rate_limit: { unit: hour, requests_per_unit: 100 }
      - key: database
        value: users
        descriptors:
          - key: user
            rate_limit: { unit: DAY, requests_per_unit: 5, name: per-user }
      - key: free
        rate_limit: { unlimited: true }
"#;

    fn find(r: &DescriptorRules, entries: &[(&str, &str)]) -> Option<Arc<Rule>> {
        r.lookup("edge", entries.iter().copied())
    }

    #[test]
    fn value_beats_wildcard_and_nesting_walks_entries() {
        let r = rules(RULES);
        let a = find(&r, &[("remote_address", "10.0.0.1")]).expect("wildcard rule");
        assert_eq!(a.requests_per_unit, 10);
        assert_eq!(a.unit, Some(RateUnit::Second));
        assert_eq!(
            find(&r, &[("generic_key", "slow")])
                .expect("exact")
                .requests_per_unit,
            2
        );
        assert_eq!(
            find(&r, &[("generic_key", "other")])
                .expect("any")
                .requests_per_unit,
            100
        );
        let u = find(&r, &[("database", "users"), ("user", "alice")]).expect("nested");
        assert_eq!(u.name.as_deref(), Some("per-user"));
        let limit = u.limit.expect("limited");
        assert_eq!(limit.burst(), 5);
        assert!((limit.rate() - 5.0 / 86_400.0).abs() < 1e-12);
        assert!(
            find(&r, &[("free", "x")])
                .expect("unlimited rule")
                .limit
                .is_none()
        );
    }

    #[test]
    fn no_rule_means_no_limit() {
        let r = rules(RULES);
        // The node without its own limit, a descriptor longer than the tree, unknown keys,
        // unknown domains and empty descriptors.
        assert!(find(&r, &[("database", "users")]).is_none());
        assert!(find(&r, &[("database", "orders"), ("user", "a")]).is_none());
        assert!(find(&r, &[("remote_address", "1"), ("path", "/")]).is_none());
        assert!(find(&r, &[("nope", "1")]).is_none());
        assert!(find(&r, &[]).is_none());
        assert!(
            r.lookup("other", [("remote_address", "1")].into_iter())
                .is_none()
        );
    }

    #[test]
    fn bucket_hash_is_per_value_and_bounded() {
        let r = rules(RULES);
        let a = r.bucket_hash("edge", [("remote_address", "10.0.0.1")].into_iter());
        let b = r.bucket_hash("edge", [("remote_address", "10.0.0.2")].into_iter());
        let long = "x".repeat(100_000);
        let c = r.bucket_hash("edge", [("remote_address", long.as_str())].into_iter());
        assert_ne!(a, b);
        assert!(a.starts_with("tg:{d:") && a.ends_with('}'));
        assert_eq!(a.len(), c.len());
        // Entry boundaries matter: ("ab","c") is not ("a","bc").
        assert_ne!(
            r.bucket_hash("d", [("ab", "c")].into_iter()),
            r.bucket_hash("d", [("a", "bc")].into_iter())
        );
    }

    #[test]
    fn bad_rules_are_reported() {
        let bad = r#"
descriptors:
  - domain: edge
    descriptors:
      - key: a
        rate_limit: { unit: second, requests_per_unit: 0 }
      - key: b
        rate_limit: { requests_per_unit: 5 }
      - key: c
      - key: e
        rate_limit: { unit: second, requests_per_unit: 2000000 }
  - domain: edge
"#;
        let err = crate::config::parse(bad, &|_| None).expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "descriptors[0].descriptors[0].rate_limit: requests_per_unit must be at least 1",
            "descriptors[0].descriptors[1].rate_limit: unit is required",
            "descriptors[0].descriptors[2]: has neither rate_limit nor nested descriptors",
            "descriptors[0].descriptors[3].rate_limit: requests_per_unit must be 1..=1000000, got 2000000",
            "descriptors[1].domain: \"edge\" appears more than once",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        // An unknown unit is a parse error for that list item.
        let bad_unit = "descriptors:\n  - domain: x\n    descriptors:\n      - key: k\n        rate_limit: { unit: fortnight, requests_per_unit: 1 }\n";
        let text = crate::config::parse(bad_unit, &|_| None)
            .expect_err("invalid")
            .to_string();
        assert!(
            text.contains("descriptors[0]") && text.contains("fortnight"),
            "{text}"
        );
    }
}

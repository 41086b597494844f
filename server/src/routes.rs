//! Route templates (`/pets/{petId}`, `/files/{proxy+}`) and matching a request path against a
//! stage's routes the way API Gateway does: literal segments beat `{param}`, which beats a
//! greedy `{proxy+}`; an exact method beats `ANY`.
//!
//! A leaf: it imports nothing from the crate (the config validates templates with it, the
//! catalog matches with it).
use std::cmp::Ordering;

/// One template segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Greedy,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    segments: Vec<Segment>,
}

/// Splits a path into its non-empty segments (`/` → none; a trailing `/` is ignored).
pub fn split_path(path: &str) -> impl Iterator<Item = &str> + Clone {
    path.split('/').filter(|s| !s.is_empty())
}

impl Template {
    /// Parses a template; it must start with `/`, and `{name+}` may only be the last segment.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("path {raw:?} must start with '/'"));
        }
        let parts: Vec<&str> = split_path(raw).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let seg = if let Some(inner) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, greedy) = match inner.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!("path {raw:?}: invalid parameter name in {p:?}"));
                }
                if greedy {
                    if i + 1 != parts.len() {
                        return Err(format!("path {raw:?}: {p:?} must be the last segment"));
                    }
                    Segment::Greedy
                } else {
                    Segment::Param
                }
            } else {
                if p.contains(['{', '}']) {
                    return Err(format!("path {raw:?}: braces must enclose a whole segment"));
                }
                Segment::Literal((*p).to_string())
            };
            segments.push(seg);
        }
        Ok(Self {
            raw: raw.to_string(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `path` (already split) matches.
    pub fn matches<'a>(&self, mut path: impl Iterator<Item = &'a str>) -> bool {
        for seg in &self.segments {
            match seg {
                Segment::Greedy => return path.next().is_some(),
                Segment::Param => {
                    if path.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if path.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        path.next().is_none()
    }

    /// Orders templates by specificity: literal > param > greedy, segment by segment.
    pub fn specificity_cmp(&self, other: &Self) -> Ordering {
        fn rank(s: &Segment) -> u8 {
            match s {
                Segment::Literal(_) => 3,
                Segment::Param => 2,
                Segment::Greedy => 1,
            }
        }
        self.segments
            .iter()
            .map(rank)
            .cmp(other.segments.iter().map(rank))
    }
}

/// Picks the best route for `method` and `path` among `(method, template)` pairs, returning its
/// index. `method` must be upper-case; a route method `ANY` matches every method.
pub fn best_match<'r>(
    routes: impl Iterator<Item = (&'r str, &'r Template)>,
    method: &str,
    path: &str,
) -> Option<usize> {
    let segs = split_path(path);
    let mut best: Option<(usize, &Template, bool)> = None;
    for (i, (m, t)) in routes.enumerate() {
        let exact = m == method;
        if !(exact || m == "ANY") || !t.matches(segs.clone()) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, bt, bexact)) => match t.specificity_cmp(bt) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => exact && !bexact,
            },
        };
        if better {
            best = Some((i, t, exact));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s).expect("valid template")
    }

    #[test]
    fn parses_and_rejects() {
        assert!(Template::parse("pets").is_err());
        assert!(Template::parse("/a/{proxy+}/b").is_err());
        assert!(Template::parse("/a/x{id}").is_err());
        assert!(Template::parse("/a/{}").is_err());
        assert!(Template::parse("/").is_ok());
    }

    #[test]
    fn matching() {
        assert!(t("/pets/{id}").matches(split_path("/pets/42")));
        assert!(!t("/pets/{id}").matches(split_path("/pets")));
        assert!(!t("/pets/{id}").matches(split_path("/pets/1/2")));
        assert!(t("/files/{proxy+}").matches(split_path("/files/a/b/c")));
        assert!(!t("/files/{proxy+}").matches(split_path("/files")));
        assert!(t("/").matches(split_path("/")));
        assert!(t("/pets").matches(split_path("/pets/")));
    }

    #[test]
    fn most_specific_wins() {
        let routes = [
            ("ANY", t("/{proxy+}")),
            ("GET", t("/pets/{id}")),
            ("GET", t("/pets/mine")),
            ("ANY", t("/pets/mine")),
        ];
        let pick = |m: &str, p: &str| best_match(routes.iter().map(|(m, t)| (*m, t)), m, p);
        assert_eq!(pick("GET", "/pets/mine"), Some(2));
        assert_eq!(pick("POST", "/pets/mine"), Some(3));
        assert_eq!(pick("GET", "/pets/7"), Some(1));
        assert_eq!(pick("DELETE", "/pets/7"), Some(0));
        assert_eq!(pick("GET", "/"), None);
    }
}

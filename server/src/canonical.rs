//! The canonical request path: the one spelling of a request path that every later stage sees.
//!
//! Owns: the rules that turn the path a gateway hands over (raw, percent-encoded as on the
//! wire) into its canonical form, and the errors for paths that are refused. Route matching,
//! the method ARN that authorizer policies (and the decision cache) are evaluated against,
//! SigV4's canonical URI, the Lambda event's `path` and the metrics all use only what
//! [`path`] returns; the API handlers call it once, at the edge, for every entry point
//! (CheckRequest, Authorize, ReportUsage, Envoy ext_authz `:path`, the RLS `path` entry).
//!
//! Must not import anything from this crate: it is a leaf every layer may use.
//!
//! The rules (modelled on RFC 3986 §6.2.2 and Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action: REJECT_REQUEST`):
//!
//! | input | canonical form |
//! |---|---|
//! | `%73`, `%7e` (escape of an unreserved character: `A-Z a-z 0-9 - . _ ~`) | decoded: `s`, `~` |
//! | `%3d`, `%c3%a9` (any other escape) | kept, hex upper-cased: `%3D`, `%C3%A9` |
//! | a raw byte that may not stand in a path (space, `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}`, non-ASCII) | percent-encoded, upper-case |
//! | `//`, `///` | merged into one `/` |
//! | a trailing `/` (`/items/`) | removed (`/items`); the root stays `/` |
//! | `%2F`, `%5C` (encoded slash or backslash), a raw `\` | refused |
//! | NUL (raw or `%00`), any other control character, a bad escape (`%zz`, `%4`) | refused |
//! | a `.` or `..` segment, raw or encoded (`%2e`, `%2E%2E`) | refused |
//! | a `;` (path parameters), raw or `%3B` | refused: Tomcat, Jetty and Spring drop what follows it |
//! | escapes that do not spell UTF-8 (`%C0%AE`, `%FF`) | refused (a lenient decoder reads an overlong `%C0%AE` as `.`) |
//! | a `?` or `#` in a path field of the gRPC APIs | refused (the query has its own field) |
//!
//! Why dot segments are refused rather than resolved: Tollgate cannot know whether the
//! upstream (or a proxy in between) resolves them the same way, or at all. Refusing means the
//! path Tollgate decided on is the only one the upstream can be asked for; no HTTP client
//! sends dot segments (browsers, curl and every HTTP library resolve them before sending), so
//! only a hand-made request meets the refusal. A trailing slash is removed everywhere
//! (routing and ARN alike), so `/items/secret/` is decided as `/items/secret`.
use std::borrow::Cow;
use std::fmt;

/// Why a path was refused. The message names the rule, never echoing the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Empty, or does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`: a slash the router and the upstream may split differently.
    EncodedSlash,
    /// A raw backslash (some servers read it as `/`).
    Backslash,
    /// NUL or another control character, raw or encoded as `%00`.
    ControlCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A `.` or `..` segment (raw or percent-encoded).
    DotSegment,
    /// A raw `;` (matrix/path parameters).
    PathParameter,
    /// A `?` or `#` in a field that holds only the path.
    QueryInPath,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with '/'",
            PathError::EncodedSlash => {
                "an encoded slash or backslash (%2F, %5C) in the path is refused"
            }
            PathError::Backslash => "a backslash in the path is refused",
            PathError::ControlCharacter => {
                "a NUL or control character (raw or percent-encoded) in the path is refused"
            }
            PathError::BadEscape => {
                "a '%' in the path must be followed by two hex digits, and escapes must spell UTF-8"
            }
            PathError::DotSegment => "a '.' or '..' segment in the path is refused",
            PathError::PathParameter => "a ';' (path parameter) in the path is refused",
            PathError::QueryInPath => {
                "the path must not carry a query or fragment ('?', '#'); send the query in its own field"
            }
        })
    }
}

impl std::error::Error for PathError {}

/// RFC 3986 unreserved: decoded when escaped.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes that stand raw in a canonical segment: unreserved, sub-delims but `;`, `:` and `@`.
fn raw_ok(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
        )
        || matches!(b, b'=' | b':' | b'@')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Checks one raw byte that is not `%` or `/`.
fn check_raw(b: u8) -> Result<(), PathError> {
    match b {
        0..=0x1f | 0x7f => Err(PathError::ControlCharacter),
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::PathParameter),
        b'?' | b'#' => Err(PathError::QueryInPath),
        _ => Ok(()),
    }
}

/// Whether `path` is already canonical (the common case: no copy is made). `Err` for what the
/// fast scan can already refuse; `Ok(false)` sends the path through [`path`]'s full rewrite.
fn is_canonical(path: &str) -> Result<bool, PathError> {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            // Escapes are checked by the full rewrite (hex case, what they decode to, UTF-8).
            return Ok(false);
        }
        if c != b'/' {
            check_raw(c)?;
            if !raw_ok(c) {
                return Ok(false);
            }
        }
        i += 1;
    }
    if path.len() > 1 && path.ends_with('/') || path.contains("//") {
        return Ok(false);
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(true)
}

/// The canonical form of a request path (see the module docs for the rules), or why it is
/// refused. Borrows when `raw` is already canonical.
pub fn path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw)? {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let start = out.len();
        out.push('/');
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'%' {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    // Decoded after `;`-stripping by most servers, but not all (Jetty's `..%3B`).
                    b';' => return Err(PathError::PathParameter),
                    _ if unreserved(v) => out.push(v as char),
                    _ => push_escaped(&mut out, v),
                }
                i += 3;
            } else {
                check_raw(c)?;
                if raw_ok(c) {
                    out.push(c as char);
                } else {
                    push_escaped(&mut out, c);
                }
                i += 1;
            }
        }
        let segment = &out[start + 1..];
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    // Escapes must spell UTF-8: an overlong `%C0%AE` is a `.` to a lenient decoder.
    if out.contains('%') && std::str::from_utf8(&decode(&out)).is_err() {
        return Err(PathError::BadEscape);
    }
    Ok(Cow::Owned(out))
}

/// The bytes a canonical path's escapes stand for.
fn decode(canonical: &str) -> Vec<u8> {
    let b = canonical.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Splits an HTTP request target (`/path?query#fragment`, as Envoy's `:path`) into its path
/// and raw query; the fragment is dropped.
pub fn split_target(target: &str) -> (&str, &str) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    target.split_once('?').unwrap_or((target, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        path(raw)
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
            .into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/items/secret", "/a/b-c_d.e~f", "/x/@conn:1/a=b,c"] {
            assert!(matches!(path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn every_spelling_of_one_path_is_one_path() {
        for raw in [
            "/items/secret",
            "/items/secret/",
            "/items//secret",
            "//items/secret",
            "/items/%73ecret",
            "/items/%73%65%63%72%65%74",
            "/%69tems/secret//",
            "///items///secret///",
        ] {
            assert_eq!(ok(raw), "/items/secret", "{raw:?}");
        }
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/a%7e%2D"), "/a~-");
    }

    #[test]
    fn other_escapes_are_upper_cased_and_raw_bytes_encoded() {
        assert_eq!(ok("/a%3db"), "/a%3Db");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/café"), "/caf%C3%A9");
        assert_eq!(ok("/a b"), "/a%20b");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/{x}|"), "/%7Bx%7D%7C");
        // A double-encoded dot is the literal text "%2e": not a dot segment.
        assert_eq!(ok("/a/%252e%252e/b"), "/a/%252e%252e/b");
    }

    #[test]
    fn refusals() {
        use PathError::*;
        for (raw, err) in [
            ("", NotAbsolute),
            ("items", NotAbsolute),
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%5cb", EncodedSlash),
            ("/a\\b", Backslash),
            ("/a%00b", ControlCharacter),
            ("/a\0b", ControlCharacter),
            ("/a\nb", ControlCharacter),
            ("/a%0d%0ab", ControlCharacter),
            ("/a%zz", BadEscape),
            ("/a%4", BadEscape),
            ("/a%", BadEscape),
            ("/a/./b", DotSegment),
            ("/a/../b", DotSegment),
            ("/..", DotSegment),
            ("/public/../private/1", DotSegment),
            ("/public/%2e%2e/private/1", DotSegment),
            ("/public/%2E./private/1", DotSegment),
            ("/public/.%2e/private/1", DotSegment),
            ("/public/..%2fprivate/1", EncodedSlash),
            ("/a/%2e", DotSegment),
            ("/items/secret;x=1", PathParameter),
            ("/public/..%3B/private", PathParameter),
            ("/a%3bb", PathParameter),
            ("/a/%C0%AE%C0%AE/b", BadEscape),
            ("/a/%ff", BadEscape),
            ("/a?b=1", QueryInPath),
            ("/a#f", QueryInPath),
        ] {
            assert_eq!(path(raw), Err(err), "{raw:?}");
        }
        // "..." and ".a" are ordinary names.
        assert_eq!(ok("/a/.../.b/..c"), "/a/.../.b/..c");
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for raw in ["/a%3db/", "//x/caf%c3%a9", "/a b/%7e", "/"] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw:?}");
            // Paths with escapes always take the full rewrite (it checks them); others borrow.
            if !once.contains('%') {
                assert!(matches!(path(&once), Ok(Cow::Borrowed(_))), "{raw:?}");
            }
        }
    }

    #[test]
    fn split_target_drops_the_fragment() {
        assert_eq!(split_target("/a?b=1#c"), ("/a", "b=1"));
        assert_eq!(split_target("/a#c?d"), ("/a", ""));
        assert_eq!(split_target("/a"), ("/a", ""));
    }
}

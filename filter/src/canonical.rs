//! The spellings of a request path that routes are matched against.
//!
//! The filter prices the path it sees; the upstream serves the path *it* understands. So a path
//! is read in every form a common upstream may route it by, and a paid route that matches any
//! of them prices the request. Each form is a rewrite that can only make a path look *more* like
//! a paid route, never less, and each is a fixed point (rewriting it again changes nothing). The
//! forms are used for matching only: the request forwarded upstream is unchanged.
//!
//! - [`canonical_path`]: decoded unreserved characters and slashes, merged slashes, resolved dot
//!   segments (what Envoy's `normalize_path` and most frameworks do);
//! - [`strip_params`] then [`canonical_path`]: `;` path parameters removed from every segment
//!   (Tomcat, Jetty and Spring route `/paid;x/report` and `/free/..;/paid` as `/paid/report`
//!   and `/paid`).
//!
//! Case and trailing slashes are matching modes of a route (`crate::routes`), not forms.

/// The path without query string or fragment.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The path a route is matched against (and a challenge bound to): without query string or
/// fragment, with percent-encoded unreserved characters decoded, `%2F`, `%5C` and `\` read as
/// `/`, repeated slashes merged and `.`/`..` segments resolved (RFC 3986 §5.2.4).
///
/// This is defence in depth for invariant 1 (`docs/design.md`): an upstream that decodes or normalizes paths must
/// not be reachable unpaid through a spelling the prefix or exact match does not recognize
/// (`/free/../paid/x`, `/%70aid/x`, `//paid/x`, `/paid%2Fx`). Every rewrite can only make a
/// path look *more* like the paid route it reaches, never less. Envoy's own `normalize_path`,
/// `merge_slashes` and `path_with_escaped_slashes_action` should be on as well (the demo
/// bootstrap sets them), so the upstream sees the path that was priced.
pub fn canonical_path(raw: &str) -> String {
    let path = path_only(raw);
    // Most paths are canonical already; checking is a scan, rewriting allocates three times.
    if is_canonical(path) {
        return path.to_owned();
    }
    rewrite(path)
}

/// Whether `path` is its own canonical form: absolute, nothing to decode, no empty segment
/// but a trailing one, no dot segment.
fn is_canonical(path: &str) -> bool {
    let mut segments = path.split('/');
    path.starts_with('/')
        && !path.bytes().any(|b| b == b'%' || b == b'\\')
        && segments.next() == Some("")
        && {
            let mut ok = true;
            let mut rest = segments.peekable();
            while let Some(seg) = rest.next() {
                if seg == "." || seg == ".." || (seg.is_empty() && rest.peek().is_some()) {
                    ok = false;
                    break;
                }
            }
            ok
        }
}

/// The general rewrite behind [`canonical_path`], for a path without query or fragment.
fn rewrite(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len() + 1);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b == b'%' {
            let hex = |k: usize| bytes.get(k).and_then(|c| (*c as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (hex(i), hex(i + 1)) {
                let c = (hi * 16 + lo) as u8;
                i += 2;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c);
                } else if c == b'/' || c == b'\\' {
                    decoded.push(b'/');
                } else {
                    decoded.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
                continue;
            }
            // A '%' that starts no escape is spelled "%25": left bare it could combine with a
            // following decoded character into a new escape ("%%32e" → "%2e"), so a second
            // pass would read a different path. Canonical output must be a fixed point.
            decoded.extend_from_slice(b"%25");
            continue;
        }
        decoded.push(if b == b'\\' { b'/' } else { b });
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in text.split('/') {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

/// Every `;` path parameter removed: each segment is cut at its first `;` (RFC 3986 §3.3
/// `segment;params`, as Tomcat and Spring read it). `%3B` is not a separator, as for them.
pub fn strip_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split(';').next().unwrap_or(""));
    }
    out
}

/// The forms of one request path, computed once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathForms {
    /// [`canonical_path`] of the request path (also what a challenge is bound to).
    pub canonical: String,
    /// The canonical path without `;` parameters, when it differs from `canonical`.
    pub without_params: Option<String>,
}

impl PathForms {
    pub fn of(raw: &str) -> PathForms {
        let canonical = canonical_path(raw);
        // Stripping can expose dot segments (`..;x` → `..`), so canonicalize again.
        let without_params = canonical
            .contains(';')
            .then(|| canonical_path(&strip_params(&canonical)));
        PathForms {
            canonical,
            without_params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_path_resolves_bypass_spellings() {
        for (raw, want) in [
            ("/paid/report?x=1#f", "/paid/report"),
            ("/free/../paid/x", "/paid/x"),
            ("/free/%2E%2E/paid/x", "/paid/x"),
            ("/%70aid/x", "/paid/x"),
            ("//paid///x", "/paid/x"),
            ("/paid%2Fx", "/paid/x"),
            ("/paid%2fx", "/paid/x"),
            ("/paid\\x", "/paid/x"),
            ("/paid%5Cx", "/paid/x"),
            ("/./paid/./x", "/paid/x"),
            ("/paid/x/..", "/paid/"),
            ("/paid/free/.", "/paid/free/"),
            ("/../../paid", "/paid"),
            ("/a%20b%zz%4", "/a%20b%25zz%254"),
            ("/%%32e%%32e/paid", "/%252e%252e/paid"),
            ("/a%e2%82%ac", "/a%E2%82%AC"),
            ("", "/"),
            ("*", "/*"),
            ("/", "/"),
            ("/paid/", "/paid/"),
        ] {
            assert_eq!(canonical_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn params_are_stripped_from_every_segment_and_dots_resolved_after() {
        for (raw, canonical, without) in [
            ("/paid;x/report", "/paid;x/report", Some("/paid/report")),
            (
                "/paid/report;jsessionid=1",
                "/paid/report;jsessionid=1",
                Some("/paid/report"),
            ),
            (
                "/paid;a=1;b=2/report;c",
                "/paid;a=1;b=2/report;c",
                Some("/paid/report"),
            ),
            // Tomcat's classic: `..;` is a dot segment once its (empty) parameter is gone.
            ("/free/..;/paid/x", "/free/..;/paid/x", Some("/paid/x")),
            ("/free/.;x/paid", "/free/.;x/paid", Some("/free/paid")),
            ("/;x/paid", "/;x/paid", Some("/paid")),
            ("/paid/x/.;", "/paid/x/.;", Some("/paid/x/")),
            ("/pa%3Bid/x", "/pa%3Bid/x", None),
            ("/paid/report", "/paid/report", None),
            ("/paid/report?a;b", "/paid/report", None),
        ] {
            let forms = PathForms::of(raw);
            assert_eq!(forms.canonical, canonical, "{raw}");
            assert_eq!(forms.without_params.as_deref(), without, "{raw}");
        }
        assert_eq!(strip_params(";a/b;c/;/d"), "/b//d");
    }

    proptest::proptest! {
        #[test]
        fn canonical_path_is_idempotent_and_rooted(path in "[a-c/.%2-5EFef\\\\?#]{0,40}") {
            let once = canonical_path(&path);
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert!(!once.contains("//"));
            proptest::prop_assert_eq!(canonical_path(&once), once.clone());
        }

        #[test]
        fn the_fast_path_agrees_with_the_rewrite(path in "[a-cA-C/.;%2-5BEFbef\\\\?#]{0,40}") {
            proptest::prop_assert_eq!(canonical_path(&path), rewrite(path_only(&path)));
        }

        /// Paths made of segments, most of them canonical already (the fast path's case).
        #[test]
        fn the_fast_path_agrees_on_segment_paths(path in "(/[a-cA-C.;]{0,3}){1,6}") {
            proptest::prop_assert_eq!(canonical_path(&path), rewrite(&path));
        }

        /// Every form is canonical, the parameter-free form has no `;` and no dot segment, and
        /// computing the forms of a form gives that form back.
        #[test]
        fn every_form_is_a_fixed_point(path in "[a-cA-C/.;%2-5BEFbef\\\\?#]{0,40}") {
            let forms = PathForms::of(&path);
            let c = &forms.canonical;
            proptest::prop_assert!(c.starts_with('/') && !c.contains("//"));
            proptest::prop_assert_eq!(&PathForms::of(c), &forms);
            if let Some(s) = &forms.without_params {
                proptest::prop_assert!(s.starts_with('/') && !s.contains("//"));
                proptest::prop_assert!(!s.contains(';'));
                proptest::prop_assert!(!s.split('/').any(|seg| seg == "." || seg == ".."));
                proptest::prop_assert_eq!(&canonical_path(s), s);
                proptest::prop_assert_eq!(PathForms::of(s).without_params, None);
            }
        }
    }
}

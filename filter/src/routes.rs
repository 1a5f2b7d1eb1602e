//! Route matching: host, path (exact, prefix, regex) and method; the first matching route wins.

use crate::config::Route;

/// How a route matches the request's host (`:authority` without its port, case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (not `example.com` itself).
    Suffix(String),
}

impl HostMatch {
    pub fn parse(s: &str) -> Result<HostMatch, String> {
        if s.is_empty() {
            return Err("must not be empty (omit it to match any host)".into());
        }
        if s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/')
        {
            return Err(format!("`{s}` is not a host name"));
        }
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => {
                Ok(HostMatch::Suffix(rest.to_owned()))
            }
            Some(_) => Err(format!("`{s}`: a wildcard must look like *.example.com")),
            None if lower.contains('*') => {
                Err(format!("`{s}`: `*` is allowed only as the first label"))
            }
            None => Ok(HostMatch::Exact(strip_port(&lower).to_owned())),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host == h,
            HostMatch::Suffix(sfx) => host.len() > sfx.len() && host.ends_with(sfx.as_str()),
        }
    }
}

/// How a route matches the request path (without the query string).
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    /// Plain string prefix, as Envoy's `prefix` route match.
    Prefix(String),
    /// Must match the whole path (the pattern is anchored for you).
    Regex(crate::pathre::PathRegex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

/// `host[:port]` or `[v6]:port` → the host part.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The host used for matching: lower case, without the port.
pub fn normalize_host(authority: &str) -> String {
    strip_port(&authority.to_ascii_lowercase()).to_owned()
}

/// The path without query string or fragment.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// The path a route is matched against (and a challenge bound to): without query string or
/// fragment, with percent-encoded unreserved characters decoded, `%2F`, `%5C` and `\` read as
/// `/`, repeated slashes merged and `.`/`..` segments resolved (RFC 3986 §5.2.4).
///
/// This is defence in depth for invariant 1: an upstream that decodes or normalizes paths must
/// not be reachable unpaid through a spelling the prefix or exact match does not recognize
/// (`/free/../paid/x`, `/%70aid/x`, `//paid/x`, `/paid%2Fx`). Every rewrite can only make a
/// path look *more* like the paid route it reaches, never less. Envoy's own `normalize_path`,
/// `merge_slashes` and `path_with_escaped_slashes_action` should be on as well (the demo
/// bootstrap sets them), so the upstream sees the path that was priced.
pub fn canonical_path(raw: &str) -> String {
    let bytes = path_only(raw).as_bytes();
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

/// The first route matching the request, with its index.
pub fn find<'r>(
    routes: &'r [Route],
    method: &str,
    authority: &str,
    path: &str,
) -> Option<(usize, &'r Route)> {
    let host = normalize_host(authority);
    let path = canonical_path(path);
    let path = path.as_str();
    routes.iter().enumerate().find(|(_, r)| {
        r.host.as_ref().is_none_or(|h| h.matches(&host))
            && r.methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && r.path.matches(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::json;

    fn routes() -> Vec<Route> {
        let cfg = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet",
            "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
            "routes": [
                {"name": "exempt", "path": {"exact": "/paid/health"}, "free": true},
                {"name": "exact", "host": "API.example.com:443", "path": {"exact": "/paid/report"}, "price": "1"},
                {"name": "wild", "host": "*.example.com", "path": {"prefix": "/paid/"}, "methods": ["POST"], "price": "1"},
                {"name": "prefix", "path": {"prefix": "/paid/"}, "price": "2"},
                {"name": "regex", "path": {"regex": "/items/[0-9]+"}, "methods": ["GET", "HEAD"], "price": "3"}
            ]
        });
        config::parse(cfg.to_string().as_bytes()).unwrap().routes
    }

    fn name(method: &str, authority: &str, path: &str) -> Option<String> {
        let routes = routes();
        find(&routes, method, authority, path).map(|(_, r)| r.name.clone())
    }

    #[test]
    fn first_match_wins_in_declaration_order() {
        assert_eq!(
            name("GET", "api.example.com", "/paid/health").as_deref(),
            Some("exempt")
        );
        assert_eq!(
            name("GET", "api.example.com", "/paid/report").as_deref(),
            Some("exact")
        );
        assert_eq!(
            name("POST", "x.example.com", "/paid/report").as_deref(),
            Some("wild")
        );
        assert_eq!(
            name("GET", "x.example.com", "/paid/report").as_deref(),
            Some("prefix")
        );
    }

    #[test]
    fn host_is_case_and_port_insensitive_and_wildcards_need_a_label() {
        assert_eq!(
            name("GET", "API.EXAMPLE.COM:8080", "/paid/report").as_deref(),
            Some("exact")
        );
        assert_eq!(
            name("POST", "example.com", "/paid/x").as_deref(),
            Some("prefix")
        );
        assert_eq!(
            name("POST", "a.b.example.com", "/paid/x").as_deref(),
            Some("wild")
        );
        assert_eq!(
            name("POST", "evilexample.com", "/paid/x").as_deref(),
            Some("prefix")
        );
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("[::1"), "[::1");
        assert_eq!(normalize_host("h:"), "h");
        assert_eq!(normalize_host("h:x"), "h:x");
    }

    #[test]
    fn query_and_fragment_are_ignored_and_regex_is_anchored() {
        assert_eq!(
            name("GET", "h", "/paid/health?x=1").as_deref(),
            Some("exempt")
        );
        assert_eq!(name("GET", "h", "/items/12?q=/x").as_deref(), Some("regex"));
        assert_eq!(
            name("HEAD", "h", "/items/12#frag").as_deref(),
            Some("regex")
        );
        assert_eq!(name("GET", "h", "/items/12/more"), None);
        assert_eq!(name("GET", "h", "/x/items/12"), None);
        assert_eq!(name("DELETE", "h", "/items/12"), None);
        assert_eq!(name("get", "h", "/items/12").as_deref(), Some("regex"));
        assert_eq!(name("GET", "h", "/"), None);
        assert_eq!(name("GET", "h", ""), None);
    }

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
        assert_eq!(
            name("GET", "h", "/free/../paid/x").as_deref(),
            Some("prefix")
        );
        assert_eq!(name("GET", "h", "/%70aid/x").as_deref(), Some("prefix"));
        assert_eq!(name("GET", "h", "/items/%31%32").as_deref(), Some("regex"));
        // An exemption is exact: a different spelling of it is paid.
        assert_eq!(
            name("GET", "h", "/paid/health/.").as_deref(),
            Some("prefix")
        );
        assert_eq!(
            name("GET", "h", "/paid/./health").as_deref(),
            Some("exempt")
        );
    }

    #[test]
    fn bad_host_patterns_are_refused() {
        for bad in ["", "a b", "*", "*.", "a.*.com", "*example.com", "x/y"] {
            assert!(HostMatch::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostMatch::parse("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(method in ".{0,12}", authority in ".{0,40}", path in ".{0,80}") {
            let routes = routes();
            let _ = find(&routes, &method, &authority, &path);
        }

        #[test]
        fn canonical_path_is_idempotent_and_rooted(path in "[a-c/.%2-5EFef\\\\?#]{0,40}") {
            let once = canonical_path(&path);
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert!(!once.contains("//"));
            proptest::prop_assert_eq!(canonical_path(&once), once.clone());
        }
    }
}

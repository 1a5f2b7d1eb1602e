//! Route matching: host, path (exact, prefix, regex) and method; the first matching route wins
//! ([`crate::router::find`]).
//!
//! The filter prices the path it sees while the upstream serves the path it understands, so a
//! paid route matches every spelling a common upstream serves as the same resource, and a free
//! route only its own spelling. Rewrites can only make a request look *more* like a paid route
//! (they are used for matching; the request forwarded upstream is unchanged):
//!
//! - the path is read in each of its forms ([`PathForms`]: canonical, and without `;`
//!   parameters unless a route keeps them); a request is paid when, in any form, the first
//!   route that matches is paid;
//! - a case-insensitive route (the default for paid routes) matches if some upper/lower-case
//!   spelling of the path matches;
//! - a paid exact or regex route also matches the path with or without one trailing slash (the
//!   canonical path already turned `/x/.` into `/x/`), and a paid prefix ending in `/` also
//!   matches the bare directory (`/paid/` matches `/paid`);
//! - a paid host-scoped route ignores trailing dots in the Host (`api.example.com.`); every
//!   route ignores case and the port.

pub use crate::canonical::{canonical_path, PathForms};

/// How a route reads the request path. Defaults: see [`Spelling::default_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelling {
    /// Match letters in the path exactly as written (`caseSensitive`).
    pub case_sensitive: bool,
    /// Also match the path with its `;` parameters removed (`pathParams: "strip"`).
    pub strip_params: bool,
}

impl Spelling {
    /// Paid routes match case-insensitively (widening a paid route can only add 402s); free
    /// routes match their exact spelling (widening an exemption could exempt another resource
    /// on a case-sensitive upstream). Both strip `;` parameters: the parameter-free form is an
    /// extra reading, and a paid route matching any reading prices the request.
    pub fn default_for(free: bool) -> Spelling {
        Spelling {
            case_sensitive: free,
            strip_params: true,
        }
    }
}

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
        // `api.example.com.:443` is `api.example.com`: as requests are read.
        let host = trim_dots(strip_port(&lower));
        if host.contains(':') && !host.starts_with('[') {
            return Err(format!(
                "`{s}` is not a host name (write an IPv6 address in brackets: [::1])"
            ));
        }
        match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => {
                Ok(HostMatch::Suffix(rest.to_owned()))
            }
            Some(_) => Err(format!("`{s}`: a wildcard must look like *.example.com")),
            None if host.contains('*') => {
                Err(format!("`{s}`: `*` is allowed only as the first label"))
            }
            None if host.is_empty() || host.starts_with('.') => {
                Err(format!("`{s}` is not a host name"))
            }
            None => Ok(HostMatch::Exact(host.to_owned())),
        }
    }

    /// `host` is lower case without the port ([`normalize_host`]); `lenient` also ignores
    /// trailing dots (`api.example.com.` is the same name, fully qualified).
    pub fn matches(&self, host: &str, lenient: bool) -> bool {
        let host = if lenient { trim_dots(host) } else { host };
        match self {
            HostMatch::Exact(h) => host == h,
            HostMatch::Suffix(sfx) => host.len() > sfx.len() && host.ends_with(sfx.as_str()),
        }
    }
}

fn trim_dots(host: &str) -> &str {
    host.trim_end_matches('.')
}

/// How a route matches the request path (without the query string).
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    /// Plain string prefix, as Envoy's `prefix` route match.
    Prefix(String),
    /// Must match the whole path (the pattern is anchored for you; compiled case-folded for a
    /// case-insensitive route).
    Regex(crate::pathre::PathRegex),
}

/// `path` without one trailing slash (the root stays `/`).
fn without_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

fn same(a: &[u8], b: &[u8], fold: bool) -> bool {
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

impl PathMatch {
    /// `fold`: letters match in either case. `lenient` (paid routes): a trailing slash is not
    /// significant for exact and regex routes, and a prefix `/dir/` also matches `/dir`.
    pub fn matches(&self, path: &str, fold: bool, lenient: bool) -> bool {
        match self {
            PathMatch::Exact(p) => {
                same(path.as_bytes(), p.as_bytes(), fold)
                    || (lenient
                        && same(
                            without_slash(path).as_bytes(),
                            without_slash(p).as_bytes(),
                            fold,
                        ))
            }
            PathMatch::Prefix(p) => {
                let (path, p) = (path.as_bytes(), p.as_bytes());
                path.get(..p.len()).is_some_and(|head| same(head, p, fold))
                    || (lenient
                        && p.len() > 1
                        && p.ends_with(b"/")
                        && same(path, &p[..p.len() - 1], fold))
            }
            // A folded regex already matches either case.
            PathMatch::Regex(re) => {
                re.is_match(path)
                    || (lenient
                        && if path.len() > 1 && path.ends_with('/') {
                            re.is_match(without_slash(path))
                        } else {
                            let mut slashed = String::with_capacity(path.len() + 1);
                            slashed.push_str(path);
                            slashed.push('/');
                            re.is_match(&slashed)
                        })
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::config::Route;
    use crate::router::find;
    use serde_json::{json, Value};

    fn parse_routes(routes: Value) -> Vec<Route> {
        let cfg = json!({
            "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
            "network": "nano:devnet",
            "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
            "routes": routes,
        });
        config::parse(cfg.to_string().as_bytes()).unwrap().routes
    }

    fn routes() -> Vec<Route> {
        parse_routes(json!([
            {"name": "exempt", "path": {"exact": "/paid/health"}, "free": true},
            {"name": "exact", "host": "API.example.com:443", "path": {"exact": "/paid/report"}, "price": "1"},
            {"name": "wild", "host": "*.example.com", "path": {"prefix": "/paid/"}, "methods": ["POST"], "price": "1"},
            {"name": "prefix", "path": {"prefix": "/paid/"}, "price": "2"},
            {"name": "regex", "path": {"regex": "/items/[0-9]+"}, "methods": ["GET", "HEAD"], "price": "3"}
        ]))
    }

    fn name_in(routes: &[Route], method: &str, authority: &str, path: &str) -> Option<String> {
        find(routes, method, authority, path).map(|(_, r)| r.name.clone())
    }

    fn name(method: &str, authority: &str, path: &str) -> Option<String> {
        name_in(&routes(), method, authority, path)
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
    fn trailing_dot_in_the_host_does_not_escape_a_host_scoped_paid_route() {
        for host in [
            "api.example.com.",
            "API.Example.COM.",
            "api.example.com.:8443",
            "api.example.com..",
        ] {
            assert_eq!(
                name("GET", host, "/paid/report").as_deref(),
                Some("exact"),
                "{host}"
            );
        }
        assert_eq!(
            name("POST", "x.example.com.", "/paid/r").as_deref(),
            Some("wild")
        );
        assert_eq!(
            name("POST", "x.example.com.:80", "/paid/r").as_deref(),
            Some("wild")
        );
        // Not a subdomain because of a dot.
        assert_eq!(
            name("POST", "example.com.", "/paid/x").as_deref(),
            Some("prefix")
        );
        // IPv6 literals, with and without a port.
        let routes = parse_routes(json!([
            {"name": "v6", "host": "[::1]", "path": {"exact": "/paid"}, "price": "1"},
            {"name": "v6port", "host": "[2001:DB8::1]:8443", "path": {"exact": "/x"}, "price": "1"}
        ]));
        assert_eq!(
            name_in(&routes, "GET", "[::1]:8080", "/paid").as_deref(),
            Some("v6")
        );
        assert_eq!(
            name_in(&routes, "GET", "[::1]", "/PAID/").as_deref(),
            Some("v6")
        );
        assert_eq!(
            name_in(&routes, "GET", "[2001:db8::1]", "/x").as_deref(),
            Some("v6port")
        );
        assert_eq!(name_in(&routes, "GET", "[::2]", "/paid"), None);
    }

    #[test]
    fn a_host_scoped_free_route_matches_only_its_own_host_spelling() {
        let routes = parse_routes(json!([
            {"name": "public", "host": "public.example.com", "path": {"prefix": "/"}, "free": true},
            {"name": "paid", "path": {"prefix": "/"}, "price": "1"}
        ]));
        assert_eq!(
            name_in(&routes, "GET", "PUBLIC.example.com:80", "/r").as_deref(),
            Some("public")
        );
        // Envoy routes `public.example.com.` to another virtual host unless it strips the dot.
        assert_eq!(
            name_in(&routes, "GET", "public.example.com.", "/r").as_deref(),
            Some("paid")
        );
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
    fn canonical_spellings_match_and_an_exemption_is_exact() {
        assert_eq!(
            name("GET", "h", "/free/../paid/x").as_deref(),
            Some("prefix")
        );
        assert_eq!(name("GET", "h", "/%70aid/x").as_deref(), Some("prefix"));
        assert_eq!(name("GET", "h", "/items/%31%32").as_deref(), Some("regex"));
        // An exemption is exact: a different spelling of it is paid.
        for spelling in [
            "/paid/health/.",
            "/paid/health/",
            "/PAID/health",
            "/paid/Health",
            "/paid/health;x",
        ] {
            assert_eq!(
                name("GET", "h", spelling).as_deref(),
                Some("prefix"),
                "{spelling}"
            );
        }
        assert_eq!(
            name("GET", "h", "/paid/./health").as_deref(),
            Some("exempt")
        );
    }

    #[test]
    fn paid_routes_match_any_letter_case_by_default() {
        for (path, want) in [
            ("/PAID/report", "prefix"),
            ("/Paid/Report", "prefix"),
            ("/%50AID/x", "prefix"),
            ("/ITEMS/12", "regex"),
            ("/Items/12", "regex"),
        ] {
            assert_eq!(name("GET", "h", path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(
            name("GET", "api.example.com", "/PAID/REPORT").as_deref(),
            Some("exact")
        );
        assert_eq!(name("GET", "h", "/PAIDX/report"), None);
    }

    #[test]
    fn case_sensitive_routes_match_only_their_own_case() {
        let routes = parse_routes(json!([
            {"name": "health", "path": {"exact": "/Health"}, "free": true, "caseSensitive": false},
            {"name": "strict", "path": {"prefix": "/Strict/"}, "price": "1", "caseSensitive": true},
            {"name": "re", "path": {"regex": "/R/[a-z]+"}, "price": "1", "caseSensitive": true},
            {"name": "refold", "path": {"regex": "/F/[a-z]+"}, "price": "1"}
        ]));
        let n = |p: &str| name_in(&routes, "GET", "h", p);
        assert_eq!(n("/HEALTH").as_deref(), Some("health"));
        assert_eq!(n("/Strict/x").as_deref(), Some("strict"));
        assert_eq!(n("/strict/x"), None);
        assert_eq!(n("/R/abc").as_deref(), Some("re"));
        assert_eq!(n("/r/abc"), None);
        assert_eq!(n("/R/ABC"), None);
        assert_eq!(n("/f/ABC").as_deref(), Some("refold"));
    }

    #[test]
    fn path_parameters_are_stripped_from_every_segment() {
        for (path, want) in [
            ("/paid;x/report", "prefix"),
            ("/paid;jsessionid=1/x", "prefix"),
            ("/PAID;x/Report;y", "prefix"),
            ("/free/..;/paid/x", "prefix"),
            ("/items/12;x", "regex"),
            ("/items;a/12;b/", "regex"),
        ] {
            assert_eq!(name("GET", "h", path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(
            name("GET", "api.example.com", "/paid;x/report").as_deref(),
            Some("exact")
        );
        // `%3B` is data, not a separator (as for Tomcat): this is not the /paid/ directory.
        assert_eq!(name("GET", "h", "/paid%3Bx/report"), None);
    }

    #[test]
    fn a_paid_route_in_any_form_wins_over_a_free_route_in_another() {
        let routes = parse_routes(json!([
            {"name": "free", "path": {"prefix": "/free/"}, "free": true},
            {"name": "paid", "path": {"prefix": "/paid/"}, "price": "1"}
        ]));
        // Canonically under /free/; without parameters it is /paid/x (what Tomcat serves).
        assert_eq!(
            name_in(&routes, "GET", "h", "/free/..;/paid/x").as_deref(),
            Some("paid")
        );
        assert_eq!(
            name_in(&routes, "GET", "h", "/free;x/y").as_deref(),
            Some("free")
        );
        assert_eq!(
            name_in(&routes, "GET", "h", "/free/y").as_deref(),
            Some("free")
        );
    }

    #[test]
    fn no_spelling_makes_a_request_cheaper() {
        let routes = parse_routes(json!([
            {"name": "dear", "path": {"exact": "/paid/report"}, "price": "10"},
            {"name": "cheap", "path": {"prefix": "/paid/"}, "price": "1"}
        ]));
        // As written the cheap prefix matches; without the parameter the dear exact route does.
        assert_eq!(
            name_in(&routes, "GET", "h", "/paid/report;x").as_deref(),
            Some("dear")
        );
        assert_eq!(
            name_in(&routes, "GET", "h", "/paid/other;x").as_deref(),
            Some("cheap")
        );
    }

    #[test]
    fn keeping_path_parameters_matches_only_the_path_as_written() {
        let routes = parse_routes(json!([
            {"name": "keep", "path": {"prefix": "/paid/"}, "price": "2", "pathParams": "keep"},
            {"name": "exempt", "path": {"exact": "/free"}, "free": true, "pathParams": "keep"},
            {"name": "catchall", "path": {"prefix": "/"}, "price": "1"}
        ]));
        let n = |p: &str| name_in(&routes, "GET", "h", p);
        assert_eq!(n("/paid/x;y").as_deref(), Some("keep"));
        assert_eq!(n("/paid;y/x").as_deref(), Some("catchall"));
        assert_eq!(n("/free").as_deref(), Some("exempt"));
        assert_eq!(n("/free;x").as_deref(), Some("catchall"));
    }

    #[test]
    fn paid_exact_and_regex_routes_ignore_a_trailing_slash_and_dot_segments() {
        for (host, path, want) in [
            ("api.example.com", "/paid/report/", "exact"),
            ("api.example.com", "/paid/report/.", "exact"),
            ("api.example.com", "/paid/report/./", "exact"),
            ("api.example.com", "/paid/report/.//.", "exact"),
            ("api.example.com", "/paid/report/x/..", "exact"),
            ("h", "/items/12/", "regex"),
            ("h", "/items/12/.", "regex"),
            ("h", "/ITEMS/12/./", "regex"),
            // A prefix `/paid/` also covers the bare directory.
            ("h", "/paid", "prefix"),
            ("h", "/PAID/.", "prefix"),
        ] {
            assert_eq!(name("GET", host, path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(name("GET", "h", "/paidx"), None);
        assert_eq!(name("GET", "h", "/items/12//x"), None);
        let routes = parse_routes(json!([
            {"name": "dir", "path": {"exact": "/dir/"}, "price": "1"},
            {"name": "re", "path": {"regex": "/re/[0-9]+/"}, "price": "1"},
            {"name": "root", "path": {"exact": "/"}, "price": "1"}
        ]));
        let n = |p: &str| name_in(&routes, "GET", "h", p);
        assert_eq!(n("/dir").as_deref(), Some("dir"));
        assert_eq!(n("/re/1").as_deref(), Some("re"));
        assert_eq!(n("/re/1/").as_deref(), Some("re"));
        assert_eq!(n("/").as_deref(), Some("root"));
        assert_eq!(n("/.").as_deref(), Some("root"));
        assert_eq!(n("//").as_deref(), Some("root"));
        assert_eq!(n("/x"), None);
    }

    #[test]
    fn a_paid_route_without_methods_covers_every_method() {
        let routes =
            parse_routes(json!([{"name": "all", "path": {"prefix": "/paid/"}, "price": "1"}]));
        for m in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "get",
        ] {
            assert_eq!(
                name_in(&routes, m, "h", "/paid/x").as_deref(),
                Some("all"),
                "{m}"
            );
        }
        assert_eq!(name("POST", "h", "/paid/report").as_deref(), Some("prefix"));
    }

    #[test]
    fn bad_host_patterns_are_refused() {
        for bad in [
            "",
            "a b",
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "x/y",
            ".",
            "..",
            ".example.com",
            "::1",
            "a:b",
            "*.a:b",
        ] {
            assert!(HostMatch::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostMatch::parse("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(
            HostMatch::parse("*.example.com."),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        assert_eq!(
            HostMatch::parse("API.example.com.:443"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            HostMatch::parse("[2001:DB8::1]:443"),
            Ok(HostMatch::Exact("[2001:db8::1]".into()))
        );
    }

    /// A route table with one paid route of every kind and setting, and free ones.
    fn mixed() -> Vec<Route> {
        parse_routes(json!([
            {"name": "f1", "path": {"exact": "/a/b"}, "free": true},
            {"name": "f2", "path": {"prefix": "/c/"}, "free": true},
            {"name": "p1", "path": {"prefix": "/a/"}, "price": "1"},
            {"name": "p2", "path": {"exact": "/b/c"}, "price": "1"},
            {"name": "p3", "path": {"regex": "/c/[ab]+"}, "price": "1"},
            {"name": "p4", "path": {"prefix": "/B/"}, "price": "1", "caseSensitive": true, "pathParams": "keep"}
        ]))
    }

    /// Whether `r` matches `path` literally: no rewrite beyond the canonical path.
    fn literal(r: &Route, path: &str) -> bool {
        let c = canonical_path(path);
        match &r.path {
            PathMatch::Exact(p) => c == *p,
            PathMatch::Prefix(p) => c.starts_with(p.as_str()),
            PathMatch::Regex(re) => re.is_match(&c),
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(method in ".{0,12}", authority in ".{0,40}", path in ".{0,80}") {
            let routes = routes();
            let _ = find(&routes, &method, &authority, &path);
        }

        /// The rewrites only ever make a path look more like a paid route: whatever the old
        /// literal matching priced is still priced, and a free route is only ever chosen for a
        /// form of the path that it matches as written (case included).
        #[test]
        fn rewrites_never_make_a_path_less_paid(path in "[abcABC/.;%2-5Ef]{0,24}") {
            let routes = mixed();
            let first_literal = routes.iter().find(|r| literal(r, &path));
            let found = find(&routes, "GET", "h", &path);
            if first_literal.is_some_and(Route::is_paid) {
                proptest::prop_assert!(found.is_some_and(|(_, r)| r.is_paid()), "{:?}", found);
            }
            if let Some((_, r)) = found.filter(|(_, r)| !r.is_paid()) {
                let forms = PathForms::of(&path);
                let strict = |p: &str| match &r.path {
                    PathMatch::Exact(x) => p == x,
                    PathMatch::Prefix(x) => p.starts_with(x.as_str()),
                    PathMatch::Regex(re) => re.is_match(p),
                };
                proptest::prop_assert!(
                    strict(&forms.canonical) || forms.without_params.as_deref().is_some_and(strict),
                    "{} chose {}", path, r.name
                );
            }
        }
    }
}

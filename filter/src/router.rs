//! Choosing the route that decides a request, with the matchers of [`crate::routes`].

use crate::config::{Route, RouteKind};
use crate::routes::{normalize_host, PathForms};

impl Route {
    pub(crate) fn is_paid(&self) -> bool {
        matches!(self.kind, RouteKind::Paid(_))
    }

    /// Whether this route matches the request, reading the path as `path` (a form from
    /// [`PathForms`]; `params_stripped` when it is the parameter-free one).
    fn matches(&self, method: &str, host: &str, path: &str, params_stripped: bool) -> bool {
        let lenient = self.is_paid();
        (!params_stripped || self.spelling.strip_params)
            && self.host.as_ref().is_none_or(|h| h.matches(host, lenient))
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && self
                .path
                .matches(path, !self.spelling.case_sensitive, lenient)
    }
}

/// The route deciding the request, with its index. In each form of the path, the first route
/// that matches decides that form; the request is paid when any form's decision is paid (the
/// highest price among them, so no spelling makes a request cheaper), else free when any form
/// hit a free route.
pub fn find<'r>(
    routes: &'r [Route],
    method: &str,
    authority: &str,
    path: &str,
) -> Option<(usize, &'r Route)> {
    find_in(routes, method, authority, &PathForms::of(path))
}

/// [`find`] for a path whose forms the caller computed (the 402 path needs the canonical one
/// again for the resource URL).
pub fn find_in<'r>(
    routes: &'r [Route],
    method: &str,
    authority: &str,
    forms: &PathForms,
) -> Option<(usize, &'r Route)> {
    let host = normalize_host(authority);
    let readings = std::iter::once((forms.canonical.as_str(), false))
        .chain(forms.without_params.as_deref().map(|p| (p, true)));
    let mut paid: Option<(usize, &Route, u128)> = None;
    let mut free = None;
    for (reading, stripped) in readings {
        let Some((i, r)) = routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, &host, reading, stripped))
        else {
            continue;
        };
        match &r.kind {
            RouteKind::Paid(p) if paid.is_none_or(|(_, _, a)| p.amount_raw > a) => {
                paid = Some((i, r, p.amount_raw));
            }
            RouteKind::Paid(_) => {}
            RouteKind::Free => free = free.or(Some((i, r))),
        }
    }
    paid.map(|(i, r, _)| (i, r)).or(free)
}

//! Spin's HTTP route semantics: exact routes, `:name` segments, a trailing `/...`
//! wildcard, and the most specific route wins.
//!
//! Specificity is compared segment by segment from the left: a literal segment beats a
//! `:name` segment, which beats the wildcard; a route that ends exactly where the path
//! ends beats a wildcard that matches nothing more. So `/foo/bar` beats `/foo/:id`,
//! which beats `/foo/...`, which beats `/...`.

use std::collections::HashMap;

/// One parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// As written in the manifest, e.g. `/v1/orgs/:org/...`.
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Why a route pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route must not be empty")]
    Empty,
    #[error("'...' is allowed only as the whole last segment ('/...')")]
    MisplacedWildcard,
    #[error("parameter segment ':' needs a name of letters, digits or '_'")]
    BadParam,
    #[error("parameter ':{0}' appears twice")]
    DuplicateParam(String),
}

impl Route {
    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        if raw.is_empty() {
            return Err(RouteError::Empty);
        }
        // Spin makes a relative route absolute: `hello` is `/hello`.
        let absolute = if raw.starts_with('/') {
            raw.to_string()
        } else {
            format!("/{raw}")
        };
        let mut parts: Vec<&str> = absolute[1..].split('/').collect();
        // Spin strips a trailing slash from routes: `/foo/` is `/foo`.
        if parts.last() == Some(&"") {
            parts.pop();
        }
        // `/foo/*` is Spin's other spelling of `/foo/...`.
        let wildcard = matches!(parts.last(), Some(&"...") | Some(&"*"));
        if wildcard {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        let mut names = Vec::new();
        for part in parts {
            if part.contains("...") || part == "*" {
                return Err(RouteError::MisplacedWildcard);
            }
            if let Some(name) = part.strip_prefix(':') {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(RouteError::BadParam);
                }
                if names.contains(&name) {
                    return Err(RouteError::DuplicateParam(name.to_string()));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(Route {
            raw: raw.to_string(),
            segments,
            wildcard,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The route as Spin reports it in `spin-matched-route`: absolute, no trailing slash,
    /// the wildcard spelled `/...`.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(p) => {
                    out.push(':');
                    out.push_str(p);
                }
            }
        }
        if self.wildcard {
            out.push_str("/...");
        }
        if out.is_empty() { "/".to_string() } else { out }
    }

    /// The route without its trailing `/...` (Spin's `spin-component-route`).
    pub fn prefix(&self) -> &str {
        self.raw.strip_suffix("/...").unwrap_or(&self.raw)
    }

    /// Matches `path` (no query), returning the rank used to pick the most specific route.
    fn matches<'p>(&self, path: &'p str) -> Option<(Vec<u8>, RouteMatchParts<'p>)> {
        let trimmed = path.strip_prefix('/')?;
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        // A trailing slash is insignificant for matching: `/foo/` matches `/foo`.
        let significant = match parts.last() {
            Some(&"") => &parts[..parts.len() - 1],
            _ => &parts[..],
        };
        if significant.len() < self.segments.len()
            || (!self.wildcard && significant.len() != self.segments.len())
        {
            return None;
        }
        let mut rank = Vec::with_capacity(self.segments.len() + 1);
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(significant) {
            match segment {
                Segment::Literal(lit) if lit == part => rank.push(3),
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    rank.push(2);
                    params.push((name.clone(), *part));
                }
            }
        }
        let path_info = if self.wildcard {
            rank.push(1);
            // Everything after the matched segments, keeping a trailing slash (as Spin does).
            let consumed: usize = self.segments.len();
            let rest = significant[consumed..].join("/");
            match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            }
        } else {
            rank.push(4);
            String::new()
        };
        Some((rank, RouteMatchParts { params, path_info }))
    }
}

struct RouteMatchParts<'p> {
    params: Vec<(String, &'p str)>,
    path_info: String,
}

/// The route a request matched and what it captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r, T> {
    pub target: &'r T,
    pub route: &'r Route,
    /// `:name` captures, by name.
    pub params: HashMap<String, String>,
    /// The part of the path the trailing wildcard matched (`spin-path-info`).
    pub path_info: String,
}

/// Routes to targets of type `T` (component indexes in the host).
#[derive(Debug, Clone)]
pub struct Router<T> {
    routes: Vec<(Route, T)>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<T> Router<T> {
    /// Adds a route; like Spin, a later identical route replaces an earlier one and the
    /// replaced target is returned so the caller can warn about it.
    pub fn add(&mut self, route: Route, target: T) -> Option<T> {
        let same = |r: &Route| r.segments == route.segments && r.wildcard == route.wildcard;
        if let Some(slot) = self.routes.iter_mut().find(|(r, _)| same(r)) {
            let old = std::mem::replace(slot, (route, target));
            return Some(old.1);
        }
        self.routes.push((route, target));
        None
    }

    pub fn routes(&self) -> impl Iterator<Item = (&Route, &T)> {
        self.routes.iter().map(|(r, t)| (r, t))
    }

    /// The most specific route matching `path` (without query string).
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        let mut best: Option<(Vec<u8>, &Route, &T, RouteMatchParts<'_>)> = None;
        for (route, target) in &self.routes {
            if let Some((rank, parts)) = route.matches(path)
                && best
                    .as_ref()
                    .is_none_or(|(best_rank, ..)| rank > *best_rank)
            {
                best = Some((rank, route, target, parts));
            }
        }
        best.map(|(_, route, target, parts)| RouteMatch {
            target,
            route,
            params: parts
                .params
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            path_info: parts.path_info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router<String> {
        let mut r = Router::default();
        for raw in routes {
            r.add(Route::parse(raw).unwrap(), raw.to_string());
        }
        r
    }

    fn winner(r: &Router<String>, path: &str) -> Option<String> {
        r.route(path).map(|m| m.target.clone())
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router(&[
            "/...",
            "/foo/...",
            "/foo/:id",
            "/foo/bar",
            "/foo",
            "/foo/:id/...",
        ]);
        assert_eq!(winner(&r, "/foo/bar").as_deref(), Some("/foo/bar"));
        assert_eq!(winner(&r, "/foo/baz").as_deref(), Some("/foo/:id"));
        assert_eq!(winner(&r, "/foo/baz/x").as_deref(), Some("/foo/:id/..."));
        assert_eq!(winner(&r, "/foo").as_deref(), Some("/foo"));
        assert_eq!(winner(&r, "/foo/").as_deref(), Some("/foo"));
        assert_eq!(winner(&r, "/other").as_deref(), Some("/..."));
        assert_eq!(winner(&r, "/").as_deref(), Some("/..."));
    }

    #[test]
    fn order_of_declaration_does_not_matter() {
        let a = router(&["/foo/...", "/foo/bar"]);
        let b = router(&["/foo/bar", "/foo/..."]);
        assert_eq!(winner(&a, "/foo/bar"), winner(&b, "/foo/bar"));
        assert_eq!(winner(&a, "/foo/bar").as_deref(), Some("/foo/bar"));
    }

    #[test]
    fn exact_routes_do_not_match_longer_paths() {
        let r = router(&["/foo"]);
        assert_eq!(winner(&r, "/foo/bar"), None);
        assert_eq!(winner(&r, "/fo"), None);
        assert_eq!(winner(&r, "/foobar"), None);
    }

    #[test]
    fn wildcard_matches_its_prefix_and_everything_below() {
        let r = router(&["/foo/..."]);
        assert_eq!(r.route("/foo").unwrap().path_info, "");
        assert_eq!(r.route("/foo/").unwrap().path_info, "/");
        assert_eq!(r.route("/foo/bar").unwrap().path_info, "/bar");
        assert_eq!(r.route("/foo/bar/").unwrap().path_info, "/bar/");
        assert_eq!(r.route("/foo/a/b/c").unwrap().path_info, "/a/b/c");
        assert!(r.route("/foobar").is_none());
    }

    #[test]
    fn named_segments_are_captured() {
        let r = router(&["/v1/orgs/:org/advertisers/:advertiser_id/..."]);
        let m = r.route("/v1/orgs/acme/advertisers/42/campaigns").unwrap();
        assert_eq!(m.params["org"], "acme");
        assert_eq!(m.params["advertiser_id"], "42");
        assert_eq!(m.path_info, "/campaigns");
        assert!(
            r.route("/v1/orgs//advertisers/42").is_none(),
            "an empty segment is no parameter"
        );
    }

    #[test]
    fn later_duplicate_replaces_earlier_as_in_spin() {
        let mut r = Router::default();
        assert_eq!(r.add(Route::parse("/foo").unwrap(), 1), None);
        assert_eq!(r.add(Route::parse("/foo/").unwrap(), 2), Some(1));
        assert_eq!(r.route("/foo").map(|m| *m.target), Some(2));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Route::parse(""), Err(RouteError::Empty));
        assert_eq!(Route::parse("/a/*/b"), Err(RouteError::MisplacedWildcard));
        assert_eq!(Route::parse("/a/.../b"), Err(RouteError::MisplacedWildcard));
        assert_eq!(Route::parse("/a..."), Err(RouteError::MisplacedWildcard));
        assert_eq!(Route::parse("/a/:"), Err(RouteError::BadParam));
        assert_eq!(
            Route::parse("/:a/:a"),
            Err(RouteError::DuplicateParam("a".into()))
        );
    }

    #[test]
    fn spin_spellings_relative_routes_and_star_wildcards() {
        let r = router(&["hello", "/files/*"]);
        assert_eq!(winner(&r, "/hello").as_deref(), Some("hello"));
        assert_eq!(r.route("/files/a/b").unwrap().path_info, "/a/b");
        assert_eq!(Route::parse("hello").unwrap().normalized(), "/hello");
        assert_eq!(Route::parse("/files/*").unwrap().normalized(), "/files/...");
        assert_eq!(Route::parse("/foo/").unwrap().normalized(), "/foo");
    }

    #[test]
    fn root_path_on_catch_all_has_path_info_slash_as_in_spin() {
        let r = router(&["/..."]);
        assert_eq!(r.route("/").unwrap().path_info, "/");
    }

    #[test]
    fn prefix_strips_the_wildcard() {
        assert_eq!(Route::parse("/foo/...").unwrap().prefix(), "/foo");
        assert_eq!(Route::parse("/foo").unwrap().prefix(), "/foo");
        assert_eq!(Route::parse("/...").unwrap().prefix(), "");
    }
}

//! The router: every HTTP function's route ordered by ASP.NET Core's precedence, conflicts
//! refused at start, and for each request the function, a 405 with `Allow`, or a 404.

use std::cmp::Ordering;

use super::lookup;
use super::route_template::eq_ignore_case;
pub(crate) use super::route_template::{RouteError, RouteTemplate, RouteValues, path_segments};

/// One function's public route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub function: String,
    /// Upper-case methods; `None` accepts every method (function.json without `methods`).
    pub methods: Option<Vec<String>>,
    pub template: RouteTemplate,
}

impl Route {
    fn allows(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| lookup::contains(m, method))
    }
}

/// What the router decided for one request.
#[derive(Debug)]
pub(crate) enum RouteMatch<'a> {
    Found {
        route: &'a Route,
        values: RouteValues,
    },
    /// The path exists but not for this method: answered 405 with `Allow` (the real host
    /// answers 404 here; locally the hint is worth the difference).
    MethodNotAllowed {
        allow: Vec<String>,
    },
    NotFound,
}

/// Every function's route, ordered by precedence.
#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the router; reports every bad template and every conflict at once.
    pub(crate) fn new(routes: Vec<Route>) -> Result<Self, Vec<RouteError>> {
        let mut problems = Vec::new();
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                if !eq_ignore_case(a.template.text(), b.template.text()) {
                    continue;
                }
                let overlap = match (&a.methods, &b.methods) {
                    (None, None) => Some("any method".to_owned()),
                    (None, Some(m)) | (Some(m), None) => m.first().cloned(),
                    (Some(x), Some(y)) => x.iter().find(|m| lookup::contains(y, m)).cloned(),
                };
                if let Some(method) = overlap {
                    problems.push(RouteError::Conflict {
                        first: a.function.clone(),
                        second: b.function.clone(),
                        template: a.template.text().to_owned(),
                        method,
                    });
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut routes = routes;
        // Stable: among equal precedence, function order (folder names) decides.
        routes.sort_by(|a, b| {
            let (pa, pb) = (a.template.precedence(), b.template.precedence());
            compare_precedence(&pa, &pb)
        });
        Ok(Self { routes })
    }

    /// The routes, best precedence first.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the function for a method and raw path.
    pub(crate) fn find(&self, method: &str, raw_path: &str) -> RouteMatch<'_> {
        let path = path_segments(raw_path);
        let mut allow: Vec<String> = Vec::new();
        let mut any_path_match = false;
        for route in &self.routes {
            let Some(values) = route.template.matches(&path) else {
                continue;
            };
            any_path_match = true;
            if route.allows(method) {
                return RouteMatch::Found { route, values };
            }
            for m in route.methods.iter().flatten() {
                if !lookup::contains(&allow, m) {
                    allow.push(m.to_ascii_uppercase());
                }
            }
        }
        if any_path_match {
            RouteMatch::MethodNotAllowed { allow }
        } else {
            RouteMatch::NotFound
        }
    }
}

fn compare_precedence(a: &[u8], b: &[u8]) -> Ordering {
    // Compared digit by digit like ASP.NET's decimal; a shorter template with the same digits
    // is more specific.
    for (x, y) in a.iter().zip(b) {
        match x.cmp(y) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.len().cmp(&b.len()).reverse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(function: &str, methods: &[&str], template: &str) -> Route {
        Route {
            function: function.to_owned(),
            methods: (!methods.is_empty())
                .then(|| methods.iter().map(|m| m.to_ascii_uppercase()).collect()),
            template: RouteTemplate::parse("", template).unwrap(),
        }
    }

    fn product_router() -> Router {
        Router::new(vec![
            route("root", &["get"], "{ignored:maxlength(0)?}"),
            route("health", &["get"], "health"),
            route("createUser", &["get", "post"], "createUser"),
        ])
        .unwrap()
    }

    fn found<'a>(m: RouteMatch<'a>) -> (&'a str, RouteValues) {
        match m {
            RouteMatch::Found { route, values } => (route.function.as_str(), values),
            other => panic!("expected a match, got {other:?}"),
        }
    }
    #[test]
    fn the_root_function_serves_the_site_root_with_a_null_parameter() {
        let router = product_router();
        let (function, values) = found(router.find("GET", "/"));
        assert_eq!(function, "root");
        assert_eq!(values, vec![("ignored".to_owned(), None)]);
    }

    #[test]
    fn the_root_function_does_not_swallow_other_paths() {
        assert!(matches!(
            product_router().find("GET", "/nothing-here"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn literals_match_case_insensitively_and_ignore_one_trailing_slash() {
        let router = product_router();
        assert_eq!(found(router.find("POST", "/CREATEUSER")).0, "createUser");
        assert_eq!(found(router.find("get", "/createuser/")).0, "createUser");
    }

    #[test]
    fn a_method_that_is_not_listed_is_refused_with_the_allowed_ones() {
        match product_router().find("DELETE", "/createUser") {
            RouteMatch::MethodNotAllowed { allow } => assert_eq!(allow, vec!["GET", "POST"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_function_without_methods_accepts_every_method() {
        let router = Router::new(vec![route("any", &[], "any")]).unwrap();
        assert_eq!(found(router.find("PATCH", "/any")).0, "any");
    }

    #[test]
    fn a_literal_beats_a_parameter_whatever_the_order() {
        let router = Router::new(vec![
            route("byId", &["get"], "users/{id}"),
            route("me", &["get"], "users/me"),
        ])
        .unwrap();
        assert_eq!(found(router.find("GET", "/users/me")).0, "me");
        assert_eq!(found(router.find("GET", "/users/42")).0, "byId");
    }

    #[test]
    fn two_functions_on_the_same_route_and_method_conflict() {
        let problems = Router::new(vec![
            route("a", &["get"], "same"),
            route("b", &["get", "post"], "Same"),
        ])
        .unwrap_err();
        assert!(matches!(problems[0], RouteError::Conflict { .. }));
        assert!(
            Router::new(vec![
                route("a", &["get"], "same"),
                route("b", &["post"], "same")
            ])
            .is_ok()
        );
    }
}

//! Routing: the table of every route the API serves, path matching, percent-decoding of path
//! segments and of the listing's query string.
//!
//! Invariant: [`ROUTES`] is the single list of routes: the handlers dispatch on it and the
//! OpenAPI test checks it against `openapi.json` in both directions. Matching allocates
//! nothing: path parameters are borrowed slices of the request path, decoded afterwards.

use std::borrow::Cow;

use bookd_engine::limits::LIST_LIMIT_MAX;
use bookd_engine::ListQuery;

use super::json::ApiError;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PutResource,
    GetResource,
    ListResources,
    CreateHold,
    GetHold,
    ConfirmHold,
    ReleaseHold,
    CancelHold,
    ExtendHold,
    DeletePartition,
    Batch,
    Changes,
    OpenApi,
    Health,
    Metrics,
    Status,
    Promote,
    Checkpoint,
}

impl Route {
    /// Whether the route is one command (its path and body say which).
    pub fn is_command(self) -> bool {
        matches!(
            self,
            Route::PutResource
                | Route::CreateHold
                | Route::ConfirmHold
                | Route::ReleaseHold
                | Route::CancelHold
                | Route::ExtendHold
                | Route::DeletePartition
        )
    }

    /// Whether the route changes state, and so is refused on a standby.
    pub fn is_write(self) -> bool {
        self.is_command() || self == Route::Batch
    }

    /// Whether the route reads a request body (the others ignore one).
    pub fn reads_body(self) -> bool {
        self.is_write() || matches!(self, Route::Promote | Route::Checkpoint)
    }
}

/// One row of the routing table: method, path template (`{name}` is one segment), route.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub template: &'static str,
    pub route: Route,
}

const fn spec(method: &'static str, template: &'static str, route: Route) -> RouteSpec {
    RouteSpec { method, template, route }
}

/// Every route of the API, in the contract's order.
pub const ROUTES: &[RouteSpec] = &[
    spec("PUT", "/v1/partitions/{partition}/resources/{resource}", Route::PutResource),
    spec("GET", "/v1/partitions/{partition}/resources/{resource}", Route::GetResource),
    spec("GET", "/v1/partitions/{partition}/resources", Route::ListResources),
    spec("POST", "/v1/partitions/{partition}/holds", Route::CreateHold),
    spec("GET", "/v1/partitions/{partition}/holds/{hold}", Route::GetHold),
    spec("POST", "/v1/partitions/{partition}/holds/{hold}/confirm", Route::ConfirmHold),
    spec("POST", "/v1/partitions/{partition}/holds/{hold}/release", Route::ReleaseHold),
    spec("POST", "/v1/partitions/{partition}/holds/{hold}/cancel", Route::CancelHold),
    spec("POST", "/v1/partitions/{partition}/holds/{hold}/extend", Route::ExtendHold),
    spec("DELETE", "/v1/partitions/{partition}", Route::DeletePartition),
    spec("POST", "/v1/batch", Route::Batch),
    spec("GET", "/v1/changes", Route::Changes),
    spec("GET", "/openapi.json", Route::OpenApi),
    spec("GET", "/health", Route::Health),
    spec("GET", "/metrics", Route::Metrics),
    spec("GET", "/v1/status", Route::Status),
    spec("POST", "/admin/promote", Route::Promote),
    spec("POST", "/admin/checkpoint", Route::Checkpoint),
];

/// Most path parameters in any template.
pub const PARAMS_MAX: usize = 2;

/// The outcome of routing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing<'a> {
    /// A route, with its raw (still percent-encoded) path parameters in template order.
    Found {
        route: Route,
        params: [&'a str; PARAMS_MAX],
    },
    /// The path is served, but not with this method; `allow` lists the methods that are.
    WrongMethod {
        allow: String,
    },
    NotFound,
}

/// Finds the route for `method` and `path` (the path without its query string).
pub fn route<'a>(method: &str, path: &'a str) -> Routing<'a> {
    let mut allow = String::new();
    for spec in ROUTES {
        let mut params = [""; PARAMS_MAX];
        if !matches(spec.template, path, &mut params) {
            continue;
        }
        if spec.method == method {
            return Routing::Found { route: spec.route, params };
        }
        if !allow.is_empty() {
            allow.push_str(", ");
        }
        allow.push_str(spec.method);
    }
    if allow.is_empty() {
        Routing::NotFound
    } else {
        Routing::WrongMethod { allow }
    }
}

/// Whether `path` fits `template` segment by segment, capturing `{…}` segments into `params`.
fn matches<'a>(template: &str, path: &'a str, params: &mut [&'a str; PARAMS_MAX]) -> bool {
    let mut template_segments = template.split('/');
    let mut path_segments = path.split('/');
    let mut captured = 0;
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some(expected), Some(segment)) => {
                if expected.starts_with('{') {
                    let Some(slot) = params.get_mut(captured) else {
                        return false;
                    };
                    *slot = segment;
                    captured += 1;
                } else if expected != segment {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Percent-decodes a path segment (`+` stays `+`). Malformed escapes are kept literally and
/// bytes that do not form UTF-8 become U+FFFD, so a bad segment reaches the engine as a name
/// it refuses (`invalid`, naming the field) rather than being silently changed into a valid one.
pub fn decode_segment(segment: &str) -> Cow<'_, str> {
    percent_decode(segment, false)
}

pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Cow<'_, str> {
    if !text.bytes().any(|byte| byte == b'%' || (plus_is_space && byte == b'+')) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let high = bytes.get(index + 1).copied().and_then(hex_value);
            let low = bytes.get(index + 2).copied().and_then(hex_value);
            if let (Some(high), Some(low)) = (high, low) {
                decoded.push(high << 4 | low);
                index += 3;
                continue;
            }
        }
        decoded.push(if plus_is_space && byte == b'+' { b' ' } else { byte });
        index += 1;
    }
    match String::from_utf8(decoded) {
        Ok(text) => Cow::Owned(text),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The listing's query string: `prefix`, `after`, `limit`, each at most once.
///
/// An unknown or repeated parameter is `bad_request`. `limit` must be a decimal integer, else
/// it is `invalid` (it is a string by nature, so "not a number" is a value outside the limits,
/// not a wrong JSON type); its range is the engine's to check. An empty `after=` means "from the
/// start", like an absent one.
pub fn list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut list = ListQuery::default();
    let (mut seen_prefix, mut seen_after, mut seen_limit) = (false, false, false);
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, true);
        let value = percent_decode(value, true);
        let seen = match &*key {
            "prefix" => &mut seen_prefix,
            "after" => &mut seen_after,
            "limit" => &mut seen_limit,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{key}` (expected prefix, after, limit)"
                )))
            }
        };
        if std::mem::replace(seen, true) {
            return Err(ApiError::bad_request(format!("query parameter `{key}` given twice")));
        }
        match &*key {
            "prefix" => list.prefix = value.into_owned(),
            "after" if value.is_empty() => list.after = None,
            "after" => list.after = Some(value.into_owned()),
            _ => list.limit = Some(parse_limit(&value)?),
        }
    }
    Ok(list)
}

fn parse_limit(value: &str) -> Result<u64, ApiError> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        let reason = format!("must be an integer between 1 and {LIST_LIMIT_MAX}");
        return Err(ApiError::invalid("limit", reason));
    }
    // All digits: the only failure is overflow, which the engine refuses as out of range.
    Ok(value.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_borrowed_params() {
        assert_eq!(
            route("GET", "/v1/partitions/p/holds/h"),
            Routing::Found { route: Route::GetHold, params: ["p", "h"] }
        );
        assert_eq!(
            route("POST", "/v1/partitions/p/holds/h/extend"),
            Routing::Found { route: Route::ExtendHold, params: ["p", "h"] }
        );
        assert_eq!(
            route("GET", "/v1/partitions/p/resources"),
            Routing::Found { route: Route::ListResources, params: ["p", ""] }
        );
        assert_eq!(
            route("DELETE", "/v1/partitions/p"),
            Routing::Found { route: Route::DeletePartition, params: ["p", ""] }
        );
        assert_eq!(
            route("GET", "/v1/partitions/p"),
            Routing::WrongMethod { allow: "DELETE".into() }
        );
        assert_eq!(route("GET", "/v1/partitions/p/holds/h/x/y"), Routing::NotFound);
        assert_eq!(route("GET", "/nope"), Routing::NotFound);
        assert_eq!(route("GET", ""), Routing::NotFound);
        assert_eq!(
            route("DELETE", "/v1/partitions/p/resources/r"),
            Routing::WrongMethod { allow: "PUT, GET".into() }
        );
    }

    #[test]
    fn every_template_routes_to_itself() {
        for spec in ROUTES {
            let path = spec.template.replace("{partition}", "p").replace("{resource}", "r");
            let path = path.replace("{hold}", "h");
            match route(spec.method, &path) {
                Routing::Found { route, .. } => assert_eq!(route, spec.route, "{path}"),
                other => panic!("{} {path}: {other:?}", spec.method),
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_segment("a%20b"), "a b");
        assert_eq!(decode_segment("A-12"), "A-12");
        assert_eq!(decode_segment("a%3Ab"), "a:b");
        assert_eq!(decode_segment("a+b"), "a+b");
        assert_eq!(decode_segment("%"), "%");
        assert_eq!(decode_segment("%g1"), "%g1");
        assert_eq!(decode_segment("%ff"), "\u{fffd}");
    }

    #[test]
    fn list_queries() {
        let query = list_query(Some("prefix=s-&after=s-10&limit=5")).unwrap();
        assert_eq!(query.prefix, "s-");
        assert_eq!(query.after.as_deref(), Some("s-10"));
        assert_eq!(query.limit, Some(5));
        assert_eq!(list_query(None).unwrap(), ListQuery::default());
        assert_eq!(list_query(Some("after=&")).unwrap(), ListQuery::default());
        assert_eq!(list_query(Some("prefix=a%3A")).unwrap().prefix, "a:");
        assert_eq!(list_query(Some("limit=99999999999999999999")).unwrap().limit, Some(u64::MAX));
        assert_eq!(list_query(Some("limit=x")).unwrap_err().code, "invalid");
        assert_eq!(
            list_query(Some("limit=x")).unwrap_err().message,
            "invalid limit: must be an integer between 1 and 1000"
        );
        assert_eq!(list_query(Some("limit=-1")).unwrap_err().code, "invalid");
        assert_eq!(list_query(Some("limit=")).unwrap_err().code, "invalid");
        assert_eq!(list_query(Some("limit=1&limit=2")).unwrap_err().code, "bad_request");
        assert_eq!(list_query(Some("limt=1")).unwrap_err().code, "bad_request");
    }
}

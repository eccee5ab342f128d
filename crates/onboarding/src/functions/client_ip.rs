//! Where a request came from, read the way Azure App Service documents it: the front end adds
//! a `Client-IP` header (`a.b.c.d:port`, or `[v6]:port`) to every request and overwrites any
//! a client sent, "so they cannot be spoofed":
//! <https://github.com/Azure/app-service-linux-docs/blob/master/Things_You_Should_Know/headers.md>
//! (the header is `client-ip`, without `x-`: <https://github.com/Azure/app-service-linux-docs/pull/140>).
//! The Functions host passes every request header to the handler unchanged
//! (azure-functions-host, `HttpRequestExtensions.cs`: `jObjectHttp["Headers"] =
//! JObject.FromObject(request.Headers)`).
//!
//! `X-Forwarded-For` is never read: its left entries are whatever the client sent, since the
//! front end appends to it. Without `Client-IP` (a call that did not come through the front
//! end) every request shares one "unknown" bucket, which is stricter, never looser. Behind
//! Azure Front Door, `Client-IP` holds Front Door's address, so every user would share a few
//! buckets: see the README's threat model.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::domain::ClientAddress;
use crate::protocol::HttpRequest;

/// The header App Service's front end writes (matched case-insensitively).
pub const CLIENT_IP_HEADER: &str = "client-ip";

/// Set once the missing header has been logged, so a run without the front end warns once.
static WARNED: AtomicBool = AtomicBool::new(false);

/// The client's address from `Client-IP`, or the shared "unknown" bucket.
pub fn client_address(request: &HttpRequest) -> ClientAddress {
    let values: Vec<&str> = request.headers.get_all(CLIENT_IP_HEADER).collect();
    let address = ClientAddress::from_header_values(&values);
    if address == ClientAddress::Unknown && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a request without a readable Client-IP header: per-address limits count every \
             such request in one shared bucket (is the app reached other than through App \
             Service's front end?)"
        );
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Headers;

    #[test]
    fn a_forged_forwarded_for_changes_nothing() {
        let request = HttpRequest {
            headers: Headers::from_pairs([
                ("X-Forwarded-For", "6.6.6.6"),
                ("CLIENT-IP", "198.51.100.4:5000"),
            ]),
            ..HttpRequest::default()
        };
        assert_eq!(
            client_address(&request),
            ClientAddress::Known("198.51.100.4".parse().unwrap())
        );
        let forwarded_only = HttpRequest {
            headers: Headers::from_pairs([("X-Forwarded-For", "6.6.6.6")]),
            ..HttpRequest::default()
        };
        assert_eq!(client_address(&forwarded_only), ClientAddress::Unknown);
    }
}

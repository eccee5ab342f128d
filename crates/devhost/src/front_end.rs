//! What Azure App Service's front end adds to every request before the Functions host sees it,
//! done the same way here so limits per client address behave locally as they do on Azure:
//! `Client-IP` (`a.b.c.d:port`, or `[v6]:port`) is set from the real peer and **overwrites**
//! any the client sent, "so they cannot be spoofed"
//! (<https://github.com/Azure/app-service-linux-docs/blob/master/Things_You_Should_Know/headers.md>);
//! `X-Client-IP` and `X-Client-Port` likewise; and the peer is **appended** to any
//! `X-Forwarded-For` the client sent, as observed on App Service (a header dump on a real app:
//! `"Client-Ip": "152.37.70.253:4598", "X-Client-Ip": "152.37.70.253", "X-Client-Port": "4598",
//! "X-Forwarded-For": "152.37.70.253:4598"`,
//! <https://github.com/kaysalawu/azure-network-terraform/blob/main/2-virtual-wan/1-vwan-single-region/README.md>).

use std::net::SocketAddr;

/// The headers the front end owns: whatever the client sent under these names is dropped.
const OVERWRITTEN: [&str; 3] = ["client-ip", "x-client-ip", "x-client-port"];

/// `headers` as the front end passes them on for a request from `peer` (none when the listener
/// could not tell, which a TCP listener always can).
pub(crate) fn add_front_end_headers(
    mut headers: Vec<(String, String)>,
    peer: Option<SocketAddr>,
) -> Vec<(String, String)> {
    let Some(peer) = peer else {
        return headers;
    };
    headers.retain(|(name, _)| !OVERWRITTEN.iter().any(|o| name.eq_ignore_ascii_case(o)));
    let ip = peer.ip().to_canonical();
    // SocketAddr's Display writes `a.b.c.d:port` and `[v6]:port`, the front end's format.
    let socket = SocketAddr::new(ip, peer.port()).to_string();
    let forwarded: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, value)| value.clone())
        .collect();
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case("x-forwarded-for"));
    let chain = forwarded
        .into_iter()
        .chain(std::iter::once(socket.clone()))
        .collect::<Vec<_>>()
        .join(", ");
    headers.push(("Client-IP".to_owned(), socket));
    headers.push(("X-Client-IP".to_owned(), ip.to_string()));
    headers.push(("X-Client-Port".to_owned(), peer.port().to_string()));
    headers.push(("X-Forwarded-For".to_owned(), chain));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn a_client_sent_client_ip_is_overwritten_with_the_peer() {
        let sent = vec![
            ("client-ip".to_owned(), "6.6.6.6:1".to_owned()),
            ("X-Forwarded-For".to_owned(), "6.6.6.6".to_owned()),
        ];
        let passed = add_front_end_headers(sent, Some("127.0.0.1:50000".parse().unwrap()));
        assert_eq!(value(&passed, "client-ip"), ["127.0.0.1:50000"]);
        assert_eq!(value(&passed, "x-client-ip"), ["127.0.0.1"]);
        assert_eq!(value(&passed, "x-client-port"), ["50000"]);
        assert_eq!(
            value(&passed, "x-forwarded-for"),
            ["6.6.6.6, 127.0.0.1:50000"],
            "appended, the client's entries kept on the left"
        );
    }

    #[test]
    fn an_ipv6_peer_is_written_in_brackets() {
        let passed = add_front_end_headers(Vec::new(), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(value(&passed, "client-ip"), ["[::1]:8080"]);
        assert_eq!(value(&passed, "x-forwarded-for"), ["[::1]:8080"]);
    }
}

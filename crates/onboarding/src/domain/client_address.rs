//! The address a request came from, as the platform's front end saw it: what per-address limits
//! count. A client must not be able to choose it, so it comes from one header the platform
//! writes (see `functions/client_ip.rs`), never from one the client can send.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A client's address, or the one shared "unknown" bucket when the platform's header is missing
/// or unreadable (every such request then shares one limit: stricter, never looser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    Known(IpAddr),
    Unknown,
}

impl ClientAddress {
    /// Reads the values of the front end's `Client-IP` header: `a.b.c.d:port`, `[v6]:port`, or
    /// a bare address. When the header came more than once (the host passes each as one array
    /// entry), the last one counts: a front end appends, it does not prepend. An IPv4 address
    /// mapped into IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
    pub fn from_header_values(values: &[&str]) -> Self {
        let Some(last) = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty())
        else {
            return Self::Unknown;
        };
        let ip = last
            .parse::<SocketAddr>()
            .map(|socket| socket.ip())
            .or_else(|_| last.parse::<IpAddr>());
        match ip {
            Ok(ip) => Self::Known(ip.to_canonical()),
            Err(_) => Self::Unknown,
        }
    }

    /// What one per-address limit counts: the IPv4 address, or an IPv6 client's /64 (one home or
    /// one host usually holds a whole /64, so counting single IPv6 addresses would let one
    /// machine walk through 2^64 of them), or `unknown`.
    pub fn limit_subject(&self) -> String {
        match self {
            Self::Known(IpAddr::V4(v4)) => v4.to_string(),
            Self::Known(IpAddr::V6(v6)) => {
                let s = v6.segments();
                let prefix = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
            Self::Unknown => "unknown".to_owned(),
        }
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(ip) => ip.fmt(f),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(values: &[&str]) -> ClientAddress {
        ClientAddress::from_header_values(values)
    }

    #[test]
    fn an_ipv4_address_with_its_port_is_read() {
        assert_eq!(
            read(&["152.37.70.253:4598"]),
            ClientAddress::Known("152.37.70.253".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv6_address_in_brackets_with_its_port_is_read() {
        assert_eq!(
            read(&["[fd40:e958:112:d4b3:7012:100:a0a:5]:43592"]),
            ClientAddress::Known("fd40:e958:112:d4b3:7012:100:a0a:5".parse().unwrap())
        );
    }

    #[test]
    fn a_bare_address_is_read() {
        assert_eq!(
            read(&["2001:db8::1"]),
            ClientAddress::Known("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_address() {
        assert_eq!(
            read(&["[::ffff:198.51.100.4]:80"]),
            ClientAddress::Known("198.51.100.4".parse().unwrap())
        );
    }

    #[test]
    fn the_last_value_counts_when_there_are_several() {
        assert_eq!(
            read(&["6.6.6.6", "198.51.100.4:1"]),
            ClientAddress::Known("198.51.100.4".parse().unwrap())
        );
        assert_eq!(
            read(&["6.6.6.6, 198.51.100.4:1"]),
            ClientAddress::Known("198.51.100.4".parse().unwrap())
        );
    }

    #[test]
    fn a_missing_or_unreadable_header_is_the_unknown_bucket() {
        assert_eq!(read(&[]), ClientAddress::Unknown);
        assert_eq!(read(&[""]), ClientAddress::Unknown);
        assert_eq!(read(&["not an address"]), ClientAddress::Unknown);
        assert_eq!(ClientAddress::Unknown.limit_subject(), "unknown");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_bit_prefix() {
        let a = read(&["[2001:db8:1:2:aaaa::1]:1"]);
        let b = read(&["[2001:db8:1:2:bbbb::9]:2"]);
        assert_eq!(a.limit_subject(), "2001:db8:1:2::/64");
        assert_eq!(a.limit_subject(), b.limit_subject());
        assert_ne!(
            a.limit_subject(),
            read(&["[2001:db8:1:3::1]:1"]).limit_subject()
        );
    }
}

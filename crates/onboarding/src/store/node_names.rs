//! The TLS names of a cluster's nodes. Azure Managed Redis with the OSS clustering policy answers
//! `CLUSTER SLOTS` with IP addresses and ports in the 85xx range, while its certificate names only
//! `<name>.<region>.redis.azure.net`; connecting to `10.0.0.5:8501` by its IP would check the
//! certificate against the IP and fail ("certificate not valid for name", redis-rs issue
//! <https://github.com/redis-rs/redis-rs/issues/1963>). So each advertised `ip:port` is given the
//! seed's host name instead (`node_address_map`: the name the connection uses, for DNS and for the
//! TLS server name alike, redis 1.8 `aio::connection::connect_simple`), and a resolver answers
//! `<seed host>:<port>` with that node's IP. Every node's certificate is then verified against
//! the host name of `REDIS_URL`, and the connection still goes to the node itself.
//!
//! Node ports "will change over time and shouldn't be hardcoded" (Azure Managed Redis
//! architecture, MicrosoftDocs/azure-docs `managed-redis-architecture.md`; clustering policies:
//! <https://learn.microsoft.com/azure/redis/choose-clustering-policy>): the table is built from
//! the server's own answer, and rebuilt when the nodes change (see `connection.rs`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use redis::cluster::NodeAddress;
use redis::io::AsyncDNSResolver;
use redis::{RedisFuture, Value};

/// Advertised node addresses that are IPs, by port, each under the seed's host name. Built only
/// when the seed is a host name: with an IP seed the certificate must name IPs anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeNames {
    seed_host: String,
    by_port: BTreeMap<u16, IpAddr>,
}

impl NodeNames {
    /// The names for `advertised` (the `host, port` pairs of `CLUSTER SLOTS`), or `None` when
    /// the seed is itself an IP. Two IPs on one port cannot share the seed's name: those are
    /// left unmapped (their connections fail verification) and named in a warning.
    pub(super) fn plan(seed_host: &str, advertised: &[(String, u16)]) -> Option<Self> {
        if seed_host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut by_port: BTreeMap<u16, IpAddr> = BTreeMap::new();
        let mut clashes = Vec::new();
        for (host, port) in advertised {
            let Ok(ip) = host.parse::<IpAddr>() else {
                continue;
            };
            match by_port.get(port) {
                Some(known) if *known != ip => clashes.push(*port),
                _ => {
                    by_port.insert(*port, ip);
                }
            }
        }
        for port in &clashes {
            by_port.remove(port);
        }
        if !clashes.is_empty() {
            tracing::warn!(
                ports = ?clashes,
                "several cluster nodes share a port under different IPs; their certificates \
                 cannot be checked against {seed_host}, connections to them will fail"
            );
        }
        Some(Self {
            seed_host: seed_host.to_owned(),
            by_port,
        })
    }

    /// True when every IP in `advertised` is already named, with the same IP: no rebuild needed.
    pub(super) fn covers(&self, advertised: &[(String, u16)]) -> bool {
        advertised
            .iter()
            .all(|(host, port)| match host.parse::<IpAddr>() {
                Ok(ip) => self.by_port.get(port) == Some(&ip),
                Err(_) => true,
            })
    }

    /// How many nodes are named.
    pub(super) fn len(&self) -> usize {
        self.by_port.len()
    }

    /// `ip:port` → `<seed host>:port`, for `ClusterClientBuilder::node_address_map`.
    pub(super) fn address_map(&self) -> HashMap<NodeAddress, NodeAddress> {
        self.by_port
            .iter()
            .map(|(&port, ip)| {
                (
                    NodeAddress::new(ip.to_string(), port),
                    NodeAddress::new(self.seed_host.clone(), port),
                )
            })
            .collect()
    }

    /// The resolver that sends `<seed host>:port` to the node's IP.
    pub(super) fn resolver(&self) -> NodeResolver {
        NodeResolver {
            names: Arc::new(self.clone()),
        }
    }

    fn ip_for(&self, host: &str, port: u16) -> Option<IpAddr> {
        if host.eq_ignore_ascii_case(&self.seed_host) {
            self.by_port.get(&port).copied()
        } else {
            None
        }
    }
}

/// Resolves `<seed host>:port` to the advertised IP of the node on that port, and every other
/// name (the seed's own port, a node advertised by name) through the system's DNS.
#[derive(Clone)]
pub(super) struct NodeResolver {
    names: Arc<NodeNames>,
}

impl AsyncDNSResolver for NodeResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let known = self.names.ip_for(host, port);
        Box::pin(async move {
            let found: Vec<SocketAddr> = match known {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                None => tokio::net::lookup_host((host, port)).await?.collect(),
            };
            Ok(Box::new(found.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// The `host, port` of every node (primaries and replicas) in a `CLUSTER SLOTS` reply
/// (<https://redis.io/docs/latest/commands/cluster-slots/>): each entry is `start, end`, then one
/// `[host, port, id, …]` per node. An empty host means the answering node's; `?` is unknown.
pub(super) fn advertised_nodes(reply: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let mut nodes: Vec<(String, u16)> = ranges
        .iter()
        .filter_map(|range| match range {
            Value::Array(fields) => Some(fields.iter().skip(2)),
            _ => None,
        })
        .flatten()
        .filter_map(|node| match node {
            Value::Array(parts) => match (parts.first(), parts.get(1)) {
                (Some(Value::BulkString(host)), Some(&Value::Int(port))) => {
                    let host = String::from_utf8_lossy(host).into_owned();
                    let port = u16::try_from(port).ok()?;
                    (!host.is_empty() && host != "?").then_some((host, port))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "cache.westeurope.redis.azure.net";

    fn nodes(list: &[(&str, u16)]) -> Vec<(String, u16)> {
        list.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect()
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn advertised_ips_get_the_seed_name_and_resolve_back() {
        let advertised = nodes(&[("10.0.0.5", 8501), ("10.0.0.6", 8502), ("named.host", 8503)]);
        let names = NodeNames::plan(SEED, &advertised).expect("a host-name seed");
        assert_eq!(names.len(), 2);
        let map = names.address_map();
        assert_eq!(
            map[&NodeAddress::new("10.0.0.5", 8501)],
            NodeAddress::new(SEED, 8501)
        );
        assert!(!map.contains_key(&NodeAddress::new("named.host", 8503)));
        assert_eq!(
            names.ip_for(&SEED.to_uppercase(), 8502),
            Some("10.0.0.6".parse().unwrap())
        );
        assert_eq!(names.ip_for(SEED, 10000), None, "the seed port uses DNS");
        assert_eq!(names.ip_for("other.host", 8501), None);
    }

    #[test]
    fn no_names_for_an_ip_seed_and_none_for_clashing_ports() {
        assert!(NodeNames::plan("10.0.0.1", &nodes(&[("10.0.0.5", 8501)])).is_none());
        assert!(NodeNames::plan("[::1]", &nodes(&[("10.0.0.5", 8501)])).is_none());
        let clash = nodes(&[("10.0.0.5", 8501), ("10.0.0.6", 8501), ("10.0.0.7", 8502)]);
        let names = NodeNames::plan(SEED, &clash).expect("names");
        assert_eq!(names.len(), 1);
        assert_eq!(names.ip_for(SEED, 8501), None);
    }

    #[test]
    fn a_new_node_or_a_moved_ip_is_not_covered() {
        let names = NodeNames::plan(SEED, &nodes(&[("10.0.0.5", 8501)])).expect("names");
        assert!(names.covers(&nodes(&[("10.0.0.5", 8501), ("named.host", 9000)])));
        assert!(!names.covers(&nodes(&[("10.0.0.5", 8501), ("10.0.0.6", 8502)])));
        assert!(!names.covers(&nodes(&[("10.0.0.9", 8501)])));
    }

    #[tokio::test]
    async fn the_resolver_answers_node_ports_and_asks_dns_for_the_rest() {
        let names = NodeNames::plan("localhost", &nodes(&[("10.0.0.5", 8501)])).expect("names");
        let resolver = names.resolver();
        let found: Vec<_> = resolver.resolve("localhost", 8501).await.unwrap().collect();
        assert_eq!(found, vec!["10.0.0.5:8501".parse().unwrap()]);
        let found: Vec<_> = resolver.resolve("localhost", 6379).await.unwrap().collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
    }

    #[test]
    fn cluster_slots_replies_list_every_node_once() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.5", 8501),
                node("10.0.0.6", 8502),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.6", 8502),
                node("?", 8503),
                node("", 8504),
            ]),
        ]);
        assert_eq!(
            advertised_nodes(&reply),
            nodes(&[("10.0.0.5", 8501), ("10.0.0.6", 8502)])
        );
        assert!(advertised_nodes(&Value::Nil).is_empty());
    }
}

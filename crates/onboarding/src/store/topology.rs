//! What the Redis server says about its own shape, read from plain text replies: which
//! primary serves which hash slots and how many live replicas each has (`CLUSTER NODES`), how
//! many replicas a single server has (`INFO replication`), and whether a cluster serves every
//! slot (`CLUSTER INFO`).
//!
//! Formats: <https://redis.io/docs/latest/commands/cluster-nodes/>,
//! <https://redis.io/docs/latest/commands/cluster-info/>,
//! <https://redis.io/docs/latest/commands/info/> (replication section).

use std::collections::HashMap;

/// The number of hash slots in a Redis cluster.
const SLOTS: u16 = 16384;

/// The hash slot of a key: CRC16 (XMODEM) of the key, or of its hash tag (the part between the
/// first `{` and the next `}`, when not empty), modulo 16384.
/// <https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags>
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One primary: the slot ranges it serves and how many live replicas follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shard {
    pub ranges: Vec<(u16, u16)>,
    pub replicas: u32,
}

/// The primaries of a cluster as one node sees them, or the single server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Topology {
    /// One server with this many connected replicas.
    Single { replicas: u32 },
    /// The primaries that serve slots.
    Cluster { shards: Vec<Shard> },
}

impl Topology {
    /// How many live replicas the primary serving `key` has.
    pub(super) fn replicas_for(&self, key: &str) -> u32 {
        match self {
            Self::Single { replicas } => *replicas,
            Self::Cluster { shards } => {
                let slot = key_slot(key.as_bytes());
                shards
                    .iter()
                    .find(|s| s.ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
                    .map_or(0, |s| s.replicas)
            }
        }
    }

    /// Primaries and live replicas in all, for `/health`.
    pub(super) fn counts(&self) -> (u32, u32) {
        match self {
            Self::Single { replicas } => (1, *replicas),
            Self::Cluster { shards } => {
                (shards.len() as u32, shards.iter().map(|s| s.replicas).sum())
            }
        }
    }
}

/// Whether a `CLUSTER NODES` flag list marks a node that cannot take part (failed, suspected,
/// without an address, still joining).
fn is_down(flags: &str) -> bool {
    flags
        .split(',')
        .any(|f| matches!(f, "fail" | "fail?" | "noaddr" | "handshake"))
}

/// Reads `CLUSTER NODES`: each line is `<id> <addr> <flags> <primary id> <ping> <pong> <epoch>
/// <link-state> <slot>…`. Primaries without slots (a failed one after its failover) are left out.
pub(super) fn parse_cluster_nodes(text: &str) -> Topology {
    let mut primaries: Vec<(&str, Vec<(u16, u16)>)> = Vec::new();
    let mut replicas: HashMap<&str, u32> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            id,
            _addr,
            flags,
            primary,
            _ping,
            _pong,
            _epoch,
            link,
            slots @ ..,
        ] = fields.as_slice()
        else {
            continue;
        };
        if is_down(flags) {
            continue;
        }
        let role = flags.split(',');
        if role.clone().any(|f| f == "master") {
            let ranges: Vec<(u16, u16)> = slots.iter().filter_map(|s| parse_range(s)).collect();
            if !ranges.is_empty() {
                primaries.push((id, ranges));
            }
        } else if role.clone().any(|f| f == "slave") && *link == "connected" {
            *replicas.entry(primary).or_default() += 1;
        }
    }
    Topology::Cluster {
        shards: primaries
            .into_iter()
            .map(|(id, ranges)| Shard {
                ranges,
                replicas: replicas.get(id).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// `5461` or `0-5460`; slots being migrated (`[5461->-id]`) are left out.
fn parse_range(text: &str) -> Option<(u16, u16)> {
    match text.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => text.parse().ok().map(|s| (s, s)),
    }
}

/// Reads `connected_slaves:<n>` out of `INFO replication`.
pub(super) fn parse_connected_replicas(info: &str) -> u32 {
    info_field(info, "connected_slaves")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One `name:value` line of an `INFO`-style reply.
pub(super) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(':')?;
        (key == name).then_some(value)
    })
}

/// What `CLUSTER INFO` says about slot coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterState {
    /// `cluster_state`: `ok` when every slot is served.
    pub state: String,
    /// `cluster_slots_ok`: slots whose primary is reachable.
    pub slots_ok: u32,
}

/// Reads `CLUSTER INFO`.
pub(super) fn parse_cluster_info(info: &str) -> ClusterState {
    ClusterState {
        state: info_field(info, "cluster_state")
            .unwrap_or("unknown")
            .to_owned(),
        slots_ok: info_field(info, "cluster_slots_ok")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_the_cluster_specification() {
        // Examples from the Redis cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn a_users_record_and_marker_share_a_slot() {
        let id = "6f1c0d2e-0000-4000-8000-000000000000";
        assert_eq!(
            key_slot(format!("p:user:{{{id}}}").as_bytes()),
            key_slot(format!("p:user:{{{id}}}:onboarding").as_bytes())
        );
    }

    const NODES: &str = "\
a 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:30002@40002 master - 0 0 2 connected 5461-10922
c 127.0.0.1:30003@40003 master,fail - 0 0 3 disconnected
d 127.0.0.1:30004@40004 slave a 0 0 1 connected
e 127.0.0.1:30005@40005 slave b 0 0 2 connected
f 127.0.0.1:30006@40006 master - 0 0 7 connected 10923-16383 [12->-b]
g 127.0.0.1:30007@40007 slave,fail f 0 0 7 disconnected
";

    #[test]
    fn cluster_nodes_gives_each_primarys_slots_and_live_replicas() {
        let topology = parse_cluster_nodes(NODES);
        assert_eq!(
            topology,
            Topology::Cluster {
                shards: vec![
                    Shard {
                        ranges: vec![(0, 5460)],
                        replicas: 1
                    },
                    Shard {
                        ranges: vec![(5461, 10922)],
                        replicas: 1
                    },
                    Shard {
                        ranges: vec![(10923, 16383)],
                        replicas: 0
                    },
                ]
            }
        );
        assert_eq!(
            topology.replicas_for("foo"),
            0,
            "slot 12182: promoted, alone"
        );
        assert_eq!(topology.counts(), (3, 2));
    }

    #[test]
    fn info_replication_gives_the_connected_replicas() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=…\r\n";
        assert_eq!(parse_connected_replicas(info), 2);
        assert_eq!(parse_connected_replicas("role:master\r\n"), 0);
    }

    #[test]
    fn cluster_info_gives_state_and_served_slots() {
        let state = parse_cluster_info("cluster_state:fail\r\ncluster_slots_ok:10923\r\n");
        assert_eq!(state.state, "fail");
        assert_eq!(state.slots_ok, 10923);
    }
}

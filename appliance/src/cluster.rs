//! The cluster map: which router owns which partitions, where routers listen on the
//! private network, which source address each gateway uses there, and the secret that
//! authenticates links. Static, from the config, validated at start. (Designed so it can
//! later come from a coordination service with epochs: everything reads it through
//! `Cluster`, built once.)
//!
//! ```toml
//! [cluster]
//! secret = "at least 16 characters, the same on every node"
//! [[cluster.router]]
//! id = 0
//! address = "10.202.1.1:7500"
//! partitions = "0-511"
//! [[cluster.router]]
//! id = 1
//! address = "10.202.1.2:7500"
//! partitions = "512-1023"
//! [[cluster.gateway]]
//! id = 1
//! source = "10.202.1.10"
//! ```

use std::net::{IpAddr, SocketAddr};

use router::PartitionMap;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret for link authentication (HMAC-SHA256). At least 16 bytes.
    pub secret: String,
    #[serde(rename = "router")]
    pub routers: Vec<RouterNode>,
    #[serde(rename = "gateway")]
    pub gateways: Vec<GatewayNode>,
    /// Frames queued per link while it is down or slow; past it requests are refused
    /// with `TryAgain`. Default: 65,536. Minimum: 16.
    pub link_queue: usize,
    /// Bytes batched into one write on a link. Default: 65,536. Range: 1 KiB to 4 MiB.
    pub link_batch_bytes: usize,
    /// TLS on links. Default: false (the private network is trusted). When true every
    /// router needs `fingerprint`: routers serve links with their certificate
    /// (`[tls]` or the self-signed one in the data directory) and dialers pin it.
    pub link_tls: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterNode {
    pub id: u16,
    /// Private address the router listens on for links.
    pub address: SocketAddr,
    /// Partition ranges it owns: "0-511,600,700-799".
    pub partitions: String,
    /// SHA-256 of its certificate (as `switchboard router` prints it); needed with
    /// `link_tls = true`.
    pub fingerprint: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayNode {
    /// 1 to 255 (0 is the all-in-one appliance). The top byte of its connection ids.
    pub id: u8,
    /// Private source address for its links.
    pub source: Option<IpAddr>,
    /// Private interface its links must use (`SO_BINDTODEVICE`, Linux only; elsewhere
    /// the interface is chosen by routing from `source`).
    pub interface: Option<String>,
}

/// The validated map.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub secret: Vec<u8>,
    pub map: PartitionMap,
    pub routers: Vec<RouterNode>,
    pub gateways: Vec<GatewayNode>,
    pub link_queue: usize,
    pub link_batch_bytes: usize,
    pub link_tls: bool,
}

fn ranges(spec: &str, partitions: u32) -> Result<Vec<u32>, String> {
    let mut out = vec![];
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("{part:?} is not a partition range"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("{part:?} is not a partition range"))?;
        if a > b || b >= partitions {
            return Err(format!(
                "{part:?}: partitions run from 0 to {}",
                partitions - 1
            ));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

impl ClusterConfig {
    /// `link_batch_bytes` with its default (0: 65,536).
    pub fn batch_bytes(&self) -> usize {
        if self.link_batch_bytes == 0 {
            65_536
        } else {
            self.link_batch_bytes
        }
    }

    /// Checks the map: every partition owned exactly once, ids unique, a secret.
    pub fn validate(&self, partitions: u32) -> Result<Cluster, String> {
        let bad = |why: String| Err(format!("cluster: {why}"));
        if self.secret.len() < 16 {
            return bad("secret: at least 16 bytes".into());
        }
        if self.routers.is_empty() {
            return bad("no [[cluster.router]]".into());
        }
        let mut owner: Vec<Option<u16>> = vec![None; partitions as usize];
        let mut ids = std::collections::BTreeSet::new();
        for r in &self.routers {
            if self.link_tls && r.fingerprint.as_deref().is_none_or(|f| f.len() != 64) {
                return bad(format!(
                    "router {}: link_tls = true needs its certificate fingerprint (64 hex digits)",
                    r.id
                ));
            }
            if !ids.insert(r.id) {
                return bad(format!("router id {} is listed twice", r.id));
            }
            for p in ranges(&r.partitions, partitions)
                .map_err(|e| format!("cluster: router {}: {e}", r.id))?
            {
                if let Some(o) = owner[p as usize] {
                    return bad(format!(
                        "partition {p} is owned by router {o} and router {}",
                        r.id
                    ));
                }
                owner[p as usize] = Some(r.id);
            }
        }
        if let Some(p) = owner.iter().position(Option::is_none) {
            return bad(format!(
                "partition {p} is owned by no router (every partition from 0 to {} must be)",
                partitions - 1
            ));
        }
        let mut gids = std::collections::BTreeSet::new();
        for g in &self.gateways {
            if g.id == 0 || !gids.insert(g.id) {
                return bad(format!("gateway id {}: 1 to 255, each once", g.id));
            }
        }
        let link_queue = if self.link_queue == 0 {
            65_536
        } else {
            self.link_queue
        };
        let link_batch_bytes = self.batch_bytes();
        if link_queue < 16 || !(1024..=4 << 20).contains(&link_batch_bytes) {
            return bad("link_queue ≥ 16 and link_batch_bytes from 1 KiB to 4 MiB".into());
        }
        Ok(Cluster {
            secret: self.secret.as_bytes().to_vec(),
            map: PartitionMap::from_owners(
                owner.into_iter().map(|o| o.expect("checked")).collect(),
            ),
            routers: self.routers.clone(),
            gateways: self.gateways.clone(),
            link_queue,
            link_batch_bytes,
            link_tls: self.link_tls,
        })
    }
}

impl Cluster {
    /// How to dial `node`: TLS pinned to its fingerprint when the cluster's links use TLS.
    pub fn link_tls_to(&self, node: &RouterNode) -> Result<link::LinkTls, String> {
        match (&node.fingerprint, self.link_tls) {
            (Some(fp), true) => link::LinkTls::pinned(fp),
            _ => Ok(link::LinkTls::Off),
        }
    }

    /// Where and as whom to dial `node` (no source address or interface: those are a
    /// gateway's, set by the caller).
    pub fn dial(
        &self,
        node: &RouterNode,
        tls: link::LinkTls,
        peer: wire::linkcodec::PeerKind,
        id: u16,
    ) -> link::Dial {
        link::Dial {
            router: node.id,
            address: node.address,
            source: None,
            interface: None,
            secret: self.secret.clone(),
            tls,
            peer,
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ClusterConfig {
        #[derive(Deserialize)]
        struct W {
            cluster: ClusterConfig,
        }
        toml::from_str::<W>(text).unwrap().cluster
    }

    const OK: &str = "[cluster]\nsecret = \"0123456789abcdef\"\n[[cluster.router]]\nid = 0\naddress = \"10.0.0.1:7500\"\npartitions = \"0-9\"\n[[cluster.router]]\nid = 1\naddress = \"10.0.0.2:7500\"\npartitions = \"10-15\"\n[[cluster.gateway]]\nid = 1\n";

    #[test]
    fn a_complete_map_validates() {
        let c = cfg(OK).validate(16).unwrap();
        assert_eq!(c.map.shard_of_partition(3), 0);
        assert_eq!(c.map.shard_of_partition(12), 1);
    }

    #[test]
    fn holes_overlaps_and_weak_secrets_are_named() {
        let e = cfg(OK).validate(20).unwrap_err();
        assert!(e.contains("partition 16 is owned by no router"), "{e}");
        let e = cfg(&OK.replace("10-15", "9-15")).validate(16).unwrap_err();
        assert!(
            e.contains("partition 9 is owned by router 0 and router 1"),
            "{e}"
        );
        let e = cfg(&OK.replace("0123456789abcdef", "short"))
            .validate(16)
            .unwrap_err();
        assert!(e.contains("secret"), "{e}");
        let e = cfg(&OK.replace("\"0-9\"", "\"0-99\""))
            .validate(16)
            .unwrap_err();
        assert!(e.contains("0 to 15"), "{e}");
    }
}

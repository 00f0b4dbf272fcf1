//! The pod's own DPDK address, read from Multus' `network-status`
//! annotation (mounted as a file by the downward API): with an IPAM on
//! the SR-IOV network attachment, every replica of one Deployment gets its
//! own VF address, which the static `[dpdk] address` cannot give.
//!
//! The annotation is a JSON array with one entry per network the pod is
//! attached to: `{"name": "NAMESPACE/NAME", "interface": "net1", "ips":
//! ["10.213.0.12"], "default": false, …}`. The entry is the one named by
//! `[dpdk] network`, or else the first that is not the cluster's default
//! network; its first IPv4 address must lie in `[dpdk] address`, which
//! then names the subnet (and its prefix length) the IPAM allocates from.

use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::Path;

/// Most bytes read from the file: an annotation holds a few networks.
const MAX_BYTES: u64 = 64 << 10;

/// Why the address could not be read. The gateway then serves on kernel
/// networking and says this as the reason.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NetStatusError {
    /// The file is missing or unreadable (the downward API volume not
    /// mounted, or Multus has not written the annotation yet).
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The reason.
        message: String,
    },
    /// Not the annotation's JSON array.
    #[error("{path}: not Multus network-status JSON: {message}")]
    Format {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// No entry for the network, or it has no IPv4 address.
    #[error("{path}: no IPv4 address for network {network}")]
    NoAddress {
        /// The file.
        path: String,
        /// The network asked for (`[dpdk] network`, or "not the default").
        network: String,
    },
    /// The address lies outside `[dpdk] address`.
    #[error("{path}: address {ip} is not in the subnet {subnet}/{prefix_len} of dpdk.address")]
    OutsideSubnet {
        /// The file.
        path: String,
        /// The address found.
        ip: Ipv4Addr,
        /// The subnet's address.
        subnet: Ipv4Addr,
        /// The subnet's prefix length.
        prefix_len: u8,
    },
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    default: bool,
}

/// The pod's address on `network` (empty: the first non-default network)
/// from the network-status file at `path`, checked to lie in
/// `subnet/prefix_len`.
pub fn own_address(
    path: &Path,
    network: &str,
    subnet: Ipv4Addr,
    prefix_len: u8,
) -> Result<Ipv4Addr, NetStatusError> {
    let shown = path.display().to_string();
    let read = |message: String| NetStatusError::Read {
        path: shown.clone(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES), &mut text)
        .map_err(|e| read(e.to_string()))?;
    address_in(&text, &shown, network, subnet, prefix_len)
}

/// [`own_address`] of the file's `text` (`path` names it in errors).
pub fn address_in(
    text: &str,
    path: &str,
    network: &str,
    subnet: Ipv4Addr,
    prefix_len: u8,
) -> Result<Ipv4Addr, NetStatusError> {
    let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| NetStatusError::Format {
        path: path.into(),
        message: e.to_string(),
    })?;
    let ip = entries
        .iter()
        .filter(|e| {
            if network.is_empty() {
                !e.default
            } else {
                e.name == network
            }
        })
        .find_map(|e| e.ips.iter().find_map(|ip| ip.parse::<Ipv4Addr>().ok()))
        .ok_or_else(|| NetStatusError::NoAddress {
            path: path.into(),
            network: if network.is_empty() {
                "(the first that is not the default)".into()
            } else {
                network.into()
            },
        })?;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    if u32::from(ip) & mask != u32::from(subnet) & mask {
        return Err(NetStatusError::OutsideSubnet {
            path: path.into(),
            ip,
            subnet,
            prefix_len,
        });
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Multus writes for a pod on the cluster network and one SR-IOV VF.
    const MULTUS: &str = r#"[{
    "name": "k8s-pod-network",
    "interface": "eth0",
    "ips": ["10.244.1.5", "fd00::5"],
    "mac": "0a:58:0a:f4:01:05",
    "default": true,
    "dns": {}
},{
    "name": "ultragate/sriov-dpdk",
    "interface": "net1",
    "ips": ["10.213.0.12"],
    "mac": "72:3c:5d:1e:7a:04",
    "dns": {},
    "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}}
}]"#;

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "ultragate-netstatus-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);

    #[test]
    fn the_vf_address_is_the_named_or_the_first_non_default_networks() {
        let p = file(MULTUS);
        let want = Ok(Ipv4Addr::new(10, 213, 0, 12));
        assert_eq!(own_address(&p, "", SUBNET, 24), want);
        assert_eq!(own_address(&p, "ultragate/sriov-dpdk", SUBNET, 24), want);
        assert!(matches!(
            own_address(&p, "ultra-cpp/sriov-dpdk", SUBNET, 24),
            Err(NetStatusError::NoAddress { .. })
        ));
        // The cluster network's address is not in the VF subnet.
        assert!(matches!(
            own_address(&p, "k8s-pod-network", SUBNET, 24),
            Err(NetStatusError::OutsideSubnet { .. })
        ));
    }

    #[test]
    fn what_is_not_an_address_says_why() {
        for (text, want) in [
            ("", "not Multus network-status JSON"),
            ("{\"name\": 1}", "not Multus network-status JSON"),
            ("[]", "no IPv4 address"),
            (
                "[{\"name\": \"n\", \"ips\": [\"fd00::12\", \"10.213.0\"]}]",
                "no IPv4 address",
            ),
            (
                "[{\"name\": \"n\", \"ips\": [\"10.214.0.12\"]}]",
                "is not in the subnet 10.213.0.0/24",
            ),
        ] {
            let err = own_address(&file(text), "", SUBNET, 24)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = own_address(Path::new("/nonexistent/network-status"), "", SUBNET, 24)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/network-status: "), "{err}");
    }
}

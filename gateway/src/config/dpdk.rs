//! `[dpdk]`: the kernel-bypass port and where its address comes from.

use super::*;

/// `[dpdk]`: the DPDK port and the userspace stack's address on it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkSection {
    /// EAL arguments, e.g. `["--vdev=net_tap0,iface=ugtap0", "--no-pci"]`.
    /// Default none (the EAL probes PCI devices bound to vfio-pci).
    pub eal_args: Vec<String>,
    /// The DPDK port id. Default 0.
    pub port: u16,
    /// The stack's IPv4 address and prefix on the port. Default
    /// `10.213.0.2/24`. With `address_file`, the subnet the pod's own
    /// address is allocated from (e.g. `10.213.0.0/24`).
    pub address: String,
    /// Multus' `network-status` annotation as a file (a downward API
    /// volume): the pod's own address on the port is read from it at
    /// start, so each replica gets its own (the SR-IOV attachment's
    /// IPAM); see [`crate::netstatus`]. Default empty: `address` is the
    /// address.
    pub address_file: String,
    /// The attachment's name in that file (`NAMESPACE/NAME`). Default
    /// empty: the first network that is not the cluster's default.
    pub network: String,
    /// Next hop for clients outside the prefix. Default none.
    pub gateway: String,
    /// TCP port clients connect to on the DPDK address. Default 8080.
    pub listen_port: u16,
    /// How long the link may stay down before the gateway serves on
    /// kernel networking (`api_gateway.listen`), in milliseconds.
    /// Default 500.
    pub link_down_grace_ms: u64,
}

impl Default for DpdkSection {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            port: 0,
            address: "10.213.0.2/24".into(),
            address_file: String::new(),
            network: String::new(),
            gateway: String::new(),
            listen_port: 8080,
            link_down_grace_ms: 500,
        }
    }
}

impl DpdkSection {
    /// The address and prefix length.
    pub fn cidr(&self) -> Result<(Ipv4Addr, u8), ConfigError> {
        let bad = || ConfigError::Invalid {
            key: "dpdk.address".into(),
            message: format!("{:?} is not IPV4/PREFIX, e.g. 10.213.0.2/24", self.address),
        };
        let (ip, len) = self.address.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(bad)?;
        Ok((ip, len))
    }

    /// The next hop, when set.
    pub fn next_hop(&self) -> Result<Option<Ipv4Addr>, ConfigError> {
        if self.gateway.is_empty() {
            return Ok(None);
        }
        self.gateway
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                key: "dpdk.gateway".into(),
                message: format!("{:?} is not an IPv4 address", self.gateway),
            })
    }
}

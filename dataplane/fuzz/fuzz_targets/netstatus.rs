//! The DPDK pod's own address from Multus' network-status JSON, on
//! arbitrary text: an address or an error, never a panic; an address is
//! always in the subnet, checked here bit by bit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use ultragate::netstatus::address_in;

fuzz_target!(|input: (u8, [u8; 4], &str, &str)| {
    let (prefix_len, subnet, network, text) = input;
    let subnet = Ipv4Addr::from(subnet);
    if let Ok(ip) = address_in(text, "f", network, subnet, prefix_len) {
        let (a, b) = (u32::from(ip), u32::from(subnet));
        for bit in 0..u32::from(prefix_len.min(32)) {
            let m = 1u32 << (31 - bit);
            assert_eq!(a & m, b & m, "{ip} outside {subnet}/{prefix_len}");
        }
    }
});

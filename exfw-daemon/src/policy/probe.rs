//! Minimal frames for `exfw simulate`: one packet of a given 5-tuple, as the wire would carry it.

use std::net::IpAddr;

use exfw_common::proto;

/// An Ethernet frame carrying one IPv4 or IPv6 packet from `src` to `dst` with a TCP (SYN when
/// `syn`, else ACK), UDP or ICMP header; `port` is the destination port or the ICMP type.
pub fn frame(src: IpAddr, dst: IpAddr, protocol: u8, port: u16, syn: bool) -> Vec<u8> {
    let mut l4 = Vec::new();
    match protocol {
        proto::TCP => {
            l4.extend_from_slice(&49152u16.to_be_bytes());
            l4.extend_from_slice(&port.to_be_bytes());
            l4.extend_from_slice(&[
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                if syn { 0x02 } else { 0x10 },
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ]);
        }
        proto::UDP => {
            l4.extend_from_slice(&49152u16.to_be_bytes());
            l4.extend_from_slice(&port.to_be_bytes());
            l4.extend_from_slice(&[0, 8, 0, 0]);
        }
        proto::ICMP | proto::ICMPV6 => l4.extend_from_slice(&[port as u8, 0, 0, 0, 0, 1, 0, 1]),
        _ => {}
    }
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[protocol, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("source and destination must be of one address family (checked by the caller)"),
    }
    f.extend_from_slice(&l4);
    f
}

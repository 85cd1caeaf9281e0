//! Frames for `exfw simulate`: one packet as the wire would carry it, built from a few fields.

use std::net::IpAddr;

use exfw_common::{icmp, proto, wire};

/// One packet to build: addresses, protocol, ports or ICMP fields, TCP flags and numbers, the
/// hop limit, and for ICMP errors the packet the error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Source address (the family follows it).
    pub src: IpAddr,
    /// Destination address (same family).
    pub dst: IpAddr,
    /// IP protocol number (ICMP means ICMPv6 for IPv6 addresses).
    pub proto: u8,
    /// Source port (TCP, UDP).
    pub sport: u16,
    /// Destination port (TCP, UDP).
    pub dport: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// ICMP echo identifier.
    pub icmp_id: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// For ICMP errors: the packet the error carries.
    pub about: Option<Box<Probe>>,
}

impl Probe {
    /// A packet from `src` to `dst`: TCP (SYN when `syn`, else ACK), UDP, or ICMP with `port`
    /// as the type; source port 49152, TTL 64.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: u8, port: u16, syn: bool) -> Probe {
        let icmp = matches!(protocol, proto::ICMP | proto::ICMPV6);
        Probe {
            src,
            dst,
            proto: protocol,
            sport: if icmp { 0 } else { 49152 },
            dport: if icmp { 0 } else { port },
            tcp_flags: if syn { wire::TCP_SYN } else { wire::TCP_ACK },
            seq: 1,
            ack: 0,
            icmp_type: if icmp { port as u8 } else { 0 },
            icmp_code: 0,
            icmp_id: 1,
            hop_limit: 64,
            about: None,
        }
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        let ethertype = if self.src.is_ipv6() {
            wire::ETH_P_IPV6
        } else {
            wire::ETH_P_IP
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&self.packet());
        f
    }

    /// The IP packet.
    fn packet(&self) -> Vec<u8> {
        let v6 = self.src.is_ipv6();
        let protocol = match self.proto {
            proto::ICMP | proto::ICMPV6 if v6 => proto::ICMPV6,
            proto::ICMP | proto::ICMPV6 => proto::ICMP,
            p => p,
        };
        let mut l4 = Vec::new();
        match protocol {
            proto::TCP => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&self.seq.to_be_bytes());
                l4.extend_from_slice(&self.ack.to_be_bytes());
                l4.extend_from_slice(&[0x50, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
            }
            proto::UDP => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&self.dport.to_be_bytes());
                l4.extend_from_slice(&[0, 8, 0, 0]);
            }
            proto::ICMP | proto::ICMPV6 => {
                l4.extend_from_slice(&[self.icmp_type, self.icmp_code, 0, 0]);
                let fam = if v6 {
                    exfw_common::family::V6
                } else {
                    exfw_common::family::V4
                };
                if icmp::is_echo_request(fam, self.icmp_type)
                    || icmp::is_echo_reply(fam, self.icmp_type)
                {
                    l4.extend_from_slice(&self.icmp_id.to_be_bytes());
                    l4.extend_from_slice(&[0, 1]);
                } else {
                    l4.extend_from_slice(&[0, 0, 0, 0]);
                }
                if let Some(about) = &self.about {
                    // The carried packet's IP header and the first 8 bytes of its payload.
                    let inner = about.packet();
                    let header = if v6 { 40 } else { 20 };
                    l4.extend_from_slice(&inner[..inner.len().min(header + 8)]);
                }
            }
            _ => {}
        }
        let mut p = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, self.hop_limit, protocol, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                p.extend_from_slice(&[protocol, self.hop_limit]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => panic!(
                "source and destination must be of one address family (checked by the caller)"
            ),
        }
        p.extend_from_slice(&l4);
        p
    }
}

/// An Ethernet frame carrying one IPv4 or IPv6 packet from `src` to `dst` with a TCP (SYN when
/// `syn`, else ACK), UDP or ICMP header; `port` is the destination port or the ICMP type.
pub fn frame(src: IpAddr, dst: IpAddr, protocol: u8, port: u16, syn: bool) -> Vec<u8> {
    Probe::new(src, dst, protocol, port, syn).frame()
}

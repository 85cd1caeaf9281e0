//! Building frames byte by byte: well-formed ones from a [`Spec`], and the header boundaries
//! that truncation tests cut at.

use std::net::IpAddr;

/// A transport header.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP with flags (0x02 SYN, 0x10 ACK), a data offset in words (5 = no options), and
    /// sequence and acknowledgement numbers.
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        data_offset: u8,
        seq: u32,
        ack: u32,
    },
    /// UDP; `length` overrides the computed length field.
    Udp {
        sport: u16,
        dport: u16,
        length: Option<u16>,
    },
    /// ICMP or ICMPv6 (chosen by the IP family); `inner` follows the 8-byte header (an error's
    /// embedded packet).
    Icmp {
        kind: u8,
        code: u8,
        id: u16,
        inner: Vec<u8>,
    },
    /// Any other protocol number, no header.
    Other { proto: u8 },
}

impl L4 {
    /// A TCP header with these flags and numbers, no options.
    pub fn tcp(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> L4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            data_offset: 5,
            seq,
            ack,
        }
    }

    /// The IP protocol number, given the family.
    pub fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Other { proto } => *proto,
        }
    }

    /// The same transport header for the reply direction (TCP: a SYN-ACK acknowledging `seq`).
    pub fn reversed(&self) -> L4 {
        match self.clone() {
            L4::Tcp {
                sport,
                dport,
                data_offset,
                seq,
                ..
            } => L4::Tcp {
                sport: dport,
                dport: sport,
                flags: 0x12,
                data_offset,
                seq: seq.wrapping_add(0x4000_0000),
                ack: seq.wrapping_add(1),
            },
            L4::Udp {
                sport,
                dport,
                length,
            } => L4::Udp {
                sport: dport,
                dport: sport,
                length,
            },
            L4::Icmp { kind, code, id, .. } => {
                let reply = match kind {
                    8 => 0,
                    128 => 129,
                    k => k,
                };
                L4::Icmp {
                    kind: reply,
                    code,
                    id,
                    inner: Vec::new(),
                }
            }
            other => other,
        }
    }
}

/// An IPv6 extension header placed before the transport header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    /// Hop-by-hop options (next header 0), `len` units of 8 bytes beyond the first 8.
    HopByHop { len: u8 },
    /// Routing header (43) of a routing type.
    Routing { len: u8, kind: u8 },
    /// Destination options (60).
    DestOpts { len: u8 },
}

/// Fragmentation of the datagram this frame belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Fragment {
    /// IP identification.
    pub id: u32,
    /// Offset in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// Everything that makes a frame.
#[derive(Clone, Debug)]
pub struct Spec {
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (the family follows it).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// IPv4 option bytes (padded with end-of-list to a multiple of 4; IHL follows).
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension headers before the fragment header and transport.
    pub exts: Vec<Ext>,
    /// Fragment header (IPv6) or fields (IPv4).
    pub fragment: Option<Fragment>,
    /// Transport header; omitted in later fragments.
    pub l4: L4,
    /// Bytes of payload after the transport header.
    pub payload: usize,
}

impl Spec {
    /// A plain frame from `src` to `dst`: no VLAN, options or extension headers, TTL 64.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Spec {
        Spec {
            vlans: vec![],
            src,
            dst,
            hop_limit: 64,
            ipv4_options: vec![],
            exts: vec![],
            fragment: None,
            l4,
            payload: 0,
        }
    }

    /// The frame a reply to this one would be.
    pub fn reply(&self) -> Spec {
        Spec {
            src: self.dst,
            dst: self.src,
            l4: self.l4.reversed(),
            fragment: None,
            ..self.clone()
        }
    }
}

/// A frame and the offsets at which each of its headers starts.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Offsets of header boundaries (VLAN tags, IP, extension headers, transport, payload).
    pub boundaries: Vec<usize>,
    /// Offset of the IP header.
    pub l3: usize,
}

impl Frame {
    /// The IP packet without its Ethernet header and VLAN tags.
    pub fn ip(&self) -> &[u8] {
        &self.bytes[self.l3..]
    }
}

fn push16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// Builds the frame `spec` describes, with consistent lengths.
pub fn build(spec: &Spec) -> Frame {
    let v6 = spec.src.is_ipv6();
    let mut b = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let mut boundaries = vec![];
    for (tpid, vid) in &spec.vlans {
        push16(&mut b, *tpid);
        boundaries.push(b.len());
        push16(&mut b, *vid);
    }
    push16(&mut b, if v6 { 0x86dd } else { 0x0800 });
    let l3 = b.len();
    boundaries.push(l3);
    let later = spec.fragment.is_some_and(|f| f.offset != 0);
    let mut l4 = transport(&spec.l4, spec.payload, later);
    let proto = spec.l4.proto(v6);
    match (spec.src, spec.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut options = spec.ipv4_options.clone();
            while !options.len().is_multiple_of(4) {
                options.push(0);
            }
            let header_len = 20 + options.len();
            let total = (header_len + l4.len()) as u16;
            b.push(0x40 | (header_len / 4) as u8);
            b.push(0);
            push16(&mut b, total);
            let (id, flags) = match spec.fragment {
                Some(f) => (
                    f.id as u16,
                    (f.offset & 0x1fff) | if f.more { 0x2000 } else { 0 },
                ),
                None => (0, 0x4000),
            };
            push16(&mut b, id);
            push16(&mut b, flags);
            b.extend_from_slice(&[spec.hop_limit, proto, 0, 0]);
            b.extend_from_slice(&src.octets());
            b.extend_from_slice(&dst.octets());
            b.extend_from_slice(&options);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut exts = Vec::new();
            let mut next_of: Vec<u8> = spec
                .exts
                .iter()
                .map(|e| match e {
                    Ext::HopByHop { .. } => 0,
                    Ext::Routing { .. } => 43,
                    Ext::DestOpts { .. } => 60,
                })
                .collect();
            if spec.fragment.is_some() {
                next_of.push(44);
            }
            next_of.push(proto);
            let mut ext_starts = Vec::new();
            for (i, e) in spec.exts.iter().enumerate() {
                let len = match e {
                    Ext::HopByHop { len } | Ext::Routing { len, .. } | Ext::DestOpts { len } => {
                        *len
                    }
                };
                ext_starts.push(exts.len());
                exts.push(next_of[i + 1]);
                exts.push(len);
                let mut body = vec![0u8; 6 + 8 * usize::from(len)];
                if let Ext::Routing { kind, .. } = e {
                    body[0] = *kind;
                }
                exts.extend(body);
            }
            if let Some(f) = spec.fragment {
                ext_starts.push(exts.len());
                exts.push(proto);
                exts.push(0);
                push16(&mut exts, (f.offset << 3) | u16::from(f.more));
                exts.extend_from_slice(&f.id.to_be_bytes());
            }
            b.extend_from_slice(&[0x60, 0, 0, 0]);
            push16(&mut b, (exts.len() + l4.len()) as u16);
            b.push(next_of[0]);
            b.push(spec.hop_limit);
            b.extend_from_slice(&src.octets());
            b.extend_from_slice(&dst.octets());
            let base = b.len();
            boundaries.extend(ext_starts.iter().map(|s| base + s));
            b.extend_from_slice(&exts);
        }
        _ => panic!("mixed address families in {spec:?}"),
    }
    boundaries.push(b.len());
    let header_len = match (&spec.l4, later) {
        (_, true) => 0,
        (L4::Tcp { .. }, _) => 20,
        (L4::Udp { .. } | L4::Icmp { .. }, _) => 8,
        (L4::Other { .. }, _) => 0,
    };
    boundaries.push(b.len() + header_len.min(l4.len()));
    b.append(&mut l4);
    Frame {
        bytes: b,
        boundaries,
        l3,
    }
}

fn transport(l4: &L4, payload: usize, later: bool) -> Vec<u8> {
    let mut b = Vec::new();
    if !later {
        match l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
                data_offset,
                seq,
                ack,
            } => {
                push16(&mut b, *sport);
                push16(&mut b, *dport);
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.push(data_offset << 4);
                b.push(*flags);
                b.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
                let options = (usize::from(*data_offset) * 4).saturating_sub(20);
                b.extend(std::iter::repeat_n(1u8, options));
            }
            L4::Udp {
                sport,
                dport,
                length,
            } => {
                push16(&mut b, *sport);
                push16(&mut b, *dport);
                push16(&mut b, length.unwrap_or((8 + payload) as u16));
                push16(&mut b, 0);
            }
            L4::Icmp {
                kind,
                code,
                id,
                inner,
            } => {
                b.extend_from_slice(&[*kind, *code, 0, 0]);
                push16(&mut b, *id);
                push16(&mut b, 1);
                b.extend_from_slice(inner);
            }
            L4::Other { .. } => {}
        }
    }
    b.extend(std::iter::repeat_n(0xabu8, payload));
    b
}

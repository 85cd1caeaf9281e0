//! Scenarios for `exfw simulate --scenario FILE`: a short sequence of frames, one a line, each
//! with its time and ingress interface, replayed through the reference classifier so an
//! operator can ask "what happens if ..." for a handshake, a spoofed packet or an ICMP error.
//!
//! ```text
//! # time(s)  interface  protocol  source              destination         [flags] [key=value ...]
//! 0.00       eth0       tcp       203.0.113.5:40000   192.0.2.21:443      syn
//! 0.01       eth1       tcp       192.0.2.21:443      203.0.113.5:40000   syn,ack
//! 0.02       eth0       tcp       203.0.113.5:40000   192.0.2.21:443      ack
//! 0.50       eth0       icmp      198.51.100.1        192.0.2.21          type=3 code=4 about=tcp,192.0.2.21:443,203.0.113.5:40000
//! ```
//!
//! TCP flags: `syn`, `ack`, `fin`, `rst`, `psh`, joined by commas (default `ack`). Sequence and
//! acknowledgement numbers follow a real handshake unless `seq=` or `ack=` say otherwise. Keys:
//! `ttl=` (hop limit, default 64), `type=`, `code=`, `id=` (ICMP), `about=PROTO,SRC,DST` (the
//! packet an ICMP error carries), `route=IFACE` (from this step on, the gateway's route back to
//! the source leaves through IFACE; by default the route is assumed to lead back through the
//! interface the frame arrived on, so the reverse-path check passes).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use exfw_common::{proto, wire};
use ipnet::IpNet;

use super::{Outcome, Reference, probe::Probe};

/// One line of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// 1-based line number in the file.
    pub line: usize,
    /// Seconds since the start.
    pub time_ns: u64,
    /// The ingress interface.
    pub iface: String,
    /// The packet (sequence numbers filled in when replayed).
    pub probe: Probe,
    /// Flags given: whether seq and ack were explicit.
    explicit_seq: bool,
    explicit_ack: bool,
    /// From this step on, the route back to the source leaves through this interface.
    pub route: Option<String>,
    /// The line as written, for the report.
    pub text: String,
}

/// A scenario line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScenarioError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn endpoint(text: &str) -> Option<(IpAddr, u16)> {
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some((sock.ip(), sock.port()));
    }
    text.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .ok()
        .map(|a| (a, 0))
}

/// Parses a scenario; every line must be readable.
pub fn parse(text: &str) -> Result<Vec<Step>, ScenarioError> {
    let mut steps = Vec::new();
    let mut last = 0u64;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let err = |message: String| ScenarioError { line, message };
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.len() < 5 {
            return Err(err(
                "want: TIME INTERFACE PROTOCOL SOURCE DESTINATION [flags] [key=value ...]".into(),
            ));
        }
        let seconds: f64 = fields[0]
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| err(format!("`{}` is not a time in seconds", fields[0])))?;
        let time_ns = (seconds * 1e9) as u64;
        if time_ns < last {
            return Err(err("time goes backwards".into()));
        }
        last = time_ns;
        let number = proto::parse(fields[2]).ok_or_else(|| {
            err(format!(
                "`{}` is not a protocol (tcp, udp, icmp or a number)",
                fields[2]
            ))
        })?;
        let (src, sport) = endpoint(fields[3])
            .ok_or_else(|| err(format!("`{}` is not an address or address:port", fields[3])))?;
        let (dst, dport) = endpoint(fields[4])
            .ok_or_else(|| err(format!("`{}` is not an address or address:port", fields[4])))?;
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(err(
                "source and destination are of different address families".into(),
            ));
        }
        let mut probe = Probe::new(src, dst, number, dport, false);
        probe.sport = sport;
        probe.dport = dport;
        let mut step = Step {
            line,
            time_ns,
            iface: fields[1].to_string(),
            probe,
            explicit_seq: false,
            explicit_ack: false,
            route: None,
            text: content.to_string(),
        };
        for token in &fields[5..] {
            match token.split_once('=') {
                None if number == proto::TCP => {
                    step.probe.tcp_flags = tcp_flags(token).map_err(err)?
                }
                None => return Err(err(format!("`{token}`: flags are for tcp only"))),
                Some((key, value)) => apply(&mut step, key, value).map_err(err)?,
            }
        }
        steps.push(step);
    }
    Ok(steps)
}

fn tcp_flags(text: &str) -> Result<u8, String> {
    text.split(',').try_fold(0u8, |acc, f| {
        Ok(acc
            | match f {
                "syn" => wire::TCP_SYN,
                "ack" => wire::TCP_ACK,
                "fin" => wire::TCP_FIN,
                "rst" => wire::TCP_RST,
                "psh" => 0x08,
                other => {
                    return Err(format!(
                        "`{other}` is not a TCP flag (syn, ack, fin, rst, psh)"
                    ));
                }
            })
    })
}

fn apply(step: &mut Step, key: &str, value: &str) -> Result<(), String> {
    let number = |v: &str| -> Result<u64, String> {
        v.parse()
            .map_err(|_| format!("{key}: `{v}` is not a number"))
    };
    let small = |v: &str, max: u64| -> Result<u64, String> {
        number(v).and_then(|n| {
            (n <= max)
                .then_some(n)
                .ok_or_else(|| format!("{key}: {n} is above {max}"))
        })
    };
    let p = &mut step.probe;
    match key {
        "seq" => {
            p.seq = small(value, u32::MAX.into())? as u32;
            step.explicit_seq = true;
        }
        "ack" => {
            p.ack = small(value, u32::MAX.into())? as u32;
            step.explicit_ack = true;
        }
        "ttl" => p.hop_limit = small(value, 255)? as u8,
        "type" => p.icmp_type = small(value, 255)? as u8,
        "code" => p.icmp_code = small(value, 255)? as u8,
        "id" => p.icmp_id = small(value, 65535)? as u16,
        "route" => step.route = Some(value.to_string()),
        "about" => {
            let parts: Vec<&str> = value.split(',').collect();
            let [name, src, dst] = parts[..] else {
                return Err(
                    "about: want PROTO,SRC,DST (for example tcp,192.0.2.21:443,203.0.113.5:40000)"
                        .into(),
                );
            };
            let inner_proto =
                proto::parse(name).ok_or(format!("about: `{name}` is not a protocol"))?;
            let (s, sp) = endpoint(src).ok_or(format!("about: `{src}` is not an address"))?;
            let (d, dp) = endpoint(dst).ok_or(format!("about: `{dst}` is not an address"))?;
            if s.is_ipv6() != p.src.is_ipv6() || d.is_ipv6() != p.src.is_ipv6() {
                return Err(
                    "about: the carried packet must be of the error's address family".into(),
                );
            }
            let mut inner = Probe::new(s, d, inner_proto, dp, true);
            inner.sport = sp;
            if matches!(inner_proto, proto::ICMP | proto::ICMPV6) {
                inner.icmp_type = if p.src.is_ipv6() { 128 } else { 8 };
                inner.icmp_id = sp;
            }
            p.about = Some(Box::new(inner));
        }
        other => {
            return Err(format!(
                "`{other}` is not a key (seq, ack, ttl, type, code, id, about, route)"
            ));
        }
    }
    Ok(())
}

/// A replayed step and what the classifier decided.
#[derive(Clone, Debug)]
pub struct Replayed {
    /// The step.
    pub step: Step,
    /// The decision.
    pub outcome: Outcome,
}

/// Replays `steps` through `reference`, filling in TCP sequence numbers the way a real
/// handshake would unless a step gives them.
pub fn replay(reference: &mut Reference, steps: &[Step]) -> Vec<Replayed> {
    // The initial sequence number of each direction of each connection.
    let mut isn: HashMap<(IpAddr, u16, IpAddr, u16), u32> = HashMap::new();
    let mut out = Vec::new();
    for step in steps {
        let mut probe = step.probe.clone();
        if probe.proto == proto::TCP {
            let forward = (probe.src, probe.sport, probe.dst, probe.dport);
            let backward = (probe.dst, probe.dport, probe.src, probe.sport);
            let next = 1_000_000 * (isn.len() as u32 + 1);
            let syn = probe.tcp_flags & wire::TCP_SYN != 0;
            if syn {
                isn.insert(forward, next);
            }
            let mine = *isn.entry(forward).or_insert(next);
            let theirs = isn.get(&backward).copied();
            if !step.explicit_seq {
                probe.seq = if syn { mine } else { mine.wrapping_add(1) };
            }
            if !step.explicit_ack {
                probe.ack = if probe.tcp_flags & wire::TCP_ACK != 0 {
                    theirs.map_or(0, |t| t.wrapping_add(1))
                } else {
                    0
                };
            }
        }
        if let Some(iface) = &step.route {
            reference.routes_mut().add(IpNet::from(probe.src), iface);
        }
        let outcome = reference.classify(&probe.frame(), &step.iface, step.time_ns);
        out.push(Replayed {
            step: Step {
                probe,
                ..step.clone()
            },
            outcome,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_line_and_reports_the_bad_one() {
        let steps = parse(
            "# a handshake\n0 eth0 tcp 203.0.113.5:40000 192.0.2.21:443 syn\n\
             0.5 eth1 tcp 192.0.2.21:443 203.0.113.5:40000 syn,ack route=eth1\n\
             1 eth0 icmp 198.51.100.1 192.0.2.21 type=3 code=4 about=tcp,192.0.2.21:443,203.0.113.5:40000\n\
             2 eth0 udp [2001:db8::1]:53 [2001:db8::2]:5353 ttl=255\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].probe.tcp_flags, wire::TCP_SYN);
        assert_eq!(steps[1].route.as_deref(), Some("eth1"));
        assert_eq!(steps[1].time_ns, 500_000_000);
        assert!(steps[2].probe.about.is_some());
        assert_eq!(steps[3].probe.hop_limit, 255);
        let e = parse("0 eth0 tcp 1.2.3.4:1 5.6.7.8:2 syn\n1 eth0 tcp 1.2.3.4:1 5.6.7.8:2 sin\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("sin"), "{e}");
        assert_eq!(
            parse("1 a tcp 1.2.3.4 5.6.7.8\n0 a tcp 1.2.3.4 5.6.7.8\n")
                .unwrap_err()
                .line,
            2
        );
        assert!(parse("0 a tcp 1.2.3.4 2001:db8::1\n").is_err());
    }
}

//! Just enough Ethernet, ARP, IPv4 and UDP to switch frames and answer DHCP: parsing that never
//! panics on short or odd input, and builders with correct checksums.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IPPROTO_UDP: u8 = 17;
const ETH_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const ARP_LEN: usize = 28;

/// An Ethernet address. Serialized as `02:00:00:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Broadcast and multicast addresses have the group bit set; they are flooded, never learned.
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts
                .next()
                .ok_or_else(|| format!("{s:?} is not a MAC address (six hex bytes with ':')"))?;
            if p.len() != 2 {
                return Err(format!(
                    "{s:?} is not a MAC address (six hex bytes with ':')"
                ));
            }
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (six hex bytes with ':')"))?;
        }
        if parts.next().is_some() {
            return Err(format!(
                "{s:?} is not a MAC address (six hex bytes with ':')"
            ));
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The Ethernet header of a frame and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ethernet<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    Some(Mac(b.get(at..at + 6)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

impl<'a> Ethernet<'a> {
    /// `None` for frames shorter than an Ethernet header. 802.1Q tags are not unwrapped: guests
    /// here do not use VLANs, and such frames are still switched by their addresses.
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        Some(Ethernet {
            dst: mac_at(frame, 0)?,
            src: mac_at(frame, 6)?,
            ethertype: u16_at(frame, 12)?,
            payload: frame.get(ETH_HEADER..)?,
        })
    }
}

pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HEADER + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub op: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl Arp {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;

    pub fn parse(p: &[u8]) -> Option<Arp> {
        // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses.
        if u16_at(p, 0)? != 1 || u16_at(p, 2)? != ETHERTYPE_IPV4 || p.get(4..6)? != [6, 4] {
            return None;
        }
        Some(Arp {
            op: u16_at(p, 6)?,
            sender_mac: mac_at(p, 8)?,
            sender_ip: ip_at(p, 14)?,
            target_mac: mac_at(p, 18)?,
            target_ip: ip_at(p, 24)?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(ARP_LEN);
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        p.extend_from_slice(&[6, 4]);
        p.extend_from_slice(&self.op.to_be_bytes());
        p.extend_from_slice(&self.sender_mac.0);
        p.extend_from_slice(&self.sender_ip.octets());
        p.extend_from_slice(&self.target_mac.0);
        p.extend_from_slice(&self.target_ip.octets());
        p
    }
}

/// The RFC 1071 Internet checksum of `data` with `initial` already summed in.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram inside an IPv4 packet (no fragments, options skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> Udp<'a> {
    /// Parses the IPv4 payload of an Ethernet frame; `None` unless it is a whole, unfragmented
    /// UDP datagram.
    pub fn parse(ip: &'a [u8]) -> Option<Udp<'a>> {
        let first = *ip.first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < IPV4_HEADER || *ip.get(9)? != IPPROTO_UDP {
            return None;
        }
        // More-fragments flag or a fragment offset: not a whole datagram.
        if u16_at(ip, 6)? & 0x3fff != 0 {
            return None;
        }
        let total = usize::from(u16_at(ip, 2)?);
        let ip = ip.get(..total)?;
        let udp = ip.get(ihl..)?;
        let len = usize::from(u16_at(udp, 4)?);
        if len < UDP_HEADER {
            return None;
        }
        Some(Udp {
            src_ip: ip_at(ip, 12)?,
            dst_ip: ip_at(ip, 16)?,
            src_port: u16_at(udp, 0)?,
            dst_port: u16_at(udp, 2)?,
            payload: udp.get(UDP_HEADER..len)?,
        })
    }
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let words = |ip: Ipv4Addr| {
        let o = ip.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    words(src) + words(dst) + u32::from(IPPROTO_UDP) + u32::from(udp_len)
}

/// An IPv4 packet holding one UDP datagram, both checksums filled in.
pub fn ipv4_udp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (UDP_HEADER + payload.len()) as u16;
    let total = IPV4_HEADER as u16 + udp_len;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    p.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]); // ttl, protocol, checksum placeholder
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(0, &p[..IPV4_HEADER]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_start = p.len();
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let mut udp_sum = checksum(pseudo_header_sum(src, dst, udp_len), &p[udp_start..]);
    // Zero means "no checksum" in UDP over IPv4; all ones is the same value in ones' complement.
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    p[udp_start + 6..udp_start + 8].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// Whether the IPv4 header and UDP checksums of a packet built by [`ipv4_udp`] (or a guest) verify.
pub fn udp_checksums_ok(ip: &[u8]) -> bool {
    let Some(udp) = Udp::parse(ip) else {
        return false;
    };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if checksum(0, &ip[..ihl]) != 0 {
        return false;
    }
    let seg = &ip[ihl..ihl + UDP_HEADER + udp.payload.len()];
    if seg[6..8] == [0, 0] {
        return true;
    }
    checksum(
        pseudo_header_sum(udp.src_ip, udp.dst_ip, seg.len() as u16),
        seg,
    ) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 2]);

    #[test]
    fn mac_text_round_trip() {
        assert_eq!(A.to_string(), "02:00:00:00:00:01");
        assert_eq!("02:00:00:00:00:01".parse::<Mac>(), Ok(A));
        for bad in [
            "",
            "02:00",
            "02:00:00:00:00:01:02",
            "0g:00:00:00:00:01",
            "2:0:0:0:0:1",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!(Mac::BROADCAST.is_group());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_group());
        assert!(!A.is_group());
        let json = serde_json::to_string(&A).expect("json");
        assert_eq!(json, "\"02:00:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&json).ok(), Some(A));
    }

    #[test]
    fn ethernet_parse_and_build() {
        let f = ethernet(B, A, ETHERTYPE_ARP, &[1, 2, 3]);
        let e = Ethernet::parse(&f).expect("parse");
        assert_eq!(
            (e.dst, e.src, e.ethertype, e.payload),
            (B, A, ETHERTYPE_ARP, &[1u8, 2, 3][..])
        );
        assert_eq!(Ethernet::parse(&f[..13]), None);
        assert_eq!(Ethernet::parse(&f[..14]).map(|e| e.payload.len()), Some(0));
    }

    #[test]
    fn arp_round_trip_and_garbage() {
        let a = Arp {
            op: Arp::REQUEST,
            sender_mac: A,
            sender_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_mac: Mac([0; 6]),
            target_ip: Ipv4Addr::new(10, 0, 0, 254),
        };
        let b = a.to_bytes();
        assert_eq!(b.len(), ARP_LEN);
        assert_eq!(Arp::parse(&b), Some(a));
        assert_eq!(Arp::parse(&b[..27]), None);
        let mut ipv6 = b.clone();
        ipv6[2..4].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(Arp::parse(&ipv6), None);
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2, so the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(0, &data), !0xddf2);
        assert_eq!(checksum(0, &[0xff]), !0xff00);
    }

    #[test]
    fn udp_build_parse_and_verify() {
        let src = Ipv4Addr::new(10, 0, 0, 254);
        let dst = Ipv4Addr::new(10, 0, 0, 1);
        let p = ipv4_udp(src, dst, 67, 68, b"hello");
        assert!(udp_checksums_ok(&p));
        let u = Udp::parse(&p).expect("udp");
        assert_eq!(
            (u.src_ip, u.dst_ip, u.src_port, u.dst_port, u.payload),
            (src, dst, 67, 68, &b"hello"[..])
        );
        // A flipped payload bit breaks the UDP checksum, a flipped TTL bit the header checksum.
        let mut bad = p.clone();
        bad[30] ^= 1;
        assert!(!udp_checksums_ok(&bad));
        let mut bad = p.clone();
        bad[8] ^= 1;
        assert!(!udp_checksums_ok(&bad));
        // Truncated, fragmented, not UDP, garbage: no datagram.
        assert_eq!(Udp::parse(&p[..25]), None);
        let mut frag = p.clone();
        frag[6] = 0x20;
        assert_eq!(Udp::parse(&frag), None);
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(Udp::parse(&tcp), None);
        assert_eq!(Udp::parse(&[0x45]), None);
        assert_eq!(Udp::parse(&[]), None);
        // Ethernet padding after the IP packet is ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(Udp::parse(&padded).map(|u| u.payload), Some(&b"hello"[..]));
    }
}

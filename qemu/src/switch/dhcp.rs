//! The switch's DHCP server (RFC 2131/2132): static leases by MAC, no I/O.
//!
//! Only the messages a client needs to get its fixed address are answered: DISCOVER gets an
//! OFFER, REQUEST (selecting, init-reboot, renewing, rebinding) gets an ACK for the node's own
//! address or a NAK for any other. Unknown MACs get nothing, so a stray client never takes an
//! address. There is no router and no DNS on the cluster network, so those options are left out.

use super::frame::{self, Ethernet, Mac, Udp};
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// BOOTP fixed part: op .. file, before the magic cookie.
const FIXED: usize = 236;
/// Some clients drop BOOTP replies shorter than the original 300-byte BOOTP message.
const MIN_BOOTP: usize = 300;
const FLAG_BROADCAST: u16 = 0x8000;

mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const HOST_NAME: u8 = 12;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// The fields of a DHCP message this server looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub op: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub chaddr: Mac,
    pub kind: MessageType,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub broadcast: Option<Ipv4Addr>,
    pub host_name: Option<String>,
}

fn ip4(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

impl Message {
    /// Parses a BOOTP/DHCP payload; `None` for anything that is not a DHCP message over
    /// Ethernet (no message type, bad cookie, truncated options).
    pub fn parse(b: &[u8]) -> Option<Message> {
        if b.len() < FIXED + MAGIC.len() || b[FIXED..FIXED + 4] != MAGIC {
            return None;
        }
        // Ethernet hardware with 6-byte addresses only.
        if b[1] != 1 || b[2] != 6 {
            return None;
        }
        let mut m = Message {
            op: b[0],
            xid: u32::from_be_bytes(b[4..8].try_into().ok()?),
            flags: u16::from_be_bytes(b[10..12].try_into().ok()?),
            ciaddr: ip4(&b[12..16])?,
            yiaddr: ip4(&b[16..20])?,
            chaddr: Mac(b[28..34].try_into().ok()?),
            kind: MessageType::Discover,
            requested_ip: None,
            server_id: None,
            lease_secs: None,
            subnet_mask: None,
            broadcast: None,
            host_name: None,
        };
        let mut kind = None;
        let mut rest = &b[FIXED + 4..];
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                opt::PAD => {
                    rest = tail;
                    continue;
                }
                opt::END => break,
                _ => {}
            }
            let (&len, tail) = tail.split_first()?;
            let value = tail.get(..usize::from(len))?;
            rest = &tail[usize::from(len)..];
            match code {
                opt::MESSAGE_TYPE => kind = MessageType::from_u8(*value.first()?),
                opt::REQUESTED_IP => m.requested_ip = ip4(value),
                opt::SERVER_ID => m.server_id = ip4(value),
                opt::LEASE_TIME => m.lease_secs = Some(u32::from_be_bytes(value.try_into().ok()?)),
                opt::SUBNET_MASK => m.subnet_mask = ip4(value),
                opt::BROADCAST => m.broadcast = ip4(value),
                opt::HOST_NAME => m.host_name = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
        }
        m.kind = kind?;
        Some(m)
    }
}

/// One static lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Offered as the host name option, so a guest may name itself after its node.
    pub host_name: String,
}

/// The server: its own address and the leases it hands out.
#[derive(Debug, Clone)]
pub struct Server {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub lease_secs: u32,
    pub leases: Vec<Lease>,
}

/// What the server answered, for counters and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: MessageType,
    pub to: Mac,
    pub ip: Ipv4Addr,
    /// The whole Ethernet frame to send back to the client's port.
    pub frame: Vec<u8>,
}

impl Server {
    fn broadcast_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) | !u32::from(self.netmask))
    }

    /// Answers one frame that a client sent, if it is a DHCP request this server should answer.
    pub fn handle(&self, frame: &[u8]) -> Option<Reply> {
        let eth = Ethernet::parse(frame)?;
        if eth.ethertype != frame::ETHERTYPE_IPV4 {
            return None;
        }
        let udp = Udp::parse(eth.payload)?;
        if udp.dst_port != SERVER_PORT {
            return None;
        }
        let m = Message::parse(udp.payload)?;
        if m.op != 1 {
            return None;
        }
        let lease = self.leases.iter().find(|l| l.mac == m.chaddr)?;
        let kind = match m.kind {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request => {
                // A client that chose another server's offer is not ours to answer.
                if m.server_id.is_some_and(|s| s != self.ip) {
                    return None;
                }
                let wanted = m
                    .requested_ip
                    .or((!m.ciaddr.is_unspecified()).then_some(m.ciaddr));
                if wanted == Some(lease.ip) {
                    MessageType::Ack
                } else {
                    MessageType::Nak
                }
            }
            _ => return None,
        };
        Some(self.reply(&m, lease, kind))
    }

    fn reply(&self, req: &Message, lease: &Lease, kind: MessageType) -> Reply {
        let nak = kind == MessageType::Nak;
        let mut b = vec![0u8; FIXED];
        b[0] = 2; // BOOTREPLY
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&req.xid.to_be_bytes());
        b[10..12].copy_from_slice(&req.flags.to_be_bytes());
        if !nak {
            b[16..20].copy_from_slice(&lease.ip.octets());
        }
        b[28..34].copy_from_slice(&req.chaddr.0);
        b.extend_from_slice(&MAGIC);
        let mut put = |code: u8, value: &[u8]| {
            b.push(code);
            b.push(value.len() as u8);
            b.extend_from_slice(value);
        };
        put(opt::MESSAGE_TYPE, &[kind as u8]);
        put(opt::SERVER_ID, &self.ip.octets());
        if !nak {
            put(opt::LEASE_TIME, &self.lease_secs.to_be_bytes());
            put(opt::SUBNET_MASK, &self.netmask.octets());
            put(opt::BROADCAST, &self.broadcast_addr().octets());
            let name = lease.host_name.as_bytes();
            put(opt::HOST_NAME, &name[..name.len().min(255)]);
        }
        b.push(opt::END);
        if b.len() < MIN_BOOTP {
            b.resize(MIN_BOOTP, 0);
        }
        // RFC 2131 4.1: a renewing client (ciaddr set) gets a unicast to ciaddr; a client that
        // asked for broadcast, and every NAK, gets a broadcast; otherwise unicast to the new
        // address at the client's hardware address (no ARP needed: we know the MAC).
        let (dst_mac, dst_ip) = if nak || req.flags & FLAG_BROADCAST != 0 {
            (Mac::BROADCAST, Ipv4Addr::BROADCAST)
        } else if !req.ciaddr.is_unspecified() {
            (req.chaddr, req.ciaddr)
        } else {
            (req.chaddr, lease.ip)
        };
        let ip = frame::ipv4_udp(self.ip, dst_ip, SERVER_PORT, CLIENT_PORT, &b);
        Reply {
            kind,
            to: req.chaddr,
            ip: lease.ip,
            frame: frame::ethernet(dst_mac, self.mac, frame::ETHERTYPE_IPV4, &ip),
        }
    }
}

/// Builds a client's request the way udhcpc does (broadcast from 0.0.0.0); for tests and for
/// the host integration test's fake nodes.
pub fn client_request(
    mac: Mac,
    xid: u32,
    kind: MessageType,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut b = vec![0u8; FIXED];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[28..34].copy_from_slice(&mac.0);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&[opt::MESSAGE_TYPE, 1, kind as u8]);
    if let Some(ip) = requested {
        b.extend_from_slice(&[opt::REQUESTED_IP, 4]);
        b.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server {
        b.extend_from_slice(&[opt::SERVER_ID, 4]);
        b.extend_from_slice(&ip.octets());
    }
    b.push(opt::END);
    let ip = frame::ipv4_udp(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        CLIENT_PORT,
        SERVER_PORT,
        &b,
    );
    frame::ethernet(Mac::BROADCAST, mac, frame::ETHERTYPE_IPV4, &ip)
}

/// The DHCP message inside a server's reply frame (tests and fake clients).
pub fn parse_reply(frame: &[u8]) -> Option<Message> {
    let eth = Ethernet::parse(frame)?;
    let udp = Udp::parse(eth.payload)?;
    if udp.src_port != SERVER_PORT || udp.dst_port != CLIENT_PORT {
        return None;
    }
    Message::parse(udp.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const STRANGER: Mac = Mac([2, 0, 0, 0, 0, 9]);
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
    const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn server() -> Server {
        Server {
            mac: Mac([2, 0, 0, 0, 0, 0xfe]),
            ip: SERVER_IP,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            lease_secs: 86400,
            leases: vec![Lease {
                mac: NODE,
                ip: NODE_IP,
                host_name: "node0".into(),
            }],
        }
    }

    /// A DISCOVER written out byte by byte, independent of the builder above.
    fn discover_by_hand() -> Vec<u8> {
        let mut bootp = vec![1u8, 1, 6, 0]; // op, htype, hlen, hops
        bootp.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
        bootp.extend_from_slice(&[0, 0, 0x80, 0]); // secs, flags: broadcast
        bootp.extend_from_slice(&[0; 16]); // ciaddr yiaddr siaddr giaddr
        bootp.extend_from_slice(&NODE.0);
        bootp.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
        bootp.extend_from_slice(&[99, 130, 83, 99]);
        bootp.extend_from_slice(&[53, 1, 1]); // DHCPDISCOVER
        bootp.extend_from_slice(&[55, 3, 1, 3, 6]); // parameter request list
        bootp.extend_from_slice(&[0, 0, 255]); // pads, end
        let ip = frame::ipv4_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &bootp);
        frame::ethernet(Mac::BROADCAST, NODE, frame::ETHERTYPE_IPV4, &ip)
    }

    #[test]
    fn discover_gets_an_offer_with_the_static_lease() {
        let reply = server().handle(&discover_by_hand()).expect("offer");
        assert_eq!(reply.kind, MessageType::Offer);
        let eth = Ethernet::parse(&reply.frame).expect("ethernet");
        // The client asked for broadcast replies.
        assert_eq!((eth.dst, eth.src), (Mac::BROADCAST, server().mac));
        assert!(frame::udp_checksums_ok(eth.payload), "checksums");
        let udp = Udp::parse(eth.payload).expect("udp");
        assert_eq!((udp.src_ip, udp.dst_ip), (SERVER_IP, Ipv4Addr::BROADCAST));
        assert_eq!((udp.src_port, udp.dst_port), (67, 68));
        assert!(udp.payload.len() >= MIN_BOOTP);
        let m = Message::parse(udp.payload).expect("dhcp");
        assert_eq!(m.op, 2);
        assert_eq!(m.xid, 0xdeadbeef);
        assert_eq!(m.kind, MessageType::Offer);
        assert_eq!(m.yiaddr, NODE_IP);
        assert_eq!(m.chaddr, NODE);
        assert_eq!(m.server_id, Some(SERVER_IP));
        assert_eq!(m.lease_secs, Some(86400));
        assert_eq!(m.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(m.broadcast, Some(Ipv4Addr::new(10, 0, 0, 255)));
        assert_eq!(m.host_name.as_deref(), Some("node0"));
        // The builder used by fake clients produces the same answer.
        let built = client_request(NODE, 0xdeadbeef, MessageType::Discover, None, None);
        assert_eq!(
            parse_reply(&server().handle(&built).expect("offer").frame).map(|m| m.yiaddr),
            Some(NODE_IP)
        );
    }

    #[test]
    fn request_table() {
        use MessageType::*;
        let other = Ipv4Addr::new(10, 0, 0, 7);
        /// Client MAC, message, requested IP, server id, expected answer.
        type Case = (
            Mac,
            MessageType,
            Option<Ipv4Addr>,
            Option<Ipv4Addr>,
            Option<MessageType>,
        );
        let cases: &[Case] = &[
            (NODE, Request, Some(NODE_IP), Some(SERVER_IP), Some(Ack)),
            (NODE, Request, Some(NODE_IP), None, Some(Ack)), // init-reboot
            (NODE, Request, Some(other), Some(SERVER_IP), Some(Nak)),
            (NODE, Request, Some(NODE_IP), Some(other), None), // chose another server
            (NODE, Request, None, None, Some(Nak)),            // nothing asked for
            (STRANGER, Discover, None, None, None),
            (STRANGER, Request, Some(NODE_IP), None, None),
            (NODE, Release, None, Some(SERVER_IP), None),
            (NODE, Decline, Some(NODE_IP), Some(SERVER_IP), None),
        ];
        for (i, (mac, kind, req, sid, want)) in cases.iter().enumerate() {
            let f = client_request(*mac, i as u32, *kind, *req, *sid);
            let got = server().handle(&f);
            assert_eq!(got.as_ref().map(|r| r.kind), *want, "case {i}");
            if let Some(r) = got {
                let m = parse_reply(&r.frame).expect("reply parses");
                assert_eq!(m.xid, i as u32);
                let eth = Ethernet::parse(&r.frame).expect("eth");
                assert!(frame::udp_checksums_ok(eth.payload));
                if r.kind == Nak {
                    assert_eq!(m.yiaddr, Ipv4Addr::UNSPECIFIED);
                    assert_eq!(eth.dst, Mac::BROADCAST);
                    assert_eq!(m.lease_secs, None);
                } else {
                    // No broadcast flag: unicast to the client's MAC and new address.
                    assert_eq!(eth.dst, NODE);
                    assert_eq!(Udp::parse(eth.payload).map(|u| u.dst_ip), Some(NODE_IP));
                }
            }
        }
    }

    #[test]
    fn renewal_is_unicast_to_ciaddr() {
        let mut f = client_request(NODE, 5, MessageType::Request, None, None);
        // Put ciaddr into the BOOTP header: eth 14 + ip 20 + udp 8 + offset 12.
        f[14 + 20 + 8 + 12..14 + 20 + 8 + 16].copy_from_slice(&NODE_IP.octets());
        // The UDP checksum no longer matches, which the server does not check (like dnsmasq).
        let r = server().handle(&f).expect("ack");
        assert_eq!(r.kind, MessageType::Ack);
        let eth = Ethernet::parse(&r.frame).expect("eth");
        assert_eq!(Udp::parse(eth.payload).map(|u| u.dst_ip), Some(NODE_IP));
    }

    #[test]
    fn garbage_is_ignored() {
        let s = server();
        assert_eq!(s.handle(&[]), None);
        assert_eq!(s.handle(&[0u8; 60]), None);
        let good = discover_by_hand();
        for cut in [20, 42, 42 + 236, 42 + 240, good.len() - 12] {
            // Truncated frames: the IP total length no longer fits, so nothing parses.
            assert_eq!(s.handle(&good[..cut]), None, "cut at {cut}");
        }
        // Options that run past the end.
        let mut bootp = vec![0u8; FIXED];
        bootp[0] = 1;
        bootp[1] = 1;
        bootp[2] = 6;
        bootp.extend_from_slice(&MAGIC);
        bootp.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
        assert_eq!(Message::parse(&bootp), None);
        // No message type: plain BOOTP, not answered.
        let mut bootp = bootp[..FIXED + 4].to_vec();
        bootp.push(255);
        assert_eq!(Message::parse(&bootp), None);
    }
}

//! The switch's forwarding engine, without I/O: a frame comes in on a port, and out come the
//! frames to send, each with its port and delay. The daemon does the sending.

use super::dhcp::{self, MessageType};
use super::fault::{Faults, Rules, Verdict};
use super::frame::{self, Arp, Ethernet, Mac, Udp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Learned addresses beyond this are forgotten all at once: a guest that sprays random source
/// MACs must not grow the switch without bound.
const MAX_LEARNED: usize = 4096;

/// One port: a node's NIC, with its static lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub port: usize,
    pub frame: Vec<u8>,
    pub delay: Duration,
}

/// Counters of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortStatus {
    pub name: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Frames received from the node.
    pub rx: u64,
    /// Frames sent to the node (switch replies included).
    pub tx: u64,
    /// Frames to this node dropped by a partition or isolation.
    pub cut: u64,
    /// Frames to this node dropped by the loss rate.
    pub lost: u64,
    /// Whether the node was sent a DHCP ACK for its address.
    pub leased: bool,
}

/// What the control socket reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchStatus {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub ports: Vec<PortStatus>,
    pub rules: Rules,
    /// Frames from a socket address that is no node's.
    pub unknown_sender: u64,
    pub learned: usize,
}

/// The addressing every cluster network uses; see the crate README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub switch_mac: Mac,
    pub switch_ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub lease_secs: u32,
}

pub struct Fabric {
    subnet: Subnet,
    ports: Vec<PortStatus>,
    table: HashMap<Mac, usize>,
    faults: Faults,
    dhcp: dhcp::Server,
    unknown_sender: u64,
}

impl Fabric {
    pub fn new(subnet: Subnet, ports: &[Port], seed: u64) -> Self {
        let dhcp = dhcp::Server {
            mac: subnet.switch_mac,
            ip: subnet.switch_ip,
            netmask: subnet.netmask,
            lease_secs: subnet.lease_secs,
            leases: ports
                .iter()
                .map(|p| dhcp::Lease {
                    mac: p.mac,
                    ip: p.ip,
                    host_name: p.name.clone(),
                })
                .collect(),
        };
        Fabric {
            subnet,
            ports: ports
                .iter()
                .map(|p| PortStatus {
                    name: p.name.clone(),
                    mac: p.mac,
                    ip: p.ip,
                    rx: 0,
                    tx: 0,
                    cut: 0,
                    lost: 0,
                    leased: false,
                })
                .collect(),
            table: HashMap::new(),
            faults: Faults::new(ports.len(), seed),
            dhcp,
            unknown_sender: 0,
        }
    }

    pub fn faults(&mut self) -> &mut Faults {
        &mut self.faults
    }

    pub fn unknown_sender(&mut self) {
        self.unknown_sender += 1;
    }

    pub fn status(&self) -> SwitchStatus {
        SwitchStatus {
            mac: self.subnet.switch_mac,
            ip: self.subnet.switch_ip,
            ports: self.ports.clone(),
            rules: self.faults.rules().clone(),
            unknown_sender: self.unknown_sender,
            learned: self.table.len(),
        }
    }

    /// Switches one frame that arrived on port `src`.
    pub fn input(&mut self, src: usize, data: &[u8]) -> Vec<Out> {
        let Some(port) = self.ports.get_mut(src) else {
            self.unknown_sender += 1;
            return vec![];
        };
        port.rx += 1;
        let Some(eth) = Ethernet::parse(data) else {
            return vec![];
        };
        if !eth.src.is_group() && eth.src != self.subnet.switch_mac {
            if self.table.len() >= MAX_LEARNED && !self.table.contains_key(&eth.src) {
                self.table.clear();
            }
            self.table.insert(eth.src, src);
        }
        // The switch's own services are infrastructure: faults apply between nodes only, so a
        // partitioned node still holds on to its address.
        if let Some(reply) = self.for_switch(&eth, data) {
            let out = reply.map(|frame| Out {
                port: src,
                frame,
                delay: Duration::ZERO,
            });
            if let Some(o) = &out {
                self.ports[o.port].tx += 1;
            }
            return out.into_iter().collect();
        }
        let targets: Vec<usize> = match self.table.get(&eth.dst) {
            Some(&p) if !eth.dst.is_group() => {
                if p == src {
                    return vec![];
                }
                vec![p]
            }
            _ => (0..self.ports.len()).filter(|&p| p != src).collect(),
        };
        let mut out = Vec::with_capacity(targets.len());
        for dst in targets {
            match self.faults.decide(src, dst) {
                Verdict::Deliver { delay } => {
                    self.ports[dst].tx += 1;
                    out.push(Out {
                        port: dst,
                        frame: data.to_vec(),
                        delay,
                    });
                }
                Verdict::Cut => self.ports[dst].cut += 1,
                Verdict::Lost => self.ports[dst].lost += 1,
            }
        }
        out
    }

    /// `Some(reply)` when the frame is for the switch itself (DHCP to the server port, ARP for
    /// the server's address, anything to its MAC); it is then not forwarded.
    fn for_switch(&mut self, eth: &Ethernet, data: &[u8]) -> Option<Option<Vec<u8>>> {
        match eth.ethertype {
            frame::ETHERTYPE_IPV4 => {
                let udp = Udp::parse(eth.payload);
                if udp.is_some_and(|u| u.dst_port == dhcp::SERVER_PORT) {
                    let reply = self.dhcp.handle(data);
                    if let Some(r) = &reply {
                        if r.kind == MessageType::Ack {
                            if let Some(p) = self.ports.iter_mut().find(|p| p.mac == r.to) {
                                p.leased = true;
                            }
                        }
                    }
                    return Some(reply.map(|r| r.frame));
                }
            }
            frame::ETHERTYPE_ARP => {
                let arp = Arp::parse(eth.payload)?;
                if arp.target_ip == self.subnet.switch_ip {
                    if arp.op != Arp::REQUEST {
                        return Some(None);
                    }
                    // Renewing DHCP clients unicast to the server, so they must resolve it.
                    let reply = Arp {
                        op: Arp::REPLY,
                        sender_mac: self.subnet.switch_mac,
                        sender_ip: self.subnet.switch_ip,
                        target_mac: arp.sender_mac,
                        target_ip: arp.sender_ip,
                    };
                    return Some(Some(frame::ethernet(
                        arp.sender_mac,
                        self.subnet.switch_mac,
                        frame::ETHERTYPE_ARP,
                        &reply.to_bytes(),
                    )));
                }
            }
            _ => {}
        }
        (eth.dst == self.subnet.switch_mac).then_some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{node_ip, node_mac, subnet};

    fn fabric(n: usize) -> Fabric {
        let ports: Vec<Port> = (0..n)
            .map(|i| Port {
                name: format!("node{i}"),
                mac: node_mac(i),
                ip: node_ip(i),
            })
            .collect();
        Fabric::new(subnet(), &ports, 7)
    }

    fn eth(dst: Mac, src: Mac) -> Vec<u8> {
        frame::ethernet(dst, src, 0x88b5, b"payload")
    }

    fn ports(out: &[Out]) -> Vec<usize> {
        out.iter().map(|o| o.port).collect()
    }

    #[test]
    fn learns_and_floods() {
        let mut f = fabric(3);
        let (a, b) = (node_mac(0), node_mac(1));
        // b is unknown: flooded to everyone but the sender.
        assert_eq!(ports(&f.input(0, &eth(b, a))), vec![1, 2]);
        // a was learned from that frame: the answer goes to port 0 only.
        assert_eq!(ports(&f.input(1, &eth(a, b))), vec![0]);
        assert_eq!(ports(&f.input(0, &eth(b, a))), vec![1]);
        // Broadcast and multicast are always flooded.
        assert_eq!(
            ports(&f.input(2, &eth(Mac::BROADCAST, node_mac(2)))),
            vec![0, 1]
        );
        let mcast = Mac([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert_eq!(ports(&f.input(0, &eth(mcast, a))), vec![1, 2]);
        // A frame to a MAC learned on its own port goes nowhere.
        assert_eq!(ports(&f.input(0, &eth(a, a))), Vec::<usize>::new());
        // A MAC that moves is relearned.
        f.input(2, &eth(Mac::BROADCAST, a));
        assert_eq!(ports(&f.input(1, &eth(a, b))), vec![2]);
        // Runts count as received and go nowhere.
        assert!(f.input(0, &[1, 2, 3]).is_empty());
        let s = f.status();
        assert_eq!(s.learned, 3);
        assert_eq!(s.ports[0].rx, 5);
        assert!(f.input(9, &eth(a, b)).is_empty());
        assert_eq!(f.status().unknown_sender, 1);
    }

    #[test]
    fn faults_apply_between_nodes_only() {
        let mut f = fabric(3);
        f.faults()
            .partition(&[vec![0], vec![1, 2]])
            .expect("partition");
        let (a, b) = (node_mac(0), node_mac(1));
        assert!(f.input(0, &eth(b, a)).is_empty());
        assert_eq!(ports(&f.input(1, &eth(Mac::BROADCAST, b))), vec![2]);
        assert_eq!(f.status().ports[1].cut, 1);
        assert_eq!(f.status().ports[0].cut, 1);
        // DHCP still works for the node on its own.
        let d = dhcp::client_request(a, 1, MessageType::Discover, None, None);
        let out = f.input(0, &d);
        assert_eq!(ports(&out), vec![0]);
        let offer = dhcp::parse_reply(&out[0].frame).expect("offer");
        assert_eq!((offer.kind, offer.yiaddr), (MessageType::Offer, node_ip(0)));
        let r = dhcp::client_request(
            a,
            2,
            MessageType::Request,
            Some(node_ip(0)),
            Some(subnet().switch_ip),
        );
        assert_eq!(
            dhcp::parse_reply(&f.input(0, &r)[0].frame).map(|m| m.kind),
            Some(MessageType::Ack)
        );
        assert!(f.status().ports[0].leased);
        assert!(!f.status().ports[1].leased);
        f.faults().heal();
        assert_eq!(ports(&f.input(0, &eth(b, a))), vec![1]);
        f.faults().set_delay(Some(1), 25).expect("delay");
        assert_eq!(f.input(0, &eth(b, a))[0].delay, Duration::from_millis(25));
    }

    #[test]
    fn answers_arp_for_the_server_and_forwards_other_arp() {
        let mut f = fabric(2);
        let req = |target: Ipv4Addr| {
            let arp = Arp {
                op: Arp::REQUEST,
                sender_mac: node_mac(0),
                sender_ip: node_ip(0),
                target_mac: Mac([0; 6]),
                target_ip: target,
            };
            frame::ethernet(
                Mac::BROADCAST,
                node_mac(0),
                frame::ETHERTYPE_ARP,
                &arp.to_bytes(),
            )
        };
        let out = f.input(0, &req(subnet().switch_ip));
        assert_eq!(ports(&out), vec![0]);
        let e = Ethernet::parse(&out[0].frame).expect("eth");
        let a = Arp::parse(e.payload).expect("arp");
        assert_eq!(
            (a.op, a.sender_mac, a.sender_ip),
            (Arp::REPLY, subnet().switch_mac, subnet().switch_ip)
        );
        assert_eq!((e.dst, a.target_ip), (node_mac(0), node_ip(0)));
        // ARP for a node is the nodes' business.
        assert_eq!(ports(&f.input(0, &req(node_ip(1)))), vec![1]);
        // Other frames to the switch's MAC stop there.
        assert!(f
            .input(0, &eth(subnet().switch_mac, node_mac(0)))
            .is_empty());
    }
}

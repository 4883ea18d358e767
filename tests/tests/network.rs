//! The cluster switch on the host, with plain unix datagram sockets standing in for the nodes'
//! QEMU netdevs: learning, flooding, DHCP, partitions, loss, delay, heal. No VMs.

use anyhow::{bail, Context, Result};
use crust_qemu::switch::dhcp::{self, MessageType};
use crust_qemu::switch::frame::{self, Ethernet, Mac};
use crust_qemu::switch::{node_ip, node_mac, subnet, Host, Switch, SwitchConfig};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fake node: the socket QEMU would bind as `local.path`.
struct FakeNode {
    sock: UnixDatagram,
    mac: Mac,
    switch: PathBuf,
}

impl FakeNode {
    fn send(&self, frame: &[u8]) -> Result<()> {
        self.sock
            .send_to(frame, &self.switch)
            .context("sending to the switch")?;
        Ok(())
    }

    /// An Ethernet frame from this node carrying `tag` as its payload.
    fn send_to(&self, dst: Mac, tag: &str) -> Result<()> {
        self.send(&frame::ethernet(dst, self.mac, 0x88b5, tag.as_bytes()))
    }

    fn recv(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        self.sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let n = self.sock.recv(&mut buf).context("no frame within 5 s")?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The payload of the next test frame (DHCP replies and the like are returned whole).
    fn recv_tag(&self) -> Result<String> {
        let f = self.recv()?;
        let e = Ethernet::parse(&f).context("runt frame")?;
        Ok(String::from_utf8_lossy(e.payload).into_owned())
    }
}

struct Net {
    _dir: tempfile::TempDir,
    switch: Switch,
    nodes: Vec<FakeNode>,
}

fn net(n: usize) -> Result<Net> {
    let dir = tempfile::Builder::new().prefix("crust-net-").tempdir()?;
    let cluster = dir.path().join("c");
    let names: Vec<(String, PathBuf)> = (0..n)
        .map(|i| (format!("node{i}"), cluster.join(format!("node{i}"))))
        .collect();
    let config = SwitchConfig::for_nodes("test", &names);
    let switch = Switch::start(&cluster, &config, &Host::Thread)?;
    let data = switch.paths().data_sock();
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            std::fs::create_dir_all(d)?;
            Ok(FakeNode {
                sock: UnixDatagram::bind(d.join("net.sock"))?,
                mac: node_mac(i),
                switch: data.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Net {
        _dir: dir,
        switch,
        nodes,
    })
}

/// Sends a broadcast marker from `from` and checks that `at` sees it as its very next frame:
/// since the switch handles frames in order, nothing sent earlier reached `at`.
fn next_is_marker(net: &Net, from: usize, at: usize, marker: &str) -> Result<()> {
    net.nodes[from].send_to(Mac::BROADCAST, marker)?;
    let got = net.nodes[at].recv_tag()?;
    if got != marker {
        bail!("node{at} got {got:?} before the marker {marker:?}");
    }
    Ok(())
}

#[test]
fn learns_floods_and_forwards() -> Result<()> {
    let net = net(3)?;
    let [a, b, c] = [&net.nodes[0], &net.nodes[1], &net.nodes[2]];
    // b's MAC is not known yet: flooded to b and c.
    a.send_to(b.mac, "hello b")?;
    assert_eq!(b.recv_tag()?, "hello b");
    assert_eq!(c.recv_tag()?, "hello b");
    // a was learned from that frame, so b's answer goes to a only.
    b.send_to(a.mac, "hello a")?;
    assert_eq!(a.recv_tag()?, "hello a");
    next_is_marker(&net, 1, 2, "marker 1")?;
    // Now b is known too.
    a.send_to(b.mac, "again")?;
    assert_eq!(b.recv_tag()?, "again");
    next_is_marker(&net, 0, 2, "marker 2")?;
    assert_eq!(b.recv_tag()?, "marker 2");
    assert_eq!(a.recv_tag()?, "marker 1");

    // A sender that is no node is counted and ignored.
    let stranger = UnixDatagram::unbound()?;
    stranger.send_to(
        &frame::ethernet(Mac::BROADCAST, Mac([2, 9, 9, 9, 9, 9]), 0x88b5, b"x"),
        net.switch.paths().data_sock(),
    )?;
    next_is_marker(&net, 0, 1, "marker 3")?;
    let s = net.switch.status()?;
    assert_eq!(s.unknown_sender, 1);
    assert_eq!(s.learned, 2, "node2 never sent a frame");
    Ok(())
}

#[test]
fn dhcp_hands_out_the_static_leases() -> Result<()> {
    let net = net(2)?;
    for (i, node) in net.nodes.iter().enumerate() {
        node.send(&dhcp::client_request(
            node.mac,
            7 + i as u32,
            MessageType::Discover,
            None,
            None,
        ))?;
        let offer = node.recv()?;
        let e = Ethernet::parse(&offer).context("offer frame")?;
        assert!(frame::udp_checksums_ok(e.payload));
        let m = dhcp::parse_reply(&offer).context("offer")?;
        assert_eq!(
            (m.kind, m.xid, m.yiaddr),
            (MessageType::Offer, 7 + i as u32, node_ip(i))
        );
        assert_eq!(m.server_id, Some(subnet().switch_ip));
        assert_eq!(m.host_name, Some(format!("node{i}")));
        node.send(&dhcp::client_request(
            node.mac,
            8,
            MessageType::Request,
            Some(m.yiaddr),
            m.server_id,
        ))?;
        let ack = dhcp::parse_reply(&node.recv()?).context("ack")?;
        assert_eq!((ack.kind, ack.yiaddr), (MessageType::Ack, node_ip(i)));
        assert_eq!(ack.subnet_mask, Some("255.255.255.0".parse()?));
        assert_eq!(ack.lease_secs, Some(86400));
    }
    // Asking for someone else's address gets a NAK.
    let n0 = &net.nodes[0];
    n0.send(&dhcp::client_request(
        n0.mac,
        9,
        MessageType::Request,
        Some(node_ip(1)),
        None,
    ))?;
    assert_eq!(
        dhcp::parse_reply(&n0.recv()?).map(|m| m.kind),
        Some(MessageType::Nak)
    );
    // DHCP never leaks to the other nodes.
    next_is_marker(&net, 0, 1, "after dhcp")?;
    assert!(net.switch.status()?.ports.iter().all(|p| p.leased));
    Ok(())
}

#[test]
fn partition_isolation_loss_and_heal() -> Result<()> {
    let net = net(3)?;
    let n = &net.nodes;
    let sw = &net.switch;
    use crust_qemu::switch::control::Request;
    sw.request(&Request::Partition {
        sets: vec![vec![0], vec![1, 2]],
    })?;
    // node0 is alone: its broadcast reaches nobody, and nothing reaches it.
    n[0].send_to(Mac::BROADCAST, "from the island")?;
    next_is_marker(&net, 1, 2, "within")?;
    n[2].send_to(Mac::BROADCAST, "to the island?")?;
    assert_eq!(n[1].recv_tag()?, "to the island?");
    // DHCP still answers the cut-off node.
    n[0].send(&dhcp::client_request(
        n[0].mac,
        1,
        MessageType::Discover,
        None,
        None,
    ))?;
    assert_eq!(
        dhcp::parse_reply(&n[0].recv()?).map(|m| m.kind),
        Some(MessageType::Offer)
    );
    let s = sw.status()?;
    assert_eq!(s.ports[0].cut, 2, "{s:?}");
    assert_eq!(s.rules.partition, Some(vec![vec![0], vec![1, 2]]));

    // Heal: the next frame node0 sees is one sent after the heal.
    sw.request(&Request::Heal)?;
    next_is_marker(&net, 1, 0, "healed")?;
    assert_eq!(n[2].recv_tag()?, "healed");

    // Isolation cuts one node both ways.
    sw.request(&Request::Isolate { node: 2 })?;
    n[2].send_to(Mac::BROADCAST, "isolated")?;
    next_is_marker(&net, 0, 1, "not isolated")?;
    sw.request(&Request::Heal)?;
    next_is_marker(&net, 0, 2, "back")?;
    assert_eq!(n[1].recv_tag()?, "back");

    // 100% loss drops everything between nodes; the counters say which kind of drop.
    let s = sw.request(&Request::Loss { percent: 100 })?;
    let (tx1, tx2) = (s.ports[1].tx, s.ports[2].tx);
    n[0].send_to(Mac::BROADCAST, "lost")?;
    // Frames and control requests travel on different sockets: wait until the frame was seen.
    let t = Instant::now();
    while sw.status()?.ports[0].rx < 1 + s.ports[0].rx {
        if t.elapsed() > Duration::from_secs(5) {
            bail!("the switch never saw the frame sent under 100% loss");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = sw.status()?;
    assert_eq!((s.ports[1].lost, s.ports[2].lost), (1, 1));
    assert_eq!(
        (s.ports[1].tx, s.ports[2].tx),
        (tx1, tx2),
        "nothing delivered"
    );
    sw.request(&Request::Heal)?;
    next_is_marker(&net, 0, 1, "found")?;

    // Bad requests are refused with the reason and change nothing.
    let e = sw.request(&Request::Isolate { node: 3 }).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    assert_eq!(sw.status()?.rules, Default::default());
    Ok(())
}

#[test]
fn delay_holds_frames_back() -> Result<()> {
    let net = net(2)?;
    let n = &net.nodes;
    use crust_qemu::switch::control::Request;
    net.switch.request(&Request::Delay {
        node: Some(1),
        ms: 300,
    })?;
    let t = Instant::now();
    n[0].send_to(Mac::BROADCAST, "slow")?;
    assert_eq!(n[1].recv_tag()?, "slow");
    // A lower bound only: the switch must not deliver early; how late is not asserted.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // Delayed frames keep their order.
    for i in 0..5 {
        n[1].send_to(Mac::BROADCAST, &format!("seq {i}"))?;
    }
    for i in 0..5 {
        assert_eq!(n[0].recv_tag()?, format!("seq {i}"));
    }
    net.switch.request(&Request::Heal)?;
    Ok(())
}

#[test]
fn stop_removes_the_sockets_and_is_idempotent() -> Result<()> {
    let net = net(1)?;
    let paths = net.switch.paths().clone();
    assert!(paths.control_sock().exists());
    net.switch.stop()?;
    assert!(!paths.control_sock().exists());
    assert!(!paths.data_sock().exists());
    assert!(net.switch.status().is_err());
    net.switch.stop()?;
    Ok(())
}

#[test]
fn switch_goes_away_when_its_cluster_directory_does() -> Result<()> {
    let net = net(1)?;
    let dir: &Path = &net.switch.paths().dir;
    std::fs::remove_dir_all(dir)?;
    // It checks once a second; give it a few.
    let t = Instant::now();
    while net.switch.status().is_ok() || dir.join("control.sock").exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("the switch still answers after its directory was removed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

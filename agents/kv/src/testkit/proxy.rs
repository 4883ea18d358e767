//! The peer network of a test cluster: one TCP proxy in front of each member's peer port, and
//! the table of which members may talk to which.
//!
//! A member's advertised peer URL is its proxy, so every peer connection to member B arrives
//! at B's proxy. To cut traffic in both directions the proxy must also know who is calling:
//! every member dials from 127.0.0.1 with an ephemeral port, so the proxy looks the caller's
//! socket up in `/proc/net/tcp` and finds which member process holds it (`/proc/PID/fd`).
//! Connections from a process that is not a member (the test itself) are always let through.
//!
//! The advertised client URLs go through proxies too (the test's own clients use the real
//! client ports): a member that forwards requests to another member's client URL is cut off
//! by a partition as well.

use std::collections::HashSet;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Who may reach whom, the members' process ids, and the connections open through the proxies.
#[derive(Default)]
pub struct Net {
    state: Mutex<NetState>,
}

#[derive(Default)]
struct NetState {
    /// Unordered pairs of members that cannot talk (smaller index first).
    blocked: HashSet<(usize, usize)>,
    /// The process of each member, when running.
    pids: Vec<Option<u32>>,
    /// Open proxied connections.
    conns: Vec<Link>,
    next_id: u64,
    /// Connections whose caller was no member process (see [`Net::unidentified`]).
    unidentified: u64,
}

struct Link {
    id: u64,
    caller: Option<usize>,
    callee: usize,
    /// The caller's socket and the one to the member.
    sockets: [TcpStream; 2],
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Net {
    pub fn new(members: usize) -> Net {
        Net {
            state: Mutex::new(NetState {
                pids: vec![None; members],
                ..NetState::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        // A panicking proxy thread leaves the table consistent (every change is one statement).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_pid(&self, member: usize, pid: Option<u32>) {
        if let Some(p) = self.lock().pids.get_mut(member) {
            *p = pid;
        }
    }

    /// Splits the members into groups that cannot reach each other (members left out of every
    /// group keep their links) and closes the connections that cross groups.
    pub fn partition(&self, groups: &[&[usize]]) {
        let mut st = self.lock();
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for &a in *g {
                    for &b in *h {
                        st.blocked.insert(pair(a, b));
                    }
                }
            }
        }
        let blocked = st.blocked.clone();
        st.conns.retain(|l| {
            let cut = l
                .caller
                .is_some_and(|c| blocked.contains(&pair(c, l.callee)));
            if cut {
                for s in &l.sockets {
                    s.shutdown(Shutdown::Both).ok();
                }
            }
            !cut
        });
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    pub fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.lock().blocked.contains(&pair(a, b))
    }

    /// Whether `member` can reach nobody.
    pub fn is_isolated(&self, member: usize) -> bool {
        let st = self.lock();
        let n = st.pids.len();
        n > 1 && (0..n).all(|o| o == member || st.blocked.contains(&pair(member, o)))
    }

    /// How many proxied connections came from a process that is not a member. The members
    /// are the only peers, so anything but 0 means a cut may have leaked.
    pub fn unidentified(&self) -> u64 {
        self.lock().unidentified
    }

    /// Closes every proxied connection (the cluster is going away).
    pub fn close_all(&self) {
        for l in self.lock().conns.drain(..) {
            for s in &l.sockets {
                s.shutdown(Shutdown::Both).ok();
            }
        }
    }

    /// Which member's process holds the socket from local port `port` to local port `to`.
    fn caller(&self, port: u16, to: u16) -> Caller {
        let Some(inode) = socket_inode(port, to) else {
            return Caller::Gone;
        };
        let target = format!("socket:[{inode}]");
        let pids = self.lock().pids.clone();
        let member = pids.iter().enumerate().find_map(|(i, pid)| {
            let dir = std::fs::read_dir(format!("/proc/{}/fd", (*pid)?)).ok()?;
            dir.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .map(|l| l.as_os_str() == target.as_str())
                        .unwrap_or(false)
                })
                .then_some(i)
        });
        match member {
            Some(m) => Caller::Member(m),
            // Closed while we looked (a caller that timed out): not a stranger.
            None if socket_inode(port, to) != Some(inode) => Caller::Gone,
            None => Caller::Stranger,
        }
    }
}

/// Who holds the calling end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Member(usize),
    /// A live socket that no member process holds.
    Stranger,
    /// The caller already closed its end (it gave up waiting): nothing to forward.
    Gone,
}

/// The inode of the TCP socket from local port `port` to remote port `to` (IPv4 or
/// IPv4-mapped IPv6). Both ports count: Linux gives the same ephemeral port to connections
/// towards different destinations. `None` when there is no such socket or it is orphaned
/// (closed by its process, inode 0).
fn socket_inode(port: u16, to: u16) -> Option<u64> {
    let want = format!(":{port:04X}");
    let want_to = format!(":{to:04X}");
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // Cheap test first: the table can hold thousands of closed connections.
            if !line.contains(&want) {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1].ends_with(&want) && f[2].ends_with(&want_to) {
                if let Ok(inode) = f[9].parse::<u64>() {
                    if inode != 0 {
                        return Some(inode);
                    }
                }
            }
        }
    }
    None
}

/// A proxy in front of one member's peer port; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listener` and forwards what `net` allows to `target` (member `member`).
    /// `peer`: the member's peer port, where only members call (callers that are not members
    /// are counted, see [`Net::unidentified`]); otherwise its client port, where test clients
    /// call too.
    pub fn start(
        listener: TcpListener,
        member: usize,
        target: SocketAddr,
        net: Arc<Net>,
        peer: bool,
    ) -> std::io::Result<Proxy> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{member}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    // Looking the caller up takes a moment: never hold up the next caller.
                    let net = net.clone();
                    std::thread::spawn(move || accept(conn, member, target, &net, peer));
                }
            })?;
        Ok(Proxy {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept(conn: TcpStream, member: usize, target: SocketAddr, net: &Arc<Net>, peer: bool) {
    let caller = match (conn.peer_addr(), conn.local_addr()) {
        (Ok(from), Ok(to)) => net.caller(from.port(), to.port()),
        _ => Caller::Gone,
    };
    let caller = match caller {
        Caller::Gone => return,
        Caller::Stranger => {
            if peer {
                eprintln!(
                    "testkit: a peer connection to member {member} from {:?} is from no member process",
                    conn.peer_addr()
                );
                net.lock().unidentified += 1;
            }
            None
        }
        Caller::Member(m) => Some(m),
    };
    if caller.is_some_and(|c| net.is_blocked(c, member)) {
        // Dropped at once: the caller sees the connection close, as after a cut cable.
        return;
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = conn.set_nodelay(true);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        conn.try_clone(),
        upstream.try_clone(),
        conn.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let id = {
        let mut st = net.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.conns.push(Link {
            id,
            caller,
            callee: member,
            sockets: [c3, u3],
        });
        id
    };
    let net = net.clone();
    std::thread::spawn(move || {
        pump(conn, upstream);
        net.lock().conns.retain(|l| l.id != id);
    });
    std::thread::spawn(move || pump(u2, c2));
}

/// Copies `from` to `to` until either side closes or fails, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    from.shutdown(Shutdown::Both).ok();
    to.shutdown(Shutdown::Both).ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn partitions_block_pairs_across_groups_only() {
        let net = Net::new(5);
        net.partition(&[&[0, 1], &[2, 3]]);
        assert!(net.is_blocked(0, 2) && net.is_blocked(3, 1));
        assert!(!net.is_blocked(0, 1) && !net.is_blocked(2, 3));
        // Member 4 is in no group and keeps every link.
        assert!(!net.is_blocked(4, 0) && !net.is_blocked(2, 4));
        assert!(!net.is_isolated(0));
        net.partition(&[&[4], &[0, 1, 2, 3]]);
        assert!(net.is_isolated(4));
        net.heal();
        assert!(!net.is_blocked(0, 2) && !net.is_isolated(4));
    }

    /// An echo server standing in for member 1's peer port.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let mut w = c;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4];
        s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
    }

    #[test]
    fn a_cut_refuses_new_connections_and_closes_open_ones_and_heal_restores() {
        // This test process plays member 0: the proxy traces its sockets to it.
        let net = Arc::new(Net::new(2));
        net.set_pid(0, Some(std::process::id()));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy::start(l, 1, echo(), net.clone(), true).unwrap();
        let mut open = TcpStream::connect(proxy.addr()).unwrap();
        assert!(roundtrip(&mut open));

        net.partition(&[&[0], &[1]]);
        // The established connection is closed...
        assert!(!roundtrip(&mut open));
        // ... and a new one is closed at once.
        let mut fresh = TcpStream::connect(proxy.addr()).unwrap();
        assert!(!roundtrip(&mut fresh));

        net.heal();
        let mut again = TcpStream::connect(proxy.addr()).unwrap();
        assert!(roundtrip(&mut again));
        assert_eq!(net.unidentified(), 0);
    }

    #[test]
    fn callers_that_are_no_member_pass_and_are_counted() {
        let net = Arc::new(Net::new(2));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy::start(l, 1, echo(), net.clone(), true).unwrap();
        net.partition(&[&[0], &[1]]);
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        assert!(roundtrip(&mut s));
        assert_eq!(net.unidentified(), 1);
    }
}

//! The switch's I/O: the nodes' datagram socket, the control socket, delayed frames. All
//! decisions are the [`Fabric`]'s.

use super::control;
use super::fabric::Fabric;
use super::{io, subnet, SwitchConfig, SwitchError, SwitchPaths};
use nix::sys::socket::{sendto, MsgFlags, UnixAddr};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often an idle switch looks at its stop flag and whether its cluster still exists.
const TICK: Duration = Duration::from_millis(100);
/// Delayed frames held at most; more are dropped, as a real link's queue would.
const MAX_QUEUED: usize = 16384;
/// Larger than any frame QEMU sends (64 KiB with offloads).
const MAX_FRAME: usize = 65536 + 64;

/// A switch with its sockets bound, ready to serve.
pub struct Bound {
    paths: SwitchPaths,
    config: SwitchConfig,
    data: UnixDatagram,
    control: UnixListener,
}

/// Reads `switch.json` and binds both sockets (replacing stale socket files).
pub fn bind(paths: &SwitchPaths) -> Result<Bound, SwitchError> {
    let config = SwitchConfig::read(&paths.config())?;
    paths.check_socket_len(&config)?;
    for s in [paths.data_sock(), paths.control_sock()] {
        let _ = std::fs::remove_file(&s);
    }
    let data = UnixDatagram::bind(paths.data_sock())
        .map_err(io(format!("binding {}", paths.data_sock().display())))?;
    let control = UnixListener::bind(paths.control_sock())
        .map_err(io(format!("binding {}", paths.control_sock().display())))?;
    control
        .set_nonblocking(true)
        .map_err(io("making the control socket non-blocking"))?;
    Ok(Bound {
        paths: paths.clone(),
        config,
        data,
        control,
    })
}

/// `crust cluster switch-daemon --dir DIR [--daemonize]`.
pub fn main(dir: &Path, daemonize: bool) -> Result<(), SwitchError> {
    let paths = SwitchPaths {
        dir: dir.to_path_buf(),
    };
    let bound = bind(&paths)?;
    let pidfile = paths.pidfile();
    let write_pid = |pid: i32| {
        std::fs::write(&pidfile, format!("{pid}\n"))
            .map_err(io(format!("writing {}", pidfile.display())))
    };
    if daemonize {
        // SAFETY: the CLI calls this before it starts any thread, so the child of this fork
        // is a complete copy of a single-threaded process.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { child }) => return write_pid(child.as_raw()),
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::unistd::setsid();
            }
            Err(e) => return Err(io("forking the switch daemon")(e.into())),
        }
    } else {
        write_pid(std::process::id() as i32)?;
    }
    serve(bound)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs until a `shutdown` request, or until the cluster's `switch.json` disappears (its
/// directory was removed without stopping the switch: nothing is left to serve).
pub fn serve(b: Bound) -> Result<(), SwitchError> {
    let fabric = Arc::new(Mutex::new(Fabric::new(
        subnet(),
        &b.config.ports(),
        b.config.seed,
    )));
    let stop = Arc::new(AtomicBool::new(false));
    // Host services live exactly as long as the switch: `down` stops both.
    let _discovery = match b.config.discovery_port {
        Some(port) => Some(
            crust_kv::local::spawn_thread(&format!("127.0.0.1:{port}"), "discovery")
                .map_err(io(format!("serving discovery on 127.0.0.1:{port}")))?,
        ),
        None => None,
    };
    eprintln!(
        "crust switch: serving {} port(s) on {}",
        b.config.ports.len(),
        b.paths.data_sock().display()
    );
    let control = {
        let (fabric, stop, listener) = (fabric.clone(), stop.clone(), b.control);
        std::thread::Builder::new()
            .name("crust-switch-control".into())
            .spawn(move || control_loop(listener, &fabric, &stop))
            .map_err(io("starting the control thread"))?
    };
    let result = data_loop(&b.data, &b.config, &b.paths, &fabric, &stop);
    stop.store(true, Ordering::SeqCst);
    let _ = control.join();
    for s in [b.paths.data_sock(), b.paths.control_sock()] {
        let _ = std::fs::remove_file(s);
    }
    eprintln!("crust switch: stopped");
    result
}

fn control_loop(listener: UnixListener, fabric: &Mutex<Fabric>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = converse(conn, fabric, stop) {
                    eprintln!("crust switch: control connection: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                eprintln!("crust switch: accepting a control connection: {e}");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// One client, one request per line, until it hangs up (or goes quiet for 5 s).
fn converse(conn: UnixStream, fabric: &Mutex<Fabric>, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (resp, shutdown) = control::apply(&mut lock(fabric), &line);
        let mut text = serde_json::to_string(&resp).map_err(std::io::Error::other)?;
        text.push('\n');
        writer.write_all(text.as_bytes())?;
        if shutdown {
            stop.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
    Ok(())
}

struct Delayed {
    due: Instant,
    seq: u64,
    port: usize,
    frame: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

fn data_loop(
    sock: &UnixDatagram,
    config: &SwitchConfig,
    paths: &SwitchPaths,
    fabric: &Mutex<Fabric>,
    stop: &AtomicBool,
) -> Result<(), SwitchError> {
    let by_path: HashMap<PathBuf, usize> = config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| (p.socket.clone(), i))
        .collect();
    let addrs: Vec<Option<UnixAddr>> = config
        .ports
        .iter()
        .map(|p| UnixAddr::new(p.socket.as_path()).ok())
        .collect();
    let send = |port: usize, frame: &[u8]| {
        if let Some(Some(addr)) = addrs.get(port) {
            // A node that is down (no socket) or not reading (full queue) loses the frame,
            // like a cable to a switched-off machine; the switch never blocks on one node.
            let _ = sendto(sock.as_raw_fd(), frame, addr, MsgFlags::MSG_DONTWAIT);
        }
    };
    let config_path = paths.config();
    let mut queue: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; MAX_FRAME];
    let mut last_check = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while queue.peek().is_some_and(|d| d.0.due <= now) {
            if let Some(Reverse(d)) = queue.pop() {
                send(d.port, &d.frame);
            }
        }
        if now.duration_since(last_check) >= Duration::from_secs(1) {
            last_check = now;
            if !config_path.exists() {
                eprintln!("crust switch: {} is gone; stopping", config_path.display());
                return Ok(());
            }
        }
        let wait = queue
            .peek()
            .map(|d| d.0.due.saturating_duration_since(now))
            .unwrap_or(TICK)
            .clamp(Duration::from_millis(1), TICK);
        sock.set_read_timeout(Some(wait))
            .map_err(io("setting the switch socket timeout"))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("receiving on the switch socket")(e)),
        };
        let port = from.as_pathname().and_then(|p| by_path.get(p)).copied();
        let outs = {
            let mut f = lock(fabric);
            match port {
                Some(p) => f.input(p, &buf[..n]),
                None => {
                    f.unknown_sender();
                    continue;
                }
            }
        };
        for o in outs {
            if o.delay.is_zero() {
                send(o.port, &o.frame);
            } else if queue.len() < MAX_QUEUED {
                seq += 1;
                queue.push(Reverse(Delayed {
                    due: Instant::now() + o.delay,
                    seq,
                    port: o.port,
                    frame: o.frame,
                }));
            }
        }
    }
    Ok(())
}

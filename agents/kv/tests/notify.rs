#![allow(clippy::unwrap_used)] // a failure is the test failing
//! `etcd2.service` is `Type=notify`: a member sends `READY=1` to `$NOTIFY_SOCKET` once it
//! serves clients, and not before. In a test binary of its own because the socket is given
//! through the process environment.

use crust_kv::config;
use crust_kv::server::{self, Listeners};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[test]
fn a_member_tells_the_service_manager_once_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let rx = UnixDatagram::bind(&socket).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &socket);

    let client = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let client_url = format!("http://{}", client.local_addr().unwrap());
    let peer_url = format!("http://{}", peer.local_addr().unwrap());
    let data = dir.path().join("m0");
    let args: Vec<String> = [
        "--name=m0",
        &format!("--data-dir={}", data.display()),
        &format!("--listen-client-urls={client_url}"),
        &format!("--advertise-client-urls={client_url}"),
        &format!("--listen-peer-urls={peer_url}"),
        &format!("--initial-advertise-peer-urls={peer_url}"),
        &format!("--initial-cluster=m0={peer_url}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = config::parse(&args, &[]).unwrap();
    let member = server::spawn_thread(
        cfg,
        Some(Listeners {
            client: vec![client],
            peer: vec![peer],
        }),
    )
    .unwrap();

    let mut buf = [0u8; 128];
    let n = rx.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the client port answers at once.
    crust_kv::client::Client::healthy(&client_url).expect("the client port answers");
    member.stop().unwrap();
}

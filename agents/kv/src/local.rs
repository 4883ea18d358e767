//! A one-member [`Backend`]: proposals apply at once, in order, to a [`Store`]. It behaves like a
//! single-member etcd cluster (term 1, itself the leader) and serves tests and the host-side
//! discovery service.

use crate::backend::{Apply, Backend, BackendError, BoxFuture, Member};
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct LocalBackend {
    store: Arc<Store>,
    raft_index: AtomicU64,
    member: Mutex<Member>,
    /// Serialises proposals, as a log would.
    order: Mutex<()>,
}

impl LocalBackend {
    pub fn new(store: Arc<Store>, name: &str, client_urls: Vec<String>) -> LocalBackend {
        let id = member_id(name);
        LocalBackend {
            store,
            raft_index: AtomicU64::new(0),
            member: Mutex::new(Member {
                id,
                name: name.into(),
                peer_urls: vec!["http://localhost:2380".into()],
                client_urls,
            }),
            order: Mutex::new(()),
        }
    }

    fn member(&self) -> Member {
        self.member
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A stable id from a name (FNV-1a), for a member that has no peers to agree with.
fn member_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Backend for LocalBackend {
    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, BackendError>> {
        Box::pin(async move {
            let _g = self.order.lock().unwrap_or_else(|p| p.into_inner());
            let index = self.raft_index.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(self.store.apply(index, 1, &command))
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn id(&self) -> u64 {
        self.member().id
    }

    fn cluster_id(&self) -> u64 {
        member_id(&format!("cluster/{}", self.member().name))
    }

    fn raft_term(&self) -> u64 {
        1
    }

    fn raft_index(&self) -> u64 {
        self.raft_index.load(Ordering::SeqCst)
    }

    fn leader(&self) -> Option<u64> {
        Some(self.id())
    }

    fn members(&self) -> Vec<Member> {
        vec![self.member()]
    }

    fn add_member(&self, _peer_urls: Vec<String>) -> BoxFuture<'_, Result<Member, BackendError>> {
        Box::pin(async {
            Err(BackendError::Membership(
                "this is a single-member store (no raft); run crust-agent kv to form a cluster"
                    .into(),
            ))
        })
    }

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            Err(BackendError::Membership(format!(
                "member {id:x} cannot be removed from a single-member store"
            )))
        })
    }

    fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let mut m = self.member.lock().unwrap_or_else(|p| p.into_inner());
            if m.id != id {
                return Err(BackendError::Membership(format!("no member {id:x}")));
            }
            m.peer_urls = peer_urls;
            Ok(())
        })
    }
}

/// Runs a single-member store serving the client API on `listener` until the process ends:
/// what `crust kv serve` runs on the host (e.g. as an etcd discovery service).
pub async fn serve(listener: tokio::net::TcpListener, name: &str) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let store = Arc::new(Store::new());
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(
        store.clone(),
        name,
        vec![format!("http://{addr}")],
    ));
    crate::api::spawn_expiry(backend.clone(), store.clone());
    crate::api::serve(
        listener,
        crate::api::Api {
            backend,
            store,
            name: name.to_string(),
            started: std::time::SystemTime::now(),
        },
    )
    .await
}

/// A [`serve`] running on a thread of its own with its own runtime; dropping it stops the
/// server (pending requests and watches are cut).
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves a fresh single-member store there.
pub fn spawn_thread(addr: &str, name: &str) -> std::io::Result<Server> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let name = name.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("kv-{name}"))
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("kv {name}: {e}");
                        return;
                    }
                };
                tokio::select! {
                    r = serve(listener, &name) => {
                        if let Err(e) = r {
                            eprintln!("kv {name}: {e}");
                        }
                    }
                    _ = rx => {}
                }
            });
            // Dropping the runtime here ends every connection task.
            rt.shutdown_background();
        })?;
    Ok(Server {
        addr: bound,
        stop: Some(tx),
        thread: Some(thread),
    })
}

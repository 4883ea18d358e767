//! The etcd v2 client API over HTTP (axum), on any [`Backend`].
//!
//! Mount it with [`router`] (or run it with [`serve`]) and start the TTL driver with
//! [`spawn_expiry`]. Reads are answered from the local [`Store`] (`quorum=true` first waits on
//! [`Backend::read_barrier`]); writes become [`crate::store::Command`]s proposed through
//! [`Backend::propose`], stamped with this member's clock. Status codes, headers
//! (`X-Etcd-Index`, `X-Raft-Index`, `X-Raft-Term`, `X-Etcd-Cluster-Id`) and JSON bodies follow
//! etcd 2.3 / 3.4's v2 API.
//!
//! For a Raft backend: build `Api { backend, store, name, started }` with the same
//! `Arc<Store>` that replication applies to, mount [`router`] on the client listener and call
//! [`spawn_expiry`] once. [`BackendError`]s become answers as etcd gives them: on keys,
//! `NoLeader` is etcd error 301 (during leader election) and `Timeout`/`Other` are 300 (raft
//! internal), both HTTP 500; from membership calls,
//! `Membership` text containing "exists" or "duplicate" is 409, starting with "no member" is
//! 404, other text 400; unknown member ids are refused with 404 before the backend is asked.

pub mod params;

use crate::backend::{Backend, BackendError, Member};
use crate::store::error::{self as ecode, EtcdError};
use crate::store::{self, Command, Event, Op, Store};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use params::KeysRequest;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Version strings `/version` reports: the etcd v2 API generation crust kv speaks.
pub const SERVER_VERSION: &str = "2.3.8";
pub const CLUSTER_VERSION: &str = "2.3.0";
/// Largest request body accepted (a little over the value limit, for the form encoding).
pub const MAX_BODY: usize = store::MAX_VALUE_BYTES * 3 + 4096;

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    pub backend: Arc<dyn Backend>,
    pub store: Arc<Store>,
    pub name: String,
    pub started: SystemTime,
}

/// The client API routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v2/keys", any(keys_root))
        .route("/v2/keys/", any(keys_root))
        .route("/v2/keys/{*key}", any(keys))
        .route("/v2/members", get(members_list).post(members_add))
        .route("/v2/members/", get(members_list).post(members_add))
        .route("/v2/members/leader", get(members_leader))
        .route(
            "/v2/members/{id}",
            axum::routing::delete(members_remove)
                .put(members_update)
                .get(members_get_one),
        )
        .route("/v2/stats/self", get(stats_self))
        .route("/v2/stats/leader", get(stats_leader))
        .route("/v2/stats/store", get(stats_store))
        .route("/v2/machines", get(machines))
        .route("/version", get(version))
        .route("/health", get(health))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves [`router`] on `listener` until the future is dropped or fails.
pub async fn serve(listener: tokio::net::TcpListener, api: Api) -> std::io::Result<()> {
    axum::serve(listener, router(api)).await
}

/// Wall-clock nanoseconds since the Unix epoch (what commands are stamped with).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Proposes `Expire` whenever a TTL is due, while this member leads. Followers only watch:
/// expiry is decided once, through the log, so every member removes the same keys at the same
/// index.
pub fn spawn_expiry(backend: Arc<dyn Backend>, store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_ns();
            let next = store.with(|s| s.next_expiry());
            let leading = backend.leader() == Some(backend.id());
            if leading && next.is_some_and(|at| at <= now) {
                let cmd = Command {
                    now_ns: now,
                    op: Op::Expire,
                };
                if backend.propose(store::encode(&cmd)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
            let wait = next
                .map(|at| Duration::from_nanos((at - now).max(0) as u64))
                .unwrap_or(Duration::from_millis(250))
                .clamp(Duration::from_millis(5), Duration::from_millis(250));
            tokio::time::sleep(wait).await;
        }
    })
}

/// etcd sends `X-Etcd-Cluster-ID` on /v2/keys and /v2/members only; /version, /health,
/// /v2/machines and /v2/stats answer without it.
fn without_cluster_id(mut r: Response) -> Response {
    r.headers_mut().remove("x-etcd-cluster-id");
    r
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

fn set_header(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

impl Api {
    fn base_headers(&self, h: &mut HeaderMap) {
        set_header(h, "x-etcd-cluster-id", hex(self.backend.cluster_id()));
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }

    fn json(&self, status: StatusCode, body: String, etcd_index: Option<u64>) -> Response {
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        self.base_headers(h);
        if let Some(i) = etcd_index {
            set_header(h, "x-etcd-index", i.to_string());
            set_header(h, "x-raft-index", self.backend.raft_index().to_string());
            set_header(h, "x-raft-term", self.backend.raft_term().to_string());
        }
        r
    }

    fn error(&self, e: &EtcdError) -> Response {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = go_encode(e);
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        self.base_headers(h);
        set_header(h, "x-etcd-index", e.index.to_string());
        r
    }

    fn event(&self, status: StatusCode, e: &Event, index: u64, head: bool) -> Response {
        let body = if head { String::new() } else { go_encode(e) };
        self.json(status, body, Some(index))
    }

    fn backend_error(&self, e: BackendError) -> Response {
        let (code, cause) = match &e {
            BackendError::NoLeader(why) => (ecode::LEADER_ELECT, why.clone()),
            BackendError::Timeout(why) => (
                ecode::RAFT_INTERNAL,
                format!("etcdserver: request timed out ({why})"),
            ),
            BackendError::Membership(why) | BackendError::Other(why) => {
                (ecode::RAFT_INTERNAL, why.clone())
            }
        };
        self.error(&EtcdError::new(code, cause, self.store.index()))
    }
}

/// JSON as etcd writes events, errors and members (Go's `json.Encoder`): `<`, `>`, `&`,
/// U+2028 and U+2029 escaped as `\uXXXX`, and a newline at the end.
pub fn go_encode<T: Serialize>(v: &T) -> String {
    let json = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(json.len() + 1);
    // These characters only occur inside JSON strings, so escaping them keeps the JSON valid.
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// The request's parameters as Go's `Request.ParseForm` gives them to etcd: the form body
/// (POST and PUT only) first, then the URL query; a bad `%` escape or a `;` separator is an
/// error, reported after all pairs that did parse.
fn form_pairs(
    method: &Method,
    body: &[u8],
    query: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut first_err = None;
    let body = if matches!(*method, Method::POST | Method::PUT) {
        String::from_utf8_lossy(body).into_owned()
    } else {
        String::new()
    };
    for part in [body.as_str(), query.unwrap_or("")] {
        if let Err(e) = go_parse_query(part, &mut pairs) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(pairs),
    }
}

/// Go's `url.ParseQuery`: `&`-separated `key=value` pairs, `+` is a space, `%XX` must be hex.
fn go_parse_query(s: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut err = None;
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        if pair.contains(';') {
            err.get_or_insert_with(|| "invalid semicolon separator in query".to_string());
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (go_unescape(k), go_unescape(v)) {
            (Ok(k), Ok(v)) => out.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                err.get_or_insert(e);
            }
        }
    }
    err.map_or(Ok(()), Err)
}

fn go_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        let bad = String::from_utf8_lossy(&b[i..end]);
                        return Err(format!("invalid URL escape {bad:?}"));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn keys_root(
    State(api): State<Api>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    keys_request(api, method, "/".into(), q, body).await
}

async fn keys(
    State(api): State<Api>,
    method: Method,
    uri: axum::http::Uri,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    if let Some(r) = redirect_unclean(&method, &uri) {
        return r;
    }
    keys_request(api, method, key, q, body).await
}

/// Go's `http.ServeMux` in front of etcd answers a path with `//`, `.` or `..` segments with
/// `301 Moved Permanently` to the cleaned path (a trailing slash kept), for every method.
fn redirect_unclean(method: &Method, uri: &axum::http::Uri) -> Option<Response> {
    let path = uri.path();
    let mut clean = store::clean_key(path);
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    if clean == path {
        return None;
    }
    let location = match uri.query() {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    let mut r = if matches!(*method, Method::GET | Method::HEAD) {
        let body = format!("<a href=\"{location}\">Moved Permanently</a>.\n\n");
        let mut r = (StatusCode::MOVED_PERMANENTLY, body).into_response();
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        // No body and no Content-Type, as Go's redirect for other methods.
        (StatusCode::MOVED_PERMANENTLY, ()).into_response()
    };
    set_header(r.headers_mut(), "location", location);
    Some(r)
}

async fn keys_request(
    api: Api,
    method: Method,
    key: String,
    q: Option<String>,
    body: Bytes,
) -> Response {
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
    ) {
        // etcd answers other methods with a plain 405 and the methods it allows.
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
        r.headers_mut().insert(
            "allow",
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"),
        );
        return r;
    }
    let pairs = match form_pairs(&method, &body, q.as_deref()) {
        Ok(p) => p,
        Err(cause) => return api.error(&EtcdError::new(ecode::INVALID_FORM, cause, 0)),
    };
    let req = match params::parse(method.as_str(), &key, &pairs) {
        Ok(r) => r,
        Err(e) => return api.error(&e),
    };
    match req {
        KeysRequest::Get {
            key,
            recursive,
            sorted: _,
            quorum,
            head,
        } => {
            let ready = if quorum {
                api.backend.read_barrier().await
            } else {
                api.backend.local_read().await
            };
            if let Err(e) = ready {
                return api.backend_error(e);
            }
            let now = now_ns();
            // Listings are always in key order, which is what sorted=true asks for.
            let (r, index) = api.store.with(|s| (s.get(&key, recursive, now), s.index));
            match r {
                Ok(ev) => api.event(StatusCode::OK, &ev, index, head),
                Err(e) => api.error(&e),
            }
        }
        KeysRequest::Watch {
            key,
            recursive,
            wait_index,
            stream,
        } => {
            // A watch from "now" starts after this member's own acknowledged writes.
            if let Err(e) = api.backend.local_read().await {
                return api.backend_error(e);
            }
            watch(api, key, recursive, wait_index, stream).await
        }
        KeysRequest::Write(op) => {
            let cmd = Command {
                now_ns: now_ns(),
                op,
            };
            match api.backend.propose(store::encode(&cmd)).await {
                Ok(bytes) => match store::decode_outcome(&bytes) {
                    Ok(ev) => {
                        let created =
                            ev.action == "create" || (ev.action == "set" && ev.prev_node.is_none());
                        let status = if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        let index = ev.index();
                        api.event(status, &ev, index, false)
                    }
                    Err(e) => api.error(&e),
                },
                Err(e) => api.backend_error(e),
            }
        }
    }
}

/// The next event for a watcher of `key` from `since`, waiting for one if needed. Events on
/// hidden keys below a recursive watch are skipped once they happen after the watch began, as
/// etcd's watcher hub does.
async fn next_event(
    store: &Store,
    key: &str,
    recursive: bool,
    since: &mut u64,
    began: u64,
) -> Result<Event, EtcdError> {
    let mut rx = store.subscribe();
    loop {
        let found = store.with(|s| s.scan(key, recursive, *since))?;
        if let Some(ev) = found {
            *since = ev.index() + 1;
            let live = ev.index() > began;
            let hidden = recursive && ev.node.key != key && store::hidden_below(key, &ev.node.key);
            if live && (hidden || ev.refresh) {
                continue;
            }
            return Ok(ev);
        }
        // A change may have landed between the scan and here; `changed` sees it.
        if rx.changed().await.is_err() {
            return Err(EtcdError::new(
                ecode::WATCHER_CLEARED,
                "the store is shutting down",
                0,
            ));
        }
    }
}

async fn watch(
    api: Api,
    key: String,
    recursive: bool,
    wait_index: Option<u64>,
    stream: bool,
) -> Response {
    let began = api.store.index();
    // waitIndex=0 is "from now on", as etcdctl sends it.
    let mut since = wait_index.filter(|&i| i > 0).unwrap_or(began + 1);
    if !stream {
        return match next_event(&api.store, &key, recursive, &mut since, began).await {
            Ok(ev) => api.event(StatusCode::OK, &ev, began, false),
            Err(e) => api.error(&e),
        };
    }
    // Validate the start before committing to a streaming 200.
    if let Err(e) = api.store.with(|s| s.scan(&key, recursive, since)) {
        return api.error(&e);
    }
    let store = api.store.clone();
    let events = futures_util::stream::unfold(
        (store, key, since),
        move |(store, key, mut since)| async move {
            match next_event(&store, &key, recursive, &mut since, began).await {
                Ok(ev) => {
                    let line = go_encode(&ev).into_bytes();
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(line)),
                        (store, key, since),
                    ))
                }
                Err(_) => None,
            }
        },
    );
    let mut r = Response::new(Body::from_stream(events));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    api.base_headers(h);
    set_header(h, "x-etcd-index", began.to_string());
    r
}

/// A member as `/v2/members` shows it (ids in hex).
#[derive(Debug, Serialize, Deserialize)]
struct MemberJson {
    id: String,
    name: String,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
}

impl From<&Member> for MemberJson {
    fn from(m: &Member) -> Self {
        MemberJson {
            id: hex(m.id),
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
        }
    }
}

#[derive(Deserialize)]
struct PeerUrls {
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
}

fn message(api: &Api, status: StatusCode, text: &str) -> Response {
    api.json(
        status,
        serde_json::json!({ "message": text }).to_string(),
        None,
    )
}

async fn members_list(State(api): State<Api>) -> Response {
    let members: Vec<MemberJson> = api.backend.members().iter().map(MemberJson::from).collect();
    api.json(
        StatusCode::OK,
        go_encode(&serde_json::json!({ "members": members })),
        None,
    )
}

async fn members_leader(State(api): State<Api>) -> Response {
    let leader = api.backend.leader();
    match api.backend.members().iter().find(|m| Some(m.id) == leader) {
        Some(m) => api.json(StatusCode::OK, go_encode(&MemberJson::from(m)), None),
        None => message(
            &api,
            StatusCode::SERVICE_UNAVAILABLE,
            "During leader election",
        ),
    }
}

fn parse_peer_urls(
    api: &Api,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<String>, Box<Response>> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Box::new(message(
            api,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "Bad Content-Type {}, accept application/json",
                headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            ),
        )));
    }
    let p: PeerUrls = serde_json::from_slice(body).map_err(|e| {
        message(
            api,
            StatusCode::BAD_REQUEST,
            &format!("bad request body: {e}; send {{\"peerURLs\":[\"http://host:2380\"]}}"),
        )
    })?;
    if p.peer_urls.is_empty() {
        return Err(Box::new(message(
            api,
            StatusCode::BAD_REQUEST,
            "no valid URLs given",
        )));
    }
    for u in &p.peer_urls {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Box::new(message(
                api,
                StatusCode::BAD_REQUEST,
                &format!("URL scheme must be http or https: {u}"),
            )));
        }
    }
    Ok(p.peer_urls)
}

fn membership_error(api: &Api, e: BackendError) -> Response {
    match e {
        BackendError::Membership(why) if why.contains("exists") || why.contains("duplicate") => {
            message(api, StatusCode::CONFLICT, &why)
        }
        BackendError::Membership(why) if why.starts_with("no member") => {
            message(api, StatusCode::NOT_FOUND, &why)
        }
        BackendError::Membership(why) => message(api, StatusCode::BAD_REQUEST, &why),
        other => message(api, StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

async fn members_add(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let urls = match parse_peer_urls(&api, &headers, &body) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match api.backend.add_member(urls).await {
        Ok(m) => api.json(StatusCode::CREATED, go_encode(&MemberJson::from(&m)), None),
        Err(e) => membership_error(&api, e),
    }
}

/// The id of a member that exists (etcd answers 404 `No such member` otherwise, before
/// asking Raft, so the backend's wording does not decide the status).
fn parse_id(api: &Api, id: &str) -> Result<u64, Box<Response>> {
    u64::from_str_radix(id, 16)
        .ok()
        .filter(|n| api.backend.members().iter().any(|m| m.id == *n))
        .ok_or_else(|| {
            Box::new(message(
                api,
                StatusCode::NOT_FOUND,
                &format!("No such member: {id}"),
            ))
        })
}

/// `GET /v2/members/ID`: etcd has no such resource.
async fn members_get_one(State(api): State<Api>) -> Response {
    message(&api, StatusCode::NOT_FOUND, "Not found")
}

async fn members_remove(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&api, &id) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    match api.backend.remove_member(id).await {
        Ok(()) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            api.base_headers(r.headers_mut());
            r
        }
        Err(e) => membership_error(&api, e),
    }
}

async fn members_update(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&api, &id) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let urls = match parse_peer_urls(&api, &headers, &body) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match api.backend.update_member(id, urls).await {
        Ok(()) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            api.base_headers(r.headers_mut());
            r
        }
        Err(e) => membership_error(&api, e),
    }
}

async fn stats_self(State(api): State<Api>) -> Response {
    let leader = api.backend.leader();
    let me = api.backend.id();
    let started = store::rfc3339_nano(
        api.started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
    );
    let uptime = api.started.elapsed().unwrap_or_default();
    let body = serde_json::json!({
        "name": api.name,
        "id": hex(me),
        "state": if leader == Some(me) { "StateLeader" } else { "StateFollower" },
        "startTime": started,
        "leaderInfo": {
            "leader": leader.map(hex).unwrap_or_default(),
            "uptime": format!("{:.9}s", uptime.as_secs_f64()),
            "startTime": started,
        },
        "recvAppendRequestCnt": 0,
        "sendAppendRequestCnt": 0,
    });
    without_cluster_id(api.json(StatusCode::OK, body.to_string(), None))
}

async fn stats_leader(State(api): State<Api>) -> Response {
    let me = api.backend.id();
    if api.backend.leader() != Some(me) {
        return message(&api, StatusCode::FORBIDDEN, "not current leader");
    }
    let followers: serde_json::Map<String, serde_json::Value> = api
        .backend
        .members()
        .iter()
        .filter(|m| m.id != me)
        .map(|m| {
            (
                hex(m.id),
                serde_json::json!({"latency": {}, "counts": {"fail": 0, "success": 0}}),
            )
        })
        .collect();
    without_cluster_id(api.json(
        StatusCode::OK,
        serde_json::json!({ "leader": hex(me), "followers": followers }).to_string(),
        None,
    ))
}

async fn stats_store(State(api): State<Api>) -> Response {
    let stats = api.store.with(|s| s.stats.clone());
    without_cluster_id(api.json(
        StatusCode::OK,
        serde_json::to_string(&stats).unwrap_or_default(),
        None,
    ))
}

async fn machines(State(api): State<Api>) -> Response {
    let urls: Vec<String> = api
        .backend
        .members()
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    let mut r = (StatusCode::OK, urls.join(", ")).into_response();
    api.base_headers(r.headers_mut());
    without_cluster_id(r)
}

async fn version(State(api): State<Api>) -> Response {
    without_cluster_id(api.json(
        StatusCode::OK,
        // etcd's field order (serde_json's map would sort the keys).
        format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#),
        None,
    ))
}

async fn health(State(api): State<Api>) -> Response {
    let healthy = api.backend.leader().is_some();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    without_cluster_id(api.json(
        status,
        serde_json::json!({ "health": if healthy { "true" } else { "false" } }).to_string(),
        None,
    ))
}

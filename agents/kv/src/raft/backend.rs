//! [`RaftBackend`]: the [`Backend`] the client API runs on, over an openraft node.
//!
//! Any member accepts any request: a follower hands proposals, read barriers and membership
//! changes to the leader over the peer API ([`Forward`]). For read barriers and membership
//! changes it then waits until it has applied the leader's answer index itself; for client
//! writes it answers at once and its local reads wait instead ([`Backend::local_read`]), so a
//! client reading from the member it wrote to sees its write either way. Client writes go
//! through [`super::batch`]: the leader commits the writes queued meanwhile as one entry, and a
//! follower forwards them to the leader in one request.

use super::batch::{Answers, Batcher};
use super::network::{Forward, ForwardOk, LogLimiter, PeerClient, PeerError, WireError};
use super::types::{member_id, token_hash, Cmd, Node, Raft};
use crate::backend::{Backend, BackendError, BoxFuture, Member};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub struct RaftBackend {
    raft: Raft,
    /// Client writes this member commits as the leader.
    lead: Batcher<Local>,
    /// Client writes this member forwards to the leader.
    forward: Batcher<Local>,
    /// The raft index the state machine has applied.
    applied: tokio::sync::watch::Receiver<u64>,
    /// The highest index of a write this member acknowledged before applying it (forwarded
    /// writes answer once the leader committed them); local reads wait for it.
    acked: std::sync::atomic::AtomicU64,
    id: u64,
    cluster_id: u64,
    token: String,
    name: String,
    client: Arc<PeerClient>,
    /// How long a proposal may take before the client gets a timeout.
    timeout: Duration,
}

type Metrics = openraft::RaftMetrics<u64, Node>;
type MembershipAt = Option<openraft::LogId<u64>>;
type Change = ChangeMembers<u64, Node>;

/// How long a joint configuration stays before the leader finishes it.
const JOINT_GRACE: Duration = Duration::from_secs(2);
/// How long a non-voting member stays before the leader removes it: longer than a member add
/// may take between adding the learner and promoting it (it retries for up to 5 s while
/// another change is in progress).
const LEARNER_GRACE: Duration = Duration::from_secs(10);

/// What a leader's membership needs to be whole (see [`RaftBackend::tidy_membership`]), with
/// the log id of the membership it looked at and how long to leave it alone first.
fn untidy(
    metrics: &tokio::sync::watch::Receiver<Metrics>,
) -> Option<(MembershipAt, Change, Duration)> {
    let m = metrics.borrow();
    if m.state != openraft::ServerState::Leader {
        return None;
    }
    let at = *m.membership_config.log_id();
    let membership = m.membership_config.membership();
    let configs = membership.get_joint_config();
    if configs.len() > 1 {
        let last = configs.last().cloned().unwrap_or_default();
        return Some((at, ChangeMembers::ReplaceAllVoters(last), JOINT_GRACE));
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| !voters.contains(id))
        .collect();
    (!learners.is_empty()).then_some((at, ChangeMembers::RemoveNodes(learners), LEARNER_GRACE))
}

/// Whether the membership this member has applied no longer has `id` (the removal is
/// committed then).
pub fn removal_applied(m: &Metrics, id: u64) -> bool {
    let config = &m.membership_config;
    config.membership().get_node(&id).is_none()
        && config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index)
}

/// Why something could not be done on this member.
#[derive(Clone)]
enum Local {
    /// Not the leader: the leader's record when one is known.
    NotLeader(Option<Node>),
    Failed(BackendError),
}

impl From<BackendError> for Local {
    fn from(e: BackendError) -> Self {
        Local::Failed(e)
    }
}

fn fatal(e: impl std::fmt::Display) -> Local {
    Local::Failed(BackendError::Other(format!("raft stopped: {e}")))
}

fn write_err(e: RaftError<u64, ClientWriteError<u64, Node>>) -> Local {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Local::NotLeader(f.leader_node)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Local::Failed(BackendError::Membership(c.to_string()))
        }
        RaftError::Fatal(f) => fatal(f),
    }
}

impl RaftBackend {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: Raft,
        applied: tokio::sync::watch::Receiver<u64>,
        id: u64,
        cluster_id: u64,
        token: &str,
        name: &str,
        client: Arc<PeerClient>,
        timeout: Duration,
    ) -> RaftBackend {
        let gone = Local::Failed(BackendError::Other(
            "the batch ended without an answer for this write".into(),
        ));
        let lead = {
            let raft = raft.clone();
            Batcher::spawn(move |cmds| commit_batch(raft.clone(), cmds), gone.clone())
        };
        let forward = {
            let (raft, client) = (raft.clone(), client.clone());
            Batcher::spawn(
                move |cmds| forward_batch(raft.clone(), id, client.clone(), timeout, cmds),
                gone,
            )
        };
        RaftBackend {
            raft,
            lead,
            forward,
            applied,
            acked: std::sync::atomic::AtomicU64::new(0),
            id,
            cluster_id,
            token: token.to_string(),
            name: name.to_string(),
            client,
            timeout,
        }
    }

    /// Becomes true when the leader says this member was removed (a removed member no longer
    /// receives the log, so it would not see its removal otherwise).
    pub fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.client.removed.subscribe()
    }

    /// The peer API got a removal notice for `id`.
    pub fn removal_notice(&self, id: u64) {
        if id == self.id {
            self.client.removed.send_replace(true);
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limiter(&self) -> &LogLimiter {
        &self.client.limiter
    }

    pub fn token_hash(&self) -> u64 {
        token_hash(&self.token)
    }

    fn node(&self, id: u64) -> Option<Node> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    async fn wait_applied(&self, index: u64) -> Result<(), BackendError> {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(self.timeout, applied.wait_for(|i| *i >= index))
            .await
            .map(|r| r.map(|_| ()));
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BackendError::Other("raft stopped".into())),
            Err(_) => Err(BackendError::Timeout(format!(
                "the leader's index {index} was not applied here within {:?}",
                self.timeout
            ))),
        }
    }

    /// A client write: through this member's batcher when it leads, else through the one that
    /// forwards to the leader. It answers once the write is committed and applied on the
    /// leader; a follower does not wait to apply it too (that wait was a sixth of a write's time
    /// under load): instead its local reads and watches wait for every write it acknowledged
    /// ([`Backend::local_read`]), so a client still reads its writes from the member it wrote
    /// to, as with etcd.
    async fn propose_here(&self, cmd: String) -> Result<String, BackendError> {
        let work = async {
            self.check_quorum()?;
            let leader = self.raft.metrics().borrow().current_leader;
            let stopped = || fatal("the proposal batcher stopped");
            let (answer, index) = match leader {
                Some(l) if l == self.id => match self.lead.propose(cmd.clone()).await {
                    // Leadership moved between the check and the write.
                    Some(Err(Local::NotLeader(Some(_)))) => {
                        self.forward.propose(cmd).await.ok_or_else(stopped)??
                    }
                    r => r.ok_or_else(stopped)??,
                },
                Some(_) => self.forward.propose(cmd).await.ok_or_else(stopped)??,
                None => return Err(Local::NotLeader(None)),
            };
            Ok::<_, Local>((answer, index))
        };
        let (answer, index) = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| BackendError::Timeout("the proposal was not committed in time".into()))?
            .map_err(|e| match e {
                Local::Failed(e) => e,
                Local::NotLeader(_) => BackendError::NoLeader(
                    "no leader elected yet (election in progress or no quorum)".into(),
                ),
            })?;
        self.acked
            .fetch_max(index, std::sync::atomic::Ordering::SeqCst);
        Ok(answer)
    }

    /// Runs `f` here, or on the leader when this member is not the leader.
    pub async fn run(&self, f: Forward) -> Result<ForwardOk, BackendError> {
        let first = tokio::time::timeout(self.timeout, self.local(f.clone()))
            .await
            .map_err(|_| BackendError::Timeout("the proposal was not committed in time".into()))?;
        let leader = match first {
            Ok(ok) => return Ok(ok),
            Err(Local::Failed(e)) => return Err(e),
            Err(Local::NotLeader(None)) => {
                return Err(BackendError::NoLeader(
                    "no leader elected yet (election in progress or no quorum)".into(),
                ))
            }
            Err(Local::NotLeader(Some(n))) => n,
        };
        let url = leader.peer_urls.first().cloned().unwrap_or_default();
        let r: Result<ForwardOk, WireError> = self
            .client
            .post(&url, "/raft/forward", &f, self.timeout)
            .await
            .map_err(|e| match e {
                super::network::PeerError::Timeout { .. } => {
                    BackendError::Timeout(format!("leader did not answer: {e}"))
                }
                e => BackendError::NoLeader(format!("leader unreachable: {e}")),
            })?;
        let ok = r.map_err(BackendError::from)?;
        self.wait_applied(ok.index()).await?;
        Ok(ok)
    }

    /// What the peer API runs for a follower: only the leader does it.
    pub async fn execute_local(&self, f: Forward) -> Result<ForwardOk, BackendError> {
        match self.local(f).await {
            Ok(ok) => Ok(ok),
            Err(Local::Failed(e)) => Err(e),
            Err(Local::NotLeader(_)) => Err(BackendError::NoLeader(format!(
                "member {:x} is no longer the leader",
                self.id
            ))),
        }
    }

    /// A leader that has not heard from a quorum for an election timeout refuses new work at
    /// once (etcd's leader steps down then); without this a partitioned leader would hold
    /// every request until it times out.
    fn check_quorum(&self) -> Result<(), Local> {
        let stale = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.state == openraft::ServerState::Leader
                && m.millis_since_quorum_ack
                    .is_some_and(|ms| ms > self.raft.config().election_timeout_min)
        };
        if stale {
            return Err(Local::Failed(BackendError::NoLeader(format!(
                "member {:x} leads but has not heard from a quorum for over {} ms",
                self.id,
                self.raft.config().election_timeout_min
            ))));
        }
        Ok(())
    }

    async fn local(&self, f: Forward) -> Result<ForwardOk, Local> {
        self.check_quorum()?;
        match f {
            Forward::ProposeAll(cmds) => {
                let answers = self.lead.propose_all(cmds).await;
                let id = self.id;
                Ok(ForwardOk::Answers(
                    answers
                        .into_iter()
                        .map(|a| match a {
                            Some(Ok(ok)) => Ok(ok),
                            Some(Err(Local::Failed(e))) => Err(WireError::from(e)),
                            Some(Err(Local::NotLeader(_))) => Err(WireError::NoLeader(format!(
                                "member {id:x} is no longer the leader"
                            ))),
                            None => Err(WireError::Other("raft stopped".into())),
                        })
                        .collect(),
                ))
            }
            Forward::ReadIndex => match self.raft.ensure_linearizable().await {
                Ok(l) => Ok(ForwardOk::ReadIndex(l.map(|l| l.index).unwrap_or(0))),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(Local::NotLeader(f.leader_node))
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                    Err(Local::Failed(BackendError::Timeout(format!(
                        "no quorum confirms the leader: {q}"
                    ))))
                }
                Err(RaftError::Fatal(f)) => Err(fatal(f)),
            },
            Forward::AddMember { peer_urls } => {
                let members = self.members();
                for u in &peer_urls {
                    if let Some(m) = members.iter().find(|m| m.peer_urls.contains(u)) {
                        return Err(BackendError::Membership(format!(
                            "peer URL {u} exists (member {:x})",
                            m.id
                        ))
                        .into());
                    }
                }
                let id = member_id(&peer_urls, &self.token);
                let node = Node {
                    name: String::new(),
                    peer_urls: peer_urls.clone(),
                    client_urls: Vec::new(),
                };
                let raft = &self.raft;
                retry_in_progress(|| raft.add_learner(id, node.clone(), false)).await?;
                let index = self
                    .change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await?;
                Ok(ForwardOk::Member(
                    Member {
                        id,
                        name: String::new(),
                        peer_urls,
                        client_urls: Vec::new(),
                    },
                    index,
                ))
            }
            Forward::RemoveMember { id } => {
                let voter = self
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .voter_ids()
                    .any(|v| v == id);
                let change = if voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                let node = self.node(id);
                let index = match self.change(change, false).await {
                    Ok(index) => index,
                    // openraft drops the answer to the change that removes the leader itself
                    // when it steps down right after applying it: look at the outcome instead.
                    Err(e) if id == self.id => self.removed_at(id).await.ok_or(e)?,
                    Err(e) => return Err(e),
                };
                // A leader that removed itself stops on its own once the change is applied
                // (see `server::run`); another member is told, since it no longer gets the log.
                if let (Some(n), true) = (node, id != self.id) {
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        let url = n.peer_urls.first().cloned().unwrap_or_default();
                        let _: Result<(), _> = client
                            .post(&url, "/raft/removed", &id, Duration::from_secs(5))
                            .await;
                    });
                }
                Ok(ForwardOk::Done(index))
            }
            Forward::UpdateMember { id, peer_urls } => {
                let mut node = self
                    .node(id)
                    .ok_or_else(|| BackendError::Membership(format!("no member {id:x}")))?;
                node.peer_urls = peer_urls;
                let index = self
                    .change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await?;
                Ok(ForwardOk::Done(index))
            }
            Forward::Publish {
                id,
                name,
                client_urls,
            } => {
                let mut node = self
                    .node(id)
                    .ok_or_else(|| BackendError::Membership(format!("no member {id:x}")))?;
                node.name = name;
                node.client_urls = client_urls;
                let index = self
                    .change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await?;
                Ok(ForwardOk::Done(index))
            }
        }
    }

    /// The log index of the membership that no longer has `id`, once this member has applied
    /// it (it is committed then: the others have it too), waiting up to 2 s.
    async fn removed_at(&self, id: u64) -> Option<u64> {
        let mut metrics = self.raft.metrics();
        let applied = metrics.wait_for(|m| removal_applied(m, id));
        let m = tokio::time::timeout(Duration::from_secs(2), applied)
            .await
            .ok()?
            .ok()?;
        m.membership_config.log_id().map(|l| l.index)
    }

    /// Leader housekeeping of the membership, for changes left half done:
    /// - a joint configuration (its leader stopped, or was removed, between the joint and the
    ///   final configuration) is finished: openraft leaves a joint configuration only when
    ///   asked, and until then every commit needs both majorities;
    /// - a member that is no longer a voter is removed (openraft keeps a leader that removed
    ///   itself as a learner, and a member add that failed halfway leaves one; etcd's v2
    ///   members are all voters).
    ///
    /// Either is left alone for a while first ([`JOINT_GRACE`], [`LEARNER_GRACE`]), since the
    /// leader making a change normally finishes it at once. Runs until the member stops.
    pub async fn tidy_membership(&self) {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some((at, change, grace)) = untidy(&metrics) {
                tokio::time::sleep(grace).await;
                if untidy(&metrics).is_some_and(|(now, ..)| now == at) {
                    let shown = match &change {
                        ChangeMembers::ReplaceAllVoters(v) => format!("voters now {v:x?}"),
                        ChangeMembers::RemoveNodes(n) => format!("removed non-voting {n:x?}"),
                        other => format!("{other:?}"),
                    };
                    match self.change(change, false).await {
                        Ok(_) => eprintln!(
                            "kv {}: finished a membership change left half done: {shown}",
                            self.name
                        ),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                    continue;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// A membership change, retried while another one is still in its joint phase.
    async fn change(&self, c: ChangeMembers<u64, Node>, retain: bool) -> Result<u64, Local> {
        retry_in_progress(|| self.raft.change_membership(c.clone(), retain)).await
    }

    /// Announces this member's name and client URLs when the membership does not show them yet.
    pub async fn publish(&self, name: &str, client_urls: &[String]) -> Result<(), BackendError> {
        if let Some(n) = self.node(self.id) {
            if n.name == name && n.client_urls == client_urls {
                return Ok(());
            }
        }
        self.run(Forward::Publish {
            id: self.id,
            name: name.to_string(),
            client_urls: client_urls.to_vec(),
        })
        .await
        .map(|_| ())
    }
}

/// The leader's submit: the commands as one log entry.
async fn commit_batch(raft: Raft, cmds: Vec<String>) -> Answers<Local> {
    let n = cmds.len();
    match raft.client_write(Cmd(cmds)).await {
        Ok(r) => {
            let index = r.log_id.index;
            r.data.0.into_iter().map(|a| Ok((a, index))).collect()
        }
        Err(e) => vec![Err(write_err(e)); n],
    }
}

/// A follower's submit: the commands to the leader in one peer request.
async fn forward_batch(
    raft: Raft,
    id: u64,
    client: Arc<PeerClient>,
    timeout: Duration,
    cmds: Vec<String>,
) -> Answers<Local> {
    let n = cmds.len();
    let all = |e: BackendError| vec![Err(Local::Failed(e)); n];
    let leader = {
        let m = raft.metrics();
        let m = m.borrow();
        m.current_leader
            .filter(|l| *l != id)
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
    };
    let Some(leader) = leader else {
        return vec![Err(Local::NotLeader(None)); n];
    };
    let url = leader.peer_urls.first().cloned().unwrap_or_default();
    let r: Result<Result<ForwardOk, WireError>, PeerError> = client
        .post(&url, "/raft/forward", &Forward::ProposeAll(cmds), timeout)
        .await;
    match r {
        Ok(Ok(ForwardOk::Answers(answers))) => answers
            .into_iter()
            .map(|a| a.map_err(|w| Local::Failed(w.into())))
            .collect(),
        Ok(Ok(other)) => all(BackendError::Other(format!(
            "the leader answered {other:?} to forwarded writes"
        ))),
        Ok(Err(w)) => all(w.into()),
        Err(e @ PeerError::Timeout { .. }) => {
            all(BackendError::Timeout(format!("leader did not answer: {e}")))
        }
        Err(e) => all(BackendError::NoLeader(format!("leader unreachable: {e}"))),
    }
}

/// Runs a membership change, again while another one (a member publishing its client URLs,
/// say) is still in its joint phase; returns the change's log index.
async fn retry_in_progress<F, Fut>(f: F) -> Result<u64, Local>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<
        Output = Result<
            openraft::raft::ClientWriteResponse<super::types::TypeConfig>,
            RaftError<u64, ClientWriteError<u64, Node>>,
        >,
    >,
{
    let mut tries = 0;
    loop {
        match f().await {
            Ok(r) => return Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(write_err(e)),
        }
    }
}

impl Backend for RaftBackend {
    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, BackendError>> {
        Box::pin(async move {
            let cmd = String::from_utf8(command)
                .map_err(|_| BackendError::Other("commands are JSON text".into()))?;
            self.propose_here(cmd).await.map(String::into_bytes)
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.run(Forward::ReadIndex).await.map(|_| ()) })
    }

    fn local_read(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let acked = self.acked.load(std::sync::atomic::Ordering::SeqCst);
            if *self.applied.borrow() >= acked {
                return Ok(());
            }
            self.wait_applied(acked).await
        })
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The applied index, or the index of a write this member acknowledged when that is
    /// higher (it is committed: etcd's `X-Raft-Index` is the commit index).
    fn raft_index(&self) -> u64 {
        let applied = *self.applied.borrow();
        applied.max(self.acked.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.nodes()
            .map(|(id, n)| Member {
                id: *id,
                name: n.name.clone(),
                peer_urls: n.peer_urls.clone(),
                client_urls: n.client_urls.clone(),
            })
            .collect()
    }

    fn add_member(&self, peer_urls: Vec<String>) -> BoxFuture<'_, Result<Member, BackendError>> {
        Box::pin(async move {
            match self.run(Forward::AddMember { peer_urls }).await? {
                ForwardOk::Member(m, _) => Ok(m),
                other => Err(BackendError::Other(format!("unexpected answer {other:?}"))),
            }
        })
    }

    fn remove_member(&self, id: u64) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move { self.run(Forward::RemoveMember { id }).await.map(|_| ()) })
    }

    fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.run(Forward::UpdateMember { id, peer_urls })
                .await
                .map(|_| ())
        })
    }
}

//! The openraft type configuration and etcd-style identities.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Cursor;

/// The commands of one log entry: JSON-encoded [`crate::store::Command`]s (text, so the log
/// stays readable), applied in order. The leader puts the proposals that arrive while earlier
/// ones are being written into one entry, so one append, one fsync and one replication round
/// carry many client writes. A lone command is stored as a plain string, an earlier crust's
/// entry format, which is still read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd(pub Vec<String>);

/// How a [`Cmd`] reads: a lone string or a list.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CmdRepr {
    One(String),
    Many(Vec<String>),
}

impl serde::Serialize for Cmd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Cmd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match CmdRepr::deserialize(d)? {
            CmdRepr::One(one) => Cmd(vec![one]),
            CmdRepr::Many(many) => Cmd(many),
        })
    }
}

/// What the state machine answered, one JSON-encoded [`crate::store::Outcome`] per command of
/// the entry (none for blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer(pub Vec<String>);

/// A member as the Raft membership records it (the `/v2/members` fields; the id is the key).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// crust kv's Raft: u64 member ids as etcd's, the v2 store commands as data.
    pub TypeConfig:
        D = Cmd,
        R = Answer,
        NodeId = u64,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, Node>;
pub type StoredMembership = openraft::StoredMembership<u64, Node>;

fn digest64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// A member's id from its peer URLs and the cluster token, as etcd derives it: every member
/// computes the same ids for the initial cluster without talking to the others, and a member
/// added later gets the id its own flags give it.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let joined = urls.join("");
    // 0 means "no id" to openraft tooling and etcd; never hand it out.
    digest64(&[joined.as_bytes(), token.as_bytes()]).max(1)
}

/// The cluster id from the initial members' ids and the token.
pub fn cluster_id(ids: &BTreeSet<u64>, token: &str) -> u64 {
    let mut bytes = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    digest64(&[&bytes, token.as_bytes()]).max(1)
}

/// A hash of the token alone, sent by a member joining with `--initial-cluster-state existing`
/// before it knows the cluster id.
pub fn token_hash(token: &str) -> u64 {
    digest64(&[b"token:", token.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_urls_and_token_only() {
        let a = member_id(&["http://10.0.0.1:2380".into()], "t");
        assert_eq!(a, member_id(&["http://10.0.0.1:2380".into()], "t"));
        assert_ne!(a, member_id(&["http://10.0.0.1:2380".into()], "u"));
        assert_ne!(a, member_id(&["http://10.0.0.2:2380".into()], "t"));
        let two = ["http://a:1".to_string(), "http://b:1".to_string()];
        let rev = [two[1].clone(), two[0].clone()];
        assert_eq!(member_id(&two, "t"), member_id(&rev, "t"));
        let ids: BTreeSet<u64> = [1, 2, 3].into();
        assert_ne!(cluster_id(&ids, "t"), cluster_id(&ids, "u"));
        assert_ne!(cluster_id(&ids, "t"), cluster_id(&[1, 2].into(), "t"));
    }

    #[test]
    fn a_lone_command_keeps_the_plain_string_format() {
        let one = Cmd(vec!["{\"a\":1}".into()]);
        let json = serde_json::to_string(&one).expect("encode");
        assert_eq!(json, r#""{\"a\":1}""#);
        assert_eq!(serde_json::from_str::<Cmd>(&json).expect("decode"), one);
        let two = Cmd(vec!["x".into(), "y".into()]);
        let json = serde_json::to_string(&two).expect("encode");
        assert_eq!(json, r#"["x","y"]"#);
        assert_eq!(serde_json::from_str::<Cmd>(&json).expect("decode"), two);
        assert!(serde_json::from_str::<Cmd>("7").is_err());
    }
}

//! The paths of the peer API: what one node asks another over mTLS
//! (served by `crate::peer_api`, called by the link, the migration and the
//! cluster API).

/// Remote spawn.
pub const PATH_PEER_SPAWN: &str = "/v1/peer/spawn";
/// Fetch a module blob by hash.
pub const PATH_PEER_BLOB: &str = "/v1/peer/blob";
/// Keep chunks of a shared volume, fetched from the asking node.
pub const PATH_PEER_VOLUME_PULL: &str = "/v1/peer/volume-pull";
/// This node's processes.
pub const PATH_PEER_PROCESSES: &str = "/v1/peer/processes";
/// Kill a process on this node.
pub const PATH_PEER_KILL: &str = "/v1/peer/kill";
/// Does this node run a pid, or remember how it ended (its final log)?
pub const PATH_PEER_ENDED: &str = "/v1/peer/ended";
/// A join forwarded to the node holding the CA.
pub const PATH_PEER_JOIN: &str = "/v1/peer/join";
/// Keep a complete copy of a checkpoint, fetched from the asking node.
pub const PATH_PEER_CHECKPOINT_PULL: &str = "/v1/peer/checkpoint-pull";

//! Resource-based placement with node names, labels and constraints.
//!
//! A spawn names a [`Target`]: anywhere, one node, or label constraints.
//! Among the nodes that fit (up, not cordoned, carrying every required
//! label), the one with the best [`score`] wins; ties go to the lowest node
//! id so placement is reproducible. Placing several processes at once
//! ([`place_many`]) counts each placed process against its node before
//! placing the next, so a `--count 10` deploy spreads instead of piling onto
//! the node that looked emptiest at the start.

use std::collections::BTreeMap;

/// Where a spawn may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any node; the scheduler chooses.
    Any,
    /// Exactly this node (by name).
    Node(String),
    /// Any node carrying all of these labels.
    Labels(BTreeMap<String, String>),
}

impl Target {
    /// Parse a target as written in `spawn_on` or `--node`/`--label`:
    /// `""` = any, `k=v[,k=v]` = labels, anything else = a node name.
    pub fn parse(text: &str) -> Result<Target, PlacementError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Target::Any);
        }
        if !text.contains('=') {
            return Ok(Target::Node(text.to_string()));
        }
        let mut labels = BTreeMap::new();
        for part in text.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| PlacementError::BadTarget(format!("`{part}` is not k=v")))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(PlacementError::BadTarget(format!(
                    "`{part}`: empty label name"
                )));
            }
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(Target::Labels(labels))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Any => f.write_str("any node"),
            Target::Node(n) => write!(f, "node {n}"),
            Target::Labels(l) => {
                let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "nodes labelled {}", parts.join(","))
            }
        }
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node's cluster id.
    pub id: u64,
    /// Its name (from its certificate).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// False if cordoned or removed: takes no new processes.
    pub schedulable: bool,
    /// False if its heartbeats stopped (considered down).
    pub healthy: bool,
    /// Free memory for processes, bytes.
    pub memory_bytes_free: u64,
    /// Memory for processes in total, bytes.
    pub memory_bytes_total: u64,
    /// CPU load in thousandths of all cores (1000 = every core busy).
    pub cpu_load_milli: u32,
    /// Live processes.
    pub process_count: u32,
    /// Most processes the node takes.
    pub processes_max: u32,
}

/// Why no node was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The target text does not parse.
    #[error("bad placement target: {0}")]
    BadTarget(String),
    /// No node has that name.
    #[error("no node named `{0}` in the cluster")]
    UnknownNode(String),
    /// The named node exists but cannot take processes now.
    #[error("node `{name}` cannot take processes: {why}")]
    Unavailable {
        /// The node.
        name: String,
        /// Cordoned, down, or full.
        why: String,
    },
    /// More processes asked for than the cluster has room for at all:
    /// refused before anything is allocated or placed.
    #[error("cannot place {count} processes: the cluster has room for at most {room} more")]
    TooMany {
        /// How many were asked for.
        count: u64,
        /// Free process slots on the nodes that take processes.
        room: u64,
    },
    /// Nothing fits.
    #[error("no node fits {target}: {why}")]
    NoFit {
        /// What was asked.
        target: String,
        /// A summary of why each node was skipped.
        why: String,
    },
}

/// The room counted for a node without a process limit
/// (`processes_max` 0) when bounding [`place_many`].
pub const UNLIMITED_ROOM: u64 = 1 << 20;

/// Why `c` cannot take a process, or `None` if it can.
fn unfit(c: &Candidate) -> Option<&'static str> {
    if !c.schedulable {
        Some("cordoned")
    } else if !c.healthy {
        Some("down (declared dead by the failure detector)")
    } else if c.processes_max > 0 && c.process_count >= c.processes_max {
        Some("at its process limit")
    } else {
        None
    }
}

/// How good a home `c` is: higher is better. Free memory share counts
/// most, then idle CPU, then few processes; all in thousandths so the sum
/// is an integer and placement is reproducible.
pub fn score(c: &Candidate) -> i64 {
    let mem_free_milli = if c.memory_bytes_total == 0 {
        0
    } else {
        (c.memory_bytes_free.min(c.memory_bytes_total) as u128 * 1000
            / c.memory_bytes_total as u128) as i64
    };
    let cpu_idle_milli = 1000 - i64::from(c.cpu_load_milli.min(1000));
    let procs_free_milli = if c.processes_max == 0 {
        0
    } else {
        1000 - (i64::from(c.process_count.min(c.processes_max)) * 1000 / i64::from(c.processes_max))
    };
    2 * mem_free_milli + cpu_idle_milli + procs_free_milli
}

/// Choose a node for one process.
pub fn place(candidates: &[Candidate], target: &Target) -> Result<u64, PlacementError> {
    if let Target::Node(name) = target {
        let c = candidates
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| PlacementError::UnknownNode(name.clone()))?;
        return match unfit(c) {
            Some(why) => Err(PlacementError::Unavailable {
                name: name.clone(),
                why: why.to_string(),
            }),
            None => Ok(c.id),
        };
    }
    let mut skipped = Vec::new();
    let mut best: Option<(&Candidate, i64)> = None;
    for c in candidates {
        if let Target::Labels(want) = target {
            if let Some((k, v)) = want.iter().find(|(k, v)| c.labels.get(*k) != Some(*v)) {
                skipped.push(format!("{} lacks {k}={v}", c.name));
                continue;
            }
        }
        if let Some(why) = unfit(c) {
            skipped.push(format!("{} is {why}", c.name));
            continue;
        }
        let s = score(c);
        let better = match best {
            None => true,
            Some((b, bs)) => s > bs || (s == bs && c.id < b.id),
        };
        if better {
            best = Some((c, s));
        }
    }
    match best {
        Some((c, _)) => Ok(c.id),
        None => Err(PlacementError::NoFit {
            target: target.to_string(),
            why: if skipped.is_empty() {
                "the cluster has no nodes".into()
            } else {
                skipped.join("; ")
            },
        }),
    }
}

/// Memory a placed process is assumed to take until the next heartbeat
/// says otherwise (so a burst of placements spreads).
pub const ASSUMED_PROCESS_BYTES: u64 = 16 << 20;

/// Choose nodes for `count` processes, one after another, counting each
/// against its node. All or nothing: an error if any cannot be placed.
pub fn place_many(
    candidates: &[Candidate],
    target: &Target,
    count: usize,
) -> Result<Vec<u64>, PlacementError> {
    // Bound the count by the room there is before allocating for it.
    let room: u64 = candidates
        .iter()
        .filter(|c| unfit(c).is_none())
        .map(|c| match c.processes_max {
            0 => UNLIMITED_ROOM,
            max => u64::from(max.saturating_sub(c.process_count)),
        })
        .sum();
    if count as u64 > room {
        return Err(PlacementError::TooMany {
            count: count as u64,
            room,
        });
    }
    let mut view = candidates.to_vec();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let id = place(&view, target)?;
        if let Some(c) = view.iter_mut().find(|c| c.id == id) {
            c.process_count = c.process_count.saturating_add(1);
            c.memory_bytes_free = c.memory_bytes_free.saturating_sub(ASSUMED_PROCESS_BYTES);
        }
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_count_is_refused_before_anything_is_allocated() {
        let nodes = [node(1, "a", 512, 0, 0), node(2, "b", 512, 0, 0)];
        match place_many(&nodes, &Target::Any, u32::MAX as usize) {
            Err(PlacementError::TooMany { count, room }) => {
                assert_eq!(count, u64::from(u32::MAX));
                assert_eq!(room, 2 * u64::from(nodes[0].processes_max));
            }
            other => panic!("expected TooMany, got {other:?}"),
        }
    }

    fn node(id: u64, name: &str, free_mib: u64, load: u32, procs: u32) -> Candidate {
        Candidate {
            id,
            name: name.into(),
            labels: BTreeMap::new(),
            schedulable: true,
            healthy: true,
            memory_bytes_free: free_mib << 20,
            memory_bytes_total: 1024 << 20,
            cpu_load_milli: load,
            process_count: procs,
            processes_max: 1000,
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("").unwrap(), Target::Any);
        assert_eq!(Target::parse("  ").unwrap(), Target::Any);
        assert_eq!(
            Target::parse("node-b").unwrap(),
            Target::Node("node-b".into())
        );
        let t = Target::parse("zone=eu, disk=ssd").unwrap();
        let Target::Labels(l) = t else { panic!() };
        assert_eq!(l.get("zone").map(String::as_str), Some("eu"));
        assert_eq!(l.get("disk").map(String::as_str), Some("ssd"));
        assert!(Target::parse("=x").is_err());
        assert!(Target::parse("a=1,b").is_err());
    }

    #[test]
    fn most_free_memory_wins_and_ties_go_to_lowest_id() {
        let c = vec![
            node(1, "a", 100, 0, 0),
            node(2, "b", 900, 0, 0),
            node(3, "c", 900, 0, 0),
        ];
        assert_eq!(place(&c, &Target::Any), Ok(2));
        let c = vec![node(1, "a", 500, 900, 0), node(2, "b", 500, 100, 0)];
        assert_eq!(place(&c, &Target::Any), Ok(2), "less CPU load wins");
    }

    #[test]
    fn cordoned_down_and_full_nodes_are_skipped_with_reasons() {
        let mut c = vec![node(1, "a", 900, 0, 0), node(2, "b", 100, 0, 0)];
        c[0].schedulable = false;
        assert_eq!(place(&c, &Target::Any), Ok(2));
        c[1].healthy = false;
        let e = place(&c, &Target::Any).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("a is cordoned") && text.contains("b is down"),
            "{text}"
        );
        let e = place(&c, &Target::Node("a".into())).unwrap_err();
        assert!(e.to_string().contains("cordoned"), "{e}");
        assert_eq!(
            place(&c, &Target::Node("zz".into())),
            Err(PlacementError::UnknownNode("zz".into()))
        );
        let mut full = node(3, "c", 900, 0, 5);
        full.processes_max = 5;
        assert!(place(&[full], &Target::Any).is_err());
    }

    #[test]
    fn labels_constrain() {
        let mut c = vec![node(1, "a", 900, 0, 0), node(2, "b", 100, 0, 0)];
        c[1].labels.insert("zone".into(), "eu".into());
        assert_eq!(place(&c, &Target::parse("zone=eu").unwrap()), Ok(2));
        let e = place(&c, &Target::parse("zone=us").unwrap()).unwrap_err();
        assert!(e.to_string().contains("a lacks zone=us"), "{e}");
    }

    #[test]
    fn many_spread_across_nodes() {
        let c = vec![
            node(1, "a", 512, 0, 0),
            node(2, "b", 512, 0, 0),
            node(3, "c", 512, 0, 0),
        ];
        let ids = place_many(&c, &Target::Any, 9).unwrap();
        for id in 1..=3 {
            assert_eq!(ids.iter().filter(|i| **i == id).count(), 3, "{ids:?}");
        }
    }
}

//! `sluice group describe` and `list`: the group's state, members and per-partition lag,
//! built as plain data from the coordinator's and the leaders' answers (pure, testable), then
//! rendered as tables or JSON.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::client::{GroupState, Listed, LogOffsets};
use super::proto::Committed;
use super::table::{self, opt};

#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub group: String,
    /// `classic`, or `consumer` for the KIP-848 protocol.
    pub group_type: String,
    pub state: String,
    pub protocol_type: String,
    /// The classic protocol's assignor, or a consumer group's server assignor.
    pub protocol: String,
    /// A consumer group's epoch and target assignment epoch.
    pub group_epoch: Option<i32>,
    pub assignment_epoch: Option<i32>,
    pub members: Vec<Member>,
    pub partitions: Vec<PartitionLag>,
    /// Sum of the lags that are known (partitions without a committed offset count 0).
    pub total_lag: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<Assigned>,
    /// A consumer group member's epoch and the assignment it is reconciling toward.
    pub member_epoch: Option<i32>,
    pub target_assignment: Option<Vec<Assigned>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assigned {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Committed offset; `None` (shown `-`) when the group has committed nothing here.
    pub committed: Option<i64>,
    /// `None` when the topic or partition no longer exists.
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
}

/// Topics whose log offsets a description needs: those committed or assigned.
pub fn topics_of(state: &GroupState, committed: &[Committed]) -> Vec<String> {
    let mut topics: Vec<String> = committed.iter().map(|c| c.topic.clone()).collect();
    for m in &state.members {
        topics.extend(m.assignment.iter().map(|(t, _)| t.clone()));
    }
    topics.sort();
    topics.dedup();
    topics
}

/// Joins the group's state, its committed offsets and the topics' log offsets.
pub fn build(
    group: &str,
    state: &GroupState,
    committed: &[Committed],
    logs: &HashMap<String, LogOffsets>,
) -> Description {
    // (topic, partition) → (committed, owner).
    let mut rows: BTreeMap<(String, i32), (Option<i64>, Option<String>)> = BTreeMap::new();
    for c in committed {
        rows.entry((c.topic.clone(), c.partition)).or_default().0 = c.offset;
    }
    for m in &state.members {
        for (t, ps) in &m.assignment {
            for &p in ps {
                rows.entry((t.clone(), p)).or_default().1 = Some(m.member_id.clone());
            }
        }
    }
    let partitions: Vec<PartitionLag> = rows
        .into_iter()
        .map(|((topic, partition), (committed, member_id))| {
            let log_end = logs
                .get(&topic)
                .and_then(|l| usize::try_from(partition).ok().and_then(|i| l.end.get(i)))
                .copied();
            let lag = committed.zip(log_end).map(|(c, e)| e - c);
            PartitionLag {
                topic,
                partition,
                committed,
                log_end,
                lag,
                member_id,
            }
        })
        .collect();
    let total_lag = partitions.iter().filter_map(|p| p.lag).sum();
    // Kafka shows a group that only has committed offsets as Empty, not Dead.
    let shown_state = if !state.exists() && !committed.is_empty() {
        "Empty".to_string()
    } else {
        state.state.clone()
    };
    Description {
        group: group.to_string(),
        group_type: if state.epochs.is_some() {
            "consumer"
        } else {
            "classic"
        }
        .to_string(),
        state: shown_state,
        protocol_type: state.protocol_type.clone(),
        protocol: state.protocol.clone(),
        group_epoch: state.epochs.map(|e| e.0),
        assignment_epoch: state.epochs.map(|e| e.1),
        members: state
            .members
            .iter()
            .map(|m| Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                assignment: assigned(&m.assignment),
                member_epoch: m.member_epoch,
                target_assignment: m.member_epoch.map(|_| assigned(&m.target)),
            })
            .collect(),
        partitions,
        total_lag,
    }
}

fn assigned(a: &[(String, Vec<i32>)]) -> Vec<Assigned> {
    a.iter()
        .map(|(t, ps)| Assigned {
            topic: t.clone(),
            partitions: ps.clone(),
        })
        .collect()
}

/// `t:0,1 u:3`, or `-` for no partitions.
fn assignment_cell(a: &[Assigned]) -> String {
    if a.is_empty() {
        return "-".to_string();
    }
    a.iter()
        .map(|t| {
            let ps: Vec<String> = t.partitions.iter().map(i32::to_string).collect();
            format!("{}:{}", t.topic, ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// The human-readable description: a header line, the members, the partitions, total lag.
pub fn render(d: &Description) -> String {
    let protocol = match (d.protocol_type.as_str(), d.protocol.as_str()) {
        ("", "") => "-".to_string(),
        (t, "") => t.to_string(),
        (t, p) => format!("{t}/{p}"),
    };
    let mut out = match (d.group_epoch, d.assignment_epoch) {
        (Some(epoch), Some(target)) => format!(
            "GROUP {}  TYPE consumer  STATE {}  ASSIGNOR {}  GROUP-EPOCH {epoch}  ASSIGNMENT-EPOCH {target}  MEMBERS {}\n\n",
            d.group,
            d.state,
            dash_if_empty(&d.protocol),
            d.members.len()
        ),
        _ => format!(
            "GROUP {}  STATE {}  PROTOCOL {}  MEMBERS {}\n\n",
            d.group,
            d.state,
            protocol,
            d.members.len()
        ),
    };
    if d.group_epoch.is_some() && !d.members.is_empty() {
        out.push_str(&render_consumer_members(&d.members));
        out.push('\n');
    } else if !d.members.is_empty() {
        let rows: Vec<Vec<String>> = d
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                    dash_if_empty(&m.client_id),
                    dash_if_empty(&m.host),
                    assignment_cell(&m.assignment),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &[
                "MEMBER-ID",
                "GROUP-INSTANCE-ID",
                "CLIENT-ID",
                "HOST",
                "ASSIGNMENT",
            ],
            &rows,
        ));
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                opt(p.committed),
                opt(p.log_end),
                opt(p.lag),
                p.member_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
        ],
        &rows,
    ));
    out.push_str(&format!("\nTOTAL LAG {}\n", d.total_lag));
    out
}

/// A consumer group's members: epochs, and the assignment next to its target.
fn render_consumer_members(members: &[Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.member_id.clone(),
                m.group_instance_id.clone().unwrap_or_else(|| "-".into()),
                m.member_epoch.map_or("-".into(), |e| e.to_string()),
                dash_if_empty(&m.client_id),
                dash_if_empty(&m.host),
                assignment_cell(&m.assignment),
                assignment_cell(m.target_assignment.as_deref().unwrap_or(&[])),
            ]
        })
        .collect();
    table::render(
        &[
            "MEMBER-ID",
            "GROUP-INSTANCE-ID",
            "MEMBER-EPOCH",
            "CLIENT-ID",
            "HOST",
            "ASSIGNMENT",
            "TARGET-ASSIGNMENT",
        ],
        &rows,
    )
}

/// `sluice group list` as a table.
pub fn render_list(groups: &[Listed]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                dash_if_empty(&g.state),
                dash_if_empty(&g.protocol_type),
                dash_if_empty(&g.group_type),
            ]
        })
        .collect();
    table::render(&["GROUP", "STATE", "PROTOCOL-TYPE", "TYPE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::client::MemberState;

    fn state() -> GroupState {
        GroupState {
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members: vec![
                MemberState {
                    member_id: "m-1".into(),
                    group_instance_id: None,
                    client_id: "app".into(),
                    host: "/127.0.0.1".into(),
                    assignment: vec![("t".into(), vec![0])],
                    ..MemberState::default()
                },
                MemberState {
                    member_id: "m-2".into(),
                    group_instance_id: Some("i-2".into()),
                    client_id: "app".into(),
                    host: "/127.0.0.1".into(),
                    assignment: vec![("t".into(), vec![1, 2])],
                    ..MemberState::default()
                },
            ],
            ..GroupState::default()
        }
    }

    fn committed(t: &str, p: i32, o: Option<i64>) -> Committed {
        Committed {
            topic: t.into(),
            partition: p,
            offset: o,
        }
    }

    #[test]
    fn lag_joins_committed_assigned_and_log_end() {
        let logs = HashMap::from([(
            "t".to_string(),
            LogOffsets {
                start: vec![0, 0, 0],
                end: vec![10, 20, 5],
            },
        )]);
        let c = vec![
            committed("t", 0, Some(4)),
            committed("t", 1, Some(20)),
            committed("gone", 0, Some(3)),
        ];
        let d = build("g", &state(), &c, &logs);
        let lags: Vec<_> = d
            .partitions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition, p.committed, p.log_end, p.lag))
            .collect();
        assert_eq!(
            lags,
            vec![
                ("gone", 0, Some(3), None, None),
                ("t", 0, Some(4), Some(10), Some(6)),
                ("t", 1, Some(20), Some(20), Some(0)),
                ("t", 2, None, Some(5), None),
            ]
        );
        assert_eq!(d.total_lag, 6);
        assert_eq!(d.partitions[3].member_id.as_deref(), Some("m-2"));
        assert_eq!(d.partitions[0].member_id, None);
        let text = render(&d);
        assert!(text.starts_with("GROUP g  STATE Stable  PROTOCOL consumer/range  MEMBERS 2\n"));
        assert!(
            text.contains("m-2        i-2                app        /127.0.0.1  t:1,2\n"),
            "{text}"
        );
        assert!(
            text.contains("t      2          -               5               -    m-2\n"),
            "{text}"
        );
        assert!(text.ends_with("\nTOTAL LAG 6\n"));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["partitions"][3]["committed"], serde_json::Value::Null);
        assert_eq!(json["members"][1]["assignment"][0]["partitions"][1], 2);
    }

    #[test]
    fn offsets_only_group_shows_as_empty() {
        let dead = GroupState {
            state: "Dead".into(),
            ..GroupState::default()
        };
        let d = build("g", &dead, &[committed("t", 0, Some(1))], &HashMap::new());
        assert_eq!(d.state, "Empty");
        assert!(render(&d).contains("PROTOCOL -  MEMBERS 0"));
        assert_eq!(build("g", &dead, &[], &HashMap::new()).state, "Dead");
    }

    #[test]
    fn consumer_groups_show_epochs_and_targets() {
        let mut s = state();
        s.state = "Reconciling".into();
        s.protocol = "uniform".into();
        s.epochs = Some((4, 4));
        s.members[0].member_epoch = Some(4);
        s.members[0].target = vec![("t".into(), vec![0])];
        s.members[1].member_epoch = Some(3);
        s.members[1].target = vec![("t".into(), vec![1])];
        let d = build("g", &s, &[], &HashMap::new());
        let text = render(&d);
        assert!(
            text.starts_with("GROUP g  TYPE consumer  STATE Reconciling  ASSIGNOR uniform  GROUP-EPOCH 4  ASSIGNMENT-EPOCH 4  MEMBERS 2\n"),
            "{text}"
        );
        assert!(text.contains("MEMBER-EPOCH"), "{text}");
        assert!(
            text.contains("3             app        /127.0.0.1  t:1,2       t:1\n"),
            "{text}"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["group_type"], "consumer");
        assert_eq!(json["members"][1]["member_epoch"], 3);
        assert_eq!(
            json["members"][1]["target_assignment"][0]["partitions"][0],
            1
        );
    }
}

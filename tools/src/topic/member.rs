//! `sluice topic consume --group G`: one classic-protocol consumer group member, blocking
//! and short-lived — join (KIP-394's member id round included), take the range
//! assignment (computed here when this member leads), read from the group's committed
//! offsets, commit what it read, leave. A command that reads for longer than the session
//! timeout without heartbeating would be evicted; it reads to the high watermark it saw at
//! the start, so it finishes well within it.

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::ApiKey;

use crate::bench::wire::{error_name, AdminConn};
use crate::group::client::Client as GroupClient;
use crate::group::proto::{self, code};

const CLIENT_ID: &str = "sluice-topic";
/// JoinGroup rounds before giving up (a member id round, rebalances under way).
const JOIN_ROUNDS_MAX: usize = 8;
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// How long the coordinator waits for other members to rejoin.
const REBALANCE_TIMEOUT_MS: i32 = 10_000;

/// A member of `group` with its generation and assigned partitions of one topic.
pub struct Member {
    conn: AdminConn,
    group: String,
    member_id: String,
    generation: i32,
    pub partitions: Vec<i32>,
}

impl Member {
    /// Joins `group` subscribed to `topic` (of `partitions` partitions).
    pub fn join(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Result<Member> {
        let coordinator = GroupClient::connect(bootstrap)?.coordinator(group)?;
        let conn = AdminConn::connect_as(&coordinator, CLIENT_ID)
            .with_context(|| format!("the coordinator of group {group}"))?;
        let mut m = Member {
            conn,
            group: group.to_string(),
            member_id: String::new(),
            generation: -1,
            partitions: Vec::new(),
        };
        let subscription = proto::encode_subscription(&[topic.to_string()])?;
        let mut last = code::NONE;
        for _ in 0..JOIN_ROUNDS_MAX {
            let req = proto::join_request(
                group,
                &m.member_id,
                subscription.clone(),
                SESSION_TIMEOUT_MS,
                REBALANCE_TIMEOUT_MS,
            );
            let resp = m.conn.send(&req).context("JoinGroup")?;
            match resp.error_code {
                code::NONE => {}
                code::MEMBER_ID_REQUIRED => {
                    m.member_id = resp.member_id.to_string();
                    last = resp.error_code;
                    continue;
                }
                code::UNKNOWN_MEMBER_ID | code::REBALANCE_IN_PROGRESS => {
                    last = resp.error_code;
                    continue;
                }
                e => bail!("JoinGroup to group {group}: {}", error_name(e)),
            }
            m.member_id = resp.member_id.to_string();
            m.generation = resp.generation_id;
            let assignments = if resp.leader.as_str() == m.member_id {
                proto::range_assignments(&resp.members, topic, partitions)?
            } else {
                Vec::new()
            };
            let version = m.conn.version(ApiKey::SyncGroup)?;
            let req = proto::sync_request(version, group, m.generation, &m.member_id, assignments);
            let resp = m.conn.send(&req).context("SyncGroup")?;
            match resp.error_code {
                code::NONE => {
                    m.partitions = proto::decode_assignment(&resp.assignment)?
                        .into_iter()
                        .filter(|(t, _)| t == topic)
                        .flat_map(|(_, ps)| ps)
                        .filter(|p| (0..partitions).contains(p))
                        .collect();
                    m.partitions.sort_unstable();
                    return Ok(m);
                }
                code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => last = resp.error_code,
                e => bail!("SyncGroup in group {group}: {}", error_name(e)),
            }
        }
        bail!(
            "group {group}: no generation after {JOIN_ROUNDS_MAX} JoinGroup rounds (last error {})",
            error_name(last)
        )
    }

    /// The group's committed offset of each of `partitions` of `topic` (`None`: none).
    pub fn committed(&mut self, topic: &str) -> Result<Vec<(i32, Option<i64>)>> {
        let asked = [(topic.to_string(), self.partitions.clone())];
        let resp = self
            .conn
            .send(&proto::offset_fetch_request(&self.group, Some(&asked)))
            .context("OffsetFetch")?;
        let committed = proto::committed_of(&resp)
            .map_err(|e| anyhow!("OffsetFetch in group {}: {}", self.group, error_name(e)))?;
        Ok(self
            .partitions
            .iter()
            .map(|p| {
                let at = committed
                    .iter()
                    .find(|c| c.topic == topic && c.partition == *p)
                    .and_then(|c| c.offset)
                    .filter(|o| *o >= 0);
                (*p, at)
            })
            .collect())
    }

    /// Commits `offsets` (topic, partition, next offset) as this member, then leaves.
    pub fn commit_and_leave(mut self, offsets: &[(String, i32, i64)]) -> Result<()> {
        if !offsets.is_empty() {
            let req = proto::offset_commit_request(
                &self.group,
                self.generation,
                &self.member_id,
                offsets,
            );
            let resp = self.conn.send(&req).context("OffsetCommit")?;
            if let Some((t, p, e)) = proto::commit_error(&resp) {
                bail!(
                    "OffsetCommit of {t}-{p} in group {}: {}",
                    self.group,
                    error_name(e)
                );
            }
        }
        let version = self.conn.version(ApiKey::LeaveGroup)?;
        let resp = self
            .conn
            .send(&proto::leave_request(version, &self.group, &self.member_id))
            .context("LeaveGroup")?;
        let member_error = resp.members.first().map_or(code::NONE, |m| m.error_code);
        for e in [resp.error_code, member_error] {
            if e != code::NONE && e != code::UNKNOWN_MEMBER_ID {
                bail!("LeaveGroup from group {}: {}", self.group, error_name(e));
            }
        }
        Ok(())
    }
}

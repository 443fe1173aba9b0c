//! The checker: one pass over a whole history ([`super::history`]) into a [`Report`] of
//! anomalies, each kind with a count and its first examples, and of availability (the
//! longest time without a successful acknowledgement, per fault kind).
//!
//! What is an anomaly (goal: none):
//! - `lost`: an acknowledged message is not in the final log at its offset (or, acknowledged
//!   without an offset, nowhere in its partition);
//! - `duplicate`: a message is in the final log more than once;
//! - `order`: one producer's messages in a partition of the final log, or its acknowledged
//!   offsets, are not in the order it sent them;
//! - `phantom`: a message read (by a reader or the final read-back) that was never sent,
//!   or a payload that is not ours;
//! - `failed-read`: a message read whose delivery failed definitely (the broker refused it);
//!   reading one whose outcome was unknown (timed out) is allowed and only counted;
//! - `read-mismatch`: a reader polled a message at an offset where the final log has another
//!   (what a reader saw was later rewritten: a stale or uncommitted read);
//! - `reader-backwards`: a reader's offsets in a partition do not increase within one
//!   assignment;
//! - `commit-backwards`: a group's successful commits of a partition go back;
//! - `group-skipped`: a message below the group's final committed offset that no reader
//!   ever polled (committed past but never delivered);
//! - `producer-fatal`: an idempotent producer gave up (its client's fatal error).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::history::{producer_of, Event, Failure, MsgId, Op};

/// Examples kept per anomaly kind.
pub const EXAMPLES_MAX: usize = 5;

/// Every anomaly kind, in report order.
pub const ANOMALY_KINDS: &[&str] = &[
    "lost",
    "duplicate",
    "order",
    "phantom",
    "failed-read",
    "read-mismatch",
    "reader-backwards",
    "commit-backwards",
    "group-skipped",
    "producer-fatal",
];

/// The fault kind of time outside every fault.
pub const NO_FAULT: &str = "none";

#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Operations by kind (`send`, `ack`, `fail`, `read`, `commit`, `final`).
    pub ops: BTreeMap<&'static str, u64>,
    /// Faults injected by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Anomalies by kind: how many, and the first few.
    pub anomalies: BTreeMap<&'static str, (u64, Vec<String>)>,
    /// The longest time without any acknowledgement that began in or overlapped a fault of
    /// each kind (`none`: outside every fault).
    pub unavailable: BTreeMap<&'static str, Duration>,
    /// Reads of messages whose delivery outcome was unknown (allowed).
    pub indeterminate_reads: u64,
    /// The first messages an anomaly was about (partition, id), for [`around`].
    pub suspects: Vec<(i32, MsgId)>,
    /// Not anomalies of the broker: messages librdkafka itself sent again under a new
    /// producer epoch after it bumped the epoch (KIP-360) while they were unacknowledged
    /// (see docs/fault-testing.md), by kind (`duplicate`, `order`): how many, examples.
    pub client_resends: BTreeMap<&'static str, (u64, Vec<String>)>,
}

impl Report {
    fn anomaly(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let e = self.anomalies.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES_MAX {
            e.1.push(example());
        }
    }

    fn client_resend(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let e = self.client_resends.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES_MAX {
            e.1.push(example());
        }
    }

    fn suspect(&mut self, partition: i32, id: MsgId) {
        if self.suspects.len() < EXAMPLES_MAX {
            self.suspects.push((partition, id));
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.anomalies.get(kind).map_or(0, |(n, _)| *n)
    }

    pub fn total_anomalies(&self) -> u64 {
        self.anomalies.values().map(|(n, _)| n).sum()
    }

    /// The report as text tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| fault | injected | longest without acks (ms) |\n|---|---|---|\n");
        let mut kinds: BTreeSet<&str> = self.faults.keys().copied().collect();
        kinds.extend(self.unavailable.keys().copied());
        for k in kinds {
            let n = self.faults.get(k).copied().unwrap_or(0);
            let gap = self.unavailable.get(k).map_or(0, Duration::as_millis);
            out.push_str(&format!("| {k} | {n} | {gap} |\n"));
        }
        out.push_str("\n| operation | count |\n|---|---|\n");
        for (k, n) in &self.ops {
            out.push_str(&format!("| {k} | {n} |\n"));
        }
        out.push_str(&format!(
            "| read of a message whose delivery timed out (allowed) | {} |\n",
            self.indeterminate_reads
        ));
        out.push_str("\n| anomaly | count | first examples |\n|---|---|---|\n");
        for k in ANOMALY_KINDS {
            let (n, ex) = self.anomalies.get(k).cloned().unwrap_or_default();
            out.push_str(&format!("| {k} | {n} | {} |\n", ex.join("; ")));
        }
        for (k, (n, ex)) in &self.client_resends {
            out.push_str(&format!(
                "| (client) {k} resent by librdkafka after an epoch bump | {n} | {} |\n",
                ex.join("; ")
            ));
        }
        out
    }
}

/// What the history says about each message id.
#[derive(Default)]
struct Writes {
    sent: HashMap<MsgId, i32>,
    sent_at: HashMap<MsgId, Duration>,
    acked: Vec<(MsgId, i32, i64)>,
    acked_at: HashMap<MsgId, Duration>,
    failed: HashMap<MsgId, Failure>,
    /// When each producer client bumped its epoch (from its idempotence log).
    bumps: BTreeMap<u64, Vec<Duration>>,
}

impl Writes {
    /// Whether `id`'s client bumped its epoch between sending it and its (last)
    /// acknowledgement: librdkafka then renumbers and sends again every message not yet
    /// acknowledged, written or not.
    fn resent_after_bump(&self, id: MsgId) -> bool {
        let Some(sent) = self.sent_at.get(&id) else {
            return false;
        };
        let until = self.acked_at.get(&id).copied().unwrap_or(Duration::MAX);
        self.bumps
            .get(&producer_of(id))
            .is_some_and(|b| b.iter().any(|t| t >= sent && *t <= until))
    }
}

/// Checks a whole history.
pub fn check(events: &[Event]) -> Report {
    let mut r = Report::default();
    let mut w = Writes::default();
    for e in events {
        count_op(&mut r, &e.op);
        match &e.op {
            Op::Send { id, partition } => {
                w.sent.insert(*id, *partition);
                w.sent_at.entry(*id).or_insert(e.at);
            }
            Op::Ack {
                id,
                partition,
                offset,
            } => {
                w.acked.push((*id, *partition, *offset));
                w.acked_at.insert(*id, e.at);
            }
            Op::ClientLog { producer, line } if line.contains("bumped epoch") => {
                w.bumps.entry(*producer).or_default().push(e.at);
            }
            Op::Fail { id, failure, .. } => {
                w.failed.insert(*id, failure.clone());
            }
            Op::ProducerFatal { producer, error } => {
                r.anomaly("producer-fatal", || format!("producer {producer}: {error}"));
            }
            _ => {}
        }
    }
    let log = final_log(events);
    check_writes(&mut r, &w, &log);
    check_reads(&mut r, &w, events, &log);
    check_commits(&mut r, events, &log);
    r.unavailable = unavailability(events);
    r
}

fn count_op(r: &mut Report, op: &Op) {
    let kind = match op {
        Op::Send { .. } => "send",
        Op::Ack { .. } => "ack",
        Op::Fail { .. } => "fail",
        Op::Read { .. } | Op::Foreign { .. } => "read",
        Op::Commit { .. } => "commit",
        Op::Final { .. } => "final read",
        Op::FaultStart { kind, .. } => {
            *r.faults.entry(kind).or_default() += 1;
            return;
        }
        _ => return,
    };
    *r.ops.entry(kind).or_default() += 1;
}

/// The final read-back: partition → offset → message (None: not ours).
type Log = BTreeMap<i32, BTreeMap<i64, Option<MsgId>>>;

fn final_log(events: &[Event]) -> Log {
    let mut log = Log::new();
    for e in events {
        if let Op::Final {
            partition,
            offset,
            id,
        } = &e.op
        {
            log.entry(*partition).or_default().insert(*offset, *id);
        }
    }
    log
}

/// Lost, duplicated and reordered writes; phantoms in the final log.
fn check_writes(r: &mut Report, w: &Writes, log: &Log) {
    let mut seen: HashMap<MsgId, (i32, i64)> = HashMap::new();
    for (p, msgs) in log {
        // The last id of each producer in this partition, for the order check.
        let mut last: BTreeMap<u64, (i64, MsgId)> = BTreeMap::new();
        for (o, id) in msgs {
            let Some(id) = id else {
                r.anomaly("phantom", || format!("final log p{p}@{o}: not our payload"));
                continue;
            };
            check_read_of(r, w, *id, || format!("final log p{p}@{o}"));
            let resent = w.resent_after_bump(*id);
            let copy = seen.insert(*id, (*p, *o));
            if let Some((p0, o0)) = copy {
                let example = || format!("id {id} at p{p0}@{o0} and p{p}@{o}");
                if resent {
                    r.client_resend("duplicate", example);
                } else {
                    r.anomaly("duplicate", example);
                    r.suspect(*p, *id);
                }
            }
            let producer = producer_of(*id);
            if let Some((o0, id0)) = last.insert(producer, (*o, *id)) {
                if id0 > *id {
                    let example =
                        || format!("final log p{p}: id {id0} at {o0} before id {id} at {o}");
                    if copy.is_some() && resent {
                        r.client_resend("order", example);
                    } else {
                        r.anomaly("order", example);
                    }
                }
            }
        }
    }
    let in_partition: BTreeMap<i32, BTreeSet<MsgId>> = log
        .iter()
        .map(|(p, m)| (*p, m.values().flatten().copied().collect()))
        .collect();
    // Acknowledged offsets in send order, per producer and partition.
    let mut acked_at: BTreeMap<(u64, i32), BTreeMap<MsgId, i64>> = BTreeMap::new();
    for (id, p, o) in &w.acked {
        let found = if *o >= 0 {
            log.get(p).and_then(|m| m.get(o)).copied().flatten()
        } else {
            in_partition.get(p).and_then(|s| s.get(id)).copied()
        };
        if found != Some(*id) {
            r.anomaly("lost", || {
                format!("id {id} acknowledged at p{p}@{o}, final log has {found:?}")
            });
            r.suspect(*p, *id);
        }
        if *o >= 0 {
            acked_at
                .entry((producer_of(*id), *p))
                .or_default()
                .insert(*id, *o);
        }
    }
    for ((producer, p), by_id) in &acked_at {
        let offsets: Vec<(&MsgId, &i64)> = by_id.iter().collect();
        for pair in offsets.windows(2) {
            let ((id0, o0), (id1, o1)) = (pair[0], pair[1]);
            if o0 >= o1 {
                r.anomaly("order", || {
                    format!("producer {producer} p{p}: id {id0} acknowledged at {o0}, later id {id1} at {o1}")
                });
            }
        }
    }
}

/// A read of `id`: never sent, or failed definitely, is an anomaly; failed with an
/// unknown outcome is counted.
fn check_read_of(r: &mut Report, w: &Writes, id: MsgId, at: impl Fn() -> String) {
    if !w.sent.contains_key(&id) {
        r.anomaly("phantom", || format!("{}: id {id} never sent", at()));
        return;
    }
    match w.failed.get(&id) {
        Some(Failure::Definite(e)) => {
            r.anomaly("failed-read", || {
                format!("{}: id {id}, whose delivery failed: {e}", at())
            });
        }
        Some(Failure::Indeterminate(_)) => r.indeterminate_reads += 1,
        None => {}
    }
}

/// What the group's readers polled: against the final log, and in order per assignment.
fn check_reads(r: &mut Report, w: &Writes, events: &[Event], log: &Log) {
    // (reader, partition) → the last offset polled in its current assignment.
    let mut position: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    for e in events {
        match &e.op {
            Op::Assigned { reader, .. } | Op::Revoked { reader } => {
                position.retain(|(rd, _), _| rd != reader);
            }
            Op::Foreign {
                reader,
                partition,
                offset,
            } => {
                r.anomaly("phantom", || {
                    format!("reader {reader} p{partition}@{offset}: not our payload")
                });
            }
            Op::Read {
                reader,
                partition,
                offset,
                id,
            } => {
                let (p, o) = (*partition, *offset);
                check_read_of(r, w, *id, || format!("reader {reader} p{p}@{o}"));
                // Read-back reaches every offset a reader saw; a reader's offset beyond
                // the final log is a mismatch too.
                let there = log.get(&p).and_then(|m| m.get(&o)).copied().flatten();
                if there != Some(*id) {
                    r.anomaly("read-mismatch", || {
                        format!("reader {reader} read id {id} at p{p}@{o}; final log has {there:?}")
                    });
                }
                if let Some(prev) = position.insert((*reader, p), o) {
                    if prev >= o {
                        r.anomaly("reader-backwards", || {
                            format!("reader {reader} p{p}: offset {prev} then {o} at {:?}", e.at)
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// The group's commits: never back, and nothing below the final one left undelivered.
fn check_commits(r: &mut Report, events: &[Event], log: &Log) {
    let mut committed: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
    let mut delivered: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for e in events {
        match &e.op {
            Op::Commit {
                reader,
                partition,
                offset,
                ok: true,
            } => {
                if let Some((prev, by)) = committed.insert(*partition, (*offset, *reader)) {
                    if prev > *offset {
                        r.anomaly("commit-backwards", || {
                            format!("p{partition}: reader {by} committed {prev}, then reader {reader} {offset} at {:?}", e.at)
                        });
                    }
                }
            }
            Op::Read {
                partition, offset, ..
            } => {
                delivered.entry(*partition).or_default().insert(*offset);
            }
            _ => {}
        }
    }
    for e in events {
        let Op::FinalCommitted { partition, offset } = &e.op else {
            continue;
        };
        let Some(msgs) = log.get(partition) else {
            continue;
        };
        let seen = delivered.get(partition);
        for (o, _) in msgs.range(..*offset) {
            if !seen.is_some_and(|s| s.contains(o)) {
                r.anomaly("group-skipped", || {
                    format!("p{partition}@{o}: below the group's committed {offset}, never polled")
                });
            }
        }
    }
}

/// The history around `id` in `partition`, as text: every fault; every event of that
/// partition from 3 s before the first event about `id` to 3 s after the last; the final
/// log within 10 offsets of each place `id` is in it (for a failure's report).
pub fn around(events: &[Event], partition: i32, id: MsgId) -> String {
    let about = |op: &Op| match op {
        Op::Send { id: i, .. } | Op::Ack { id: i, .. } | Op::Fail { id: i, .. } => *i == id,
        Op::Read { id: i, .. } | Op::Final { id: Some(i), .. } => *i == id,
        _ => false,
    };
    let times: Vec<Duration> = events
        .iter()
        .filter(|e| about(&e.op))
        .map(|e| e.at)
        .collect();
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return format!("nothing about id {id}\n");
    };
    let (from, to) = (
        first.saturating_sub(Duration::from_secs(3)),
        *last + Duration::from_secs(3),
    );
    let places: Vec<i64> = events
        .iter()
        .filter_map(|e| match &e.op {
            Op::Final {
                partition: p,
                offset,
                id: Some(i),
            } if *p == partition && *i == id => Some(*offset),
            _ => None,
        })
        .collect();
    let mut out = String::new();
    for e in events {
        let keep = match &e.op {
            Op::FaultStart { .. } | Op::FaultEnd { .. } | Op::ProducerFatal { .. } => true,
            // Few (bounded per client): all of them.
            Op::ClientLog { .. } => true,
            Op::Final {
                partition: p,
                offset,
                ..
            } => *p == partition && places.iter().any(|o| (offset - o).abs() <= 10),
            Op::Send { partition: p, .. }
            | Op::Ack { partition: p, .. }
            | Op::Fail { partition: p, .. }
            | Op::Read { partition: p, .. }
            | Op::Commit { partition: p, .. } => *p == partition && e.at >= from && e.at <= to,
            Op::Assigned { .. } | Op::Revoked { .. } => e.at >= from && e.at <= to,
            _ => false,
        };
        if keep {
            out.push_str(&format!("{:>10.3} {:?}\n", e.at.as_secs_f64(), e.op));
        }
    }
    out
}

/// The longest gap between consecutive acknowledgements (any partition), per fault kind:
/// a gap belongs to the first fault whose span (start to heal) overlaps it, else to
/// [`NO_FAULT`]. The time before the first acknowledgement is not counted.
pub fn unavailability(events: &[Event]) -> BTreeMap<&'static str, Duration> {
    let mut spans: Vec<(&'static str, Duration, Duration)> = Vec::new();
    let mut open: Option<(&'static str, Duration)> = None;
    let mut acks: Vec<Duration> = Vec::new();
    let mut last = Duration::ZERO;
    for e in events {
        last = e.at;
        match &e.op {
            Op::FaultStart { kind, .. } => open = Some((kind, e.at)),
            Op::FaultEnd { .. } => {
                if let Some((k, from)) = open.take() {
                    spans.push((k, from, e.at));
                }
            }
            Op::Ack { .. } => acks.push(e.at),
            _ => {}
        }
    }
    if let Some((k, from)) = open {
        spans.push((k, from, last));
    }
    let mut out: BTreeMap<&'static str, Duration> = BTreeMap::new();
    for pair in acks.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let kind = spans
            .iter()
            .find(|(_, from, to)| *from <= b && *to >= a)
            .map_or(NO_FAULT, |(k, _, _)| k);
        let longest = out.entry(kind).or_default();
        *longest = (*longest).max(b - a);
    }
    out
}

//! The faults, and a seeded schedule of them: a [`Nemesis`] owns the cluster and its
//! network, picks a fault kind and its target (a partition's leader, a follower, the
//! active controller, several nodes) from its seed, injects it, holds it, heals it and
//! waits until the cluster serves again before the next one. Every fault's start and end
//! go into the history.
//!
//! Waits are on observed state (the cluster's own reports, acknowledgements), bounded by
//! hang guards; hold times come from the seed and decide nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::history::{History, Op};
use super::net::Net;
use super::proxy::{End, LinkState, Plane};
use crate::common::cluster::{Cluster, ClusterSpec};
use crate::common::HANG_GUARD;

/// Every fault kind, in report order.
pub const FAULT_KINDS: &[&str] = &[
    "kill-leader",
    "kill-controller",
    "kill-two",
    "pause-leader",
    "pause-controller",
    "term-leader",
    "term-follower",
    "partition-leader",
    "isolate-controller",
    "split-all",
    "isolate-node",
    "one-way",
    "delay",
    "reset",
    "flap",
];

const BOTH: &[Plane] = &[Plane::Kafka, Plane::Controller];

/// A guard on a SIGTERM's exit (controlled shutdown may wait on the controller).
const STOP_GUARD: Duration = Duration::from_secs(60);

/// How the schedule runs.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub seed: u64,
    /// Faults are started until this much time has passed (the last one is still healed).
    pub duration: Duration,
    /// Each fault is held between these (from the seed).
    pub hold_ms: (u64, u64),
}

pub struct Nemesis {
    pub cluster: Cluster,
    pub net: Net,
    pub history: Arc<History>,
    rng: fastrand::Rng,
    /// Nodes stopped (SIGSTOP) or down (killed or terminated) by the current fault.
    paused: BTreeSet<usize>,
    down: BTreeSet<usize>,
    /// The topic whose partitions' leaders faults aim at.
    topic: String,
}

impl Nemesis {
    /// Starts a cluster whose every connection goes through the proxies, and waits until
    /// it is up.
    pub fn start(name: &str, spec: ClusterSpec, seed: u64, topic: &str) -> Nemesis {
        let mut cluster = Cluster::prepare(name, spec);
        let net = Net::wire(&mut cluster);
        for id in cluster.ids() {
            cluster.start_node(id);
        }
        net.note_pids(&cluster);
        cluster.wait_all_active(HANG_GUARD);
        Nemesis {
            cluster,
            net,
            history: Arc::new(History::default()),
            rng: fastrand::Rng::with_seed(seed),
            paused: BTreeSet::new(),
            down: BTreeSet::new(),
            topic: topic.to_string(),
        }
    }

    /// A running node to ask about the cluster.
    fn asked(&mut self) -> usize {
        let live: Vec<usize> = self
            .cluster
            .live()
            .into_iter()
            .filter(|i| !self.paused.contains(i))
            .collect();
        live[self.rng.usize(..live.len())]
    }

    /// The leader of a partition (from the seed) as a live node reports it.
    fn some_leader(&mut self) -> usize {
        let asked = self.asked();
        let parts = self.cluster.wait("a partition leader", HANG_GUARD, || {
            let (_, parts) = self.cluster.metadata(asked, &self.topic)?;
            let leaders: Vec<usize> = parts
                .values()
                .filter(|p| p.leader > 0)
                .map(|p| p.leader as usize)
                .collect();
            (!leaders.is_empty()).then_some(leaders)
        });
        parts[self.rng.usize(..parts.len())]
    }

    /// The active controller as a live node reports it.
    fn controller(&mut self) -> usize {
        let asked = self.asked();
        self.cluster.wait("the active controller", HANG_GUARD, || {
            self.cluster.controller_leader(asked)
        })
    }

    fn other_than(&mut self, not: usize) -> usize {
        let others: Vec<usize> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|i| *i != not)
            .collect();
        others[self.rng.usize(..others.len())]
    }

    fn kill(&mut self, id: usize) {
        self.cluster.kill(id);
        self.down.insert(id);
    }

    fn term(&mut self, id: usize) {
        self.cluster.stop(id, STOP_GUARD);
        self.down.insert(id);
    }

    fn pause(&mut self, id: usize) {
        self.cluster.signal(id, libc::SIGSTOP);
        self.paused.insert(id);
    }

    /// Records the start of fault `kind` on `what` (before it is applied, so the time it
    /// takes to apply counts as the fault's).
    fn begin(&self, kind: &'static str, what: String) {
        eprintln!("nemesis: at {:?}: {kind}: {what}", self.history.elapsed());
        self.history.record(Op::FaultStart { kind, what });
    }

    /// Injects one fault of `kind` (recording its start).
    pub fn inject(&mut self, kind: &'static str) {
        let n = |i: usize| End::Node(i);
        match kind {
            "kill-leader" => {
                let l = self.some_leader();
                self.begin(kind, format!("SIGKILL leader {l}"));
                self.kill(l);
            }
            "kill-controller" => {
                let c = self.controller();
                self.begin(kind, format!("SIGKILL controller {c}"));
                self.kill(c);
            }
            "kill-two" => {
                let a = self.some_leader();
                let b = self.other_than(a);
                self.begin(kind, format!("SIGKILL {a} and {b}"));
                self.kill(a);
                self.kill(b);
            }
            "pause-leader" => {
                let l = self.some_leader();
                self.begin(kind, format!("SIGSTOP leader {l}"));
                self.pause(l);
            }
            "pause-controller" => {
                let c = self.controller();
                self.begin(kind, format!("SIGSTOP controller {c}"));
                self.pause(c);
            }
            "term-leader" => {
                let l = self.some_leader();
                self.begin(kind, format!("SIGTERM leader {l}"));
                self.term(l);
            }
            "term-follower" => {
                let l = self.some_leader();
                let f = self.other_than(l);
                self.begin(kind, format!("SIGTERM follower {f} (of leader {l})"));
                self.term(f);
            }
            "partition-leader" => {
                // The leader cut from the other nodes; clients still reach every node.
                let l = self.some_leader();
                self.begin(kind, format!("leader {l} cut from the other nodes"));
                for o in self.cluster.ids().into_iter().filter(|o| *o != l) {
                    self.net.set_both(n(l), n(o), BOTH, LinkState::BlackHole);
                }
            }
            "isolate-controller" => {
                let c = self.controller();
                self.begin(kind, format!("controller {c} cut from the quorum"));
                for o in self.cluster.ids().into_iter().filter(|o| *o != c) {
                    self.net
                        .set_both(n(c), n(o), &[Plane::Controller], LinkState::BlackHole);
                }
            }
            "split-all" => {
                self.begin(kind, "every node cut from every other".into());
                for a in self.cluster.ids() {
                    for b in self.cluster.ids().into_iter().filter(|b| *b > a) {
                        self.net.set_both(n(a), n(b), BOTH, LinkState::BlackHole);
                    }
                }
            }
            "isolate-node" => {
                let a = self.some_leader();
                self.begin(
                    kind,
                    format!("node {a} cut from nodes and clients (rejected)"),
                );
                let side = BTreeSet::from([n(a)]);
                self.net.split(&side, BOTH, LinkState::Reject);
            }
            "one-way" => {
                let a = self.some_leader();
                let b = self.other_than(a);
                self.begin(kind, format!("{a} -> {b} black-holed, {b} -> {a} open"));
                self.net.set(n(a), n(b), BOTH, LinkState::BlackHole);
            }
            "delay" => {
                let ms = 20 + self.rng.u64(..150);
                self.begin(kind, format!("every link delayed {ms} ms"));
                for a in self.net.ends() {
                    for b in self.net.ends().into_iter().filter(|b| *b != a) {
                        self.net
                            .set(a, b, BOTH, LinkState::Delay(Duration::from_millis(ms)));
                    }
                }
            }
            "reset" => {
                let a = self.some_leader();
                let k = self.net.reset_around(n(a), BOTH);
                self.begin(kind, format!("{k} connections of node {a} reset"));
            }
            "flap" => {
                let a = self.some_leader();
                self.begin(kind, format!("node {a} cut and healed 4 times, then cut"));
                let side = BTreeSet::from([n(a)]);
                for _ in 0..4 {
                    self.net.split(&side, BOTH, LinkState::BlackHole);
                    std::thread::sleep(Duration::from_millis(200 + self.rng.u64(..400)));
                    self.net.heal();
                    std::thread::sleep(Duration::from_millis(200 + self.rng.u64(..400)));
                }
                self.net.split(&side, BOTH, LinkState::BlackHole);
            }
            other => panic!("unknown fault kind {other}"),
        }
    }

    /// Undoes the current fault: links healed, paused nodes continued, nodes down started.
    pub fn heal(&mut self) {
        self.net.heal();
        for id in std::mem::take(&mut self.paused) {
            self.cluster.signal(id, libc::SIGCONT);
        }
        for id in std::mem::take(&mut self.down) {
            self.cluster.start_node(id);
        }
        self.net.note_pids(&self.cluster);
    }

    /// Until every node is an active broker, the quorum has a leader, and every partition
    /// of the topic is led with `isr` replicas in sync.
    pub fn wait_healthy(&mut self, partitions: usize, isr: usize) {
        self.cluster.wait_all_active(HANG_GUARD);
        let asked = self.asked();
        let topic = &self.topic;
        // What node `asked` said last, every node's view too, for the guard's message.
        let last = std::cell::RefCell::new(None);
        crate::common::wait_for_named(
            || {
                let views: Vec<String> = self
                    .cluster
                    .live()
                    .into_iter()
                    .map(|i| format!("node {i}: {:?}", self.cluster.metadata(i, topic)))
                    .collect();
                format!(
                    "{topic}: {partitions} partitions led with {isr} in sync (node {asked} said last {:?}; now {views:?})",
                    last.borrow()
                )
            },
            HANG_GUARD,
            &mut || {
                let (_, parts) = self.cluster.metadata(asked, topic)?;
                let ok = parts.len() == partitions
                    && parts.values().all(|p| p.leader > 0 && p.isr.len() >= isr);
                *last.borrow_mut() = Some(parts);
                ok.then_some(())
            },
        );
    }

    /// Runs faults from the seed until `spec.duration` has passed, each held, healed and
    /// waited out (`after_heal` is called once the cluster is healthy again, e.g. to wait
    /// for the workload's progress).
    pub fn run_schedule(
        &mut self,
        spec: &ScheduleSpec,
        partitions: usize,
        mut after_heal: impl FnMut(&str),
    ) {
        let started = std::time::Instant::now();
        while started.elapsed() < spec.duration {
            let kind = FAULT_KINDS[self.rng.usize(..FAULT_KINDS.len())];
            self.inject(kind);
            let hold = spec.hold_ms.0 + self.rng.u64(..=spec.hold_ms.1 - spec.hold_ms.0);
            std::thread::sleep(Duration::from_millis(hold));
            self.heal();
            self.history.record(Op::FaultEnd { kind });
            self.wait_healthy(partitions, 3);
            after_heal(kind);
        }
    }
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        // Stopped processes are killed by the cluster; links heal with the network.
        for id in std::mem::take(&mut self.paused) {
            if self.cluster.is_running(id) {
                self.cluster.signal(id, libc::SIGCONT);
            }
        }
    }
}

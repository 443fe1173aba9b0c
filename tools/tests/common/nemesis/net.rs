//! A cluster's network through proxies: every Kafka connection (clients, followers,
//! transaction markers) to node `i` goes through node `i`'s Kafka proxy, which it
//! advertises; every controller connection from node `j` to node `i` (raft, broker →
//! controller RPCs) through the proxy `j → i` that node `j`'s quorum names for `i`. Only
//! the test's own observation calls (admin HTTP, `Cluster::metadata`, `Cluster::addr`) go
//! straight to the nodes.
//!
//! Who opened a Kafka connection is read from the kernel (`/proc/net/tcp` and each node's
//! open files), so one proxy per node serves every source and the links stay directed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::proxy::{socket_owner, End, Link, LinkState, Links, Plane, Proxy};
use crate::common::cluster::{Cluster, Detours};
use crate::common::free_port;

pub struct Net {
    pub links: Arc<Links>,
    /// The nodes' process ids now, for telling who opened a Kafka connection.
    pids: Arc<Mutex<Vec<(End, u32)>>>,
    kafka: Vec<Proxy>,
    /// `controller[from - 1][to - 1]`; none from a node to itself.
    controller: Vec<Vec<Option<Proxy>>>,
    nodes: usize,
}

impl Net {
    /// Puts proxies between the nodes of `c` (prepared, none started yet).
    pub fn wire(c: &mut Cluster) -> Net {
        let nodes = c.spec.nodes;
        let links = Arc::new(Links::default());
        let pids: Arc<Mutex<Vec<(End, u32)>>> = Arc::default();
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let kafka: Vec<Proxy> = c
            .ids()
            .into_iter()
            .map(|to| {
                let known = pids.clone();
                let resolve = Arc::new(move |peer: SocketAddr, port: u16| {
                    let pids = known.lock().unwrap().clone();
                    socket_owner(peer, port, &pids).unwrap_or(End::Client)
                });
                let upstream = local(c.kafka_port(to));
                let port = free_port();
                Proxy::start(
                    links.clone(),
                    Plane::Kafka,
                    End::Node(to),
                    port,
                    upstream,
                    resolve,
                )
            })
            .collect();
        let controller: Vec<Vec<Option<Proxy>>> = c
            .ids()
            .into_iter()
            .map(|from| {
                c.ids()
                    .into_iter()
                    .map(|to| {
                        (from != to).then(|| {
                            let resolve = Arc::new(move |_: SocketAddr, _: u16| End::Node(from));
                            let upstream = local(c.controller_port(to));
                            let port = free_port();
                            let (plane, to) = (Plane::Controller, End::Node(to));
                            Proxy::start(links.clone(), plane, to, port, upstream, resolve)
                        })
                    })
                    .collect()
            })
            .collect();
        c.set_detours(Detours {
            controller: controller
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|p| p.as_ref().map_or(0, |p| p.port))
                        .collect()
                })
                .collect(),
            advertised: kafka.iter().map(|p| p.port).collect(),
        });
        Net {
            links,
            pids,
            kafka,
            controller,
            nodes,
        }
    }

    /// Records which processes are the nodes now (after any start or restart).
    pub fn note_pids(&self, c: &Cluster) {
        let now = c
            .ids()
            .into_iter()
            .filter_map(|id| Some((End::Node(id), c.pid(id)?)))
            .collect();
        *self.pids.lock().unwrap() = now;
    }

    /// Every node's Kafka address through its proxy, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.kafka
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ends: every node, and the clients.
    pub fn ends(&self) -> Vec<End> {
        let mut ends: Vec<End> = (1..=self.nodes).map(End::Node).collect();
        ends.push(End::Client);
        ends
    }

    /// Sets the links from `from` to `to` on `planes` (the controller plane has no
    /// clients).
    pub fn set(&self, from: End, to: End, planes: &[Plane], state: LinkState) {
        for plane in planes {
            self.links.set(
                Link {
                    plane: *plane,
                    from,
                    to,
                },
                state,
            );
        }
    }

    /// Both directions between `a` and `b`.
    pub fn set_both(&self, a: End, b: End, planes: &[Plane], state: LinkState) {
        self.set(a, b, planes, state);
        self.set(b, a, planes, state);
    }

    /// Splits the ends into `side` and the rest: every link across, both ways, `state`.
    pub fn split(&self, side: &BTreeSet<End>, planes: &[Plane], state: LinkState) {
        for a in side {
            for b in self.ends().into_iter().filter(|e| !side.contains(e)) {
                self.set_both(*a, b, planes, state);
            }
        }
    }

    /// Resets every open connection between `a` and the other ends on `planes`.
    pub fn reset_around(&self, a: End, planes: &[Plane]) -> usize {
        let others = self.ends().into_iter().filter(|e| *e != a);
        let mut n = 0;
        for b in others {
            for plane in planes {
                n += self.links.reset(*plane, a, b);
            }
        }
        n
    }

    /// Every link back to `Pass`.
    pub fn heal(&self) {
        self.links.heal_all();
    }

    /// Waits (at most `guard`) until the proxies carry what they are for: followers'
    /// fetches (Kafka, node to node), the quorum's traffic (controller, node to node) and
    /// the clients' (Kafka, client to node), so no traffic bypasses the faults.
    pub fn wait_wired(&self, guard: std::time::Duration) {
        let wanted = [
            (Plane::Kafka, true),
            (Plane::Controller, true),
            (Plane::Kafka, false),
        ];
        crate::common::wait_for_named(
            || {
                format!(
                    "traffic through every kind of proxy; open: {:?}",
                    self.links.connections()
                )
            },
            guard,
            &mut || {
                let open = self.links.connections();
                let has = |plane: Plane, node_to_node: bool| {
                    open.iter().any(|(p, from, to)| {
                        *p == plane
                            && matches!(to, End::Node(_))
                            && matches!(from, End::Node(f) if End::Node(*f) != *to) == node_to_node
                            && (node_to_node || *from == End::Client)
                    })
                };
                wanted.iter().all(|(p, n)| has(*p, *n)).then_some(())
            },
        );
    }

    /// The ports of the controller proxies (for a test's failure message).
    pub fn controller_ports(&self) -> Vec<Vec<u16>> {
        self.controller
            .iter()
            .map(|row| {
                row.iter()
                    .map(|p| p.as_ref().map_or(0, |p| p.port))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.links.heal_all();
        self.links.reset_all();
    }
}

//! Fault testing in the manner of Jepsen (issue #25): the nemesis's proxy on plain sockets,
//! the checker on made-up histories (each anomaly found), and a short seeded schedule of
//! faults against a real three-node cluster under an idempotent acks=all workload and a
//! consumer group, checked over its whole history.
//!
//! The schedule's seed is printed; `SLUICE_NEMESIS_SEED=N` replays one and
//! `SLUICE_NEMESIS_SECONDS=S` lengthens it (`tools/tests/nemesis/run.sh MINUTES SEED`).
//! Nothing here is decided from timings, except where a bound holds by construction
//! (a delayed chunk is never early).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nemesis::checker::{check, unavailability, NO_FAULT};
use common::nemesis::faults::ScheduleSpec;
use common::nemesis::history::{Event, Failure, Op};
use common::nemesis::proxy::{socket_owner, End, Link, LinkState, Links, Plane, Proxy};
use common::nemesis::workload::WorkloadSpec;
use common::nemesis::{duration_from_env, run, seed_from_env, RunSpec};

// ---------------------------------------------------------------------------------------
// The proxy.

/// An echo server that greets each connection with `hi` first.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            std::thread::spawn(move || {
                let _ = s.write_all(b"hi");
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A proxy to a fresh echo server, as node 1's Kafka plane; connections from this process
/// are named node 7's.
fn proxied() -> (Arc<Links>, Proxy) {
    let links = Arc::new(Links::default());
    let me = std::process::id();
    let resolve = Arc::new(move |peer: SocketAddr, port: u16| {
        socket_owner(peer, port, &[(End::Node(7), me)]).unwrap_or(End::Client)
    });
    let proxy = Proxy::start(
        links.clone(),
        Plane::Kafka,
        End::Node(1),
        0,
        echo_server(),
        resolve,
    );
    (links, proxy)
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read through the proxy");
    buf
}

/// Whether nothing arrives within `wait` (a check that can only fail when something
/// does arrive: a cut link never delivers).
fn nothing_arrives(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    matches!(r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Whether the connection was closed or reset (the next read ends it).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return true,
            // The greeting may still be on its way.
            Ok(_) => continue,
        }
    }
}

const ME_TO_NODE: Link = Link {
    plane: Plane::Kafka,
    from: End::Node(7),
    to: End::Node(1),
};
const NODE_TO_ME: Link = Link {
    plane: Plane::Kafka,
    from: End::Node(1),
    to: End::Node(7),
};

#[test]
fn proxy_forwards_and_names_who_opened_the_connection() {
    let (links, proxy) = proxied();
    let mut s = connect(&proxy);
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
    s.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut s, 4), b"ping");
    // This process was named from the kernel's socket table, not from the address.
    assert_eq!(
        links.connections(),
        vec![(Plane::Kafka, End::Node(7), End::Node(1))]
    );
}

#[test]
fn proxy_black_hole_holds_bytes_one_way_until_healed() {
    let (links, proxy) = proxied();
    links.set(ME_TO_NODE, LinkState::BlackHole);
    let mut s = connect(&proxy);
    // The other direction still flows: the server's greeting arrives.
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
    s.write_all(b"ping").unwrap();
    assert!(
        nothing_arrives(&mut s, Duration::from_millis(300)),
        "a black-holed link forwarded"
    );
    links.set(ME_TO_NODE, LinkState::Pass);
    // Held, not lost: the bytes go on once healed.
    assert_eq!(read_exact_n(&mut s, 4), b"ping");
    // Cut the answers only: the request gets through, its echo does not.
    links.set(NODE_TO_ME, LinkState::BlackHole);
    s.write_all(b"pong").unwrap();
    assert!(
        nothing_arrives(&mut s, Duration::from_millis(300)),
        "a black-holed link forwarded"
    );
    links.heal_all();
    assert_eq!(read_exact_n(&mut s, 4), b"pong");
}

#[test]
fn proxy_reset_and_reject_close_connections() {
    let (links, proxy) = proxied();
    let mut s = connect(&proxy);
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
    assert_eq!(links.reset(Plane::Kafka, End::Node(1), End::Node(7)), 1);
    assert!(closed(&mut s), "a reset connection stayed open");
    // A healthy link accepts a new one.
    let mut s = connect(&proxy);
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
    // Reject in either direction resets what is open and refuses what comes.
    links.set(NODE_TO_ME, LinkState::Reject);
    assert!(closed(&mut s), "a rejected link's connection stayed open");
    let mut refused = connect(&proxy);
    assert!(
        closed(&mut refused),
        "a rejected link took a new connection"
    );
    links.heal_all();
    let mut s = connect(&proxy);
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
}

#[test]
fn proxy_delay_holds_each_chunk() {
    let (links, proxy) = proxied();
    let mut s = connect(&proxy);
    assert_eq!(read_exact_n(&mut s, 2), b"hi");
    let delay = Duration::from_millis(200);
    links.set(ME_TO_NODE, LinkState::Delay(delay));
    let sent = Instant::now();
    s.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut s, 4), b"ping");
    // A lower bound the proxy keeps by construction (the chunk waits until `delay` after
    // it was read), so this never fails where the delay is applied.
    assert!(sent.elapsed() >= delay, "the chunk was not delayed");
}

// ---------------------------------------------------------------------------------------
// The checker, on made-up histories.

fn ev(ms: u64, op: Op) -> Event {
    Event {
        at: Duration::from_millis(ms),
        op,
    }
}

/// Producer 0 sends ids 0..4 to partition 0, acknowledged at offsets 0..4; the final log
/// holds them; reader 0 polls them all and commits 4.
fn clean() -> Vec<Event> {
    let mut h = Vec::new();
    for id in 0..4u64 {
        h.push(ev(id, Op::Send { id, partition: 0 }));
    }
    for id in 0..4u64 {
        let offset = id as i64;
        h.push(ev(
            10 + id,
            Op::Ack {
                id,
                partition: 0,
                offset,
            },
        ));
    }
    h.push(ev(
        20,
        Op::Assigned {
            reader: 0,
            partitions: vec![0],
        },
    ));
    for id in 0..4u64 {
        let offset = id as i64;
        h.push(ev(
            21 + id,
            Op::Read {
                reader: 0,
                partition: 0,
                offset,
                id,
            },
        ));
    }
    h.push(ev(
        30,
        Op::Commit {
            reader: 0,
            partition: 0,
            offset: 4,
            ok: true,
        },
    ));
    for id in 0..4u64 {
        let offset = id as i64;
        h.push(ev(
            40,
            Op::Final {
                partition: 0,
                offset,
                id: Some(id),
            },
        ));
    }
    h.push(ev(
        41,
        Op::FinalCommitted {
            partition: 0,
            offset: 4,
        },
    ));
    h
}

/// `h` with its first event matching `pick` replaced by `with`.
fn edit(mut h: Vec<Event>, pick: impl Fn(&Op) -> bool, with: Op) -> Vec<Event> {
    let i = h
        .iter()
        .position(|e| pick(&e.op))
        .expect("an event to edit");
    h[i].op = with;
    h
}

fn only(h: &[Event], kind: &str) {
    let r = check(h);
    assert!(r.count(kind) > 0, "{kind} not found:\n{}", r.table());
    let others: Vec<_> = r.anomalies.keys().filter(|k| **k != kind).collect();
    assert!(others.is_empty(), "{kind}: also {others:?}:\n{}", r.table());
}

#[test]
fn checker_finds_nothing_in_a_clean_history() {
    let r = check(&clean());
    assert_eq!(r.total_anomalies(), 0, "{}", r.table());
    assert_eq!(r.ops["ack"], 4);
}

#[test]
fn checker_finds_a_lost_acknowledged_write() {
    // The final log has another message at id 2's offset (and id 2 nowhere).
    let h = edit(
        clean(),
        |op| matches!(op, Op::Final { offset: 2, .. }),
        Op::Final {
            partition: 0,
            offset: 2,
            id: None,
        },
    );
    let r = check(&h);
    assert_eq!(r.count("lost"), 1, "{}", r.table());
    // Truncated instead: lost, and what a reader saw there is gone too.
    let h: Vec<Event> = clean()
        .into_iter()
        .filter(|e| !matches!(e.op, Op::Final { offset: 3, .. }))
        .collect();
    let r = check(&h);
    assert_eq!(r.count("lost"), 1, "{}", r.table());
    assert_eq!(r.count("read-mismatch"), 1, "{}", r.table());
}

#[test]
fn checker_finds_a_duplicate_and_a_reordering() {
    let mut h = clean();
    h.push(ev(
        40,
        Op::Final {
            partition: 0,
            offset: 4,
            id: Some(1),
        },
    ));
    // A copy after later messages is out of order as well.
    let r = check(&h);
    assert_eq!(r.count("duplicate"), 1, "{}", r.table());
    // The report names it, and the history around it shows both copies.
    assert_eq!(r.suspects, vec![(0, 1)]);
    let around = common::nemesis::checker::around(&h, 0, 1);
    for copy in ["offset: 1, id: Some(1)", "offset: 4, id: Some(1)"] {
        assert!(around.contains(copy), "{copy} not in:\n{around}");
    }
    assert_eq!(r.count("order"), 1, "{}", r.table());
    // Ids 1 and 2 swapped in the log (and in their acknowledgements' offsets).
    let h = edit(
        clean(),
        |op| matches!(op, Op::Final { offset: 1, .. }),
        Op::Final {
            partition: 0,
            offset: 1,
            id: Some(2),
        },
    );
    let h = edit(
        h,
        |op| matches!(op, Op::Final { offset: 2, .. }),
        Op::Final {
            partition: 0,
            offset: 2,
            id: Some(1),
        },
    );
    let h = edit(
        h,
        |op| matches!(op, Op::Ack { id: 1, .. }),
        Op::Ack {
            id: 1,
            partition: 0,
            offset: 2,
        },
    );
    let h = edit(
        h,
        |op| matches!(op, Op::Ack { id: 2, .. }),
        Op::Ack {
            id: 2,
            partition: 0,
            offset: 1,
        },
    );
    let h = edit(
        h,
        |op| matches!(op, Op::Read { offset: 1, .. }),
        Op::Read {
            reader: 0,
            partition: 0,
            offset: 1,
            id: 2,
        },
    );
    let h = edit(
        h,
        |op| matches!(op, Op::Read { offset: 2, .. }),
        Op::Read {
            reader: 0,
            partition: 0,
            offset: 2,
            id: 1,
        },
    );
    only(&h, "order");
}

#[test]
fn checker_tells_a_client_resend_after_an_epoch_bump_from_a_broker_duplicate() {
    // Id 1 written again at offset 4 after its client bumped its epoch between sending
    // it and its acknowledgement: librdkafka's resend, reported apart.
    let mut h = clean();
    h.insert(
        5,
        ev(
            5,
            Op::ClientLog {
                producer: 0,
                line: "All partitions drained, bumped epoch to PID{Id:1,Epoch:1}".into(),
            },
        ),
    );
    h.push(ev(
        40,
        Op::Final {
            partition: 0,
            offset: 4,
            id: Some(1),
        },
    ));
    let r = check(&h);
    assert_eq!(r.total_anomalies(), 0, "{}", r.table());
    assert_eq!(r.client_resends["duplicate"].0, 1, "{}", r.table());
    assert_eq!(r.client_resends["order"].0, 1, "{}", r.table());
    // Another producer's bump explains nothing.
    let mut h = clean();
    h.insert(
        5,
        ev(
            5,
            Op::ClientLog {
                producer: 3,
                line: "All partitions drained, bumped epoch to PID{Id:4,Epoch:1}".into(),
            },
        ),
    );
    h.push(ev(
        40,
        Op::Final {
            partition: 0,
            offset: 4,
            id: Some(1),
        },
    ));
    assert_eq!(check(&h).count("duplicate"), 1);
}

#[test]
fn checker_finds_phantom_and_failed_reads() {
    let mut h = clean();
    h.push(ev(
        40,
        Op::Final {
            partition: 0,
            offset: 4,
            id: Some(99),
        },
    ));
    only(&h, "phantom");
    // Id 3 refused by the broker, yet in the log and read: both reads are anomalies.
    let failure = Failure::Definite("Broker: Message size too large".into());
    let h = edit(
        clean(),
        |op| matches!(op, Op::Ack { id: 3, .. }),
        Op::Fail {
            id: 3,
            partition: 0,
            failure,
        },
    );
    let r = check(&h);
    assert_eq!(r.count("failed-read"), 2, "{}", r.table());
    // Timed out instead: reading it is allowed.
    let failure = Failure::Indeterminate("Local: Message timed out".into());
    let h = edit(
        clean(),
        |op| matches!(op, Op::Ack { id: 3, .. }),
        Op::Fail {
            id: 3,
            partition: 0,
            failure,
        },
    );
    let r = check(&h);
    assert_eq!(r.total_anomalies(), 0, "{}", r.table());
    assert_eq!(r.indeterminate_reads, 2);
}

#[test]
fn checker_finds_readers_and_commits_going_back() {
    // Reader 0 polls offset 1 again within one assignment.
    let h = edit(
        clean(),
        |op| matches!(op, Op::Read { offset: 2, .. }),
        Op::Read {
            reader: 0,
            partition: 0,
            offset: 1,
            id: 1,
        },
    );
    let r = check(&h);
    assert_eq!(r.count("reader-backwards"), 1, "{}", r.table());
    // After a new assignment it may start again from a commit: not an anomaly.
    let mut h = clean();
    h.push(ev(
        31,
        Op::Assigned {
            reader: 0,
            partitions: vec![0],
        },
    ));
    h.push(ev(
        32,
        Op::Read {
            reader: 0,
            partition: 0,
            offset: 2,
            id: 2,
        },
    ));
    let r = check(&h);
    assert_eq!(r.total_anomalies(), 0, "{}", r.table());
    // A later successful commit below an earlier one.
    let mut h = clean();
    h.push(ev(
        33,
        Op::Commit {
            reader: 1,
            partition: 0,
            offset: 2,
            ok: true,
        },
    ));
    only(&h, "commit-backwards");
    // A failed one does not count.
    let mut h = clean();
    h.push(ev(
        33,
        Op::Commit {
            reader: 1,
            partition: 0,
            offset: 2,
            ok: false,
        },
    ));
    assert_eq!(check(&h).total_anomalies(), 0);
}

#[test]
fn checker_finds_a_message_the_group_committed_past_but_never_delivered() {
    let h: Vec<Event> = clean()
        .into_iter()
        .filter(|e| !matches!(e.op, Op::Read { offset: 1, .. }))
        .collect();
    only(&h, "group-skipped");
}

#[test]
fn checker_attributes_unavailability_to_the_fault_it_overlaps() {
    let h = vec![
        ev(
            0,
            Op::Ack {
                id: 0,
                partition: 0,
                offset: 0,
            },
        ),
        ev(
            100,
            Op::Ack {
                id: 1,
                partition: 0,
                offset: 1,
            },
        ),
        ev(
            150,
            Op::FaultStart {
                kind: "kill-leader",
                what: "SIGKILL leader 1".into(),
            },
        ),
        ev(
            900,
            Op::FaultEnd {
                kind: "kill-leader",
            },
        ),
        ev(
            1_600,
            Op::Ack {
                id: 2,
                partition: 0,
                offset: 2,
            },
        ),
        ev(
            1_700,
            Op::Ack {
                id: 3,
                partition: 0,
                offset: 3,
            },
        ),
    ];
    let u = unavailability(&h);
    assert_eq!(u["kill-leader"], Duration::from_millis(1_500));
    assert_eq!(u[NO_FAULT], Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------
// The schedule against a real cluster.

// Not in the default run: each run draws a new seed, and seed 1796677316105377331 found a
// consumer-group anomaly not yet fixed (a reader went from offset 197 back to 0 within one
// assignment; docs/fault-testing.md, open findings). Run it with
// `cargo test -p sluice --test nemesis -- --ignored` or `tools/tests/nemesis/run.sh`.
#[test]
#[ignore = "finds an open consumer-group anomaly on some seeds (docs/fault-testing.md)"]
fn a_seeded_fault_schedule_loses_nothing_and_the_history_checks_out() {
    let seed = seed_from_env();
    let duration = duration_from_env(Duration::from_secs(15));
    eprintln!("nemesis seed {seed} (replay: SLUICE_NEMESIS_SEED={seed}), faults for {duration:?}");
    let spec = RunSpec {
        name: "nemesis".into(),
        schedule: ScheduleSpec {
            seed,
            duration,
            hold_ms: (500, 3_000),
        },
        workload: WorkloadSpec {
            topic: "nemesis".into(),
            partitions: 3,
            producers: 2,
            rate_per_s: 100,
            group: "nemesis-readers".into(),
            readers: 2,
            commit_interval: Duration::from_millis(300),
            message_timeout_ms: 120_000,
        },
    };
    let report = run(&spec);
    let table = report.table();
    println!("{table}");
    assert_eq!(
        report.total_anomalies(),
        0,
        "seed {seed} (replay: SLUICE_NEMESIS_SEED={seed}):\n{table}"
    );
}

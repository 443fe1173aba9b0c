//! Three controllers over real TCP on 127.0.0.1 (glommio): election, commit, a node killed
//! and restarted from its files catches up through reconnecting peers. Waits are on
//! observed state, bounded only as a hang guard.

mod common;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{register, TestResult};
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use glommio::LocalExecutorBuilder;
use raft::eraftpb::{Message, MessageType};
use sluice_control::tcp::{
    decode_frame, encode_frame, inbox, run_loop, serve, Event, FrameError, TcpConfig, TcpTransport,
};
use sluice_control::{Bootstrap, BrokerId, Controller, ControllerConfig, NodeId, Record};

const HANG_GUARD: Duration = Duration::from_secs(30);

struct Node {
    ctl: Rc<RefCell<Controller>>,
    inbox: Rc<glommio::channels::local_channel::LocalSender<Event>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    fn kill(self) {
        for t in &self.tasks {
            t.cancel();
        }
    }
}

fn start(
    id: u64,
    dir: &Path,
    addrs: &[SocketAddr],
    listener: TcpListener,
) -> Result<Node, Box<dyn std::error::Error>> {
    let mut config = ControllerConfig::new(NodeId(id));
    config.election_tick = 10;
    config.heartbeat_tick = 2;
    let voters: Vec<NodeId> = (1..=addrs.len() as u64).map(NodeId).collect();
    let ctl = Rc::new(RefCell::new(Controller::open(
        dir,
        config,
        &Bootstrap::Voters(voters),
    )?));
    let tcp = TcpConfig::default();
    let mut transport = TcpTransport::new(tcp.clone());
    for (i, addr) in addrs.iter().enumerate() {
        let peer = i as u64 + 1;
        if peer != id {
            transport.add_peer(NodeId(peer), *addr);
        }
    }
    let (tx, rx) = inbox(&tcp);
    let serve_task =
        glommio::spawn_local(serve(listener, NodeId(id), Rc::clone(&tx), tcp)).detach();
    let loop_ctl = Rc::clone(&ctl);
    let loop_task = glommio::spawn_local(async move {
        if let Err(e) = run_loop(loop_ctl, transport, rx, 10).await {
            eprintln!("controller loop stopped: {e}");
        }
    })
    .detach();
    Ok(Node {
        ctl,
        inbox: tx,
        tasks: vec![serve_task, loop_task],
    })
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > HANG_GUARD {
            return Err(format!("timed out waiting for {what}"));
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn leader(nodes: &[Option<Node>]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.ctl.borrow().is_leader()))
}

fn propose(nodes: &[Option<Node>], r: &Record) -> Result<(), Box<dyn std::error::Error>> {
    let l = leader(nodes).ok_or("no leader")?;
    let n = nodes[l].as_ref().ok_or("gone")?;
    n.ctl.borrow_mut().propose(r)?;
    let _ = n.inbox.try_send(Event::Kick);
    Ok(())
}

fn has_broker(n: &Option<Node>, b: i32) -> bool {
    n.as_ref()
        .is_some_and(|n| n.ctl.borrow().image().broker(BrokerId(b)).is_some())
}

async fn quorum(root: &Path) -> TestResult {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        nodes.push(Some(start(id, &root.join(format!("c{id}")), &addrs, l)?));
    }
    wait_until("a leader", || leader(&nodes).is_some()).await?;
    propose(&nodes, &register(1))?;
    wait_until("broker 1 everywhere", || {
        nodes.iter().all(|n| has_broker(n, 1))
    })
    .await?;

    // Kill a follower; the other two still commit.
    let l = leader(&nodes).ok_or("no leader")?;
    let victim = (l + 1) % 3;
    if let Some(n) = nodes[victim].take() {
        n.kill();
    }
    propose(&nodes, &register(2))?;
    wait_until("broker 2 on the survivors", || {
        nodes
            .iter()
            .filter(|n| n.is_some())
            .all(|n| has_broker(n, 2))
    })
    .await?;

    // Restart it from its files on the same address: peers reconnect, it catches up.
    let id = victim as u64 + 1;
    let listener = TcpListener::bind(addrs[victim])?;
    nodes[victim] = Some(start(id, &root.join(format!("c{id}")), &addrs, listener)?);
    wait_until("the restarted node to catch up", || {
        has_broker(&nodes[victim], 2)
    })
    .await?;
    propose(&nodes, &register(3))?;
    wait_until("broker 3 everywhere", || {
        nodes.iter().all(|n| has_broker(n, 3))
    })
    .await?;
    for n in nodes.into_iter().flatten() {
        n.kill();
    }
    Ok(())
}

#[test]
fn three_controllers_over_tcp() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_owned();
    let handle = LocalExecutorBuilder::default()
        .name("controller-tcp-test")
        .spawn(move || async move { quorum(&root).await.map_err(|e| e.to_string()) })?;
    handle.join().map_err(|e| format!("executor: {e:?}"))??;
    Ok(())
}

#[test]
fn frames_round_trip_and_reject_damage() -> TestResult {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = 1;
    m.to = 2;
    m.term = 9;
    let frame = encode_frame(&m)?;
    assert_eq!(
        decode_frame(&frame, 1 << 20),
        Ok(Some((m.clone(), frame.len())))
    );
    for cut in 0..frame.len() {
        assert_eq!(
            decode_frame(&frame[..cut], 1 << 20),
            Ok(None),
            "cut at {cut}"
        );
    }
    let mut bad = frame.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(decode_frame(&bad, 1 << 20), Err(FrameError::Checksum));
    assert!(matches!(
        decode_frame(&frame, 4),
        Err(FrameError::TooLarge { .. })
    ));
    Ok(())
}

//! Figures for the controller quorum over real TCP on 127.0.0.1 (three controllers on one
//! glommio executor, files in a temp dir on the local disk, fsync on):
//! controller failover time, metadata propagation latency, time to create 1,000
//! partitions. A measurement, not a test: it prints numbers.
//!
//! `cargo run --release -p sluice-control --example quorum_figures [tick_ms]`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use glommio::LocalExecutorBuilder;
use sluice_control::tcp::{inbox, run_loop, serve, Event, TcpConfig, TcpTransport};
use sluice_control::{
    create_topic_record, Bootstrap, BrokerEpoch, BrokerId, Controller, ControllerConfig, NodeId,
    Record, TopicId,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Node {
    ctl: Rc<RefCell<Controller>>,
    inbox: Rc<glommio::channels::local_channel::LocalSender<Event>>,
    tasks: Vec<JoinHandle<()>>,
}

fn start(id: u64, dir: &Path, addrs: &[SocketAddr], l: TcpListener, tick_ms: u64) -> Res<Node> {
    let config = ControllerConfig::new(NodeId(id));
    let voters: Vec<NodeId> = (1..=addrs.len() as u64).map(NodeId).collect();
    let ctl = Rc::new(RefCell::new(Controller::open(
        dir,
        config,
        &Bootstrap::Voters(voters),
    )?));
    let tcp = TcpConfig::default();
    let mut transport = TcpTransport::new(tcp.clone());
    for (i, a) in addrs.iter().enumerate() {
        if i as u64 + 1 != id {
            transport.add_peer(NodeId(i as u64 + 1), *a);
        }
    }
    let (tx, rx) = inbox(&tcp);
    let s = glommio::spawn_local(serve(l, NodeId(id), Rc::clone(&tx), tcp)).detach();
    let c = Rc::clone(&ctl);
    let r = glommio::spawn_local(async move {
        let _ = run_loop(c, transport, rx, tick_ms).await;
    })
    .detach();
    Ok(Node {
        ctl,
        inbox: tx,
        tasks: vec![s, r],
    })
}

async fn wait(mut f: impl FnMut() -> bool) -> Res<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("hang guard".into());
        }
        glommio::timer::sleep(Duration::from_micros(100)).await;
    }
    Ok(t.elapsed())
}

fn leader(nodes: &[Option<Node>]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.ctl.borrow().is_leader()))
}

fn propose(nodes: &[Option<Node>], r: &Record) -> Res<()> {
    let n = nodes[leader(nodes).ok_or("no leader")?]
        .as_ref()
        .ok_or("gone")?;
    n.ctl.borrow_mut().propose(r)?;
    let _ = n.inbox.try_send(Event::Kick);
    Ok(())
}

fn all_have(nodes: &[Option<Node>], f: impl Fn(&sluice_control::MetadataImage) -> bool) -> bool {
    nodes.iter().flatten().all(|n| f(&n.ctl.borrow().image()))
}

fn register(id: i32) -> Record {
    Record::RegisterBroker {
        broker: BrokerId(id),
        epoch: BrokerEpoch(1),
        rack: Some(format!("r{}", id % 3)),
        listeners: vec![],
    }
}

fn leader_image(nodes: &[Option<Node>]) -> Res<std::sync::Arc<sluice_control::MetadataImage>> {
    let n = nodes[leader(nodes).ok_or("no leader")?]
        .as_ref()
        .ok_or("gone")?;
    let image = n.ctl.borrow().image();
    Ok(image)
}

async fn figures(root: &Path, tick_ms: u64) -> Res<()> {
    let ls: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = ls
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        nodes.push(Some(start(
            i as u64 + 1,
            &root.join(format!("c{i}")),
            &addrs,
            l,
            tick_ms,
        )?));
    }
    let first = wait(|| leader(&nodes).is_some()).await?;
    println!("tick {tick_ms} ms, election_tick 10: first leader after {first:?}");

    // Propagation: proposal on the leader until all three images have it.
    let mut lat = Vec::new();
    for b in 0..200 {
        let t = Instant::now();
        propose(&nodes, &register(b))?;
        wait(|| all_have(&nodes, |i| i.broker(BrokerId(b)).is_some())).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "metadata propagation (commit + apply on all 3), 200 sequential records: p50 {:?} p99 {:?} max {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
    for b in 0..3 {
        let r = Record::UnfenceBroker {
            broker: BrokerId(b),
            epoch: BrokerEpoch(1),
        };
        propose(&nodes, &r)?;
    }
    wait(|| all_have(&nodes, |i| (0..3).all(|b| i.is_live(BrokerId(b))))).await?;

    // 1,000 partitions, replication factor 3, in one CreateTopic record.
    let t = Instant::now();
    let create = create_topic_record(&*leader_image(&nodes)?, "big", TopicId(1), 1000, 3)?;
    let bytes = create.encode().len();
    propose(&nodes, &create)?;
    wait(|| all_have(&nodes, |i| i.topic(TopicId(1)).is_some())).await?;
    println!(
        "create 1,000 partitions (rf 3, one {bytes} B record): {:?} until applied on all 3",
        t.elapsed()
    );
    let t = Instant::now();
    for k in 0..100u128 {
        let image = leader_image(&nodes)?;
        let r = create_topic_record(&image, &format!("small-{k}"), TopicId(100 + k), 10, 3)?;
        propose(&nodes, &r)?;
    }
    wait(|| all_have(&nodes, |i| i.topic(TopicId(199)).is_some())).await?;
    println!(
        "create 100 topics x 10 partitions (pipelined proposals): {:?}",
        t.elapsed()
    );

    // Failover: kill the leader; time until a new leader has committed a record.
    let old = leader(&nodes).ok_or("no leader")?;
    let t = Instant::now();
    if let Some(n) = nodes[old].take() {
        for task in &n.tasks {
            task.cancel();
        }
    }
    wait(|| leader(&nodes).is_some()).await?;
    let elected = t.elapsed();
    propose(&nodes, &register(9999))?;
    wait(|| all_have(&nodes, |i| i.broker(BrokerId(9999)).is_some())).await?;
    println!(
        "controller failover: new leader after {elected:?}, first commit on both survivors after {:?}",
        t.elapsed()
    );
    for n in nodes.into_iter().flatten() {
        for task in &n.tasks {
            task.cancel();
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let tick_ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let base = std::env::var("SLUICE_FIGURES_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::tempdir_in(base)?;
    let root = dir.path().to_owned();
    LocalExecutorBuilder::default()
        .spawn(move || async move { figures(&root, tick_ms).await.map_err(|e| e.to_string()) })?
        .join()
        .map_err(|e| format!("{e:?}"))??;
    Ok(())
}

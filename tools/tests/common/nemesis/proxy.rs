//! The fault-injecting TCP proxy: a listener that forwards each accepted connection to one
//! upstream address, with two pump threads per connection (one per direction). What a
//! pump does with its bytes is the state of the *directed link* they travel on — from the
//! end that sent them to the end that receives them — kept in one shared [`Links`] table,
//! so one-way faults cut one direction of every connection between two ends, whoever
//! opened it (as a firewall rule on packets from A to B would).
//!
//! A link is `Pass`, `Delay(d)` (each chunk leaves d after it was read; a direction reads
//! its next chunk only once the last one left, so a busy direction is slowed too),
//! `BlackHole` (nothing is read, so the sender's TCP pushes back as it would behind a
//! dropping firewall; connections are still accepted; bytes held so far flow again when
//! healed, nothing is lost mid-stream) or `Reject` (connections between the two ends are
//! reset, new ones reset at accept). [`Links::reset`] resets every open connection
//! between two ends once.
//!
//! Bounds: at most `CONNECTIONS_MAX` open connections per proxy (more are reset at
//! accept), one `CHUNK_BYTES_MAX` buffer per pump, small thread stacks.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Open connections one proxy forwards at once; more are reset at accept.
pub const CONNECTIONS_MAX: usize = 64;
/// The most one pump reads at a time.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Stack of a pump or accept thread (they only copy bytes).
const THREAD_STACK_BYTES: usize = 128 * 1024;
/// How long a blocked pump sleeps before looking at its link again (also woken at once on
/// any change of the table).
const RECHECK: Duration = Duration::from_millis(50);

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// The test process and its clients.
    Client,
    /// Node `id`.
    Node(usize),
}

/// Which traffic: the Kafka protocol (clients, followers, markers) or the controller
/// quorum's (raft and broker → controller RPCs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plane {
    Kafka,
    Controller,
}

/// What a directed link does with the bytes from its source to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Pass,
    Delay(Duration),
    BlackHole,
    Reject,
}

/// A directed link: bytes on `plane` from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Link {
    pub plane: Plane,
    pub from: End,
    pub to: End,
}

/// One forwarded connection: who opened it, to whom, and both sockets (for resets).
struct Conn {
    plane: Plane,
    opener: End,
    acceptor: End,
    sockets: [TcpStream; 2],
}

#[derive(Default)]
struct Table {
    states: BTreeMap<Link, LinkState>,
    conns: BTreeMap<u64, Conn>,
    /// Bumped on every change, so a waiting pump knows to look again.
    version: u64,
}

/// The links of every proxy of one cluster: their states and open connections.
#[derive(Default)]
pub struct Links {
    table: Mutex<Table>,
    changed: Condvar,
    next_conn: AtomicU64,
    /// Bytes forwarded, all links together (for the report).
    pub forwarded_bytes: AtomicU64,
}

impl Links {
    pub fn state(&self, link: Link) -> LinkState {
        let t = self.table.lock().unwrap();
        t.states.get(&link).copied().unwrap_or(LinkState::Pass)
    }

    /// Sets one directed link; `Reject` also resets its open connections.
    pub fn set(&self, link: Link, state: LinkState) {
        let mut t = self.table.lock().unwrap();
        if state == LinkState::Pass {
            t.states.remove(&link);
        } else {
            t.states.insert(link, state);
        }
        t.version += 1;
        if state == LinkState::Reject {
            reset_between(&mut t, link.plane, link.from, link.to);
        }
        drop(t);
        self.changed.notify_all();
    }

    /// Every link back to `Pass`.
    pub fn heal_all(&self) {
        let mut t = self.table.lock().unwrap();
        t.states.clear();
        t.version += 1;
        drop(t);
        self.changed.notify_all();
    }

    /// Resets every open connection between `a` and `b` (either opened it) on `plane`.
    pub fn reset(&self, plane: Plane, a: End, b: End) -> usize {
        let mut t = self.table.lock().unwrap();
        reset_between(&mut t, plane, a, b)
    }

    /// Resets every open connection (the proxies are going away).
    pub fn reset_all(&self) {
        let mut t = self.table.lock().unwrap();
        for (_, c) in std::mem::take(&mut t.conns) {
            for s in &c.sockets {
                hard_reset(s);
            }
        }
    }

    /// The open connections: (plane, opener, acceptor).
    pub fn connections(&self) -> Vec<(Plane, End, End)> {
        let t = self.table.lock().unwrap();
        t.conns
            .values()
            .map(|c| (c.plane, c.opener, c.acceptor))
            .collect()
    }

    /// Open connections now.
    pub fn open_connections(&self) -> usize {
        self.table.lock().unwrap().conns.len()
    }

    /// Whether a connection from `opener` to `acceptor` may be made now.
    fn admits(&self, plane: Plane, opener: End, acceptor: End) -> bool {
        let t = self.table.lock().unwrap();
        let rejected =
            |from, to| t.states.get(&Link { plane, from, to }) == Some(&LinkState::Reject);
        !rejected(opener, acceptor) && !rejected(acceptor, opener)
    }

    /// Waits until `link` lets bytes through; `None` when `closed` is set first. Gives the
    /// delay to hold the chunk for.
    fn wait_open(&self, link: Link, closed: &AtomicBool) -> Option<Duration> {
        let mut t = self.table.lock().unwrap();
        loop {
            if closed.load(Ordering::SeqCst) {
                return None;
            }
            match t.states.get(&link).copied().unwrap_or(LinkState::Pass) {
                LinkState::Pass => return Some(Duration::ZERO),
                LinkState::Delay(d) => return Some(d),
                // A rejected link's connections are reset; until that reaches this pump it
                // forwards nothing.
                LinkState::BlackHole | LinkState::Reject => {
                    t = self.changed.wait_timeout(t, RECHECK).unwrap().0;
                }
            }
        }
    }
}

/// Resets (RST, via SO_LINGER 0) the open connections between `a` and `b` on `plane`.
fn reset_between(t: &mut Table, plane: Plane, a: End, b: End) -> usize {
    let ids: Vec<u64> = t
        .conns
        .iter()
        .filter(|(_, c)| {
            c.plane == plane
                && ((c.opener == a && c.acceptor == b) || (c.opener == b && c.acceptor == a))
        })
        .map(|(id, _)| *id)
        .collect();
    for id in &ids {
        if let Some(c) = t.conns.remove(id) {
            for s in &c.sockets {
                hard_reset(s);
            }
        }
    }
    ids.len()
}

/// Closes `s` with a TCP reset: linger 0, then shut both directions (the pumps' blocked
/// reads return and they drop their clones, which closes the socket with RST).
fn hard_reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this process owns, with a properly sized `linger`.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Who opened an accepted connection, from its peer address and the proxy's port.
pub type Resolver = Arc<dyn Fn(SocketAddr, u16) -> End + Send + Sync>;

/// One proxy listener: connections to it are forwarded to `upstream`, which is node `to`.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a port of 127.0.0.1 (`port`, or a free one when 0) for connections to
    /// `to` on `plane`; `resolve` names who opened each.
    pub fn start(
        links: Arc<Links>,
        plane: Plane,
        to: End,
        port: u16,
        upstream: SocketAddr,
        resolve: Resolver,
    ) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                let active = Arc::new(AtomicU64::new(0));
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(down) = conn else { continue };
                    let opener = down.peer_addr().map_or(End::Client, |a| resolve(a, port));
                    let full = active.load(Ordering::SeqCst) as usize >= CONNECTIONS_MAX;
                    if full || !links.admits(plane, opener, to) {
                        hard_reset(&down);
                        continue;
                    }
                    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                    else {
                        // The node is down: the opener sees its connection reset, as it
                        // would see a refused one.
                        hard_reset(&down);
                        continue;
                    };
                    forward(&links, &active, plane, opener, to, down, up);
                }
            })
            .expect("proxy thread");
        Proxy {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Registers the connection and starts its two pumps.
fn forward(
    links: &Arc<Links>,
    active: &Arc<AtomicU64>,
    plane: Plane,
    opener: End,
    acceptor: End,
    down: TcpStream,
    up: TcpStream,
) {
    let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) = (
        down.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    let id = links.next_conn.fetch_add(1, Ordering::SeqCst);
    links.table.lock().unwrap().conns.insert(
        id,
        Conn {
            plane,
            opener,
            acceptor,
            sockets: [d3, u3],
        },
    );
    active.fetch_add(1, Ordering::SeqCst);
    let closed = Arc::new(AtomicBool::new(false));
    let pumps = [
        (
            down,
            u2,
            Link {
                plane,
                from: opener,
                to: acceptor,
            },
        ),
        (
            up,
            d2,
            Link {
                plane,
                from: acceptor,
                to: opener,
            },
        ),
    ];
    let remaining = Arc::new(AtomicU64::new(2));
    for (from, to, link) in pumps {
        let links = links.clone();
        let ends = closed.clone();
        let remaining = remaining.clone();
        let active = active.clone();
        let spawned = std::thread::Builder::new()
            .name("proxy-pump".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                pump(&links, link, from, to, &ends);
                if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    links.table.lock().unwrap().conns.remove(&id);
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if spawned.is_err() {
            // Out of threads: this connection is not forwarded.
            closed.store(true, Ordering::SeqCst);
        }
    }
}

/// Copies `from` → `to` as `link` allows until either side closes; then passes the close
/// on (a half-close stays a half-close; an error resets both).
fn pump(links: &Links, link: Link, mut from: TcpStream, mut to: TcpStream, closed: &AtomicBool) {
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        // Not even read while the link is cut: the sender's TCP pushes back.
        if links.wait_open(link, closed).is_none() {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // The sender closed: pass the close on; the other direction ends at its
                // own close (or at once, if its link is cut).
                let _ = to.shutdown(Shutdown::Write);
                closed.store(true, Ordering::SeqCst);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let read_at = Instant::now();
        // The link may have changed while the read waited: the chunk waits for it.
        let Some(delay) = links.wait_open(link, closed) else {
            break;
        };
        let due = read_at + delay;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        links.forwarded_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    closed.store(true, Ordering::SeqCst);
    hard_reset(&from);
    hard_reset(&to);
}

/// The process owning the TCP socket whose local end is `peer` and which is connected to
/// 127.0.0.1:`proxy_port`, among `pids` (from `/proc/net/tcp` and each pid's open files);
/// `None` if none of them does.
pub fn socket_owner(peer: SocketAddr, proxy_port: u16, pids: &[(End, u32)]) -> Option<End> {
    let inode = socket_inode(peer.port(), proxy_port)?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().find_map(|(end, pid)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()))
            .then_some(*end)
    })
}

/// The inode of the IPv4 TCP socket from local port `local` to remote port `remote`.
fn socket_inode(local: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{local:04X}");
    let remote = format!(":{remote:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ok = f.get(1)?.ends_with(&local) && f.get(2)?.ends_with(&remote);
        ok.then(|| f.get(9)?.parse().ok()).flatten()
    })
}

//! A real broker process for integration tests: the built `sluice` binary on 127.0.0.1
//! with an ephemeral port and a temporary data directory.

#![allow(dead_code)]

pub mod acks;
pub mod cluster;
pub mod load;
pub mod nemesis;
pub mod raw;
pub mod revocations;
pub mod tls;
pub mod txn;

/// One HTTP GET against the admin endpoint; the whole answer (status line, headers, body).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read admin answer");
    body
}

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A guard against hangs only: how long a test waits for something it expects to happen
/// (a leader elected, a message acknowledged, a process gone) before it fails saying what
/// it waited for. Never a measure: nothing is decided from how long a wait took.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

/// Polls `f` every 20 ms until it gives a value; panics naming `what` after `guard`.
pub fn wait_for<T>(what: &str, guard: Duration, f: &mut dyn FnMut() -> Option<T>) -> T {
    wait_for_named(|| what.to_string(), guard, f)
}

/// [`wait_for`] whose description is made when the guard fires (so it can say what `f`
/// last saw).
pub fn wait_for_named<T>(
    what: impl Fn() -> String,
    guard: Duration,
    f: &mut dyn FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + guard;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh temporary directory named `prefix…` on the build's disk (`/tmp` may be tmpfs,
/// which has no O_DIRECT); removed when dropped.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("tempdir")
}

/// Creates topic `name` (`partitions` partitions of `replication_factor` replicas, with
/// `configs`) through the broker at `bootstrap` with librdkafka's admin client; panics
/// unless it was created.
pub fn create_topic_at(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) {
    let mut config = rdkafka::config::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    create_topic_with(&config, name, partitions, replication_factor, configs);
}

/// [`create_topic_at`] with a client's settings (TLS, SASL).
pub fn create_topic_with(
    config: &rdkafka::config::ClientConfig,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r =
        futures_executor::block_on(admin.create_topics([&topic], &opts)).expect("create_topics");
    assert!(r.iter().all(|x| x.is_ok()), "create {name}: {r:?}");
}

/// Creates topic `name` with each partition's replicas as given (partition `i` on
/// `replicas[i]`, the first its preferred leader) through the broker at `bootstrap`;
/// panics unless it was created.
pub fn create_assigned_at(bootstrap: &str, name: &str, replicas: &[&[i32]]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let partitions = replicas.len() as i32;
    let topic = NewTopic::new(name, partitions, TopicReplication::Variable(replicas));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r =
        futures_executor::block_on(admin.create_topics([&topic], &opts)).expect("create_topics");
    assert!(r.iter().all(|x| x.is_ok()), "create {name}: {r:?}");
}

/// How long a starting broker may take to print its listening line (it does so once every
/// shard is up). A hang guard only: a debug broker on a loaded 2-core machine starts in
/// well under a second to a few seconds.
const LAUNCH_GUARD: Duration = Duration::from_secs(120);

/// The first line `child` prints on stdout, read on a helper thread so a broker that
/// hangs while starting is noticed after [`LAUNCH_GUARD`] instead of blocking the test.
fn listening_line(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    match rx.recv_timeout(LAUNCH_GUARD) {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => Err(format!("it exited first ({:?})", child.try_wait())),
        Ok(Err(e)) => Err(format!("reading its stdout: {e}")),
        Err(_) => Err(format!(
            "no listening line within {} s (a hang while starting)",
            LAUNCH_GUARD.as_secs()
        )),
    }
}

pub struct Broker {
    child: Option<Child>,
    pub addr: String,
    /// The admin HTTP endpoint (/metrics, /health).
    pub admin_addr: String,
    pub data_dir: PathBuf,
}

impl Broker {
    /// Starts a broker with two shards (so cross-shard routing is exercised) on `data_dir`.
    pub fn start(data_dir: &Path) -> Broker {
        Broker::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_on_cores(data_dir, "0-1", extra)
    }

    /// Starts a broker with one shard per CPU of `cores` (unpinned, so any labels do).
    pub fn start_on_cores(data_dir: &Path, cores: &str, extra: &[&str]) -> Broker {
        Broker::launch(data_dir, "127.0.0.1:0", "127.0.0.1:0", cores, extra)
    }

    /// Like [`Broker::start_on_cores`], with the Kafka listener on `listen` (a fixed port,
    /// so a restarted broker is found where it was).
    pub fn start_at(data_dir: &Path, listen: &str, cores: &str, extra: &[&str]) -> Broker {
        Broker::launch(data_dir, listen, "127.0.0.1:0", cores, extra)
    }

    /// Starts a broker listening on `listen` (Kafka) and `admin_listen` (admin HTTP): fixed
    /// addresses let a restarted broker come back where clients knew it.
    pub fn launch(
        data_dir: &Path,
        listen: &str,
        admin_listen: &str,
        cores: &str,
        extra: &[&str],
    ) -> Broker {
        Broker::launch_with_log(data_dir, listen, admin_listen, cores, extra, None)
    }

    /// [`Broker::start_with`] with its log (stderr) appended to `log` under the `RUST_LOG`
    /// filter `filter`, for tests that check what the broker logged.
    pub fn start_logged(data_dir: &Path, extra: &[&str], log: &Path, filter: &str) -> Broker {
        Broker::launch_with_log(
            data_dir,
            "127.0.0.1:0",
            "127.0.0.1:0",
            "0-1",
            extra,
            Some((log, filter)),
        )
    }

    pub fn launch_with_log(
        data_dir: &Path,
        listen: &str,
        admin_listen: &str,
        cores: &str,
        extra: &[&str],
        log: Option<(&Path, &str)>,
    ) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args([
            "serve",
            "--listen",
            listen,
            "--admin-listen",
            admin_listen,
            "--cores",
            cores,
            "--no-pin",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if let Some((path, filter)) = log {
            cmd.env("RUST_LOG", filter).stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("broker log file"),
            );
        }
        let mut child = cmd.spawn().expect("spawn sluice");
        let line = match listening_line(&mut child) {
            Ok(line) => line,
            Err(why) => {
                // A broker that never comes up must fail its test, not hang it (and the
                // rest of the binary) forever; it is killed so it leaves no stray process.
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluice on {listen} did not start: {why}");
            }
        };
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("unexpected first line from sluice: {line:?}"))
            .to_string();
        // "... (admin HOST:PORT, N shards, ...)"
        let admin_addr = line
            .split_whitespace()
            .nth(5)
            .map(|a| a.trim_end_matches(',').to_string())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"));
        Broker {
            child: Some(child),
            addr,
            admin_addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().expect("wait for sluice")
    }
}

impl Broker {
    /// SIGKILL (a crash): nothing is flushed or closed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the running process.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().expect("running") as i32;
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// SIGTERM, then wait at most `guard` for the exit (a hang guard: past it the process is
    /// killed and `None` returned).
    pub fn stop_within(&mut self, guard: std::time::Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + guard;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `GET path` on the admin endpoint; the body.
    pub fn admin_get(&self, path: &str) -> std::io::Result<String> {
        admin_call(&self.admin_addr, "GET", path, Duration::from_secs(30)).map(|(_, body)| body)
    }
}

/// One request without a body to the admin endpoint at `addr`, its answer read within
/// `read_timeout`: (status code, 0 when the answer is not HTTP; body).
pub fn admin_call(
    addr: &str,
    method: &str,
    path: &str,
    read_timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(read_timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(http_answer(&out))
}

/// An HTTP answer's (status code, body); code 0 if there is no status line.
pub fn http_answer(out: &str) -> (u16, String) {
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

/// The value of the first sample of metric `name` in a Prometheus text `page` whose labels
/// contain each of `labels` (e.g. `topic="t"`); `None` if there is none.
pub fn metric(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Runs `sluice ARGS` (stdin closed): whether it exited 0, its stdout and its stderr.
pub fn sluice_output(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sluice ARGS` with `input` on its stdin: whether it exited 0, its stdout and its
/// stderr.
pub fn sluice_with_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("sluice output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `sluice` binary with `args`; its stdout (it must exit 0).
pub fn sluice(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port on 127.0.0.1 that nothing listens on now, for a broker that must keep its
/// address across restarts (fixed ports, quorum addresses).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // A port the kernel handed out for 127.0.0.1:0 lies in the ephemeral range, where any
    // outgoing connection on the machine may take it as its source port before the broker
    // binds it (or binds it again after a restart): "Address already in use". Ports below
    // that range are never taken that way; each test process walks its own stretch of
    // them (by pid) and skips any that something already listens on.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().unwrap_or(0);
    if low < 4096 {
        return kernel_port();
    }
    let window = low / 2; // [low / 2, low)
    let start = std::process::id() % window;
    for _ in 0..window {
        let port = (low / 2 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % window) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_low() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn kernel_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a client with these settings gets the cluster's metadata. For clients that must
/// be refused (a failed TLS handshake or SASL login is an error): the 3 s only bounds the
/// wait for the refusal, a client that gets in answers at once.
pub fn metadata_ok(config: &rdkafka::config::ClientConfig) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config.create().expect("client");
    consumer
        .fetch_metadata(None, Duration::from_secs(3))
        .is_ok()
}

/// Produces `<topic>-0` … `<topic>-<n-1>` with these client settings and waits until all
/// are acknowledged.
pub fn produce_numbered(config: &rdkafka::config::ClientConfig, topic: &str, n: usize) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
    for i in 0..n {
        let v = format!("{topic}-{i}");
        producer
            .send(BaseRecord::<(), String>::to(topic).payload(&v))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(HANG_GUARD).expect("flush");
}

/// Consumes `topic` from the start with these client settings (group `<topic>-group`)
/// until `<topic>-0` … `<topic>-<n-1>` came back, and checks they came in order.
pub fn consume_numbered(config: &rdkafka::config::ClientConfig, topic: &str, n: usize) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let mut c = config.clone();
    c.set("group.id", format!("{topic}-group"))
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create().expect("consumer");
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    wait_for(
        &format!("{n} records of {topic} back"),
        HANG_GUARD,
        &mut || {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
            (got.len() == n).then_some(())
        },
    );
    let want: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
    assert_eq!(got, want);
}

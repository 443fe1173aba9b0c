//! One client connection: a reader that parses frames and starts a task per request, and a
//! writer that awaits those tasks in request order and writes their responses. At most
//! `inflight_requests_max` requests are in flight; past that the reader stops reading.
//! Each frame first takes its length from the shard's request byte budget
//! (`queued.max.request.bytes`, see `request_bytes.rs`) and holds it until its request is
//! answered; a shard at its bound stops reading the next frame. A connection with nothing
//! in flight and no bytes arriving for `connections.max.idle.ms` is closed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::Instrument;

use crate::broker::shard::{ConnectionSlot, Shard, Work};
use crate::kafka::frame::{self, FrameError, ResponseFrame};
use crate::kafka::frame_pool::FrameBuf;
use crate::kafka::handlers;
use crate::kafka::request_bytes::{RequestPermit, ALWAYS_ADMITTED_BYTES_MAX};
use crate::security::sasl::SASL_UNAUTHENTICATED_FRAME_BYTES_MAX;
use crate::security::session::Session;

type Pending = JoinHandle<Result<Option<ResponseFrame>, FrameError>>;

enum ReadOutcome {
    Frame(Bytes, RequestPermit),
    Closed,
    Idle,
    Stopping,
}

/// What the idle timeout looks at: when bytes last arrived or a response left, and how
/// many requests are in flight (or waiting for the request budget, which is the broker's
/// doing, not the client's).
struct Activity {
    last: Cell<Instant>,
    busy: Cell<usize>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// Counts as busy while it lives.
struct Busy<'a>(&'a Activity);

impl<'a> Busy<'a> {
    fn new(a: &'a Activity) -> Self {
        a.busy.set(a.busy.get() + 1);
        Busy(a)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get() - 1);
    }
}

/// Resolves once the connection has had nothing in flight and no traffic for `idle`.
async fn idle_for(activity: &Activity, idle: Duration) {
    loop {
        let since = activity.last.get().elapsed();
        if activity.busy.get() == 0 && since >= idle {
            return;
        }
        let wait = if activity.busy.get() > 0 {
            idle
        } else {
            idle - since
        };
        glommio::timer::sleep(wait).await;
    }
}

/// Reads one frame: its length, room for it in the shard's request budget (waiting while
/// the shard is at its bound), then its bytes as they arrive. `Ok(None)`: the client
/// closed the connection between frames.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    shard: &Shard,
    session: &Session,
    activity: &Activity,
) -> Result<Option<(Bytes, RequestPermit)>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    activity.touch();
    let len = i32::from_be_bytes(len);
    // Plain and TLS listeners: `request_bytes_max`, as before. A client on a SASL listener
    // that has not authenticated yet gets Kafka's smaller pre-authentication bound, and
    // after SaslHandshake v0 its frames are bare tokens (shorter than any request header).
    let len = if session.is_authenticated() {
        frame::check_length(len, shard.config.request_bytes_max)?
    } else if session.expects_raw_token() {
        frame::check_raw_length(len, SASL_UNAUTHENTICATED_FRAME_BYTES_MAX)?
    } else {
        frame::check_length(
            len,
            shard
                .config
                .request_bytes_max
                .min(SASL_UNAUTHENTICATED_FRAME_BYTES_MAX),
        )?
    };
    let budget = &shard.request_bytes;
    let permit = if len <= ALWAYS_ADMITTED_BYTES_MAX && activity.busy.get() == 0 {
        budget.admit(len)
    } else if let Some(p) = budget.try_acquire(len) {
        p
    } else {
        let _waiting = Busy::new(activity);
        budget.acquire(len).await
    };
    let mut body = FrameBuf::new(len);
    while !body.is_complete() {
        let n = reader.read(body.unfilled()).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        body.advance(n);
        activity.touch();
    }
    Ok(Some((body.into_bytes(), permit)))
}

/// Longest a client may take over its TLS handshake before the connection is closed (a
/// client that connects and sends nothing must not hold a connection place for the idle
/// timeout's ten minutes).
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;

/// A client connection's byte stream: plain TCP, or TLS over it.
pub(crate) trait ConnStream:
    futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static
{
    /// Whether bytes written may wait in the stream until it is flushed (TLS records
    /// rustls could not write at once); the plain socket writes straight through, so its
    /// writer never pays for a flush.
    const BUFFERS_WRITES: bool;
}

impl ConnStream for TcpStream {
    const BUFFERS_WRITES: bool = false;
}

impl ConnStream for futures_rustls::server::TlsStream<TcpStream> {
    const BUFFERS_WRITES: bool = true;
}

/// Serves `stream`, accepted on listener `listener`, on this shard, whose connection place
/// `slot` was taken for it, and gives the place back when the connection ends. On a TLS
/// listener the handshake runs first, here on the shard that serves the connection.
pub fn spawn(shard: Rc<Shard>, stream: TcpStream, slot: ConnectionSlot, listener: usize) {
    crate::admin::metrics::connection_opened();
    // Every log line of the connection's tasks carries its peer, and its client id once
    // the first request names it (inside the shard's span, see `server::startup`).
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "?".to_string(), |a| a.to_string());
    let span = tracing::info_span!("conn", %peer, client_id = tracing::field::Empty);
    let _ = stream.set_nodelay(true);
    let protocol = shard.security.listener(listener).security_protocol;
    glommio::spawn_local(
        async move {
            if protocol.tls() {
                if let Some(tls) = handshake(&shard, stream, listener).await {
                    let principal = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::security::tls::principal_of);
                    if let Some(p) = &principal {
                        tracing::debug!(target: crate::security::AUTH_LOG_TARGET, principal = %p,
                            listener = listener, "client authenticated by its TLS certificate");
                    }
                    let session = Rc::new(Session::new(listener, protocol, peer_addr, principal));
                    serve(shard, tls, session, peer_addr).await;
                }
            } else {
                let session = Rc::new(Session::new(listener, protocol, peer_addr, None));
                serve(shard, stream, session, peer_addr).await;
            }
            drop(slot);
            crate::admin::metrics::connection_closed();
        }
        .instrument(span),
    )
    .detach();
}

/// The server side of a TLS handshake, bounded by [`TLS_HANDSHAKE_MS_MAX`]; `None` (and a
/// rate-limited log line) when it fails. The inter-broker listener of `[cluster_tls]` is
/// served with the node certificate and requires a client certificate from the cluster
/// CA; every other TLS listener with `[tls]`.
async fn handshake(
    shard: &Shard,
    stream: TcpStream,
    listener: usize,
) -> Option<futures_rustls::server::TlsStream<TcpStream>> {
    let acceptor = match &shard.security.cluster {
        Some(c) if c.listener == listener => {
            futures_rustls::TlsAcceptor::from(c.tls.server_config())
        }
        // Start-up refuses a TLS listener without [tls]; nothing to serve it with.
        _ => shard.security.tls.as_ref()?.acceptor(),
    };
    let accept = acceptor.accept(stream);
    let outcome = futures_lite::future::or(async { Some(accept.await) }, async {
        // A stopping shard does not wait for handshakes (its connection drain is shorter).
        futures_lite::future::or(
            glommio::timer::sleep(Duration::from_millis(TLS_HANDSHAKE_MS_MAX)),
            shard.stopping.wait(),
        )
        .await;
        None
    })
    .await;
    let why = match outcome {
        Some(Ok(s)) => return Some(s),
        Some(Err(e)) => e.to_string(),
        None if shard.stopping.is_set() => return None,
        None => format!("no handshake within {TLS_HANDSHAKE_MS_MAX} ms"),
    };
    crate::admin::metrics::tls_handshake_failed();
    if let Some(suppressed) = bad_input_log_permit() {
        tracing::warn!(error = %why, suppressed, "TLS handshake failed, closing connection");
    }
    None
}

/// Serves one connection until the client closes it, it errs, idles out, or the shard stops.
async fn serve<S: ConnStream>(
    shard: Rc<Shard>,
    stream: S,
    session: Rc<Session>,
    peer_addr: Option<std::net::SocketAddr>,
) {
    let span = tracing::Span::current();
    let mut client_id_known = false;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(shard.config.inflight_requests_max.max(1));
    let activity = Rc::new(Activity {
        last: Cell::new(Instant::now()),
        busy: Cell::new(0),
    });
    let writer_activity = activity.clone();
    let write_task = glommio::spawn_local(
        async move {
            while let Some(pending) = rx.recv().await {
                let outcome = match pending.await {
                    Some(r) => r,
                    None => Err(FrameError::Encode("request task cancelled".into())),
                };
                match outcome {
                    Ok(Some(resp)) => {
                        crate::admin::metrics::bytes_out(resp.bytes());
                        for chunk in &resp.chunks {
                            if let Err(e) = writer.write_all(chunk.as_slice()).await {
                                tracing::info!(error = %e, "client went away mid-response");
                                return false;
                            }
                        }
                        // Compiled out for plain TCP (see `ConnStream`); with TLS the
                        // answer's last records leave now, not with the next answer.
                        if S::BUFFERS_WRITES {
                            if let Err(e) = writer.flush().await {
                                tracing::info!(error = %e, "client went away mid-response");
                                return false;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Some(suppressed) = bad_input_log_permit() {
                            tracing::warn!(error = %e, suppressed, "closing connection");
                        }
                        // Shut the socket for writing now: the client sees the close at once,
                        // rather than when the reader next wakes (it may wait for a request
                        // the client will not send before it has this one's answer).
                        let _ = writer.close().await;
                        return false;
                    }
                }
                // Answered and written: the connection is idle from here if nothing else is
                // in flight (a long response being written does not count as idle).
                writer_activity.touch();
                writer_activity
                    .busy
                    .set(writer_activity.busy.get().saturating_sub(1));
            }
            let _ = writer.flush().await;
            let _ = writer.close().await;
            true
        }
        .instrument(span.clone()),
    );
    let idle = Duration::from_millis(shard.config.connection_idle_ms_max);
    loop {
        // A client that keeps requests queued would keep the read below ready forever (it
        // is polled first): a stopping shard takes no new request either way.
        if shard.stopping.is_set() {
            break;
        }
        let outcome = futures_lite::future::or(
            async {
                match read_frame(&mut reader, &shard, &session, &activity).await {
                    Ok(Some((f, permit))) => Ok(ReadOutcome::Frame(f, permit)),
                    Ok(None) => Ok(ReadOutcome::Closed),
                    Err(e) => Err(e),
                }
            },
            futures_lite::future::or(
                async {
                    idle_for(&activity, idle).await;
                    Ok(ReadOutcome::Idle)
                },
                async {
                    shard.stopping.wait().await;
                    Ok(ReadOutcome::Stopping)
                },
            ),
        )
        .await;
        let (frame, permit) = match outcome {
            Ok(ReadOutcome::Frame(f, permit)) => {
                crate::admin::metrics::bytes_in(f.len() + 4);
                (f, permit)
            }
            Ok(ReadOutcome::Closed) => break,
            Ok(ReadOutcome::Idle) => {
                crate::admin::metrics::connection_idle_closed();
                tracing::debug!(idle_ms = idle.as_millis() as u64, "closing idle connection");
                break;
            }
            Ok(ReadOutcome::Stopping) => break,
            // A client that goes away mid-request (a stalled sender giving up, a crash)
            // sent nothing malformed.
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(error = %e, "client closed the connection mid-request");
                break;
            }
            Err(e) => {
                crate::admin::metrics::bad_frame();
                if let Some(suppressed) = bad_input_log_permit() {
                    tracing::warn!(error = %e, suppressed, "bad frame, closing connection");
                }
                break;
            }
        };
        if !session.is_authenticated() && session.expects_raw_token() {
            // After SaslHandshake v0 the client's frames are bare SASL tokens, answered in
            // kind. SASL is lock-step: the client sends its next frame only once it has this
            // answer, so the exchange's state has moved on before that frame is read.
            let (s, session) = (shard.clone(), session.clone());
            let task = glommio::spawn_local(
                async move {
                    let _permit = permit;
                    handlers::sasl_authenticate::raw_token(&s, &session, &frame)
                        .await
                        .map(Some)
                }
                .instrument(span.clone()),
            )
            .detach();
            activity.busy.set(activity.busy.get() + 1);
            if tx.send(task).await.is_err() {
                break;
            }
            continue;
        }
        let req = match frame::parse_request(frame) {
            Ok(mut r) => {
                r.peer_ip = peer_addr.map(|a| a.ip());
                if !client_id_known {
                    client_id_known = true;
                    span.record("client_id", r.header.client_id.as_deref().unwrap_or(""));
                }
                r
            }
            Err(e) => {
                crate::admin::metrics::bad_frame();
                if let Some(suppressed) = bad_input_log_permit() {
                    tracing::warn!(error = %e, suppressed, "bad request, closing connection");
                }
                break;
            }
        };
        let s = shard.clone();
        let session = session.clone();
        let work = match req.api_key as i16 {
            0 => Work::Produce,
            1 => Work::Fetch,
            _ => Work::Other,
        };
        let task = shard
            .spawn(
                work,
                async move {
                    // The request's bytes count against the shard's budget until it is answered.
                    let _permit = permit;
                    let started = std::time::Instant::now();
                    let key = req.api_key as i16;
                    let r = handlers::dispatch(s, &session, req).await;
                    crate::admin::metrics::request(key, started.elapsed(), r.is_err());
                    r
                }
                .instrument(span.clone()),
            )
            .detach();
        activity.busy.set(activity.busy.get() + 1);
        if tx.send(task).await.is_err() {
            // The writer stopped (write error or a request that closes the connection).
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
}

/// Lines about bad input (malformed frames, refused requests) each shard logs per second at
/// most: a client flooding bad frames must not fill the disk with logs. Lines past the
/// bound are counted, and the count goes out with the next line let through.
const BAD_INPUT_LOG_LINES_PER_SEC_MAX: u32 = 10;

/// A one-second window of log lines of one kind (one per shard: shards are threads),
/// at most `lines_max` a second.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window_start: std::time::Instant,
    lines: u32,
    suppressed: u64,
    lines_max: u32,
}

impl LogLimiter {
    pub(crate) fn new(lines_max: u32) -> LogLimiter {
        LogLimiter {
            window_start: std::time::Instant::now(),
            lines: 0,
            suppressed: 0,
            lines_max,
        }
    }

    /// `Some(lines suppressed since the last one let through)` if a line may go out now.
    pub(crate) fn permit(&mut self, now: std::time::Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.lines = 0;
        }
        if self.lines >= self.lines_max {
            self.suppressed += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

thread_local! {
    static BAD_INPUT_LOG: std::cell::RefCell<LogLimiter> =
        std::cell::RefCell::new(LogLimiter::new(BAD_INPUT_LOG_LINES_PER_SEC_MAX));
}

/// Whether this shard may log a bad-input line now (see [`BAD_INPUT_LOG_LINES_PER_SEC_MAX`]).
fn bad_input_log_permit() -> Option<u64> {
    BAD_INPUT_LOG.with(|l| l.borrow_mut().permit(std::time::Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_lines_are_limited_per_second_and_the_rest_counted() {
        let t0 = std::time::Instant::now();
        let mut l = LogLimiter::new(BAD_INPUT_LOG_LINES_PER_SEC_MAX);
        l.window_start = t0;
        let max = BAD_INPUT_LOG_LINES_PER_SEC_MAX as usize;
        let let_through = (0..max + 25).filter(|_| l.permit(t0).is_some()).count();
        assert_eq!(let_through, max);
        // The next window's first line carries the count of those suppressed.
        assert_eq!(l.permit(t0 + Duration::from_millis(1_000)), Some(25));
        assert_eq!(l.permit(t0 + Duration::from_millis(1_001)), Some(0));
    }
}

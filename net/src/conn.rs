//! One client connection: a reader that parses frames and starts a task per request, and a
//! writer that awaits those tasks in request order and writes their responses. At most
//! `inflight_requests_max` requests are in flight; past that the reader stops reading.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::frame::{self, FrameError, ResponseFrame};
use crate::handlers;
use crate::shard::{Shard, Work};

type Pending = JoinHandle<Result<Option<ResponseFrame>, FrameError>>;

enum ReadOutcome {
    Frame(Bytes),
    Closed,
    Idle,
    Stopping,
}

async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame::check_length(i32::from_be_bytes(len), max)?;
    let mut body = crate::frame_pool::FrameBuf::new(len);
    reader.read_exact(body.as_mut_slice()).await?;
    Ok(Some(body.into_bytes()))
}

/// Serves `stream` on this shard, whose connection slot was taken for it, and gives the
/// slot back when the connection ends.
pub fn spawn(shard: Rc<Shard>, stream: TcpStream) {
    crate::metrics::connection_opened();
    glommio::spawn_local(async move {
        serve(shard.clone(), stream).await;
        shard.connections.release(shard.id);
        crate::metrics::connection_closed();
    })
    .detach();
}

/// Serves one connection until the client closes it, it errs, idles out, or the shard stops.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(shard.config.inflight_requests_max.max(1));
    let writer_shard = shard.clone();
    let peer_w = peer.clone();
    let write_task = glommio::spawn_local(async move {
        while let Some(pending) = rx.recv().await {
            let outcome = match pending.await {
                Some(r) => r,
                None => Err(FrameError::Encode("request task cancelled".into())),
            };
            match outcome {
                Ok(Some(resp)) => {
                    crate::metrics::bytes_out(resp.bytes());
                    for chunk in &resp.chunks {
                        if let Err(e) = writer.write_all(chunk.as_slice()).await {
                            tracing::info!(shard = writer_shard.id, peer = %peer_w, error = %e, "client went away mid-response");
                            return false;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some(suppressed) = bad_input_log_permit() {
                        tracing::warn!(shard = writer_shard.id, peer = %peer_w, error = %e, suppressed, "closing connection");
                    }
                    // Shut the socket for writing now: the client sees the close at once,
                    // rather than when the reader next wakes (it may wait for a request
                    // the client will not send before it has this one's answer).
                    let _ = writer.close().await;
                    return false;
                }
            }
        }
        let _ = writer.flush().await;
        let _ = writer.close().await;
        true
    });
    let idle = Duration::from_millis(shard.config.connection_idle_ms_max);
    loop {
        let outcome = futures_lite::future::or(
            async {
                match read_frame(&mut reader, shard.config.request_bytes_max).await {
                    Ok(Some(f)) => Ok(ReadOutcome::Frame(f)),
                    Ok(None) => Ok(ReadOutcome::Closed),
                    Err(e) => Err(e),
                }
            },
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(idle).await;
                    Ok(ReadOutcome::Idle)
                },
                async {
                    shard.stopping.wait().await;
                    Ok(ReadOutcome::Stopping)
                },
            ),
        )
        .await;
        let frame = match outcome {
            Ok(ReadOutcome::Frame(f)) => {
                crate::metrics::bytes_in(f.len() + 4);
                f
            }
            Ok(ReadOutcome::Closed) => break,
            Ok(ReadOutcome::Idle) => {
                tracing::info!(shard = shard.id, peer = %peer, "closing idle connection");
                break;
            }
            Ok(ReadOutcome::Stopping) => break,
            Err(e) => {
                crate::metrics::bad_frame();
                if let Some(suppressed) = bad_input_log_permit() {
                    tracing::warn!(shard = shard.id, peer = %peer, error = %e, suppressed, "bad frame, closing connection");
                }
                break;
            }
        };
        let req = match frame::parse_request(frame) {
            Ok(mut r) => {
                r.peer_ip = peer_addr.map(|a| a.ip());
                r
            }
            Err(e) => {
                crate::metrics::bad_frame();
                if let Some(suppressed) = bad_input_log_permit() {
                    tracing::warn!(shard = shard.id, peer = %peer, error = %e, suppressed, "bad request, closing connection");
                }
                break;
            }
        };
        let s = shard.clone();
        let work = match req.api_key as i16 {
            0 => Work::Produce,
            1 => Work::Fetch,
            _ => Work::Other,
        };
        let task = shard
            .spawn(work, async move {
                let started = std::time::Instant::now();
                let key = req.api_key as i16;
                let r = handlers::dispatch(s, req).await;
                crate::metrics::request(key, started.elapsed(), r.is_err());
                r
            })
            .detach();
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

/// A one-second window of bad-input log lines (one per shard: shards are threads).
#[derive(Debug)]
struct LogLimiter {
    window_start: std::time::Instant,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(lines suppressed since the last one let through)` if a line may go out now.
    fn permit(&mut self, now: std::time::Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.lines = 0;
        }
        if self.lines >= BAD_INPUT_LOG_LINES_PER_SEC_MAX {
            self.suppressed += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

thread_local! {
    static BAD_INPUT_LOG: std::cell::RefCell<LogLimiter> = std::cell::RefCell::new(LogLimiter {
        window_start: std::time::Instant::now(),
        lines: 0,
        suppressed: 0,
    });
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
        let mut l = LogLimiter {
            window_start: t0,
            lines: 0,
            suppressed: 0,
        };
        let max = BAD_INPUT_LOG_LINES_PER_SEC_MAX as usize;
        let let_through = (0..max + 25).filter(|_| l.permit(t0).is_some()).count();
        assert_eq!(let_through, max);
        // The next window's first line carries the count of those suppressed.
        assert_eq!(l.permit(t0 + Duration::from_millis(1_000)), Some(25));
        assert_eq!(l.permit(t0 + Duration::from_millis(1_001)), Some(0));
    }
}

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
                    tracing::warn!(shard = writer_shard.id, peer = %peer_w, error = %e, "closing connection");
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
        // A client that keeps requests queued would keep the read below ready forever (it
        // is polled first): a stopping shard takes no new request either way.
        if shard.stopping.is_set() {
            break;
        }
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
                tracing::warn!(shard = shard.id, peer = %peer, error = %e, "bad frame, closing connection");
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
                tracing::warn!(shard = shard.id, peer = %peer, error = %e, "bad request, closing connection");
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

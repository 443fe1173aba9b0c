//! Broker request connections: bounded in number, closed when idle; each frame is one
//! request, answered in order.

use std::rc::Rc;

use futures_lite::AsyncWriteExt;

use super::handle::handle;
use super::{NodeState, RPC_CONNECTIONS_MAX, RPC_IDLE_MAX};
use crate::rpc::{self, ErrorKind, Reply, Request};
use crate::tls::ClusterStream;

pub(super) async fn serve_requests(state: Rc<NodeState>, stream: ClusterStream, buf: Vec<u8>) {
    let open = state.rpc_connections.get();
    if open >= RPC_CONNECTIONS_MAX {
        tracing::warn!(
            max = RPC_CONNECTIONS_MAX,
            "too many broker connections; closing one"
        );
        return;
    }
    state.rpc_connections.set(open + 1);
    answer_requests(&state, stream, buf).await;
    state.rpc_connections.set(state.rpc_connections.get() - 1);
}

pub(super) async fn answer_requests(
    state: &Rc<NodeState>,
    mut stream: ClusterStream,
    mut buf: Vec<u8>,
) {
    loop {
        let read = futures_lite::future::or(
            async { Some(rpc::read_frame(&mut stream, &mut buf).await) },
            async {
                glommio::timer::sleep(RPC_IDLE_MAX).await;
                None
            },
        )
        .await;
        let Some(read) = read else {
            return; // idle: the slot goes to someone else
        };
        let body = match read {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "bad broker request; closing the connection");
                return;
            }
        };
        let reply = match Request::decode(&body) {
            Ok(r) => handle(state, r).await,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable broker request");
                Reply::Error {
                    kind: ErrorKind::InvalidRequest,
                    message: e.to_string(),
                }
            }
        };
        let written = async {
            stream.write_all(&rpc::frame(&reply.encode())).await?;
            stream.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
}

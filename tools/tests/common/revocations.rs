//! A consumer context that records every partition the client is told to give up (its
//! `pre_rebalance` revocations), for tests of rebalances.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

/// The (topic, partition) pairs revoked so far, in order.
#[derive(Default, Clone)]
pub struct Revocations(pub Arc<Mutex<Vec<(String, i32)>>>);

impl ClientContext for Revocations {}
impl ConsumerContext for Revocations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let mut v = self.0.lock().unwrap();
            for e in tpl.elements() {
                v.push((e.topic().to_string(), e.partition()));
            }
        }
    }
}

//! The active controller's broker duties: registration, heartbeats, fencing brokers whose
//! session expired, unfencing brokers that heartbeat again, and preferred-leader
//! elections. Decisions come from `election` and `placement`; this module only decides
//! when to propose them and avoids proposing the same thing twice while it is in flight.
//!
//! Heartbeats live in memory on the active controller (as in KRaft): a node that becomes
//! leader starts every broker's session afresh from that moment, so a failover never
//! fences a live broker. So does the set of brokers in controlled shutdown: they are not
//! unfenced, elected or added to an ISR until they register again (a stopping broker also
//! stops heartbeating, so a new active controller that never saw its shutdown does not
//! unfence it either). The set remembers the broker epoch each broker left with and counts
//! a broker only while the image still has it registered with that epoch: a broker that
//! registered again through another controller (this one was not active meanwhile) is
//! back, even though this controller never saw the registration (before, a controller
//! that became active again kept a restarted broker fenced and out of every ISR for good).
//!
//! Decisions are made from the image one at a time: nothing is decided while an earlier
//! proposal (this module's, an ISR change's, a shutdown's) is not yet applied, so no
//! decision overwrites a partition state that a proposal in flight is changing.

use std::collections::{BTreeMap, BTreeSet};

use crate::controller::{Controller, ControllerError};
use crate::election::{
    controlled_shutdown_records, fence_broker, preferred_leader_records_except, unfence_broker,
    BrokerLiveness,
};
use crate::image::MetadataImage;
use crate::records::{Listener, Record};
use crate::types::{BrokerEpoch, BrokerId, Millis};

/// Settings of the active controller's broker handling.
#[derive(Debug, Clone)]
pub struct BrokerControlConfig {
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
}

impl Default for BrokerControlConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 9_000,
            auto_leader_rebalance: true,
        }
    }
}

/// What a broker's heartbeat is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatReply {
    /// Registered and unfenced.
    Active,
    /// Registered but fenced (an unfence is on its way if the broker keeps heartbeating).
    Fenced,
    /// Unknown broker or stale epoch: the broker must register again.
    RegisterAgain,
    /// The broker's epoch is newer than this controller's image knows, and entries of its
    /// log are not applied yet (a controller that just took over): its registration is
    /// among them. No decision: keep the state you have and ask again soon.
    NotYetKnown,
}

/// The steps of a broker's controlled shutdown, as the controller carries them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// It asks to stop: its leaderships move, it leaves every ISR.
    Shutdown,
    /// It no longer serves: it is fenced.
    Stopped,
}

/// The active controller's broker bookkeeping. Call `poll` regularly (e.g. every tick)
/// with the current time; it proposes through the controller only while it leads.
#[derive(Debug)]
pub struct BrokerControl {
    config: BrokerControlConfig,
    liveness: BrokerLiveness,
    /// When this node became the active controller (`None`: not active).
    active_since: Option<Millis>,
    /// Proposals in flight: the log index that must be applied before re-deciding.
    in_flight_until: u64,
    /// Brokers in controlled shutdown, with the broker epoch they left with (until they
    /// register again, here or through another controller).
    shutting_down: BTreeMap<BrokerId, BrokerEpoch>,
}

impl BrokerControl {
    pub fn new(config: BrokerControlConfig) -> Self {
        Self {
            liveness: BrokerLiveness::new(config.session_timeout_ms),
            config,
            active_since: None,
            in_flight_until: 0,
            shutting_down: BTreeMap::new(),
        }
    }

    /// Brokers in controlled shutdown as of `image`: those it still has registered with
    /// the epoch they left with (a new epoch means the broker registered again).
    pub fn shutting_down(&self, image: &MetadataImage) -> BTreeSet<BrokerId> {
        self.shutting_down
            .iter()
            .filter(|(b, e)| image.broker(**b).is_some_and(|info| info.epoch == **e))
            .map(|(b, _)| *b)
            .collect()
    }

    /// The log index every proposal so far reaches: decide again only once the image has
    /// applied it.
    pub fn in_flight_until(&self) -> u64 {
        self.in_flight_until
    }

    /// When this controller became the active one (`now` if just now). On becoming it, the
    /// decisions wait (`in_flight_until`) until every entry in its log is applied: entries
    /// of the previous leader may not be in its image yet, and a decision made from an
    /// image without them is refused when applied (an epoch that would go backwards).
    pub fn leading_since(&mut self, ctl: &Controller, now: Millis) -> Millis {
        if let Some(since) = self.active_since {
            return since;
        }
        self.active_since = Some(now);
        self.proposed_until(ctl.last_index());
        now
    }

    /// Notes a proposal made outside `poll` (an ISR change), so `poll` waits for it.
    pub fn proposed_until(&mut self, index: u64) {
        self.in_flight_until = self.in_flight_until.max(index);
    }

    /// A broker leaving (registered with `epoch`): for [`Leaving::Shutdown`] proposes
    /// `controlled_shutdown_records`, for [`Leaving::Stopped`] `fence_broker` (fenced now;
    /// what it alone held goes offline, waiting for it); either way it is remembered as
    /// shutting down until it registers again. Returns what it proposed (empty: nothing
    /// to change). `Err(Some(registered))` on a stale epoch, `Err(None)` for an unknown
    /// broker.
    pub fn leave(
        &mut self,
        ctl: &mut Controller,
        broker: BrokerId,
        epoch: BrokerEpoch,
        step: Leaving,
    ) -> Result<Result<Vec<Record>, Option<BrokerEpoch>>, ControllerError> {
        let image = ctl.image();
        match image.broker(broker) {
            None => return Ok(Err(None)),
            Some(b) if b.epoch != epoch => return Ok(Err(Some(b.epoch))),
            Some(_) => {}
        }
        self.shutting_down.insert(broker, epoch);
        let records = match step {
            Leaving::Shutdown => {
                controlled_shutdown_records(&image, broker, &self.shutting_down(&image))
            }
            Leaving::Stopped => fence_broker(&image, broker),
        };
        for r in &records {
            ctl.propose(r)?;
        }
        if !records.is_empty() {
            self.proposed_until(ctl.last_index());
        }
        Ok(Ok(records))
    }

    /// Registers (or re-registers) a broker; returns the epoch it must heartbeat with.
    /// Epochs come from the log position, so they grow across controller failovers.
    pub fn register(
        &mut self,
        ctl: &mut Controller,
        broker: BrokerId,
        rack: Option<String>,
        listeners: Vec<Listener>,
        now: Millis,
    ) -> Result<BrokerEpoch, ControllerError> {
        let image = ctl.image();
        let previous = image.broker(broker).map_or(0, |b| b.epoch.0);
        // A broker registering again has restarted: its old incarnation leads nothing
        // from now on (fence it first, moving its leaderships within the ISR).
        for r in fence_broker(&image, broker) {
            ctl.propose(&r)?;
        }
        self.shutting_down.remove(&broker);
        let from_log = i64::try_from(ctl.last_index() + 1).unwrap_or(i64::MAX);
        let epoch = BrokerEpoch(from_log.max(previous.saturating_add(1)));
        ctl.propose(&Record::RegisterBroker {
            broker,
            epoch,
            rack,
            listeners,
        })?;
        // Until these apply, `poll` must not decide from an image where the old
        // incarnation is still registered (it would fence an epoch that is gone).
        self.proposed_until(ctl.last_index());
        self.liveness.heartbeat(broker, now);
        Ok(epoch)
    }

    /// Records a heartbeat and answers it from the latest image.
    pub fn heartbeat(
        &mut self,
        ctl: &Controller,
        broker: BrokerId,
        epoch: BrokerEpoch,
        now: Millis,
    ) -> HeartbeatReply {
        let image = ctl.image();
        let known = image.broker(broker).map(|b| (b.epoch, b.fenced));
        match known {
            Some((e, fenced)) if e == epoch => {
                self.liveness.heartbeat(broker, now);
                if fenced {
                    HeartbeatReply::Fenced
                } else {
                    HeartbeatReply::Active
                }
            }
            // Epochs only grow, and only a controller hands them out after the
            // registration is applied, so a newer one than the image knows is in this log,
            // not applied yet. Telling the broker to register again would fence the
            // incarnation that is serving (see `register`) until the next unfence, and its
            // Metadata answers would leave itself out meanwhile.
            Some((e, _)) if e < epoch && image.offset().0 < ctl.last_index() => {
                self.liveness.heartbeat(broker, now);
                HeartbeatReply::NotYetKnown
            }
            None if image.offset().0 < ctl.last_index() => {
                self.liveness.heartbeat(broker, now);
                HeartbeatReply::NotYetKnown
            }
            _ => HeartbeatReply::RegisterAgain,
        }
    }

    /// Fences one expired broker, or else unfences one fenced broker that heartbeats within
    /// the session, or else (if enabled) moves leadership back to preferred replicas.
    /// Returns what it proposed.
    pub fn poll(
        &mut self,
        ctl: &mut Controller,
        now: Millis,
    ) -> Result<Vec<Record>, ControllerError> {
        if !ctl.is_leader() {
            self.active_since = None;
            return Ok(Vec::new());
        }
        let since = self.leading_since(ctl, now);
        let image = ctl.image();
        if image.offset().0 < self.in_flight_until {
            return Ok(Vec::new());
        }
        // One broker per pass: each broker's records are decided from `image`, so two
        // brokers decided together would both elect a leader for the same partition at
        // the same next epoch, and every node rejects the second change when applying it
        // (seen after all three brokers restarted at once: three rejected PartitionChange
        // records, and partitions led by a broker the image had just moved away from).
        // The next pass runs once these are applied and decides the next broker.
        let mut records = Vec::new();
        for b in self.liveness.expired(&image, now, since) {
            records = fence_broker(&image, b);
            if !records.is_empty() {
                break;
            }
        }
        // Brokers that registered again (through any controller) are no longer leaving.
        self.shutting_down
            .retain(|b, e| image.broker(*b).is_some_and(|info| info.epoch == *e));
        let shutting_down = self.shutting_down(&image);
        if records.is_empty() {
            let recent: BTreeMap<BrokerId, bool> = image
                .brokers()
                .filter(|b| b.fenced)
                .map(|b| (b.id, self.liveness.alive(b.id, now)))
                .collect();
            for (b, _) in recent.into_iter().filter(|(_, alive)| *alive) {
                if !shutting_down.contains(&b) {
                    records = unfence_broker(&image, b);
                    if !records.is_empty() {
                        break;
                    }
                }
            }
        }
        if records.is_empty() && self.config.auto_leader_rebalance {
            records = preferred_leader_records_except(&image, &shutting_down);
        }
        for r in &records {
            ctl.propose(r)?;
        }
        if !records.is_empty() {
            self.proposed_until(ctl.last_index());
        }
        Ok(records)
    }
}

//! The pairs workload: sender→receiver pairs, each with a window of unacknowledged
//! messages (acknowledged = received by the receiver). Latency is send → deliver,
//! measured from a timestamp the sender writes in the body (both ends are in this
//! process). Used by `pairs` and, as the background load, by `storm`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use wire::frame::Frame;
use wire::Phone;

use crate::engine::{Ev, Fleet};
use crate::login::{hist, record};

/// Deliveries are also counted per bucket of this length, for the throughput chart.
pub const BUCKET: Duration = Duration::from_millis(100);

pub struct Pairs {
    senders: Vec<usize>,
    to: Vec<Phone>,
    inflight: Vec<u32>,
    next_id: Vec<u64>,
    /// By connection id: (is the sender, pair).
    role: Vec<Option<(bool, u32)>>,
    window: u32,
    body: Vec<u8>,
    epoch: Instant,
    pub measuring: bool,
    pub stopping: bool,
    /// Latency while measuring.
    pub hist: Histogram<u64>,
    /// Delivered while measuring.
    pub delivered: u64,
    /// Delivered per [`BUCKET`] since the pairs started.
    pub timeline: Vec<u64>,
    pub refused: u64,
}

impl Pairs {
    /// `ids`: connection ids of the phones, sender then receiver for each pair.
    pub fn new(ids: &[usize], phones: &[Phone], window: u32, body: usize) -> Pairs {
        let n = ids.len() / 2;
        let mut role = vec![None; ids.iter().max().map_or(0, |m| m + 1)];
        for (i, id) in ids.iter().enumerate() {
            role[*id] = Some((i % 2 == 0, (i / 2) as u32));
        }
        Pairs {
            senders: ids.iter().step_by(2).copied().collect(),
            to: phones.iter().skip(1).step_by(2).copied().collect(),
            inflight: vec![0; n],
            next_id: vec![0; n],
            role,
            window,
            body: vec![0x42; body.max(8)],
            epoch: Instant::now(),
            measuring: false,
            stopping: false,
            hist: hist(),
            delivered: 0,
            timeline: Vec::new(),
            refused: 0,
        }
    }

    pub fn pairs(&self) -> usize {
        self.senders.len()
    }

    fn fill(&mut self, fleet: &mut Fleet, pair: usize) {
        while !self.stopping && self.inflight[pair] < self.window {
            let now = self.epoch.elapsed().as_nanos() as u64;
            self.body[..8].copy_from_slice(&now.to_le_bytes());
            let msg_id = self.next_id[pair];
            fleet.send(
                self.senders[pair],
                Frame::Send {
                    to: self.to[pair],
                    msg_id,
                    body: &self.body,
                },
            );
            self.next_id[pair] += 1;
            self.inflight[pair] += 1;
        }
    }

    /// Fills every pair's window.
    pub fn start(&mut self, fleet: &mut Fleet) {
        self.epoch = Instant::now();
        for p in 0..self.pairs() {
            self.fill(fleet, p);
        }
    }

    /// Starts a new measurement window.
    pub fn measure(&mut self) {
        self.hist.reset();
        self.delivered = 0;
        self.measuring = true;
    }

    /// Handles an event if it is about a pair: `Ok(false)` when it is not. A pair's
    /// connection closing is an error.
    pub fn on(&mut self, fleet: &mut Fleet, ev: &Ev) -> Result<bool, String> {
        let id = match ev {
            Ev::Deliver { id, .. }
            | Ev::Receipt { id, .. }
            | Ev::ServerAck { id, .. }
            | Ev::Refused { id, .. }
            | Ev::Closed { id, .. }
            | Ev::Ready { id, .. } => *id,
        };
        let Some((sender, pair)) = self.role.get(id).copied().flatten() else {
            return Ok(false);
        };
        let pair = pair as usize;
        match ev {
            Ev::Deliver { seq, body, .. } if !sender => {
                fleet.send(id, Frame::Ack { seq: *seq });
                self.inflight[pair] = self.inflight[pair].saturating_sub(1);
                if body.len() >= 8 {
                    let sent = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    let now = self.epoch.elapsed();
                    if self.measuring {
                        record(
                            &mut self.hist,
                            now.saturating_sub(Duration::from_nanos(sent)),
                        );
                        self.delivered += 1;
                    }
                    let b = (now.as_nanos() / BUCKET.as_nanos()) as usize;
                    if self.timeline.len() <= b {
                        self.timeline.resize(b + 1, 0);
                    }
                    self.timeline[b] += 1;
                }
                self.fill(fleet, pair);
            }
            Ev::Receipt { seq, .. } => {
                fleet.send(id, Frame::Ack { seq: *seq });
            }
            Ev::Refused { .. } if sender => {
                self.refused += 1;
                self.inflight[pair] = self.inflight[pair].saturating_sub(1);
                self.fill(fleet, pair);
            }
            Ev::Closed { why, .. } => {
                return Err(format!(
                    "pair {pair}: the {} lost its connection: {why}",
                    if sender { "sender" } else { "receiver" }
                ))
            }
            _ => {}
        }
        Ok(true)
    }
}

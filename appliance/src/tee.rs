//! Tee'd traffic: a sample of the requests the gateway sends its routers, by user,
//! mirrored to a shadow router cluster (a test box), whose replies are discarded.
//!
//! The real path never waits for the shadow: a sampled request is copied into a bounded
//! queue per shadow router with `try_send` after the real link took it; a full queue
//! (shadow slow, or down and being redialled) drops the copy and counts it.
//!
//! ```toml
//! [tee]
//! enabled = true
//! sample_percent = 10            # of users (by a hash of the phone number); a knob
//! queue = 10000                  # frames per shadow router
//! [tee.cluster]                  # the shadow cluster, in the [cluster] format
//! secret = "…"
//! [[tee.cluster.router]]
//! id = 1
//! address = "10.0.0.7:7600"
//! partitions = "0-1023"
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::link::RouterLink;
use router::PartitionMap;
use wire::link::ToRouter;
use wire::linkcodec::{LinkMsg, PeerKind};
use wire::Phone;

use crate::config::TeeConfig;
use link::{link_channel, LinkSender};

/// The mirror: where copies go, how many, and what became of them.
pub struct Tee {
    map: PartitionMap,
    queues: HashMap<u16, LinkSender>,
    /// The sample, in percent of users (the `tee_sample_percent` knob writes it).
    pub sample_percent: Arc<AtomicU64>,
    hasher: ahash::RandomState,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
}

/// The mirror's counters for the figures, when it runs.
pub fn figures(tee: &Option<Arc<Tee>>) -> Option<Arc<dyn crate::metrics::TeeFigures>> {
    tee.clone()
        .map(|t| t as Arc<dyn crate::metrics::TeeFigures>)
}

impl crate::metrics::TeeFigures for Tee {
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Tee {
    /// Frames waiting for each shadow router: ("shadow router N", length).
    pub fn queued(&self) -> Vec<(String, usize)> {
        let mut q: Vec<(String, usize)> = self
            .queues
            .iter()
            .map(|(id, tx)| (format!("shadow router {id}"), tx.queued()))
            .collect();
        q.sort();
        q
    }

    /// Starts one dialling thread per shadow router (they redial for ever, until
    /// `stop`). `origin`: what this process's connection ids carry (`ConnId::origin`),
    /// announced to the shadow as a gateway's link does.
    pub fn start(
        config: &TeeConfig,
        partitions: u32,
        sample_percent: Arc<AtomicU64>,
        stop: &Arc<AtomicBool>,
        origin: u16,
    ) -> Result<Arc<Tee>, String> {
        let cluster = config
            .cluster
            .validate(partitions)
            .map_err(|e| format!("tee.{e}"))?;
        let mut queues = HashMap::new();
        for node in cluster.routers.iter().cloned() {
            let (tx, rx) = link_channel(config.queue).map_err(|e| e.to_string())?;
            queues.insert(node.id, tx);
            let to = cluster.dial(
                &node,
                cluster.link_tls_to(&node)?,
                PeerKind::Gateway,
                origin,
            );
            let (batch, stop) = (
                Arc::new(AtomicUsize::new(cluster.link_batch_bytes)),
                Arc::clone(stop),
            );
            std::thread::Builder::new()
                .name(format!("tee-router-{}", node.id))
                .spawn(move || {
                    link::dial(
                        to,
                        rx,
                        batch,
                        stop,
                        Arc::new(AtomicBool::new(false)),
                        |_| Ok(()),
                        |_| {}, // shadow replies are discarded
                    )
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(Arc::new(Tee {
            map: cluster.map,
            queues,
            sample_percent,
            hasher: ahash::RandomState::with_seeds(3, 5, 7, 11),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether `user`'s requests are mirrored (the same answer for a user as long as
    /// the percentage does not change).
    pub fn sampled(&self, user: Phone) -> bool {
        let p = self.sample_percent.load(Ordering::Relaxed);
        p > 0 && self.hasher.hash_one(user.get()) % 100 < p
    }

    /// Offers a copy to its shadow router's queue; never waits.
    pub fn push(&self, req: ToRouter) {
        let owner = self.map.shard_of(req.route_key());
        let ok = self
            .queues
            .get(&owner)
            .is_some_and(|q| q.try_send(LinkMsg::Req(req)).is_ok());
        let c = if ok { &self.sent } else { &self.dropped };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A worker's link to its routers with the tee in front of it.
/// Starts the tee when `[tee] enabled` (`serve` and `switchboard gateway`).
pub fn start_configured(
    config: &crate::config::Config,
    control: &crate::control::Control,
    stop: &Arc<AtomicBool>,
    origin: u16,
) -> Result<Option<Arc<Tee>>, String> {
    if !config.tee.enabled {
        return Ok(None);
    }
    let t = Tee::start(
        &config.tee,
        config.router.partitions,
        Arc::clone(&control.tee_sample_percent),
        stop,
        origin,
    )?;
    tracing::info!(
        "tee: mirroring {} % of users to {} shadow router(s)",
        config.tee.sample_percent,
        config.tee.cluster.routers.len()
    );
    Ok(Some(t))
}

/// A worker's link to its routers, mirrored through the tee when there is one.
pub fn wrap(tee: &Option<Arc<Tee>>, link: Box<dyn RouterLink>) -> Box<dyn RouterLink> {
    match tee {
        Some(t) => Box::new(TeeLink {
            inner: link,
            tee: Arc::clone(t),
        }),
        None => link,
    }
}

pub struct TeeLink {
    pub inner: Box<dyn RouterLink>,
    pub tee: Arc<Tee>,
}

impl RouterLink for TeeLink {
    fn send(&mut self, req: ToRouter) -> Result<(), ToRouter> {
        // Copied only once the real link took it (a request handed back is offered
        // again later and would be mirrored twice).
        let copy = self.tee.sampled(req.route_key()).then(|| req.clone());
        self.inner.send(req)?;
        if let Some(c) = copy {
            self.tee.push(c);
        }
        Ok(())
    }

    fn flush(&mut self) -> bool {
        self.inner.flush()
    }

    fn tick_every(&self) -> Option<Duration> {
        self.inner.tick_every()
    }

    fn tick(&mut self) -> bool {
        self.inner.tick()
    }
}

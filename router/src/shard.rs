//! A shard: the owner of some partitions' users, their log, sessions and registrations.
//! Sans-I/O: [`Shard::handle`] takes a request and a `now`, [`Shard::tick`] does the
//! timed work; both push what must be sent into `out`.

use std::collections::VecDeque;
use std::path::Path;

use ahash::AHashMap;
use storage::{Log, LogConfig, Lsn, MsgSeq, NewMessage, RecoveryReport, StorageError, UserId};
use wire::frame::ReceiptKind;
use wire::link::{ConnId, FromRouter, ToClient, ToRouter};
use wire::{ErrorCode, Key, Phone, Pin};

use crate::config::RouterConfig;
use crate::partition::PartitionMap;
use crate::registration::{key_hash, key_matches, new_key, Registrations, Requested, Verified};
use crate::store::Store;
use crate::stored::{self, Stored};

/// A logged-in user's connection and its delivery stream.
struct Session {
    conn: ConnId,
    /// Highest sequence number sent on this connection.
    sent_upto: MsgSeq,
    /// Sent and not yet acknowledged: frames, and their bytes on the wire
    /// ([`delivery_bytes`]).
    inflight: u32,
    inflight_bytes: u64,
}

impl Session {
    fn new(conn: ConnId) -> Session {
        Session {
            conn,
            sent_upto: MsgSeq(0),
            inflight: 0,
            inflight_bytes: 0,
        }
    }
}

/// What one delivery of a stored record costs the connection: its frame (envelope,
/// fixed fields, body) and the TLS record around it (22 bytes in TLS 1.3 at most, when
/// the frame goes in a record of its own).
#[inline]
fn delivery_bytes(stored_body: &[u8]) -> u64 {
    const TLS_RECORD: u64 = 22;
    let frame = match stored::parse(stored_body) {
        Some(Stored::Message(body)) => 8 + 32 + body.len() as u64,
        _ => 8 + 40,
    };
    frame + TLS_RECORD
}

/// Counters of a shard (read by the appliance's stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub sessions: u64,
    pub registrations: u64,
    pub logins: u64,
    pub auth_failures: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub delivered: u64,
    pub receipts_stored: u64,
    pub receipts_dropped: u64,
    pub refused_full: u64,
    pub refused_unknown: u64,
    /// Sends refused because the disk is full (`DiskFull`).
    pub refused_disk_full: u64,
    /// Sends refused because their id was used already with another body (`IdReused`).
    pub ids_reused: u64,
    /// `Read`s dropped: the reader never received that message.
    pub reads_unmatched: u64,
    pub storage_errors: u64,
    pub unreadable: u64,
    /// Messages and receipts sent towards recipients' connections (a message can be
    /// sent again after a reconnect: delivery is at least once).
    pub pushed: u64,
    /// Gauge: answers waiting for the log to be durable.
    pub waiting_durable: u64,
    /// Requests handled (from any gateway, the shadowing tee included).
    pub requests: u64,
}

/// What a shard publishes for readers on other threads (see [`Shard::publish_to`]).
#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    pub stats: ShardStats,
    pub log: storage::LogStats,
}

/// Where a shard publishes its report.
pub type ReportCell = std::sync::Arc<std::sync::Mutex<ShardReport>>;

/// How often a shard's tick publishes its report.
const PUBLISH_EVERY_MS: u64 = 100;

/// Remembers which (recipient, sender, message id) are pending or were delivered
/// lately, to acknowledge a resend without storing it twice. Keys are 64-bit hashes;
/// a pending hit is confirmed against the log, a recent hit is taken as it is (a false
/// match needs a 64-bit collision among the remembered deliveries).
///
/// Recent deliveries live in two generations of `recent_max` each: new ones go into
/// `recent`; when it is full it becomes `older` and the previous `older` is dropped
/// whole. So at least the last `recent_max` deliveries (at most twice that) are
/// remembered, and no delivery pays for forgetting an old one (a hash probe that
/// misses the cache, once per message, when kept in exact order).
struct Dedup {
    hasher: ahash::RandomState,
    pending: AHashMap<u64, u32>,
    /// Delivered: the key, and the hash of the body it had (a resend with another body
    /// is a reused id, refused).
    recent: AHashMap<u64, u64>,
    older: AHashMap<u64, u64>,
    recent_max: usize,
}

impl Dedup {
    fn new(recent_max: usize) -> Self {
        Dedup {
            hasher: ahash::RandomState::with_seeds(7, 11, 13, 17),
            pending: AHashMap::new(),
            recent: AHashMap::new(),
            older: AHashMap::new(),
            recent_max,
        }
    }

    #[inline]
    fn key(&self, to: u64, from: u64, msg_id: u64) -> u64 {
        self.hasher.hash_one((to, from, msg_id))
    }

    #[inline]
    fn stored(&mut self, h: u64) {
        *self.pending.entry(h).or_default() += 1;
    }

    #[inline]
    fn body_hash(&self, body: &[u8]) -> u64 {
        self.hasher.hash_one(body)
    }

    #[inline]
    fn delivered(&mut self, h: u64, body_hash: u64) {
        if let Some(n) = self.pending.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&h);
            }
        }
        if self.recent_max > 0 {
            if self.recent.len() >= self.recent_max {
                let capacity = self.recent.capacity();
                self.older = std::mem::replace(
                    &mut self.recent,
                    AHashMap::with_capacity_and_hasher(capacity, Default::default()),
                );
            }
            self.recent.insert(h, body_hash);
        }
    }

    /// The body hash of a recent delivery with key `h`.
    #[inline]
    fn delivered_body(&self, h: u64) -> Option<u64> {
        self.recent.get(&h).or_else(|| self.older.get(&h)).copied()
    }

    #[inline]
    fn was_delivered(&self, h: u64) -> bool {
        self.delivered_body(h).is_some()
    }
}

/// A source of random bytes (`false`: it failed). The OS CSPRNG by default; tests may
/// pass their own.
pub type Random = Box<dyn FnMut(&mut [u8]) -> bool + Send>;

/// The OS CSPRNG.
pub fn os_random() -> Random {
    Box::new(|b| getrandom::fill(b).is_ok())
}

pub struct Shard<S: Store = Log> {
    id: u16,
    map: PartitionMap,
    config: RouterConfig,
    log: S,
    random: Random,
    sessions: AHashMap<Phone, Session>,
    regs: Registrations,
    /// Answers that wait for the log to be durable up to their position.
    waiting: VecDeque<(Lsn, ConnId, ToClient)>,
    /// Requests for this shard's own users produced while handling another.
    local: VecDeque<ToRouter>,
    dedup: Dedup,
    last_sweep_ms: u64,
    stats: ShardStats,
    report: Option<(ReportCell, u64)>,
    /// Asked every tick for a new group-commit interval (a runtime knob).
    flush_knob: Option<FlushKnob>,
    /// The log's disk was full at the last tick (logged when it changes).
    disk_full: bool,
    /// The log's flush failed (logged once: it stays so).
    flush_failed: bool,
}

/// Returns a new group-commit interval (µs) when it changed.
pub type FlushKnob = Box<dyn FnMut() -> Option<u64> + Send>;

// Every phone is a user id of the log (and `uid` cannot fail): the two ranges agree.
const _: () = assert!(Phone::MAX <= UserId::MAX && Phone::MIN >= 1);

#[inline]
fn uid(p: Phone) -> UserId {
    UserId::new(p.get()).expect("every phone is a user id")
}

#[inline]
fn phone(u: UserId) -> Option<Phone> {
    Phone::new(u.get())
}

#[inline]
fn account_key(p: Phone) -> [u8; 8] {
    p.get().to_le_bytes()
}

impl Shard<Log> {
    /// Opens shard `id`'s log in `dir` (recovering it) and rebuilds what the router keeps
    /// in memory from it.
    pub fn open(
        id: u16,
        map: PartitionMap,
        config: RouterConfig,
        log_config: LogConfig,
        dir: &Path,
        now_ms: u64,
    ) -> Result<(Shard, RecoveryReport), StorageError> {
        let (log, report) = Log::open(dir, log_config, now_ms)?;
        Ok((
            Shard::with_store(id, map, config, log, os_random(), now_ms),
            report,
        ))
    }
}

impl<S: Store> Shard<S> {
    /// A shard over `store` (what it holds already is taken up: pending messages are
    /// remembered for duplicates), drawing PINs and keys from `random`.
    pub fn with_store(
        id: u16,
        map: PartitionMap,
        config: RouterConfig,
        log: S,
        random: Random,
        now_ms: u64,
    ) -> Shard<S> {
        let mut dedup = Dedup::new(config.recent_delivered);
        for u in log.users_with_pending() {
            for m in log.pending(u, None, now_ms) {
                if let Some(Stored::Message(_)) = stored::parse(m.body) {
                    dedup.stored(dedup.key(u.get(), m.sender.get(), m.msg_id));
                }
            }
        }
        Shard {
            id,
            map,
            regs: Registrations::new(&config),
            config,
            log,
            random,
            sessions: AHashMap::new(),
            waiting: VecDeque::new(),
            local: VecDeque::new(),
            dedup,
            last_sweep_ms: now_ms,
            stats: ShardStats::default(),
            report: None,
            flush_knob: None,
            disk_full: false,
            flush_failed: false,
        }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn stats(&self) -> ShardStats {
        ShardStats {
            sessions: self.sessions.len() as u64,
            waiting_durable: self.waiting.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Publishes this shard's counters and its log's to `cell` every 100 ms of ticks,
    /// and when it closes: the counters themselves stay plain fields of the shard.
    pub fn publish_to(&mut self, cell: ReportCell) {
        self.report = Some((cell, 0));
        self.publish(0);
    }

    /// Follows a runtime knob for the log's group-commit interval: `knob` is asked
    /// every tick and returns a value when it changed.
    pub fn follow_flush_interval(&mut self, knob: FlushKnob) {
        self.flush_knob = Some(knob);
    }

    fn publish(&mut self, now_ms: u64) {
        let report = ShardReport {
            stats: self.stats(),
            log: self.log.stats(),
        };
        if let Some((cell, at)) = &mut self.report {
            *cell.lock().unwrap_or_else(|e| e.into_inner()) = report;
            *at = now_ms;
        }
    }

    pub fn log(&self) -> &S {
        &self.log
    }

    /// The store, to change it from outside (a test making its writes durable).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log
    }

    /// Whether `phone` belongs to this shard.
    pub fn owns(&self, phone: Phone) -> bool {
        self.map.shard_of(phone) == self.id
    }

    /// Handles one request (and whatever it causes for this shard's own users).
    pub fn handle(&mut self, now_ms: u64, req: ToRouter, out: &mut Vec<FromRouter>) {
        self.stats.requests += 1;
        self.dispatch(now_ms, req, out);
        while let Some(req) = self.local.pop_front() {
            self.dispatch(now_ms, req, out);
        }
        self.release(out);
    }

    /// Timed work: answers whose records became durable, reclaim, registration expiry.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<FromRouter>) {
        if let Some(us) = self.flush_knob.as_mut().and_then(|k| k()) {
            if let Err(e) = self.log.set_group_interval_us(us) {
                tracing::warn!("shard {}: flush interval not changed: {e}", self.id);
            }
        }
        self.release(out);
        if self
            .log
            .maintain(now_ms, self.config.maintain_bytes_per_tick)
            .is_err()
        {
            self.stats.storage_errors += 1;
        }
        if now_ms >= self.last_sweep_ms + 1000 {
            self.regs.sweep(now_ms);
            self.last_sweep_ms = now_ms;
        }
        let disk = self.log.disk();
        if disk.full != self.disk_full {
            self.disk_full = disk.full;
            if disk.full {
                tracing::error!(
                    "shard {}: the disk holding {} is full ({} bytes free, {} kept for \
                     acknowledgements): new messages are refused with DiskFull until space \
                     is freed",
                    self.id,
                    self.log.describe(),
                    disk.free,
                    disk.reserve
                );
            } else {
                tracing::info!(
                    "shard {}: disk space is back ({} bytes free): new messages are taken again",
                    self.id,
                    disk.free
                );
            }
        }
        if !self.flush_failed {
            if let Some(why) = self.log.flush_failure() {
                self.flush_failed = true;
                tracing::error!(
                    "shard {}: flushing {} failed ({why}): nothing more is acknowledged, \
                     sends and acknowledgements are refused (Internal) until the process is \
                     restarted on a working disk; what was acknowledged before is on disk",
                    self.id,
                    self.log.describe(),
                );
            }
        }
        if self
            .report
            .as_ref()
            .is_some_and(|(_, at)| now_ms >= at + PUBLISH_EVERY_MS)
        {
            self.publish(now_ms);
        }
    }

    /// A gateway re-attaches a logged-in connection after its link came back (the link is
    /// authenticated; the client logged in earlier). Pending messages stream again from
    /// the start: delivery is at least once.
    pub fn attach(&mut self, conn: ConnId, user: Phone, now_ms: u64, out: &mut Vec<FromRouter>) {
        if self.log.account(&account_key(user)).is_none() {
            return;
        }
        self.sessions.insert(user, Session::new(conn));
        self.fill(user, now_ms, out);
        self.release(out);
    }

    /// A gateway process's link is gone: its connections' sessions end (the phones
    /// reconnect, here or through another gateway). `origin` is its connections'
    /// [`ConnId::origin`] (gateway id and upgrade epoch).
    pub fn gateway_gone(&mut self, origin: u16) {
        self.sessions.retain(|_, s| s.conn.origin() != origin);
    }

    /// Flushes the log and stops its threads.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.publish(0);
        self.log.close()
    }

    fn dispatch(&mut self, now: u64, req: ToRouter, out: &mut Vec<FromRouter>) {
        match req {
            // The source address is limited by the gateway, which sees all its requests.
            ToRouter::Register { conn, phone, .. } => self.register(conn, phone, now, out),
            ToRouter::Verify { conn, phone, pin } => self.verify(conn, phone, pin, now, out),
            ToRouter::Login { conn, phone, key } => self.login(conn, phone, key, now, out),
            ToRouter::Send {
                conn,
                from,
                to,
                msg_id,
                body,
            } => self.send(conn, from, to, msg_id, &body, now, out),
            ToRouter::Ack { user, seq, .. } => self.ack(user, seq, now, out),
            ToRouter::Read {
                user, from, msg_id, ..
            } => self.read(user, from, msg_id, now, out),
            ToRouter::Closed { conn, user } => {
                if self.sessions.get(&user).is_some_and(|s| s.conn == conn) {
                    self.sessions.remove(&user);
                }
            }
            ToRouter::Receipt {
                to,
                by,
                msg_id,
                kind,
                timestamp_ms,
            } => self.store_receipt(to, by, msg_id, kind, timestamp_ms, now, out),
        }
    }

    fn reply(out: &mut Vec<FromRouter>, conn: ConnId, msg: ToClient) {
        out.push(FromRouter::ToClient { conn, msg });
    }

    fn error(out: &mut Vec<FromRouter>, conn: ConnId, code: ErrorCode, reason: &str) {
        Self::reply(
            out,
            conn,
            ToClient::Error {
                code,
                reason: reason.into(),
            },
        );
    }

    fn route(&mut self, req: ToRouter, out: &mut Vec<FromRouter>) {
        if self.owns(req.route_key()) {
            self.local.push_back(req);
        } else {
            out.push(FromRouter::ToRouter(req));
        }
    }

    fn release(&mut self, out: &mut Vec<FromRouter>) {
        let durable = self.log.durable();
        while self
            .waiting
            .front()
            .is_some_and(|(lsn, _, _)| *lsn <= durable)
        {
            let (_, conn, msg) = self.waiting.pop_front().expect("front");
            Self::reply(out, conn, msg);
        }
    }

    fn register(&mut self, conn: ConnId, phone: Phone, now: u64, out: &mut Vec<FromRouter>) {
        match self.regs.request(phone, now, &mut self.random) {
            Requested::Sent { pin, expires_in_s } => {
                out.push(FromRouter::Sms { phone, pin });
                Self::reply(
                    out,
                    conn,
                    ToClient::RegisterPending {
                        phone,
                        expires_in_s,
                    },
                );
            }
            Requested::RateLimited => Self::error(
                out,
                conn,
                ErrorCode::RateLimited,
                "too many PIN requests; try again later",
            ),
            Requested::Busy => Self::error(
                out,
                conn,
                ErrorCode::TryAgain,
                "too many registrations in progress",
            ),
            Requested::NoRandomness => {
                Self::error(out, conn, ErrorCode::Internal, "no randomness for a PIN")
            }
        }
    }

    fn verify(
        &mut self,
        conn: ConnId,
        phone: Phone,
        pin: Pin,
        now: u64,
        out: &mut Vec<FromRouter>,
    ) {
        match self.regs.verify(phone, pin, now) {
            Verified::Ok => {}
            Verified::Wrong { tries_left } => {
                return Self::error(
                    out,
                    conn,
                    ErrorCode::PinWrong,
                    &format!("wrong PIN; {tries_left} tries left"),
                );
            }
            Verified::Voided => {
                return Self::error(
                    out,
                    conn,
                    ErrorCode::PinWrong,
                    "wrong PIN; no tries left, the PIN is void: ask for a new one",
                );
            }
            Verified::Invalid => {
                return Self::error(
                    out,
                    conn,
                    ErrorCode::PinInvalid,
                    "no valid PIN for this number: ask for one",
                );
            }
        }
        let Some(key) = new_key(&mut self.random) else {
            return Self::error(out, conn, ErrorCode::Internal, "no randomness for a key");
        };
        let lsn = match self.log.put_account(&account_key(phone), &key_hash(&key)) {
            Ok(lsn) => lsn,
            Err(e) => {
                self.stats.storage_errors += 1;
                let code = match e {
                    StorageError::DiskFull { .. } => ErrorCode::DiskFull,
                    e if e.is_retryable() => ErrorCode::TryAgain,
                    _ => ErrorCode::Internal,
                };
                return Self::error(out, conn, code, "could not store the account");
            }
        };
        self.stats.registrations += 1;
        // The old key no longer works; the old device is told why.
        if let Some(old) = self.sessions.remove(&phone) {
            Self::reply(
                out,
                old.conn,
                ToClient::Close {
                    code: ErrorCode::LoggedInElsewhere,
                    reason: "registered on another device".into(),
                },
            );
        }
        self.waiting
            .push_back((lsn, conn, ToClient::Registered { phone, key }));
    }

    fn login(&mut self, conn: ConnId, phone: Phone, key: Key, now: u64, out: &mut Vec<FromRouter>) {
        let ok = self
            .log
            .account(&account_key(phone))
            .is_some_and(|h| key_matches(h, &key));
        if !ok {
            self.stats.auth_failures += 1;
            tracing::debug!(
                "shard {}: login of {phone} refused: wrong key or unknown",
                self.id
            );
            return Self::reply(
                out,
                conn,
                ToClient::Close {
                    code: ErrorCode::AuthFailed,
                    reason: "unknown number or wrong key".into(),
                },
            );
        }
        if let Some(old) = self.sessions.remove(&phone) {
            if old.conn != conn {
                Self::reply(
                    out,
                    old.conn,
                    ToClient::Close {
                        code: ErrorCode::LoggedInElsewhere,
                        reason: "logged in on another connection".into(),
                    },
                );
            }
        }
        self.stats.logins += 1;
        let pending = self.log.pending_count(uid(phone)).0.min(u32::MAX as u64) as u32;
        tracing::debug!(
            "shard {}: {phone} logged in on connection {} ({pending} pending)",
            self.id,
            conn.0
        );
        self.sessions.insert(phone, Session::new(conn));
        Self::reply(
            out,
            conn,
            ToClient::LoggedIn {
                user: phone,
                pending,
            },
        );
        self.fill(phone, now, out);
    }

    #[allow(clippy::too_many_arguments)] // the fields of a Send request
    fn send(
        &mut self,
        conn: ConnId,
        from: Phone,
        to: Phone,
        msg_id: u64,
        body: &[u8],
        now: u64,
        out: &mut Vec<FromRouter>,
    ) {
        if self.log.account(&account_key(to)).is_none() {
            self.stats.refused_unknown += 1;
            return Self::reply(
                out,
                conn,
                ToClient::Refused {
                    to,
                    msg_id,
                    code: ErrorCode::RecipientUnknown,
                },
            );
        }
        let h = self.dedup.key(to.get(), from.get(), msg_id);
        match self.earlier_body(h, to, from, msg_id, body, now) {
            None => {}
            Some(true) => {
                // A resend: acknowledged again (once the first copy is durable), stored once.
                self.stats.duplicates += 1;
                let lsn = self.log.written();
                self.waiting
                    .push_back((lsn, conn, ToClient::ServerAck { to, msg_id }));
                return;
            }
            Some(false) => {
                self.stats.ids_reused += 1;
                return Self::reply(
                    out,
                    conn,
                    ToClient::Refused {
                        to,
                        msg_id,
                        code: ErrorCode::IdReused,
                    },
                );
            }
        }
        let mut stored_body = Vec::with_capacity(1 + body.len());
        stored_body.push(stored::MESSAGE);
        stored_body.extend_from_slice(body);
        let appended = self.log.append_message(&NewMessage {
            recipient: uid(to),
            sender: uid(from),
            msg_id,
            timestamp_ms: now,
            expiry_ms: None,
            body: &stored_body,
        });
        match appended {
            Ok(a) => {
                self.stats.accepted += 1;
                self.dedup.stored(h);
                self.waiting
                    .push_back((a.lsn, conn, ToClient::ServerAck { to, msg_id }));
                self.fill(to, now, out);
            }
            Err(e) => {
                // By kind, each with its counter: the disk or a queue is full (the client
                // retries later); anything else stays until an operator acts (a failed
                // flush, an I/O error: the only retryable errors are the two above), so
                // `Internal`, and clients back off instead of retrying at once for ever.
                let (count, code) = match e {
                    StorageError::DiskFull { .. } => {
                        (&mut self.stats.refused_disk_full, ErrorCode::DiskFull)
                    }
                    StorageError::Full { .. } => {
                        (&mut self.stats.refused_full, ErrorCode::QueueFull)
                    }
                    e => {
                        tracing::debug!("shard {}: a message not stored: {e}", self.id);
                        (&mut self.stats.storage_errors, ErrorCode::Internal)
                    }
                };
                *count += 1;
                Self::reply(out, conn, ToClient::Refused { to, msg_id, code });
            }
        }
    }

    /// Whether `from` already sent `msg_id` to `to` (pending, or delivered lately):
    /// `Some(true)` with this same body (a resend), `Some(false)` with another one (the id
    /// was reused), `None` when it is new.
    #[allow(clippy::too_many_arguments)] // the fields of a Send request
    fn earlier_body(
        &self,
        h: u64,
        to: Phone,
        from: Phone,
        msg_id: u64,
        body: &[u8],
        now: u64,
    ) -> Option<bool> {
        if let Some(earlier) = self.dedup.delivered_body(h) {
            return Some(earlier == self.dedup.body_hash(body));
        }
        if !self.dedup.pending.contains_key(&h) {
            return None;
        }
        self.log.pending(uid(to), None, now).find_map(|m| {
            if m.sender.get() != from.get() || m.msg_id != msg_id {
                return None;
            }
            match stored::parse(m.body) {
                Some(Stored::Message(earlier)) => Some(earlier == body),
                _ => None,
            }
        })
    }

    fn ack(&mut self, user: Phone, seq: u64, now: u64, out: &mut Vec<FromRouter>) {
        let seq = MsgSeq(seq);
        let Some(m) = self.log.get(uid(user), seq, now) else {
            return;
        }; // already acked
        let (sender, msg_id) = (m.sender, m.msg_id);
        let bytes = delivery_bytes(m.body);
        // A message's body hash, kept to tell a resend from a reused id (a receipt has none).
        let body_hash = match stored::parse(m.body) {
            Some(Stored::Message(b)) => Some(self.dedup.body_hash(b)),
            _ => None,
        };
        if self.log.erase(uid(user), seq).is_err() {
            self.stats.storage_errors += 1;
            return; // still pending: delivered again later
        }
        if let Some(s) = self.sessions.get_mut(&user) {
            if seq <= s.sent_upto {
                s.inflight = s.inflight.saturating_sub(1);
                s.inflight_bytes = s.inflight_bytes.saturating_sub(bytes);
            }
        }
        if let Some(body_hash) = body_hash {
            self.stats.delivered += 1;
            self.dedup
                .delivered(self.dedup.key(user.get(), sender.get(), msg_id), body_hash);
            if let Some(sender) = phone(sender) {
                let receipt = ToRouter::Receipt {
                    to: sender,
                    by: user,
                    msg_id,
                    kind: ReceiptKind::Delivered,
                    timestamp_ms: now,
                };
                self.route(receipt, out);
            }
        }
        self.fill(user, now, out);
    }

    /// `user` says it read `from`'s message `msg_id`: a read receipt goes to `from` only
    /// if `user` received that message (delivered and acknowledged among the recent
    /// deliveries this shard remembers, or delivered on the current connection and not
    /// yet acknowledged). Anything else is dropped and counted: a client cannot make up
    /// receipts for messages it never got.
    fn read(&mut self, user: Phone, from: Phone, msg_id: u64, now: u64, out: &mut Vec<FromRouter>) {
        if !self.received(user, from, msg_id, now) {
            self.stats.reads_unmatched += 1;
            return;
        }
        if self.owns(from) {
            // The sender is this shard's too: stored at once, without a trip through the
            // local queue.
            return self.store_receipt(from, user, msg_id, ReceiptKind::Read, now, now, out);
        }
        let receipt = ToRouter::Receipt {
            to: from,
            by: user,
            msg_id,
            kind: ReceiptKind::Read,
            timestamp_ms: now,
        };
        self.route(receipt, out);
    }

    fn received(&self, user: Phone, from: Phone, msg_id: u64, now: u64) -> bool {
        let h = self.dedup.key(user.get(), from.get(), msg_id);
        if self.dedup.was_delivered(h) {
            return true;
        }
        let Some(sent_upto) = self.sessions.get(&user).map(|s| s.sent_upto) else {
            return false;
        };
        self.dedup.pending.contains_key(&h)
            && self.log.pending(uid(user), None, now).any(|m| {
                m.seq <= sent_upto
                    && m.sender.get() == from.get()
                    && m.msg_id == msg_id
                    && matches!(stored::parse(m.body), Some(Stored::Message(_)))
            })
    }

    #[allow(clippy::too_many_arguments)] // the fields of a receipt
    fn store_receipt(
        &mut self,
        to: Phone,
        by: Phone,
        msg_id: u64,
        kind: ReceiptKind,
        ts: u64,
        now: u64,
        out: &mut Vec<FromRouter>,
    ) {
        if self.log.account(&account_key(to)).is_none() {
            self.stats.receipts_dropped += 1;
            return;
        }
        let body = [stored::receipt_byte(kind)];
        let r = self.log.append_message(&NewMessage {
            recipient: uid(to),
            sender: uid(by),
            msg_id,
            timestamp_ms: ts,
            expiry_ms: None,
            body: &body,
        });
        match r {
            Ok(_) => {
                self.stats.receipts_stored += 1;
                self.fill(to, now, out);
            }
            Err(_) => self.stats.receipts_dropped += 1,
        }
    }

    /// Sends a logged-in user's pending messages after the last one sent, in order, up
    /// to the window (in frames and in bytes); the rest stays in the log until
    /// acknowledgements make room.
    fn fill(&mut self, user: Phone, now: u64, out: &mut Vec<FromRouter>) {
        let (window, window_bytes) = (self.config.window, self.config.window_bytes);
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        if s.inflight >= window || s.inflight_bytes >= window_bytes {
            return;
        }
        for m in self.log.pending(uid(user), Some(s.sent_upto), now) {
            let bytes = delivery_bytes(m.body);
            if s.inflight > 0 && s.inflight_bytes + bytes > window_bytes {
                break;
            }
            s.sent_upto = m.seq;
            let Some(from) = phone(m.sender) else {
                self.stats.unreadable += 1;
                continue;
            };
            let msg = match stored::parse(m.body) {
                Some(Stored::Message(body)) => ToClient::Deliver {
                    seq: m.seq.0,
                    from,
                    msg_id: m.msg_id,
                    timestamp_ms: m.timestamp_ms,
                    body: body.to_vec(),
                },
                Some(Stored::Receipt(kind)) => ToClient::Receipt {
                    seq: m.seq.0,
                    by: from,
                    msg_id: m.msg_id,
                    timestamp_ms: m.timestamp_ms,
                    kind,
                },
                None => {
                    self.stats.unreadable += 1;
                    continue;
                }
            };
            out.push(FromRouter::ToClient { conn: s.conn, msg });
            self.stats.pushed += 1;
            s.inflight += 1;
            s.inflight_bytes += bytes;
            if s.inflight >= window {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Dedup;

    #[test]
    fn dedup_remembers_at_least_the_last_recent_max_deliveries() {
        let mut d = Dedup::new(3);
        for h in 1..=10u64 {
            d.delivered(h, 0);
            // The last three are always there.
            for k in h.saturating_sub(2).max(1)..=h {
                assert!(d.was_delivered(k), "{k} forgotten after {h}");
            }
        }
        // Older ones are forgotten (at most twice recent_max remembered).
        assert!(!d.was_delivered(1));
        assert!((1..=10).filter(|k| d.was_delivered(*k)).count() <= 6);
        // Zero remembers nothing.
        let mut z = Dedup::new(0);
        z.delivered(5, 0);
        assert!(!z.was_delivered(5));
    }
}

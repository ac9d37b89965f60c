//! What a shard needs of its storage, as a trait: `storage::Log` is the real one;
//! [`MemStore`] keeps everything in memory with a durable position the caller advances
//! by hand, so the router's logic runs in tests with no files, threads or clock.

use std::collections::{BTreeMap, HashMap};

use storage::{
    Appended, ConfigError, DiskSpace, Log, LogStats, Lsn, MsgSeq, NewMessage, SegmentId,
    StorageError, StoredMessage, UserId,
};

/// A shard's storage: messages pending per recipient until erased, accounts, and a
/// durable position that answers wait for.
pub trait Store {
    fn account(&self, key: &[u8]) -> Option<&[u8]>;
    fn put_account(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn, StorageError>;
    fn append_message(&mut self, m: &NewMessage<'_>) -> Result<Appended, StorageError>;
    /// `Ok(None)`: not pending (nothing written).
    fn erase(&mut self, recipient: UserId, seq: MsgSeq) -> Result<Option<Lsn>, StorageError>;
    fn get(&self, user: UserId, seq: MsgSeq, now_ms: u64) -> Option<StoredMessage<'_>>;
    /// Pending messages with a sequence number above `after` (all with `None`), in
    /// order. (An iterator of the store's own type: no allocation per call, which the
    /// delivery path makes for every message.)
    fn pending(
        &self,
        user: UserId,
        after: Option<MsgSeq>,
        now_ms: u64,
    ) -> impl Iterator<Item = StoredMessage<'_>> + '_;
    /// (messages, bytes) pending for `user`.
    fn pending_count(&self, user: UserId) -> (u64, u64);
    fn users_with_pending(&self) -> Vec<UserId>;
    fn written(&self) -> Lsn;
    fn durable(&self) -> Lsn;
    /// Timed work (reclaim, expiry, looking at the disk).
    fn maintain(&mut self, now_ms: u64, budget_bytes: usize) -> Result<(), StorageError>;
    fn set_group_interval_us(&mut self, us: u64) -> Result<(), ConfigError>;
    fn stats(&self) -> LogStats;
    fn disk(&self) -> DiskSpace;
    /// Why flushing failed, once it has: nothing more becomes durable and every write
    /// is refused.
    fn flush_failure(&self) -> Option<String>;
    /// Where it lives, for log lines.
    fn describe(&self) -> String;
    fn close(self) -> Result<(), StorageError>;
}

impl Store for Log {
    #[inline]
    fn account(&self, key: &[u8]) -> Option<&[u8]> {
        Log::account(self, key)
    }
    #[inline]
    fn put_account(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn, StorageError> {
        Log::put_account(self, key, value)
    }
    #[inline]
    fn append_message(&mut self, m: &NewMessage<'_>) -> Result<Appended, StorageError> {
        Log::append_message(self, m)
    }
    #[inline]
    fn erase(&mut self, recipient: UserId, seq: MsgSeq) -> Result<Option<Lsn>, StorageError> {
        Log::erase(self, recipient, seq)
    }
    #[inline]
    fn get(&self, user: UserId, seq: MsgSeq, now_ms: u64) -> Option<StoredMessage<'_>> {
        Log::get(self, user, seq, now_ms)
    }
    #[inline]
    fn pending(
        &self,
        user: UserId,
        after: Option<MsgSeq>,
        now_ms: u64,
    ) -> impl Iterator<Item = StoredMessage<'_>> + '_ {
        match after {
            None => Either::First(Log::pending(self, user, now_ms)),
            Some(after) => Either::Second(Log::pending_after(self, user, after, now_ms)),
        }
    }
    #[inline]
    fn pending_count(&self, user: UserId) -> (u64, u64) {
        Log::pending_count(self, user)
    }
    #[inline]
    fn users_with_pending(&self) -> Vec<UserId> {
        Log::users_with_pending(self).collect()
    }
    #[inline]
    fn written(&self) -> Lsn {
        Log::written(self)
    }
    #[inline]
    fn durable(&self) -> Lsn {
        Log::durable(self)
    }
    #[inline]
    fn maintain(&mut self, now_ms: u64, budget_bytes: usize) -> Result<(), StorageError> {
        Log::maintain(self, now_ms, budget_bytes).map(|_| ())
    }
    #[inline]
    fn set_group_interval_us(&mut self, us: u64) -> Result<(), ConfigError> {
        Log::set_group_interval_us(self, us)
    }
    #[inline]
    fn stats(&self) -> LogStats {
        Log::stats(self)
    }
    #[inline]
    fn disk(&self) -> DiskSpace {
        Log::disk(self)
    }
    #[inline]
    fn flush_failure(&self) -> Option<String> {
        Log::flush_failure(self)
    }
    #[inline]
    fn describe(&self) -> String {
        self.dir().display().to_string()
    }
    #[inline]
    fn close(self) -> Result<(), StorageError> {
        Log::close(self)
    }
}

/// One of two iterators of the same items.
enum Either<A, B> {
    First(A),
    Second(B),
}

impl<T, A: Iterator<Item = T>, B: Iterator<Item = T>> Iterator for Either<A, B> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self {
            Either::First(a) => a.next(),
            Either::Second(b) => b.next(),
        }
    }
}

/// A message kept by [`MemStore`].
struct Kept {
    sender: UserId,
    msg_id: u64,
    timestamp_ms: u64,
    expiry_ms: u64,
    body: Vec<u8>,
}

/// Storage in memory for tests: every write advances `written` by one position; nothing
/// is durable until [`MemStore::make_durable`] says so, and a full disk is a switch
/// ([`MemStore::set_disk_full`]), and so is a failed flush ([`MemStore::fail_flush`]).
#[derive(Default)]
pub struct MemStore {
    messages: HashMap<UserId, BTreeMap<MsgSeq, Kept>>,
    accounts: HashMap<Vec<u8>, Vec<u8>>,
    next_seq: u64,
    written: u32,
    durable: u32,
    disk_full: bool,
    flush_failure: Option<String>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            next_seq: 1,
            ..MemStore::default()
        }
    }

    /// Everything written so far becomes durable.
    pub fn make_durable(&mut self) {
        if self.flush_failure.is_none() {
            self.durable = self.written;
        }
    }

    /// Flushing fails from now on: nothing more becomes durable, every write is refused
    /// with `FlushFailed`.
    pub fn fail_flush(&mut self, why: &str) {
        self.flush_failure = Some(why.to_string());
    }

    /// While set, new messages and accounts are refused with `DiskFull`.
    pub fn set_disk_full(&mut self, full: bool) {
        self.disk_full = full;
    }

    fn write(&mut self) -> Lsn {
        self.written += 1;
        Lsn::new(SegmentId(1), self.written)
    }

    fn refuse_if_failed(&self) -> Result<(), StorageError> {
        match &self.flush_failure {
            Some(why) => Err(StorageError::FlushFailed(why.clone())),
            None => Ok(()),
        }
    }

    fn refuse_if_full(&self) -> Result<(), StorageError> {
        self.refuse_if_failed()?;
        if self.disk_full {
            return Err(StorageError::DiskFull {
                free: 0,
                reserve: 1,
            });
        }
        Ok(())
    }

    fn view(user: UserId, seq: MsgSeq, k: &Kept) -> StoredMessage<'_> {
        StoredMessage {
            seq,
            recipient: user,
            sender: k.sender,
            msg_id: k.msg_id,
            timestamp_ms: k.timestamp_ms,
            expiry_ms: k.expiry_ms,
            body: &k.body,
        }
    }
}

impl Store for MemStore {
    fn account(&self, key: &[u8]) -> Option<&[u8]> {
        self.accounts.get(key).map(Vec::as_slice)
    }
    fn put_account(&mut self, key: &[u8], value: &[u8]) -> Result<Lsn, StorageError> {
        self.refuse_if_full()?;
        self.accounts.insert(key.to_vec(), value.to_vec());
        Ok(self.write())
    }
    fn append_message(&mut self, m: &NewMessage<'_>) -> Result<Appended, StorageError> {
        self.refuse_if_full()?;
        let seq = MsgSeq(self.next_seq);
        self.next_seq += 1;
        self.messages.entry(m.recipient).or_default().insert(
            seq,
            Kept {
                sender: m.sender,
                msg_id: m.msg_id,
                timestamp_ms: m.timestamp_ms,
                expiry_ms: m.expiry_ms.unwrap_or(u64::MAX),
                body: m.body.to_vec(),
            },
        );
        Ok(Appended {
            seq,
            lsn: self.write(),
        })
    }
    fn erase(&mut self, recipient: UserId, seq: MsgSeq) -> Result<Option<Lsn>, StorageError> {
        self.refuse_if_failed()?;
        let gone = self
            .messages
            .get_mut(&recipient)
            .and_then(|q| q.remove(&seq));
        Ok(gone.map(|_| self.write()))
    }
    fn get(&self, user: UserId, seq: MsgSeq, now_ms: u64) -> Option<StoredMessage<'_>> {
        let k = self.messages.get(&user)?.get(&seq)?;
        (k.expiry_ms > now_ms).then(|| Self::view(user, seq, k))
    }
    fn pending(
        &self,
        user: UserId,
        after: Option<MsgSeq>,
        now_ms: u64,
    ) -> impl Iterator<Item = StoredMessage<'_>> + '_ {
        let from = after.map_or(MsgSeq(0), |a| MsgSeq(a.0 + 1));
        (self.messages.get(&user).into_iter())
            .flat_map(move |q| q.range(from..))
            .filter(move |(_, k)| k.expiry_ms > now_ms)
            .map(move |(seq, k)| Self::view(user, *seq, k))
    }
    fn pending_count(&self, user: UserId) -> (u64, u64) {
        self.messages.get(&user).map_or((0, 0), |q| {
            (
                q.len() as u64,
                q.values().map(|k| k.body.len() as u64).sum(),
            )
        })
    }
    fn users_with_pending(&self) -> Vec<UserId> {
        (self.messages.iter())
            .filter(|(_, q)| !q.is_empty())
            .map(|(u, _)| *u)
            .collect()
    }
    fn written(&self) -> Lsn {
        Lsn::new(SegmentId(1), self.written)
    }
    fn durable(&self) -> Lsn {
        Lsn::new(SegmentId(1), self.durable)
    }
    fn maintain(&mut self, _now_ms: u64, _budget_bytes: usize) -> Result<(), StorageError> {
        Ok(())
    }
    fn set_group_interval_us(&mut self, _us: u64) -> Result<(), ConfigError> {
        Ok(())
    }
    fn stats(&self) -> LogStats {
        let (messages, bytes) = (self.messages.values()).fold((0, 0), |(m, b), q| {
            (
                m + q.len() as u64,
                b + q.values().map(|k| k.body.len() as u64).sum::<u64>(),
            )
        });
        LogStats {
            pending_messages: messages,
            pending_bytes: bytes,
            accounts: self.accounts.len() as u64,
            written: self.written(),
            durable: self.durable(),
            disk_full: self.disk_full,
            flush_failed: self.flush_failure.is_some(),
            ..LogStats::default()
        }
    }
    fn disk(&self) -> DiskSpace {
        DiskSpace {
            free: if self.disk_full { 0 } else { u64::MAX },
            reserve: 1,
            full: self.disk_full,
        }
    }
    fn flush_failure(&self) -> Option<String> {
        self.flush_failure.clone()
    }
    fn describe(&self) -> String {
        "memory".into()
    }
    fn close(self) -> Result<(), StorageError> {
        Ok(())
    }
}

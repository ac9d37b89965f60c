//! The in-memory index: per recipient, the positions of its pending messages in order.
//!
//! Sized for the worst case the issue sets, at most 32 bytes per pending message
//! whatever the spread over users, including one pending message per user:
//!
//! - One open-addressed table of 16-byte slots keyed by user (Robin Hood probing,
//!   backward-shift deletion). Its capacity is any number, not a power of two: it
//!   grows by half when 7/8 full and shrinks when under half full, so a user costs at
//!   most 16 / (7/12) ≈ 27.4 bytes of table. `hashbrown` doubles, which leaves a
//!   table as little as 7/16 full (37 bytes a user), and no map crate lets the
//!   growth be chosen: that is why this one is written here.
//! - A user with one pending message keeps its position in the slot itself.
//! - A user with two or more has a block: a ring of 8-byte positions (capacity a power
//!   of two, halved when a quarter full) behind a 16-byte header holding the length
//!   and the body bytes, in one allocation the slot points at with a thin pointer.
//!   Two messages cost 27.4 + 32 bytes (29.7 each); many cost 8–16 bytes each.
//!
//! Sequence numbers and body lengths are not stored: they are in the records, which
//! the index reads through [`Records`] when it needs them (to find a message by its
//! sequence number, the front first since acknowledgements come mostly in order, then
//! by binary search; and for a user's bytes when its first message gains a second).

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, realloc, Layout};
use std::ptr::NonNull;

use ahash::RandomState;

use crate::types::{Lsn, MsgSeq, UserId};

/// What the index reads back from the log: the sequence number and body length of the
/// message record at a position.
pub(crate) trait Records {
    fn message(&self, at: Lsn) -> (MsgSeq, u64);

    fn seq(&self, at: Lsn) -> MsgSeq {
        self.message(at).0
    }
}

/// Slot key: the user id in the low 50 bits (`UserId::MAX` < 2^50), the Robin Hood
/// probe distance in the next 13, and bit 63 set when the value is a block pointer
/// (two or more messages) rather than a position. `0` marks an empty slot (no user
/// is `0`).
const USER_MASK: u64 = (1 << 50) - 1;
const DIST_SHIFT: u32 = 50;
const DIST_MAX: u64 = (1 << 13) - 1;
const MANY: u64 = 1 << 63;
const _: () = assert!(UserId::MAX <= USER_MASK);

const MIN_SLOTS: usize = 16;

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// A position (`Lsn.0`) or a [`Block`] pointer.
    val: u64,
}

impl Slot {
    fn user(self) -> u64 {
        self.key & USER_MASK
    }
    fn dist(self) -> u64 {
        (self.key >> DIST_SHIFT) & DIST_MAX
    }
    fn many(self) -> bool {
        self.key & MANY != 0
    }
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

/// Header words of a block: `[head | len << 32, bytes | log2(cap) << 56]`, then `cap`
/// positions in a ring.
const HEADER: usize = 2;
const BYTES_MASK: u64 = (1 << 56) - 1;

/// A queue of two or more positions, owned by the slot whose value is its pointer.
/// Freed by [`Block::free`] (the table calls it when the user leaves the block form
/// and when the index is dropped). Every word is initialised (allocated zeroed).
struct Block(NonNull<u64>);

impl Block {
    fn layout(cap: usize) -> Layout {
        Layout::array::<u64>(HEADER + cap).expect("block size fits")
    }

    fn alloc(cap: usize) -> Block {
        debug_assert!(cap.is_power_of_two() && cap >= 2);
        let layout = Self::layout(cap);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) } as *mut u64;
        let mut b = Block(NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout)));
        b.set_cap_raw(cap);
        b
    }

    fn set_cap_raw(&mut self, cap: usize) {
        // SAFETY: word 1 exists in every block; written through the pointer because
        // `words_mut` reads the capacity from it.
        unsafe {
            let w1 = self.0.as_ptr().add(1);
            *w1 = (*w1 & BYTES_MASK) | (cap.trailing_zeros() as u64) << 56;
        }
    }

    fn from_val(val: u64) -> Block {
        Block(NonNull::new(val as usize as *mut u64).expect("block pointer"))
    }

    fn val(&self) -> u64 {
        self.0.as_ptr() as usize as u64
    }

    fn cap(&self) -> usize {
        // SAFETY: the pointer came from `alloc` or `grow` and the block is not freed
        // (the table only makes `Block`s from slots that hold a live one).
        1 << (unsafe { *self.0.as_ptr().add(1) } >> 56)
    }

    fn words(&self) -> &[u64] {
        // SAFETY: the block has `HEADER + cap` initialised words; `cap` is in word 1.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), HEADER + self.cap()) }
    }

    fn words_mut(&mut self) -> &mut [u64] {
        let n = HEADER + self.cap();
        // SAFETY: as in `words`; `&mut self` stands for the owning slot's `&mut`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), n) }
    }

    /// Doubles the capacity, keeping the ring's order: in place where the allocator
    /// can (a large block is remapped rather than copied), then the part of the ring
    /// that wrapped around is moved, whichever side is shorter (as `VecDeque` does).
    fn grow(self) -> Block {
        let cap = self.cap();
        let old = Self::layout(cap);
        let new = Self::layout(cap * 2);
        // SAFETY: `self` was allocated with `old`; the new size is non-zero. The new
        // half is zeroed before any slice covers it.
        let mut b = unsafe {
            let p = realloc(self.0.as_ptr() as *mut u8, old, new.size()) as *mut u64;
            let p = NonNull::new(p).unwrap_or_else(|| handle_alloc_error(new));
            std::ptr::write_bytes(p.as_ptr().add(HEADER + cap), 0, cap);
            Block(p)
        };
        b.set_cap_raw(cap * 2);
        let w = b.words_mut();
        let head = w[0] as u32 as usize;
        let len = (w[0] >> 32) as usize;
        let wrapped = (head + len).saturating_sub(cap);
        if wrapped <= cap - head {
            // [0, wrapped) continues after the old end.
            w.copy_within(HEADER..HEADER + wrapped, HEADER + cap);
        } else {
            // [head, cap) moves to the new end.
            let n = cap - head;
            w.copy_within(HEADER + head..HEADER + cap, HEADER + 2 * cap - n);
            w[0] = (2 * cap - n) as u64 | (len as u64) << 32;
        }
        b
    }

    fn free(self) {
        // SAFETY: allocated with this layout (`alloc` or `grow`); the slot that held
        // the pointer is overwritten or dropped right after.
        unsafe { dealloc(self.0.as_ptr() as *mut u8, Self::layout(self.cap())) }
    }
}

/// A user's queue, read-only.
#[derive(Clone, Copy)]
pub(crate) enum Queue<'a> {
    One(Lsn),
    Many(&'a [u64]),
}

impl<'a> Queue<'a> {
    pub fn len(&self) -> usize {
        match self {
            Queue::One(_) => 1,
            Queue::Many(w) => (w[0] >> 32) as usize,
        }
    }

    /// The `i`th position, oldest first.
    pub fn at(&self, i: usize) -> Lsn {
        match self {
            Queue::One(at) => {
                debug_assert_eq!(i, 0);
                *at
            }
            Queue::Many(w) => {
                let mask = w.len() - HEADER - 1;
                Lsn(w[HEADER + ((w[0] as u32 as usize + i) & mask)])
            }
        }
    }

    /// Body bytes of every message in it.
    pub fn bytes(&self, rec: &impl Records) -> u64 {
        match self {
            Queue::One(at) => rec.message(*at).1,
            Queue::Many(w) => w[1] & BYTES_MASK,
        }
    }

    /// Positions from the `from`th on, in order.
    pub fn iter_from(self, from: usize) -> impl Iterator<Item = Lsn> + 'a {
        (from..self.len()).map(move |i| self.at(i))
    }

    /// Where `seq` is, if pending.
    fn find(&self, seq: MsgSeq, rec: &impl Records) -> Option<usize> {
        // Acks come mostly in order: look at the front before searching.
        if rec.seq(self.at(0)) == seq {
            return Some(0);
        }
        let i = self.partition_point(|s| s < seq, rec);
        (i < self.len() && rec.seq(self.at(i)) == seq).then_some(i)
    }

    /// The first index whose sequence number fails `pred` (entries are in sequence
    /// order).
    pub fn partition_point(&self, pred: impl Fn(MsgSeq) -> bool, rec: &impl Records) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(rec.seq(self.at(mid))) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// A user's queue built at recovery away from the index (on the thread that sorted
/// the user's records), then added by [`Index::insert_loaded`]. Owns its block until
/// then.
pub(crate) struct Loaded {
    pub user: UserId,
    /// A position, or a block pointer when `many`.
    val: u64,
    many: bool,
    messages: u64,
    bytes: u64,
}

impl Loaded {
    /// `positions` in sequence order (at least one), with their total body bytes.
    pub fn new(user: UserId, positions: &[Lsn], bytes: u64) -> Loaded {
        let (val, many) = match positions {
            [] => panic!("a loaded queue has a message"),
            [at] => (at.0, false),
            _ => {
                let mut b = Block::alloc(positions.len().next_power_of_two());
                let w = b.words_mut();
                w[0] = (positions.len() as u64) << 32;
                w[1] |= bytes;
                for (w, at) in w[HEADER..].iter_mut().zip(positions) {
                    *w = at.0;
                }
                (b.val(), true)
            }
        };
        Loaded {
            user,
            val,
            many,
            messages: positions.len() as u64,
            bytes,
        }
    }
}

impl Drop for Loaded {
    /// Only a queue never added gets here (recovery failed part way).
    fn drop(&mut self) {
        if self.many {
            Block::from_val(self.val).free();
        }
    }
}

/// Where a user is in the table, and its pending messages and body bytes.
pub(crate) struct Probe {
    slot: Option<usize>,
    pub messages: u64,
    pub bytes: u64,
}

pub(crate) struct Index {
    slots: Box<[Slot]>,
    users: usize,
    hasher: RandomState,
    pub messages: u64,
    pub bytes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            slots: vec![Slot::default(); MIN_SLOTS].into_boxed_slice(),
            users: 0,
            hasher: RandomState::new(),
            messages: 0,
            bytes: 0,
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        for s in self.slots.iter().filter(|s| s.many()) {
            Block::from_val(s.val).free();
        }
    }
}

impl Index {
    fn home(&self, user: u64) -> usize {
        let h = self.hasher.hash_one(user);
        ((h as u128 * self.slots.len() as u128) >> 64) as usize
    }

    fn find_slot(&self, user: UserId) -> Option<usize> {
        let user = user.get();
        let n = self.slots.len();
        let mut i = self.home(user);
        let mut d = 0;
        loop {
            let s = self.slots[i];
            if s.key == 0 || s.dist() < d {
                return None;
            }
            if s.user() == user {
                return Some(i);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
            d += 1;
        }
    }

    /// Places a user known to be absent; `false` when a probe would outgrow the
    /// distance field (the caller grows the table and tries again).
    fn place(slots: &mut [Slot], home: usize, mut cur: Slot) -> bool {
        let n = slots.len();
        let mut i = home;
        loop {
            let s = slots[i];
            if s.key == 0 {
                slots[i] = cur;
                return true;
            }
            if s.dist() < cur.dist() {
                slots[i] = cur;
                cur = s;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
            if cur.dist() == DIST_MAX {
                // Undo nothing: `cur` is a displaced entry still to be placed; the
                // caller rebuilds from every slot plus `cur`.
                return Self::place_overflow(slots, cur);
            }
            cur.key += 1 << DIST_SHIFT;
        }
    }

    /// Unreachable with a random hash below 7/8 load; kept total rather than panicking:
    /// linear placement without the distance field's bound is impossible, so report
    /// failure after parking `cur` in the first empty slot with a saturated distance.
    fn place_overflow(slots: &mut [Slot], cur: Slot) -> bool {
        let free = slots
            .iter()
            .position(|s| s.key == 0)
            .expect("table below 7/8");
        slots[free] = cur;
        false
    }

    fn insert(&mut self, user: UserId, val: u64, many: bool) {
        if (self.users + 1) * 8 > self.slots.len() * 7 {
            self.resize(self.slots.len() * 3 / 2);
        }
        let key = user.get() | if many { MANY } else { 0 };
        let home = self.home(user.get());
        self.users += 1;
        if !Self::place(&mut self.slots, home, Slot { key, val }) {
            self.resize(self.slots.len() * 2);
        }
    }

    fn resize(&mut self, want: usize) {
        let mut n = want.max(MIN_SLOTS);
        loop {
            let mut slots = vec![Slot::default(); n].into_boxed_slice();
            let hasher = &self.hasher;
            let ok = self.slots.iter().filter(|s| s.key != 0).all(|s| {
                let home = ((hasher.hash_one(s.user()) as u128 * n as u128) >> 64) as usize;
                let key = s.key & !(DIST_MAX << DIST_SHIFT);
                Self::place(&mut slots, home, Slot { key, val: s.val })
            });
            if ok {
                self.slots = slots;
                return;
            }
            n *= 2;
        }
    }

    fn remove_slot(&mut self, mut i: usize) {
        let n = self.slots.len();
        loop {
            let next = if i + 1 == n { 0 } else { i + 1 };
            let s = self.slots[next];
            if s.key == 0 || s.dist() == 0 {
                self.slots[i] = Slot::default();
                break;
            }
            self.slots[i] = Slot {
                key: s.key - (1 << DIST_SHIFT),
                val: s.val,
            };
            i = next;
        }
        self.users -= 1;
        if self.users * 2 < n && n > MIN_SLOTS {
            self.resize(self.users * 4 / 3 + 1);
        }
    }

    pub fn queue(&self, user: UserId) -> Option<Queue<'_>> {
        let s = self.slots[self.find_slot(user)?];
        Some(if s.many() {
            // The block lives as long as the slot, which `&self` keeps unchanged.
            let words = Block::from_val(s.val).words() as *const [u64];
            // SAFETY: see above; the slice is tied to `&self`.
            Queue::Many(unsafe { &*words })
        } else {
            Queue::One(Lsn(s.val))
        })
    }

    /// Finds `user` once for a limit check and the [`Index::push`] that follows (the
    /// index must not change in between).
    pub fn probe(&self, user: UserId, rec: &impl Records) -> Probe {
        let Some(i) = self.find_slot(user) else {
            return Probe {
                slot: None,
                messages: 0,
                bytes: 0,
            };
        };
        let s = self.slots[i];
        let (messages, bytes) = if s.many() {
            let w = Block::from_val(s.val);
            let w = w.words();
            (w[0] >> 32, w[1] & BYTES_MASK)
        } else {
            (1, rec.message(Lsn(s.val)).1)
        };
        Probe {
            slot: Some(i),
            messages,
            bytes,
        }
    }

    /// Appends in sequence order (`at` holds a sequence number larger than any of the
    /// user's), where `probe` found the user.
    pub fn push(&mut self, probe: Probe, user: UserId, at: Lsn, body_bytes: u64) {
        self.messages += 1;
        self.bytes += body_bytes;
        let Some(i) = probe.slot else {
            debug_assert!(self.find_slot(user).is_none());
            self.insert(user, at.0, false);
            return;
        };
        let slot = &mut self.slots[i];
        debug_assert_eq!(slot.user(), user.get(), "stale probe");
        if !slot.many() {
            let first = Lsn(slot.val);
            let mut b = Block::alloc(2);
            let w = b.words_mut();
            w[0] = 2 << 32;
            w[1] |= probe.bytes + body_bytes;
            w[HEADER] = first.0;
            w[HEADER + 1] = at.0;
            slot.val = b.val();
            slot.key |= MANY;
            return;
        }
        let mut b = Block::from_val(slot.val);
        let len = probe.messages as usize;
        if len == b.cap() {
            b = b.grow();
            slot.val = b.val();
        }
        let w = b.words_mut();
        let mask = w.len() - HEADER - 1;
        w[HEADER + ((w[0] as u32 as usize + len) & mask)] = at.0;
        w[0] += 1 << 32;
        w[1] += body_bytes;
    }

    /// Makes room for `users` more users at once (recovery knows how many it loads),
    /// rather than growing by half again and again.
    pub fn reserve(&mut self, users: usize) {
        let want = (self.users + users) * 8 / 7 + 1;
        if want > self.slots.len() {
            self.resize(want);
        }
    }

    /// A key that orders users as the table does: inserting many users in increasing
    /// order of it (recovery does, by its top byte) walks the table from front to back
    /// instead of touching a random cache line per user. The table's size does not
    /// change the order (a user's home slot is this hash scaled to the size).
    pub fn order_key(&self, user: UserId) -> u64 {
        self.hasher.hash_one(user.get())
    }

    /// Adds a queue built by [`Loaded::new`]. The user must have no queue yet
    /// (recovery groups by user).
    pub fn insert_loaded(&mut self, q: Loaded) {
        debug_assert!(self.find_slot(q.user).is_none(), "{} loaded twice", q.user);
        // The block now belongs to the slot.
        let q = std::mem::ManuallyDrop::new(q);
        self.messages += q.messages;
        self.bytes += q.bytes;
        self.insert(q.user, q.val, q.many);
    }

    pub fn get(&self, user: UserId, seq: MsgSeq, rec: &impl Records) -> Option<Lsn> {
        let q = self.queue(user)?;
        q.find(seq, rec).map(|i| q.at(i))
    }

    /// Removes a pending message; its position and body bytes.
    pub fn remove(&mut self, user: UserId, seq: MsgSeq, rec: &impl Records) -> Option<Lsn> {
        let slot_i = self.find_slot(user)?;
        let slot = self.slots[slot_i];
        if !slot.many() {
            let at = Lsn(slot.val);
            let (s, bytes) = rec.message(at);
            if s != seq {
                return None;
            }
            self.remove_slot(slot_i);
            self.messages -= 1;
            self.bytes -= bytes;
            return Some(at);
        }
        let q = self.queue(user).expect("slot found");
        let i = q.find(seq, rec)?;
        let at = q.at(i);
        let bytes = rec.message(at).1;
        let mut b = Block::from_val(slot.val);
        let w = b.words_mut();
        let mask = w.len() - HEADER - 1;
        let head = w[0] as u32 as usize;
        let len = (w[0] >> 32) as usize;
        if i == 0 {
            w[0] = ((head + 1) & mask) as u64 | ((len as u64 - 1) << 32);
        } else {
            for k in i..len - 1 {
                w[HEADER + ((head + k) & mask)] = w[HEADER + ((head + k + 1) & mask)];
            }
            w[0] -= 1 << 32;
        }
        w[1] -= bytes;
        self.messages -= 1;
        self.bytes -= bytes;
        let left = len - 1;
        let cap = mask + 1;
        if left == 1 {
            let only = Queue::Many(b.words()).at(0);
            b.free();
            self.slots[slot_i] = Slot {
                key: slot.key & !MANY,
                val: only.0,
            };
        } else if left * 4 <= cap && cap > 2 {
            let mut small = Block::alloc(cap / 2);
            copy_ring(b.words(), small.words_mut());
            b.free();
            self.slots[slot_i].val = small.val();
        }
        Some(at)
    }

    /// Moves a message's position (compaction copied it; `rec` still reads the old
    /// copy).
    pub fn relocate(&mut self, user: UserId, seq: MsgSeq, to: Lsn, rec: &impl Records) {
        let Some(slot_i) = self.find_slot(user) else {
            return;
        };
        let slot = self.slots[slot_i];
        if !slot.many() {
            if rec.seq(Lsn(slot.val)) == seq {
                self.slots[slot_i].val = to.0;
            }
            return;
        }
        let q = self.queue(user).expect("slot found");
        if let Some(i) = q.find(seq, rec) {
            let mut b = Block::from_val(slot.val);
            let w = b.words_mut();
            let mask = w.len() - HEADER - 1;
            let head = w[0] as u32 as usize;
            w[HEADER + ((head + i) & mask)] = to.0;
        }
    }

    pub fn user_ids(&self) -> impl Iterator<Item = UserId> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| UserId::new(s.user()).expect("stored ids are valid"))
    }

    pub fn users(&self) -> usize {
        self.users
    }
}

/// Copies a block's ring, oldest first, to the start of a new block of another
/// capacity with the same header (length and bytes; the capacity stays the new one's).
fn copy_ring(from: &[u64], to: &mut [u64]) {
    let q = Queue::Many(from);
    let len = q.len();
    for i in 0..len {
        to[HEADER + i] = q.at(i).0;
    }
    to[0] = (len as u64) << 32;
    to[1] = (to[1] & !BYTES_MASK) | (from[1] & BYTES_MASK);
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::types::SegmentId;

    /// Records at made-up positions: offset `8 * seq`, body bytes `seq % 7 + 1`.
    struct Fake;
    impl Records for Fake {
        fn message(&self, at: Lsn) -> (MsgSeq, u64) {
            let seq = (at.offset() / 8) as u64;
            (MsgSeq(seq), seq % 7 + 1)
        }
    }
    fn at(seq: u64) -> Lsn {
        Lsn::new(SegmentId(1), seq as u32 * 8)
    }

    #[test]
    fn push_find_remove_relocate() {
        let u = UserId::new(5).unwrap();
        let mut ix = Index::default();
        for s in 1..=5 {
            ix.push(ix.probe(u, &Fake), u, at(s), Fake.message(at(s)).1);
        }
        assert_eq!(ix.messages, 5);
        assert_eq!(
            ix.queue(u).unwrap().bytes(&Fake),
            (1..=5).map(|s| s % 7 + 1).sum()
        );
        assert!(ix.remove(u, MsgSeq(3), &Fake).is_some());
        assert!(ix.remove(u, MsgSeq(3), &Fake).is_none());
        let moved = Lsn::new(SegmentId(2), 4 * 8);
        ix.relocate(u, MsgSeq(4), moved, &Fake);
        assert_eq!(ix.get(u, MsgSeq(4), &Fake), Some(moved));
        for s in [1, 2, 5] {
            ix.remove(u, MsgSeq(s), &Fake).unwrap();
        }
        // One left: kept in the slot.
        assert!(matches!(ix.queue(u), Some(Queue::One(a)) if a == moved));
        assert_eq!(ix.remove(u, MsgSeq(4), &Fake), Some(moved));
        assert_eq!((ix.messages, ix.bytes, ix.users()), (0, 0, 0));
    }

    /// Many users growing and shrinking the table and their blocks, against a map.
    #[test]
    fn against_a_reference_model() {
        let mut ix = Index::default();
        let mut model: HashMap<u64, BTreeMap<u64, Lsn>> = HashMap::new();
        let mut seq = 0u64;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..60_000u64 {
            let user = next() % if round < 30_000 { 5_000 } else { 300 } + 1;
            let u = UserId::new(user).unwrap();
            if next() % 3 != 0 {
                seq += 1;
                ix.push(ix.probe(u, &Fake), u, at(seq), Fake.message(at(seq)).1);
                model.entry(user).or_default().insert(seq, at(seq));
            } else if let Some(q) = model.get_mut(&user) {
                let pick = *q.keys().nth(next() as usize % q.len()).unwrap();
                assert_eq!(ix.remove(u, MsgSeq(pick), &Fake), q.remove(&pick));
                if q.is_empty() {
                    model.remove(&user);
                }
            } else {
                assert!(ix.queue(u).is_none());
            }
        }
        // Drain most users to make the table shrink.
        let users: Vec<u64> = model.keys().copied().collect();
        for user in users.iter().skip(20) {
            for s in model.remove(user).unwrap().into_keys() {
                ix.remove(UserId::new(*user).unwrap(), MsgSeq(s), &Fake)
                    .unwrap();
            }
        }
        assert!(ix.slots.len() < 200, "shrunk: {}", ix.slots.len());
        assert_eq!(ix.users(), model.len());
        let total: usize = model.values().map(|q| q.len()).sum();
        assert_eq!(ix.messages as usize, total);
        for (user, q) in &model {
            let got = ix.queue(UserId::new(*user).unwrap()).unwrap();
            let want: Vec<Lsn> = q.values().copied().collect();
            assert_eq!(got.iter_from(0).collect::<Vec<_>>(), want);
            let bytes: u64 = q.keys().map(|s| s % 7 + 1).sum();
            assert_eq!(got.bytes(&Fake), bytes);
        }
        let mut ids: Vec<u64> = ix.user_ids().map(|u| u.get()).collect();
        ids.sort_unstable();
        let mut want: Vec<u64> = model.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(ids, want);
    }

    /// A block grows while its ring has wrapped around, with the wrapped part the
    /// shorter (moved after the old end) and the longer (the head part moves instead).
    #[test]
    fn growth_keeps_a_wrapped_ring_in_order() {
        for front_acks in [1, 5, 7] {
            let u = UserId::new(9).unwrap();
            let mut ix = Index::default();
            let mut want = std::collections::VecDeque::new();
            let mut seq = 0;
            let mut push = |ix: &mut Index, want: &mut std::collections::VecDeque<u64>| {
                seq += 1;
                ix.push(ix.probe(u, &Fake), u, at(seq), Fake.message(at(seq)).1);
                want.push_back(seq);
            };
            for _ in 0..8 {
                push(&mut ix, &mut want); // capacity 8, head 0
            }
            for _ in 0..front_acks {
                let s = want.pop_front().unwrap();
                assert_eq!(ix.remove(u, MsgSeq(s), &Fake), Some(at(s)));
            }
            for _ in 0..front_acks + 1 {
                push(&mut ix, &mut want); // wraps, then grows to 16
            }
            let q = ix.queue(u).unwrap();
            let got: Vec<u64> = q.iter_from(0).map(|a| Fake.seq(a).0).collect();
            assert_eq!(got, Vec::from(want.clone()), "after {front_acks} acks");
            let bytes: u64 = want.iter().map(|s| s % 7 + 1).sum();
            assert_eq!(q.bytes(&Fake), bytes);
        }
    }

    #[test]
    fn load_builds_queues() {
        let mut ix = Index::default();
        let one = UserId::new(1).unwrap();
        let three = UserId::new(3).unwrap();
        ix.reserve(2);
        let slots = ix.slots.len();
        ix.insert_loaded(Loaded::new(one, &[at(4)], 5));
        ix.insert_loaded(Loaded::new(three, &[at(1), at(2), at(7)], 6));
        assert_eq!(ix.slots.len(), slots, "reserved");
        // One built and never added frees its block (Miri and the leak checkers see it).
        drop(Loaded::new(three, &[at(1), at(2)], 5));
        assert_eq!((ix.messages, ix.bytes, ix.users()), (4, 11, 2));
        assert_eq!(ix.get(three, MsgSeq(7), &Fake), Some(at(7)));
        assert_eq!(ix.queue(three).unwrap().len(), 3);
        ix.push(ix.probe(three, &Fake), three, at(9), 3);
        assert_eq!(ix.queue(three).unwrap().bytes(&Fake), 9);
    }
}

//! The io_uring driver: one worker thread per core, each with its own ring, its own
//! `SO_REUSEPORT` listener and its own provided-buffer ring; no state shared between
//! workers. Multishot accept; multishot receive into the worker's buffer ring (an idle
//! connection owns no read buffer: the kernel picks a ring buffer only when bytes
//! arrive, and it goes back to the ring right after); sends from a per-connection
//! buffer that exists only while bytes are in flight; an eventfd wakes the worker for
//! router replies; a coarse timer sweep drives timeouts (no timer per connection).
//!
//! Why the `io-uring` crate and not tokio-uring: tokio-uring 0.5 (May 2024) has neither
//! provided buffer rings nor multishot operations, which are what make idle connections
//! free; `io-uring` (which tokio-uring is built on) has all of them.
//!
//! The only `unsafe` of the crate is here: handing buffers to the kernel. Each block
//! says why the buffer outlives the operation.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{RouterLink, SourceLimits, WorkerLink};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use rustls::ServerConfig;
use wire::link::{ConnId, ToClient, ToRouter};
use wire::ErrorCode;

use crate::conn::{Conn, Limits};
use crate::live::{Follower, Live};
use crate::worker::{
    sweep, AcceptGate, Admit, Backpressure, Drain, StatsCell, WorkerConfig, WorkerKnobs,
    WorkerStats,
};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_TIMER: u64 = 5;
const OP_RETRY: u64 = 6;
const OP_CANCEL: u64 = 7;
const OP_TICK: u64 = 8;
/// How soon requests handed back by a full link are offered again.
const RETRY: Duration = Duration::from_millis(2);
const BGID: u16 = 1;
const SWEEP: Duration = Duration::from_millis(250);

fn ud(op: u64, gen: u16, slot: u32) -> u64 {
    (op << 56) | ((gen as u64) << 32) | slot as u64
}

struct Slot {
    fd: OwnedFd,
    gen: u16,
    conn: Conn,
    /// Bytes handed to the kernel by the send in flight (empty when none).
    sending: Vec<u8>,
    send_at: usize,
    recv_armed: bool,
    shut: bool,
    /// Not read while a request of it waits for room on a link.
    paused: bool,
    /// Has replies queued this loop turn (flushed at its end).
    touched: bool,
}

/// The provided-buffer ring: `count` buffers of `size` bytes, and the ring of entries
/// the kernel takes them from.
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    mask: u16,
    tail: u16,
    bufs: Vec<u8>,
    size: usize,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, size: u32) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32_768);
        let ring_bytes = count as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: a fresh private anonymous mapping, page aligned as the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            mask: count - 1,
            tail: 0,
            bufs: vec![0u8; count as usize * size as usize],
            size: size as usize,
        };
        // SAFETY: the ring memory lives until `BufRing` is dropped, after the ring
        // (the worker drops its `IoUring` first, see `Worker::run`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(br.ring as u64, count, BGID, 0)?
        };
        // Touch every buffer page now: no page faults on the receive path later (and,
        // with jemalloc's THP, the buffers sit in huge pages).
        for page in br.bufs.chunks_mut(4096) {
            page[0] = 1;
        }
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: `idx` is within the ring; entries are plain data; `bufs` outlives the
        // ring registration and never reallocates.
        unsafe {
            let e = &mut *self.ring.add(idx);
            e.set_addr(self.bufs.as_ptr().add(bid as usize * self.size) as u64);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field shares entry 0's `resv`; the kernel reads it atomically.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.size;
        &self.bufs[start..start + len.min(self.size)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped; the ring that used it is gone.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

pub struct Worker {
    cfg: WorkerConfig,
    tls: Arc<ServerConfig>,
    limits: Arc<Limits>,
    listener: TcpListener,
    link: WorkerLink,
    stop: Arc<AtomicBool>,
    stats_cell: Option<StatsCell>,
    live_tls: Option<Follower<Arc<ServerConfig>>>,
    knobs: Option<Follower<WorkerKnobs>>,
    /// Set when another process took the listener over: stop accepting, close the
    /// connections with `Reconnect` at this many per second, end when none is left.
    drain: Option<(Arc<AtomicBool>, u32)>,
    sources: Option<Arc<dyn SourceLimits>>,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        tls: Arc<ServerConfig>,
        limits: Arc<Limits>,
        listener: TcpListener,
        link: WorkerLink,
        stop: Arc<AtomicBool>,
    ) -> Worker {
        Worker {
            cfg,
            tls,
            limits,
            listener,
            link,
            stop,
            stats_cell: None,
            live_tls: None,
            knobs: None,
            drain: None,
            sources: None,
        }
    }

    /// Checks PIN requests and guesses against limits per client address shared with
    /// the process's other workers; one over is answered `Error RateLimited` here and
    /// never reaches a router.
    pub fn limit_sources(mut self, limits: Arc<dyn SourceLimits>) -> Worker {
        self.sources = Some(limits);
        self
    }

    /// Drains when `flag` is set (an upgrade took the listener): accepting stops,
    /// connections are closed with `Reconnect` at `per_sec` (at least 1), and `run`
    /// returns once none is left.
    pub fn drain_on(mut self, flag: Arc<AtomicBool>, per_sec: u32) -> Worker {
        self.drain = Some((flag, per_sec.max(1)));
        self
    }

    /// Follows a TLS configuration replaced at run time (certificate reload): new
    /// handshakes use the newest; established connections keep theirs.
    pub fn follow_tls(mut self, live: &Arc<Live<Arc<ServerConfig>>>) -> Worker {
        self.live_tls = Some(live.follow());
        self
    }

    /// Follows runtime knobs: the accept rate from the next accept, connection limits
    /// on every connection from the next event.
    pub fn follow_knobs(mut self, live: &Arc<Live<WorkerKnobs>>) -> Worker {
        self.knobs = Some(live.follow());
        self
    }

    /// Publishes the worker's counters to `cell` every sweep and at the end.
    pub fn publish_to(mut self, cell: StatsCell) -> Worker {
        self.stats_cell = Some(cell);
        self
    }

    /// Runs until `stop` is set (then closes every connection with `ServerShutdown`).
    /// Takes a new certificate and new knob values when they were changed.
    fn follow_live_values(&mut self, st: &mut State) {
        if let Some(t) = &mut self.live_tls {
            if t.refresh() {
                self.tls = Arc::clone(&t.value);
            }
        }
        if let Some(k) = &mut self.knobs {
            if k.refresh() {
                self.cfg.accepts_per_sec = k.value.accepts_per_sec;
                self.limits = Arc::clone(&k.value.limits);
                for s in st.slots.iter_mut().flatten() {
                    s.conn.set_limits(Arc::clone(&self.limits));
                }
            }
        }
    }

    pub fn run(mut self) -> io::Result<WorkerStats> {
        let mut ring = new_ring(self.cfg.ring_entries)?;
        let mut bufs = BufRing::new(&ring, self.cfg.buffers, self.cfg.buffer_bytes)?;
        let mut st = State {
            slots: Vec::new(),
            free: Vec::new(),
            stats: WorkerStats::default(),
            to_router: Vec::new(),
            sq: Vec::new(),
            gen: 0,
            backpressure: Backpressure::default(),
            retry_armed: false,
            sources: self.sources.take(),
        };
        let started = Instant::now();
        let now_ms = || started.elapsed().as_millis() as u64;
        let lfd = self.listener.as_raw_fd();
        st.sq.push(
            opcode::AcceptMulti::new(types::Fd(lfd))
                .build()
                .user_data(ud(OP_ACCEPT, 0, 0)),
        );
        let wake_fd = self.link.wake.as_raw_fd();
        st.sq.push(
            opcode::PollAdd::new(types::Fd(wake_fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(ud(OP_WAKE, 0, 0)),
        );
        let ts = types::Timespec::new().nsec(SWEEP.as_nanos() as u32);
        let retry_ts = types::Timespec::new().nsec(RETRY.as_nanos() as u32);
        let tick = self.link.to_router.tick_every();
        let tick_ts = types::Timespec::from(tick.unwrap_or(SWEEP));
        if tick.is_some() {
            st.sq.push(
                opcode::Timeout::new(&tick_ts)
                    .build()
                    .user_data(ud(OP_TICK, 0, 0)),
            );
        }
        // Replies already waiting in the channel (a router in this thread answered more
        // than one round allows): look again without sleeping.
        let mut replies_waiting = false;
        st.sq.push(
            opcode::Timeout::new(&ts)
                .build()
                .user_data(ud(OP_TIMER, 0, 0)),
        );
        let mut gate = AcceptGate::default();
        let mut touched: Vec<u32> = Vec::new();
        let mut stopping = false;
        let mut drain: Option<Drain> = None;
        loop {
            if let Some((flag, per_sec)) = &self.drain {
                if drain.is_none() && !stopping && flag.load(Ordering::Acquire) {
                    drain = Some(Drain::start(*per_sec, now_ms()));
                    // The listener lives on in the new process, with its queue.
                    st.sq.push(
                        opcode::AsyncCancel::new(ud(OP_ACCEPT, 0, 0))
                            .build()
                            .user_data(ud(OP_CANCEL, 0, 0)),
                    );
                }
                if let (Some(d), false) = (&mut drain, stopping) {
                    st.drain_some(d, now_ms());
                    st.forward(&mut *self.link.to_router);
                    if st.stats.open == 0 {
                        break;
                    }
                }
            }
            self.follow_live_values(&mut st);
            // Submit what is queued; wait for at least one completion.
            {
                let mut sq = ring.submission();
                for e in st.sq.drain(..) {
                    // SAFETY: every entry's buffers live in `st.slots`/`bufs`/`ts` until
                    // its completion is reaped (see `Slot::sending`, `BufRing`).
                    while unsafe { sq.push(&e) }.is_err() {
                        drop(sq);
                        ring.submit()?;
                        sq = ring.submission();
                    }
                }
            }
            let want = if replies_waiting { 0 } else { 1 };
            match ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            let cqes: Vec<cqueue::Entry> = ring.completion().collect();
            for cqe in cqes {
                let data = cqe.user_data();
                let (op, gen, slot) = (data >> 56, (data >> 32) as u16, data as u32);
                let res = cqe.result();
                match op {
                    OP_ACCEPT => {
                        if !cqueue::more(cqe.flags()) && !stopping && drain.is_none() {
                            st.sq.push(
                                opcode::AcceptMulti::new(types::Fd(lfd))
                                    .build()
                                    .user_data(ud(OP_ACCEPT, 0, 0)),
                            );
                        }
                        if res < 0 {
                            continue;
                        }
                        // SAFETY: a fresh descriptor from accept, owned from here on.
                        let fd = unsafe { OwnedFd::from_raw_fd(res) };
                        // Dropping `fd` closes it.
                        let open = st.stats.open;
                        match gate.admit(now_ms(), stopping || drain.is_some(), open, &self.cfg) {
                            Admit::Yes => st.open(fd, &self.cfg, &self.tls, &self.limits, now_ms()),
                            Admit::Stopping => st.stats.refused_stopping += 1,
                            Admit::Rate => st.stats.refused_rate += 1,
                            Admit::Full => st.stats.refused_full += 1,
                        }
                    }
                    OP_RECV => st.on_recv(gen, slot, res, cqe.flags(), &mut bufs, now_ms()),
                    OP_SEND => st.on_send(gen, slot, res),
                    OP_WAKE => {
                        let mut b = [0u8; 8];
                        // SAFETY: reads 8 bytes into a live buffer from our eventfd.
                        unsafe { libc::read(wake_fd, b.as_mut_ptr().cast(), 8) };
                        if !cqueue::more(cqe.flags()) {
                            st.sq.push(
                                opcode::PollAdd::new(types::Fd(wake_fd), libc::POLLIN as u32)
                                    .multi(true)
                                    .build()
                                    .user_data(ud(OP_WAKE, 0, 0)),
                            );
                        }
                    }
                    OP_RETRY => st.retry_armed = false, // the loop offers parked requests again
                    OP_CANCEL => {}
                    OP_TICK => {
                        self.link.to_router.tick();
                        if !stopping {
                            st.sq.push(
                                opcode::Timeout::new(&tick_ts)
                                    .build()
                                    .user_data(ud(OP_TICK, 0, 0)),
                            );
                        }
                    }
                    OP_TIMER => {
                        let live = (st.slots.iter_mut().enumerate()).filter_map(|(i, s)| {
                            let s = s.as_mut()?;
                            let held = s.sending.len() - s.send_at;
                            Some((i as u32, &mut s.conn, held))
                        });
                        let swept = sweep(live, now_ms(), &mut st.to_router);
                        for i in swept.touched {
                            st.after(i);
                        }
                        st.stats.backlog_bytes_sum = swept.backlog_sum;
                        st.stats.backlog_bytes_max = swept.backlog_max;
                        st.stats.link_blocked = st.backpressure.blocked() as u64;
                        st.stats.publish(&self.stats_cell);
                        if !stopping {
                            st.sq.push(
                                opcode::Timeout::new(&ts)
                                    .build()
                                    .user_data(ud(OP_TIMER, 0, 0)),
                            );
                        }
                    }
                    _ => {}
                }
            }
            // Replies, then this turn's requests; a router in this thread answers at
            // once, so go round again (bounded) while it does.
            replies_waiting = false;
            for _ in 0..8 {
                // Replies: queue each, then encrypt and send once per connection.
                let now = now_ms();
                while let Some(batch) = self.link.replies.try_recv() {
                    for (id, msg) in batch {
                        let slot = id.0 as u32;
                        // The whole id: a reply for a connection of another process
                        // (an upgrade's other epoch) or an earlier one in the slot is
                        // dropped.
                        if let Some(s) = st
                            .slots
                            .get_mut(slot as usize)
                            .and_then(|s| s.as_mut())
                            .filter(|s| s.conn.id() == id)
                        {
                            st.stats.replies += 1;
                            if s.conn.queue(&msg, now, &mut st.to_router) {
                                if !s.touched {
                                    s.touched = true;
                                    touched.push(slot);
                                }
                            } else {
                                st.after(slot);
                            }
                        }
                    }
                }
                for slot in touched.drain(..) {
                    if let Some(s) = st.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) {
                        s.touched = false;
                        s.conn.flush(now, &mut st.to_router);
                        st.after(slot);
                    }
                }

                st.forward(&mut *self.link.to_router);
                replies_waiting = self.link.to_router.flush();
                if !replies_waiting {
                    break;
                }
            }
            if st.backpressure.blocked() > 0 && !st.retry_armed {
                st.retry_armed = true;
                st.sq.push(
                    opcode::Timeout::new(&retry_ts)
                        .build()
                        .user_data(ud(OP_RETRY, 0, 0)),
                );
            }
            if self.stop.load(Ordering::Acquire) && !stopping {
                stopping = true;
                let now = now_ms();
                for i in 0..st.slots.len() {
                    if let Some(s) = st.slots[i].as_mut() {
                        s.conn.close(
                            ErrorCode::ServerShutdown,
                            "the server is stopping",
                            now,
                            &mut st.to_router,
                        );
                        st.after(i as u32);
                    }
                }
                st.forward(&mut *self.link.to_router);
                replies_waiting |= self.link.to_router.flush();
            }
            if stopping && st.stats.open == 0 {
                break;
            }
            if stopping && st.sq.is_empty() {
                // Let the last sends and shutdowns complete; bounded by the timer.
                st.sq.push(
                    opcode::Timeout::new(&ts)
                        .build()
                        .user_data(ud(OP_TIMER, 0, 0)),
                );
            }
        }
        drop(ring); // before `bufs`: the kernel no longer uses the buffer ring
        drop(bufs);
        st.stats.link_blocked = st.backpressure.blocked() as u64;
        st.stats.publish(&self.stats_cell);
        Ok(st.stats)
    }
}

struct State {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    stats: WorkerStats,
    to_router: Vec<ToRouter>,
    sq: Vec<squeue::Entry>,
    gen: u16,
    /// Requests a full link handed back, and the connections paused behind them.
    backpressure: Backpressure,
    retry_armed: bool,
    sources: Option<Arc<dyn SourceLimits>>,
}

/// Takes out of `to_router[first..]` (what one connection just asked) the PIN requests
/// and guesses over its address's limits, and answers each `Error RateLimited`.
fn over_source_limits(
    limits: &dyn SourceLimits,
    conn: &mut Conn,
    first: usize,
    to_router: &mut Vec<ToRouter>,
    now: u64,
) {
    let mut i = first;
    while i < to_router.len() {
        let over =
            match &to_router[i] {
                ToRouter::Register { source, .. } => (!limits.pin_request(*source))
                    .then_some("too many PIN requests from this address"),
                ToRouter::Verify { .. } => (!limits.pin_guess(conn.peer()))
                    .then_some("too many PIN guesses from this address"),
                _ => None,
            };
        match over {
            Some(reason) => {
                to_router.remove(i);
                let refusal = ToClient::Error {
                    code: wire::ErrorCode::RateLimited,
                    reason: format!("{reason}; try again later"),
                };
                conn.deliver(&refusal, now, to_router);
            }
            None => i += 1,
        }
    }
}

/// The ring. Only this thread submits, and it reaps completions only in
/// `submit_and_wait`: deferred task work runs there, in one batch, instead of
/// interrupting the thread (signal-style task work) whenever a socket has data. Kernels
/// before 6.1 lack it: fall back to cooperative task running.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
    {
        Ok(r) => Ok(r),
        Err(_) => IoUring::builder().setup_coop_taskrun().build(entries),
    }
}

impl State {
    /// Asks as many connections to reconnect as the drain's pace allows by `now`.
    fn drain_some(&mut self, d: &mut Drain, now: u64) {
        let slots = self.slots.len();
        let mut asked = vec![];
        d.next(now, slots, |i| {
            let Some(s) = self.slots[i].as_mut() else {
                return false;
            };
            if s.conn.ended().is_some() {
                return false;
            }
            s.conn.close(
                ErrorCode::Reconnect,
                "the server is draining for an upgrade; reconnect",
                now,
                &mut self.to_router,
            );
            asked.push(i as u32);
            true
        });
        for i in asked {
            self.after(i);
        }
    }

    /// Offers parked requests (oldest first), then new ones, to the link. A connection
    /// with a request handed back is paused (its receive cancelled) and its later
    /// requests wait behind it, in order; a connection with nothing parked any more is
    /// read again.
    fn forward(&mut self, link: &mut dyn RouterLink) {
        let done = self.backpressure.forward(&mut self.to_router, link);
        self.stats.requests += done.sent;
        for i in done.pause {
            let Some(s) = self.slots.get_mut(i as usize).and_then(|s| s.as_mut()) else {
                continue;
            };
            if !s.paused {
                s.paused = true;
                if s.recv_armed {
                    self.sq.push(
                        opcode::AsyncCancel::new(ud(OP_RECV, s.gen, i))
                            .build()
                            .user_data(ud(OP_CANCEL, s.gen, i)),
                    );
                }
            }
        }
        for i in done.resume {
            let Some(s) = self.slots.get_mut(i as usize).and_then(|s| s.as_mut()) else {
                continue;
            };
            if s.paused {
                s.paused = false;
                if !s.recv_armed && s.conn.ended().is_none() {
                    s.recv_armed = true;
                    let raw = s.fd.as_raw_fd();
                    self.sq.push(
                        opcode::RecvMulti::new(types::Fd(raw), BGID)
                            .build()
                            .user_data(ud(OP_RECV, s.gen, i)),
                    );
                }
            }
        }
    }

    fn open(
        &mut self,
        fd: OwnedFd,
        cfg: &WorkerConfig,
        tls: &Arc<ServerConfig>,
        limits: &Arc<Limits>,
        now: u64,
    ) {
        let peer = socket2::SockRef::from(&fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let gen = self.next_gen();
        let id = ConnId::new(cfg.gateway, cfg.epoch, cfg.worker, gen, slot);
        let Ok(conn) = Conn::new(Arc::clone(tls), Arc::clone(limits), id, peer, now) else {
            self.free.push(slot);
            return;
        };
        let raw = fd.as_raw_fd();
        self.slots[slot as usize] = Some(Slot {
            fd,
            gen,
            conn,
            sending: Vec::new(),
            send_at: 0,
            recv_armed: true,
            shut: false,
            paused: false,
            touched: false,
        });
        self.sq.push(
            opcode::RecvMulti::new(types::Fd(raw), BGID)
                .build()
                .user_data(ud(OP_RECV, gen, slot)),
        );
        self.stats.accepted += 1;
        self.stats.open += 1;
    }

    /// A generation for a new connection: completions still in flight for an earlier
    /// connection in a reused slot carry the old generation and are ignored.
    fn next_gen(&mut self) -> u16 {
        self.gen = self.gen.wrapping_add(1);
        self.gen
    }

    fn get(&mut self, gen: u16, slot: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot as usize)
            .and_then(|s| s.as_mut())
            .filter(|s| s.gen == gen)
    }

    fn on_recv(&mut self, gen: u16, slot: u32, res: i32, flags: u32, bufs: &mut BufRing, now: u64) {
        let bid = cqueue::buffer_select(flags);
        let to_router = &mut self.to_router;
        if let Some(s) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.as_mut())
            .filter(|s| s.gen == gen)
        {
            if res > 0 {
                self.stats.bytes_in += res as u64;
                if let Some(bid) = bid {
                    let handshaking = s.conn.tls_handshaking();
                    let first = to_router.len();
                    s.conn.receive(bufs.buf(bid, res as usize), now, to_router);
                    if let Some(limits) = &self.sources {
                        over_source_limits(limits.as_ref(), &mut s.conn, first, to_router, now);
                    }
                    if handshaking && !s.conn.tls_handshaking() {
                        if s.conn.resumed() {
                            self.stats.handshakes_resumed += 1;
                        } else {
                            self.stats.handshakes_full += 1;
                        }
                    }
                }
            } else if res == 0 || (res != -libc::ENOBUFS && res != -libc::ECANCELED) {
                s.conn.peer_gone();
            }
            if !cqueue::more(flags) {
                s.recv_armed = false;
                if s.conn.ended().is_none() && !s.paused {
                    // Re-arm (after ENOBUFS the ring had no buffer: backpressure).
                    s.recv_armed = true;
                    let raw = s.fd.as_raw_fd();
                    self.sq.push(
                        opcode::RecvMulti::new(types::Fd(raw), BGID)
                            .build()
                            .user_data(ud(OP_RECV, gen, slot)),
                    );
                }
            }
        }
        if let Some(bid) = bid {
            bufs.push(bid);
            bufs.publish();
        }
        self.after(slot);
    }

    fn on_send(&mut self, gen: u16, slot: u32, res: i32) {
        if res > 0 && self.get(gen, slot).is_some() {
            self.stats.bytes_out += res as u64;
        }
        let Some(s) = self.get(gen, slot) else { return };
        if res < 0 {
            s.sending.clear();
            s.send_at = 0;
            s.conn.peer_gone();
        } else {
            s.send_at += res as usize;
            if s.send_at >= s.sending.len() {
                s.sending = Vec::new();
                s.send_at = 0;
            }
        }
        self.after(slot);
    }

    /// After anything happened to a connection: start a send, or finish closing.
    fn after(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        let (gen, raw) = (s.gen, s.fd.as_raw_fd());
        if !s.sending.is_empty() && s.send_at < s.sending.len() {
            // A partial send completed above without finishing: send the rest.
            if s.send_at > 0 {
                // Move the unsent rest to the front first, then hand it to the kernel:
                // the pointer must be taken after the bytes stop moving.
                s.sending.drain(..s.send_at);
                s.send_at = 0;
                let rest = &s.sending;
                self.sq.push(
                    opcode::Send::new(types::Fd(raw), rest.as_ptr(), rest.len() as u32)
                        .build()
                        .user_data(ud(OP_SEND, gen, slot)),
                );
            }
        } else if !s.conn.outgoing().is_empty() && !s.shut {
            s.sending = s.conn.take_outgoing();
            s.send_at = 0;
            let n = s.sending.len();
            self.sq.push(
                opcode::Send::new(types::Fd(raw), s.sending.as_ptr(), n as u32)
                    .build()
                    .user_data(ud(OP_SEND, gen, slot)),
            );
        }
        if let Some(notice) = s.conn.take_closed_notice() {
            self.to_router.push(notice);
        }
        let s = self.slots[slot as usize].as_mut().expect("present");
        if s.conn.ended().is_some() && s.sending.is_empty() && s.conn.outgoing().is_empty() {
            if !s.shut {
                s.shut = true;
                // Ends the multishot receive (it completes with 0), then the slot goes.
                let _ = socket2::SockRef::from(&s.fd).shutdown(std::net::Shutdown::Both);
            }
            if !s.recv_armed {
                if s.conn.tls_handshaking() {
                    self.stats.handshakes_failed += 1;
                }
                tracing::debug!(
                    "connection {} closed: {:?}",
                    s.conn.id().0,
                    s.conn.ended().expect("ended")
                );
                self.slots[slot as usize] = None;
                self.free.push(slot);
                self.stats.open -= 1;
                self.stats.closed += 1;
            }
        }
    }
}

// `RawFd` appears in signatures of the platform calls above.
const _: Option<RawFd> = None;

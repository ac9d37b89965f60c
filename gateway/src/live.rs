//! Values replaced at run time (knobs, a reloaded certificate) that a worker thread picks
//! up without a lock on its hot path: one relaxed load of a generation number per loop
//! turn, the lock only when the value changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Live<T: Clone> {
    generation: AtomicU64,
    value: Mutex<T>,
}

impl<T: Clone> Live<T> {
    pub fn new(value: T) -> Arc<Live<T>> {
        Arc::new(Live {
            generation: AtomicU64::new(0),
            value: Mutex::new(value),
        })
    }

    pub fn get(&self) -> T {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value; followers see it at their next [`Follower::refresh`].
    pub fn set(&self, value: T) {
        *self.value.lock().unwrap_or_else(|e| e.into_inner()) = value;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes the value in place and returns what the change returned.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.value.lock().unwrap_or_else(|e| e.into_inner()));
        self.generation.fetch_add(1, Ordering::Release);
        r
    }

    pub fn follow(self: &Arc<Self>) -> Follower<T> {
        Follower {
            live: Arc::clone(self),
            seen: self.generation.load(Ordering::Acquire),
            value: self.get(),
        }
    }
}

/// One thread's copy of a [`Live`] value.
pub struct Follower<T: Clone> {
    live: Arc<Live<T>>,
    seen: u64,
    pub value: T,
}

impl<T: Clone> Follower<T> {
    /// Takes the newest value if it changed; `true` when it did.
    pub fn refresh(&mut self) -> bool {
        let g = self.live.generation.load(Ordering::Acquire);
        if g == self.seen {
            return false;
        }
        self.seen = g;
        self.value = self.live.get();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_sees_each_change_once() {
        let live = Live::new(1u32);
        let mut f = live.follow();
        assert!(!f.refresh());
        live.set(2);
        assert!(f.refresh());
        assert_eq!(f.value, 2);
        assert!(!f.refresh());
        live.update(|v| *v += 5);
        assert!(f.refresh());
        assert_eq!(f.value, 7);
    }
}

//! A background thread owned by a value: it runs until the value is dropped, which
//! raises its stop flag, wakes it (`unpark`) and joins it. The admin API and the activity
//! reporter run this way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Task {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Task {
    /// Starts thread `name` running `body`, which returns once the flag it is given is
    /// set (check it at least every few hundred milliseconds, or park and be woken).
    pub fn spawn(
        name: &str,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<Task, crate::error::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&s))
            .map_err(crate::error::Error::io(format_args!("thread {name}")))?;
        Ok(Task {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_task_stops_and_joins_its_thread() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let t = Task::spawn("test-task", move |stop| {
            while !stop.load(Ordering::Acquire) {
                std::thread::park();
            }
            r.store(true, Ordering::Release);
        })
        .unwrap();
        drop(t); // returns only once the body has finished
        assert!(ran.load(Ordering::Acquire));
    }
}

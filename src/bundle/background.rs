//! A few threads that render, scrub and compress bundles at a lower CPU priority than the
//! rest of the daemon. In a storm thousands of bundles are owed at once; they may take
//! longer, but never the CPU that ingest and decisions need (Linux gives each thread its own
//! nice value). The async runtime's threads stay free for requests and decisions too.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Background {
    jobs: Mutex<Sender<Job>>,
}

/// How much nicer than the daemon the threads run (0 is the daemon's; 19 the nicest).
pub const NICENESS: i32 = 10;

impl Background {
    pub fn start(threads: usize, name: &str) -> Background {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    lower_priority(NICENESS);
                    loop {
                        let job = {
                            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                            queue.recv()
                        };
                        let Ok(job) = job else { return };
                        // A panicking job fails its caller (its answer is dropped), not
                        // the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a bundle thread");
            }
        }
        Background {
            jobs: Mutex::new(jobs),
        }
    }

    /// Run `work` on one of the threads and wait for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| "the bundle threads are gone".to_owned())?;
        answered
            .await
            .map_err(|_| "the bundle job failed (panicked)".to_owned())
    }
}

/// Raise this thread's nice value; a failure only costs the preference.
fn lower_priority(niceness: i32) {
    // SAFETY: gettid and setpriority take and return plain integers; on Linux a thread id
    // given to PRIO_PROCESS names that thread alone.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, niceness)
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the bundle threads' priority");
    }
}

/// This thread's nice value.
#[cfg(test)]
fn niceness() -> i32 {
    // SAFETY: as above; errno is cleared first because -1 is also a valid nice value.
    unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_nicer_threads_and_a_panic_fails_only_its_job() {
        let background = Background::start(2, "test-bundle");
        let daemon = niceness();
        let theirs = background.run(niceness).await.unwrap();
        assert_eq!(theirs, (daemon + NICENESS).min(19));
        let failed = background.run(|| -> i32 { panic!("boom") }).await;
        assert!(failed.is_err());
        // Both threads still take work.
        let (a, b) = tokio::join!(background.run(|| 1), background.run(|| 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }
}

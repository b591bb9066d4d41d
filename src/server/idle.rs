//! server::idle: whether a connection has a request in flight and since when it has had none,
//! and the stream wrapper that closes a connection idle past `server.header_read_timeout`.

use std::sync::Arc;
use std::time::Duration;

use super::peers::Unauthenticated;

/// Whether a connection has a request in flight, and since when it has had none.
pub(super) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to the last sign of life: the stream's start (after TLS), or
    /// the end of a request that was not refused (401).
    last: std::sync::atomic::AtomicU64,
    start: tokio::time::Instant,
    /// The connection's place in its peer's count until its first request begins. (A request
    /// answered 401 closes the connection, so one that stays open has passed.)
    unauthenticated: std::sync::Mutex<Option<Unauthenticated>>,
}

impl Activity {
    pub(super) fn new(unauthenticated: Unauthenticated) -> Activity {
        Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last: std::sync::atomic::AtomicU64::new(0),
            start: tokio::time::Instant::now(),
            unauthenticated: std::sync::Mutex::new(Some(unauthenticated)),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last
            .store(elapsed, std::sync::atomic::Ordering::Relaxed);
    }

    /// A request began; it ends when the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(
            self.unauthenticated
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        Busy {
            activity: self.clone(),
            refused: false,
        }
    }

    /// Whether to close the connection now that its probation is over: it came in over its
    /// peer's limit and has not sent a request (recorded as a refusal).
    pub(super) fn refuse_on_probation(&self) -> bool {
        let mut unauthenticated = self
            .unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match unauthenticated.take_if(|slot| slot.on_probation) {
            Some(slot) => {
                slot.refuse();
                true
            }
            None => false,
        }
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in
    /// flight.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        Some(self.start + Duration::from_millis(last) + idle)
    }
}

/// A request in flight on a connection.
pub(super) struct Busy {
    activity: Arc<Activity>,
    /// Answered 401: its end does not count as activity.
    refused: bool,
}

impl Busy {
    pub(super) fn mark_refused(&mut self) {
        self.refused = true;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.refused {
            self.activity.touch();
        }
        self.activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection's stream that reads as closed once the connection has had no request in flight
/// for `idle` (`server.header_read_timeout`). hyper's own header timeout covers HTTP/1 only once
/// it knows the connection is HTTP/1: a client that connected and sent nothing (or half the
/// HTTP/2 preface), or an HTTP/2 client idling between requests, held its `max_connections`
/// slot for ever, and 32 such connections shut everyone out.
pub(super) struct IdleCutoff<I> {
    inner: I,
    activity: Arc<Activity>,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    cut: bool,
}

impl<I> IdleCutoff<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>, idle: Duration) -> IdleCutoff<I> {
        // Counted from now: after the TLS handshake, if any.
        activity.touch();
        let timer = Box::pin(tokio::time::sleep(idle));
        IdleCutoff {
            inner,
            activity,
            idle,
            timer,
            cut: false,
        }
    }

    /// Whether the idle time is over; otherwise the timer will wake the reader when it may be.
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future;
        loop {
            let now = tokio::time::Instant::now();
            let deadline = match self.activity.idle_deadline(self.idle) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                // Look again later: the request may end meanwhile.
                None => now + self.idle,
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleCutoff<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            return std::task::Poll::Ready(Ok(()));
        }
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Pending if this.expired(cx) => {
                // End of stream: the protocol closes the connection as if the client had.
                this.cut = true;
                tracing::debug!(idle = %crate::duration::Shown(this.idle), "idle connection closed");
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleCutoff<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

//! The read side of the store inside the daemon: a few read-only connections, used only on
//! tokio's blocking threads. Every daemon read goes through [`ReadPool::read`], so no SQLite
//! call runs on an async worker thread and concurrent readers (the worker's decisions, the
//! outbox, the bundler, the incident API) do not queue behind one connection.
//!
//! Connections are opened on demand and kept for reuse up to [`IDLE_CONNECTIONS`]; a query
//! that fails drops its connection, so the next one starts afresh (a store replaced under a
//! connection, a transient I/O error). WAL readers never block the writer, so the number of
//! connections open at once is bounded only by tokio's blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Reader, StoreError};

/// Connections kept open between reads.
const IDLE_CONNECTIONS: usize = 8;

pub(super) struct ReadPool {
    database: PathBuf,
    idle: Mutex<Vec<Reader>>,
}

impl ReadPool {
    pub(super) fn new(database: PathBuf) -> Arc<ReadPool> {
        Arc::new(ReadPool {
            database,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Run `query` on a pooled connection on a blocking thread.
    pub(super) async fn read<T, Q>(self: &Arc<Self>, query: Q) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Q: FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.read_blocking(query))
            .await
            .map_err(|_| StoreError::Stopped)?
    }

    /// Run `query` on a pooled connection on this thread; for callers already on a blocking
    /// thread.
    pub(super) fn read_blocking<T>(
        &self,
        query: impl FnOnce(&Reader) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reader = self.take()?;
        let result = query(&reader);
        if result.is_ok() {
            self.give_back(reader);
        }
        result
    }

    fn take(&self) -> Result<Reader, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(reader) => Ok(reader),
            None => Reader::open(&self.database),
        }
    }

    fn give_back(&self, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(reader);
        }
    }

    /// Connections open and idle now (for tests).
    #[cfg(test)]
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

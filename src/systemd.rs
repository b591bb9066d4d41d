//! systemd: the notify protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=`), spoken
//! over the datagram socket named by `NOTIFY_SOCKET`. Without that variable every call does
//! nothing, so the daemon runs the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket_path: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let socket_path = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let watchdog_for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && watchdog_for_us)
            .map(Duration::from_micros);
        Notifier {
            socket_path,
            watchdog,
        }
    }

    /// How long systemd waits for a watchdog ping, if the watchdog is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.socket_path.is_some())
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    fn send(&self, message: &str) {
        let Some(path) = &self.socket_path else {
            return;
        };
        if let Err(error) = send_datagram(path, message.as_bytes()) {
            tracing::warn!(%error, socket = %path, "cannot notify systemd");
        }
    }
}

fn send_datagram(path: &str, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
        socket.send_to_addr(message, &address)?;
    } else {
        socket.send_to(message, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_as_single_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket_path: Some(path.display().to_string()),
            watchdog: Some(Duration::from_secs(2)),
        };
        notifier.ready("listening");
        notifier.watchdog_ping();
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=listening");
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
        assert_eq!(notifier.watchdog(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn abstract_sockets_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nightshift-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        send_datagram(&format!("@{name}"), b"STOPPING=1").unwrap();
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier::default();
        notifier.ready("x");
        assert_eq!(notifier.watchdog(), None);
    }
}

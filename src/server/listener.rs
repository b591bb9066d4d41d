//! server::listener: accepting connections, plain or TLS, and keeping them within bounds:
//! `server.max_connections` fitted to the open-file limit, a header/handshake timeout, the
//! per-peer cap on connections that have not made a request (`peers`), the idle cutoff
//! (`idle`), and closing every connection whose request carried no credential. Shutdown lets
//! in-flight requests finish within the drain deadline.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::RemoteAddr;
use super::idle::{Activity, IdleCutoff};
use super::peers::{
    EveryMinute, MAX_UNAUTHENTICATED_PER_PEER, PROBATION, PeerGate, Unauthenticated,
};
use crate::auth::Credentials;
use crate::config::ServerConfig;
use crate::telemetry::Metrics;

/// Load the TLS certificate chain and key, if configured.
pub fn load_tls(config: &ServerConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls_cert_file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert_file: no certificate in {}",
            cert_path.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("server.tls_key_file: {e}"))?
        .ok_or_else(|| {
            format!(
                "server.tls_key_file: no private key in {}",
                key_path.display()
            )
        })?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls_cert_file/tls_key_file: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// What [`serve`] needs besides the listener.
pub struct Serving {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub router: Router,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    /// The credentials in force: only a request carrying one keeps its connection open.
    pub credentials: Arc<RwLock<Arc<Credentials>>>,
}

/// Accept connections until `shutdown` fires, then let in-flight requests finish (up to
/// `drain`), so that every webhook being committed gets its answer.
///
/// Connections are limited three ways: `server.max_connections` at once (lowered to fit the
/// open-file limit, counted in `metrics`); `MAX_UNAUTHENTICATED_PER_PEER` waiting for a first
/// request, per peer address (see there); and a request that carries no valid credential
/// (answered 401, or an open endpoint such as `/healthz`) closes its connection after its
/// answer, so only authenticated requests keep one open.
pub async fn serve(
    listener: TcpListener,
    serving: Serving,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let Serving {
        tls,
        router,
        config,
        metrics,
        credentials,
    } = serving;
    let open_files = open_file_limit();
    let cap = connection_cap(config.max_connections, open_files);
    if cap < config.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            effective = cap,
            open_file_limit = open_files,
            "server.max_connections lowered to leave file descriptors for the store, outgoing \
             clients, bundles and commands; raise the open-file limit (LimitNOFILE) to serve more"
        );
    }
    metrics
        .http_max_connections
        .set(i64::try_from(cap).unwrap_or(i64::MAX));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(100)
        // The request head must fit in this (431 beyond): what a connection that trickles its
        // headers can make the daemon hold. hyper's default, ~400 KiB, let 1024 such
        // connections hold ~400 MB; Alertmanager's headers take well under 1 KiB.
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Duration::from_secs(30));
    let listening = Arc::new(Listening {
        tls,
        router,
        builder,
        handshake_timeout: config.tls_handshake_timeout,
        idle_timeout: config.header_read_timeout,
        closing: CancellationToken::new(),
        credentials,
        unauthorized: std::sync::Mutex::new(EveryMinute::default()),
    });
    // Each connection task holds a watcher until it ends, so that `graceful.shutdown()` waits
    // for them all; the signal to close goes through `listening.closing`.
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cap));
    let peers = Arc::new(PeerGate::new(MAX_UNAUTHENTICATED_PER_PEER, metrics));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not spin the loop.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            stream,
            remote,
            unauthenticated: peers.admit(remote.ip()),
            _slot: permit,
            _watcher: graceful.watcher(),
        };
        tokio::spawn(serve_connection(listening.clone(), accepted));
    }
    drop(listener);
    listening.closing.cancel();
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain = %crate::duration::Shown(drain),
            "connections still open after the drain deadline; closing them"
        );
    }
}

/// File descriptors kept out of the connections' reach, for the store, outgoing clients,
/// bundles and the commands `exec` runs: a quarter of the open-file limit, at least this many
/// (but never more than half of the limit).
const RESERVED_DESCRIPTORS: u64 = 256;

/// `configured`, lowered to leave `RESERVED_DESCRIPTORS` of the open-file limit free: a
/// connection is a descriptor, and running out of them fails commits, probes and pages, not
/// just accepts.
fn connection_cap(configured: usize, open_file_limit: Option<u64>) -> usize {
    let configured = configured.min(u32::MAX as usize);
    let Some(limit) = open_file_limit else {
        return configured;
    };
    let reserve = (limit / 4).max(RESERVED_DESCRIPTORS).min(limit / 2);
    let available = usize::try_from(limit - reserve).unwrap_or(usize::MAX);
    configured.min(available).max(1)
}

/// The soft RLIMIT_NOFILE; `None` when unlimited or unknown.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes to the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// What every connection of one listener shares.
struct Listening {
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    /// `server.header_read_timeout`: how long a connection may go without a request.
    idle_timeout: Duration,
    /// Cancelled at shutdown: each connection finishes what it has in flight, then closes.
    closing: CancellationToken,
    credentials: Arc<RwLock<Arc<Credentials>>>,
    /// Requests answered 401, logged with the peer: the first at once, then once a minute
    /// with the count (an Alertmanager holding the wrong token shows in the journal).
    unauthorized: std::sync::Mutex<EveryMinute>,
}

/// An accepted connection and what it holds until it ends.
struct Accepted {
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    unauthenticated: Unauthenticated,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _watcher: hyper_util::server::graceful::Watcher,
}

/// Serve one connection until the client leaves, it idles past the timeout, a request on it is
/// answered 401, or the server shuts down.
async fn serve_connection(listening: Arc<Listening>, accepted: Accepted) {
    let Accepted {
        stream,
        remote,
        unauthenticated,
        _slot,
        _watcher,
    } = accepted;
    // Also cancelled by a 401 over HTTP/2, which has no `Connection: close`.
    let closing = listening.closing.child_token();
    let accepted_at = tokio::time::Instant::now();
    let probation = unauthenticated
        .on_probation
        .then_some(accepted_at + PROBATION);
    let activity = Arc::new(Activity::new(unauthenticated));
    let stream = match &listening.tls {
        None => tokio_util::either::Either::Left(stream),
        Some(acceptor) => {
            let deadline = accepted_at + listening.handshake_timeout;
            let deadline = probation.map_or(deadline, |probation| probation.min(deadline));
            let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
            let handshake = tokio::select! {
                _ = closing.cancelled() => return,
                handshake = handshake => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => tokio_util::either::Either::Right(stream),
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
                Err(_) if activity.refuse_on_probation() => {
                    tracing::debug!(%remote, "TLS handshake over the peer's limit cut");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let service = {
        let activity = activity.clone();
        let closing = closing.clone();
        let router = listening.router.clone();
        let credentials = listening.credentials.clone();
        let listening = listening.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(RemoteAddr(remote));
            let method = request.method().as_str().to_owned();
            let path = request.uri().path().to_owned();
            let listening = listening.clone();
            let http1 = request.version() < axum::http::Version::HTTP_2;
            let authenticated = credentials
                .read()
                .map_or_else(|p| p.into_inner().clone(), |c| c.clone())
                .any_permits(
                    request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes()),
                );
            let mut router = router.clone();
            let mut busy = activity.begin();
            let closing = closing.clone();
            async move {
                let mut response = router.call(request).await?;
                if response.status() == StatusCode::UNAUTHORIZED
                    && let Some(refused) = listening
                        .unauthorized
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .count()
                {
                    tracing::warn!(
                        peer = %remote,
                        method,
                        path,
                        refused,
                        "request refused: missing or wrong credential (401)"
                    );
                }
                if !authenticated || response.status() == StatusCode::UNAUTHORIZED {
                    // Only requests that carry a credential may keep a connection (and its
                    // slot): a client must not hold one with a stream of cheap refusals, nor
                    // of health checks.
                    busy.mark_refused();
                    if http1 {
                        response.headers_mut().insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("close"),
                        );
                    } else {
                        // GOAWAY: the streams in flight finish, no new ones are taken.
                        closing.cancel();
                    }
                }
                // Busy until the answer's body is sent (or dropped).
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        })
    };
    let stream = IdleCutoff::new(stream, activity.clone(), listening.idle_timeout);
    let connection = listening
        .builder
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut on_probation = probation.is_some();
    let mut probation = std::pin::pin!(tokio::time::sleep_until(probation.unwrap_or(accepted_at)));
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = closing.cancelled() => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            _ = probation.as_mut(), if on_probation => {
                on_probation = false;
                if activity.refuse_on_probation() {
                    // Dropped: it never sent a request, so nothing is cut short.
                    tracing::debug!(%remote, "connection over its peer's limit closed");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "connection ended with an error");
    }
}

/// Largest request head (request line and headers) a connection may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_connection_cap_leaves_descriptors_free() {
        // (configured, soft open-file limit, effective cap)
        let cases = [
            (1024, None, 1024),
            (1024, Some(u64::MAX), 1024),
            (1024, Some(65536), 1024),
            (100_000, Some(65536), 49152),
            (1024, Some(1024), 768),
            (1024, Some(4096), 1024),
            (4096, Some(4096), 3072),
            (1024, Some(300), 150),
            (1024, Some(1), 1),
            (usize::MAX, None, u32::MAX as usize),
        ];
        for (configured, limit, expected) in cases {
            assert_eq!(
                connection_cap(configured, limit),
                expected,
                "{configured} with {limit:?}"
            );
        }
    }

    /// A server on 127.0.0.1:0 answering `/` with 200 and `/secret` with 401.
    async fn start(
        metrics: Arc<Metrics>,
        max_connections: usize,
    ) -> (SocketAddr, CancellationToken) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/secret", get(|| async { StatusCode::UNAUTHORIZED }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let config = Arc::new(ServerConfig {
            max_connections,
            // Long: nothing in these tests may be cut by the idle timeout.
            header_read_timeout: Duration::from_secs(120),
            ..ServerConfig::default()
        });
        let shutdown = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let config_auth = crate::config::AuthConfig {
            read_token_file: Some(token),
            ..crate::config::AuthConfig::default()
        };
        let (credentials, _) =
            Credentials::load(&config_auth, crate::auth::Missing::CheckOnly).unwrap();
        let serving = Serving {
            tls: None,
            router,
            config,
            metrics,
            credentials: Arc::new(RwLock::new(Arc::new(credentials))),
        };
        tokio::spawn(serve(
            listener,
            serving,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        (address, shutdown)
    }

    /// Everything the server sends until it closes the connection; `None` if it has not closed
    /// within 20 s.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        match tokio::time::timeout(Duration::from_secs(20), read).await {
            Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
            Err(_) => None,
        }
    }

    /// Send a keep-alive request with the credential and read its answer's status line.
    async fn status_line(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn over_its_limit_a_peer_is_served_only_if_its_request_comes_at_once() {
        let limit = MAX_UNAUTHENTICATED_PER_PEER;
        let metrics = Arc::new(Metrics::new());
        // One slot more than the limit, taken by a connection that has made a request.
        let (address, shutdown) = start(metrics.clone(), limit + 1).await;
        let refused = metrics
            .http_connections_refused_total
            .with_label_values(&["unauthenticated_per_peer"]);
        let mut passed = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut passed).await, "HTTP/1.1 200");
        let mut silent = Vec::new();
        for _ in 0..limit {
            silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // These two wait in the backlog; the first sends its request meanwhile.
        let mut ready = tokio::net::TcpStream::connect(address).await.unwrap();
        ready
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut waiting = tokio::net::TcpStream::connect(address).await.unwrap();
        // Slots free up: each is taken on probation, the peer being at its limit.
        drop(passed);
        let answer = read_until_closed(&mut ready)
            .await
            .expect("served, then closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(read_until_closed(&mut waiting).await.as_deref(), Some(""));
        assert_eq!(refused.get(), 1);
        // A request gives a connection's place back: the next one is admitted as usual.
        assert_eq!(status_line(&mut silent[0]).await, "HTTP/1.1 200");
        drop(silent.pop());
        let mut next = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut next).await, "HTTP/1.1 200");
        assert_eq!(refused.get(), 1);
        assert_eq!(metrics.http_max_connections.get(), (limit + 1) as i64);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_401_closes_the_connection() {
        let (address, shutdown) = start(Arc::new(Metrics::new()), 16).await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        // Keep-alive, and a second request right behind: only the first is answered.
        stream
            .write_all(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        // So does any answer to a request without a credential, a 200 included: cheap open
        // requests (health checks) cannot hold a connection either.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await.expect("closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        // With the credential the connection stays open for the next request.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 200");
        // The rest of the first answer, up to its body ("ok").
        let mut rest = Vec::new();
        while !rest.ends_with(b"\r\n\r\nok") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte));
            assert_eq!(
                read.await.unwrap().unwrap(),
                1,
                "closed after an authenticated request"
            );
            rest.push(byte[0]);
        }
        assert_eq!(status_line(&mut stream).await, "HTTP/1.1 200");
        shutdown.cancel();
    }
}

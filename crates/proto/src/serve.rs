//! Serving a role's gRPC + HTTP router on one port, the same way for every
//! role: TCP_NODELAY on every connection (small gRPC frames must not wait
//! for delayed ACKs), and a shutdown that does not hang on long-lived
//! streams (agent sessions, framework subscriptions, `/v2/events`).

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};

/// How long open connections get to finish after shutdown is requested;
/// streams still open then are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A bound address as other processes should dial it: an unspecified IP
/// (`0.0.0.0`, `::`) becomes loopback.
pub fn advertised(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then give open
/// connections [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = shutdown.boxed().shared();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone());
    let deadline = async move {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = std::future::IntoFuture::into_future(server) => result,
        _ = deadline => Ok(()),
    }
}

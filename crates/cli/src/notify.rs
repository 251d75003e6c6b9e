//! systemd's readiness protocol (`sd_notify(3)`), in-house: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace).
//!
//! [`take_socket_from_env`] must run first, before any thread exists: it
//! reads `NOTIFY_SOCKET` and removes it from the environment, so that tasks
//! the agent starts (and anything else this process spawns) cannot talk to
//! systemd in the role's name. Without the variable (not started by a
//! `Type=notify` unit) every call here does nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<String>> = OnceLock::new();

/// Reads and unsets `NOTIFY_SOCKET`. Call once, at the top of `main`, while
/// the process has one thread (changing the environment is not safe once
/// other threads may read it).
pub fn take_socket_from_env() {
    let socket = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    if socket.is_some() {
        std::env::remove_var("NOTIFY_SOCKET");
    }
    let _ = SOCKET.set(socket);
}

/// `READY=1` with a `STATUS=` line: the role serves (its ports are bound and
/// it accepts work).
pub fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={}\nMAINPID={}\n",
        status.replace('\n', " "),
        std::process::id()
    ));
}

/// `STOPPING=1`: the role began to shut down.
pub fn stopping() {
    send("STOPPING=1\n");
}

fn send(message: &str) {
    let Some(Some(socket)) = SOCKET.get() else {
        return;
    };
    if let Err(e) = send_to(socket, message) {
        tracing::warn!(socket = %socket, error = %e, "cannot notify systemd");
    }
}

fn send_to(socket: &str, message: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        sock.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_path_socket() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path)?;
        send_to(&path.display().to_string(), "READY=1\n")?;
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"READY=1\n");
        Ok(())
    }

    #[test]
    fn a_message_reaches_an_abstract_socket() -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("meseta-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let server = UnixDatagram::bind_addr(&addr)?;
        send_to(&format!("@{name}"), "STOPPING=1\n")?;
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"STOPPING=1\n");
        Ok(())
    }
}

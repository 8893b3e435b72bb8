//! `TCP_NODELAY` on the connections sqlx opens to PostgreSQL and MySQL/MariaDB.
//!
//! sqlx 0.9.0 stopped setting it (sqlx issue #4335), and gives no handle on its socket.
//! Without it, a query larger than one TCP segment — a message body, whatever its size
//! on a network with a 1448-byte MSS, above 64 KiB on loopback — leaves its last
//! segment waiting for the server's acknowledgement of the ones before (Nagle's
//! algorithm, RFC 896; RFC 1122 §4.2.3.4), and the server delays that acknowledgement
//! (40 ms on Linux) until it has something to send. Measured here: 200 messages of
//! 100 KiB into PostgreSQL over TCP went at 62 per second with the stall, 402 over a Unix
//! socket without it.
//!
//! So after sqlx has made a connection, every TCP socket of this process whose peer is
//! the database server's port and which lacks the option gets it. The sockets are
//! reached through duplicates taken with `pidfd_getfd(2)` (Linux 5.6), which needs no
//! unsafe code; setting an option on a duplicate sets it on the socket itself. Only
//! descriptors that `/proc/self/fd` shows as sockets are duplicated: closing a duplicate
//! of a file would drop the process's POSIX locks on it, and SQLite's locks with them. A
//! daemon that changed its user is not dumpable and cannot read its own `/proc` entries,
//! so it is made dumpable for the moment of the listing. In a chroot without `/proc`
//! the option is not set, and a warning says so once.

/// Calls `f` with each TCP socket of this process connected to remote `port` (through
/// a duplicate of its descriptor). Sockets that go away meanwhile, and descriptors that
/// are not TCP sockets, are skipped.
///
/// # Errors
/// `/proc/self/fd` cannot be listed (see [`socket_descriptors`]); the
/// `pidfd_open(2)`/`pidfd_getfd(2)` calls are not available (Linux before 5.6, a seccomp
/// filter): `ENOSYS`, `EPERM`.
#[cfg(target_os = "linux")]
fn each_connection_to(port: u16, f: impl FnMut(socket2::SockRef<'_>)) -> std::io::Result<()> {
    each_connection_among(socket_descriptors()?.into_iter(), port, f)
}

/// The descriptor numbers of this process's sockets, from `/proc/self/fd`. Only sockets
/// may be duplicated: closing a duplicate of a file drops every POSIX record lock the
/// process holds on that file (fcntl(2)), SQLite's among them.
///
/// # Errors
/// `/proc` is not mounted (a chroot), or the listing failed.
#[cfg(target_os = "linux")]
fn socket_descriptors() -> std::io::Result<Vec<i32>> {
    use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};

    fn list() -> std::io::Result<Vec<i32>> {
        let mut fds = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let entry = entry?;
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
            if std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
                fds.push(fd);
            }
        }
        Ok(fds)
    }
    // One listing at a time: two at once could each restore what the other had set,
    // and leave the process dumpable.
    static LISTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LISTING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match list() {
        // A daemon that changed its user is not dumpable, and its /proc entries then
        // belong to root: dumpable again for the moment of the listing.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let before = dumpable_behavior()?;
            set_dumpable_behavior(DumpableBehavior::Dumpable)?;
            let listed = list();
            set_dumpable_behavior(before)?;
            listed
        }
        other => other,
    }
}

/// [`each_connection_to`] over the descriptor numbers `fds`.
#[cfg(target_os = "linux")]
fn each_connection_among(
    fds: impl Iterator<Item = i32>,
    port: u16,
    mut f: impl FnMut(socket2::SockRef<'_>),
) -> std::io::Result<()> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut usable = false;
    for fd in fds {
        let copy = match pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) {
            Ok(copy) => copy,
            // Not available at all: say so once, not per descriptor.
            Err(e) if !usable && (e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM) => {
                return Err(e.into());
            }
            Err(_) => continue,
        };
        usable = true;
        let sock = socket2::SockRef::from(&copy);
        if sock.r#type().is_err() {
            // The number was a socket's when listed and is now a file's (closed and
            // reused meanwhile): keep the duplicate open rather than drop the
            // process's locks on that file. Rare, and one descriptor each time.
            std::mem::forget(copy);
            continue;
        }
        if sock.peer_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a.port() == port) {
            f(sock);
        }
    }
    Ok(())
}

/// Elsewhere sqlx's sockets are left as they are.
#[cfg(not(target_os = "linux"))]
fn each_connection_to(_port: u16, _f: impl FnMut(socket2::SockRef<'_>)) -> std::io::Result<()> {
    Ok(())
}

/// Sets `TCP_NODELAY` on each TCP socket of this process connected to remote `port`
/// that does not have it yet; returns how many it was set on.
///
/// # Errors
/// As [`each_connection_to`].
pub(crate) fn set_on_connections_to(port: u16) -> std::io::Result<usize> {
    let mut set = 0;
    each_connection_to(port, |sock| {
        if sock.tcp_nodelay().is_ok_and(|on| !on) && sock.set_tcp_nodelay(true).is_ok() {
            set += 1;
        }
    })?;
    Ok(set)
}

/// The TCP sockets of this process connected to remote `port`: how many have
/// `TCP_NODELAY` set, and how many do not (tests of the store's connections).
///
/// # Errors
/// As [`set_on_connections_to`].
#[cfg(feature = "test-util")]
pub fn census(port: u16) -> std::io::Result<(usize, usize)> {
    let (mut with, mut without) = (0, 0);
    each_connection_to(port, |sock| match sock.tcp_nodelay() {
        Ok(true) => with += 1,
        _ => without += 1,
    })?;
    Ok((with, without))
}

/// Runs [`set_on_connections_to`] off the async workers (it walks every descriptor of
/// the process) after sqlx made a connection to `port`; a failure is logged once per
/// process and the connection is used as it is.
pub(crate) async fn after_connect(port: u16) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let done = tokio::task::spawn_blocking(move || set_on_connections_to(port)).await;
    if let Ok(Err(e)) = done
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "cannot set TCP_NODELAY on database connections ({e}): queries larger than one TCP segment may wait for \
             delayed acknowledgements"
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A connection to a local listener gets the option, one to another port does not,
    /// and a second pass finds nothing left to do.
    #[test]
    fn sets_the_option_on_connections_to_the_port_only() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_server = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_server.nodelay().unwrap());
        assert_eq!(set_on_connections_to(server.local_addr().unwrap().port()).unwrap(), 1);
        assert!(to_server.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
        assert_eq!(set_on_connections_to(server.local_addr().unwrap().port()).unwrap(), 0);
    }
}

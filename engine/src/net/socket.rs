//! Socket plumbing the io_uring ops need: `SO_REUSEPORT` listeners (one per shard, all
//! on one address, the kernel spreading connections between them) and per-connection
//! options.
//!
//! Owns: creating, configuring and closing raw descriptors. Never: reads or writes
//! them (io_uring does).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// How many not-yet-accepted connections each listener queues.
const LISTEN_BACKLOG: i32 = 4096;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int_option(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live i32 for the call and its size is passed with it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A socket address in the C layout, and its length.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Opens a listening TCP socket on `addr` with `SO_REUSEPORT`, so every shard can bind
/// its own on the same address.
pub(crate) fn listen_reuseport(addr: &SocketAddr) -> io::Result<RawFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let configured = (|| {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        let (storage, len) = sockaddr(addr);
        // SAFETY: `storage` holds a valid address of `len` bytes for the call.
        check(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
        // SAFETY: plain listen(2) on our socket.
        check(unsafe { libc::listen(fd, LISTEN_BACKLOG) })?;
        Ok(())
    })();
    if let Err(err) = configured {
        close(fd);
        return Err(err);
    }
    Ok(fd)
}

/// The address a socket is bound to (the real port when bound to port 0).
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are live and describe the buffer's size.
    check(unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6).
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => Err(io::Error::other("unknown address family")),
    }
}

/// Options every accepted connection gets: no Nagle delay (frames are already batched).
pub(crate) fn configure_accepted(fd: RawFd) {
    // A failure only costs latency; the connection still works.
    let _ = set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Stops both directions: a pending recv completes with 0 and sends fail, so every op
/// on the socket ends and the descriptor can then be closed.
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor we own; an error (already shut) is harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Closes a descriptor we own, once no op refers to it any more.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and no op in flight refers to it.
    unsafe {
        libc::close(fd);
    }
}

//! A socket a launcher left open for this process: PMI's `PMI_FD`.
//!
//! Taking ownership of a descriptor by number is the one thing about it
//! Rust cannot check, so it happens here, beside the other code at the
//! system's edge, and once per descriptor per process.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// Descriptors already taken by [`adopt_socket`].
static ADOPTED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Takes ownership of descriptor `fd`, which the launcher left open and
/// connected for this process (`PMI_FD`), as a stream socket. Refused when
/// the number is not an open socket, or was taken before in this process
/// (a second owner would close it under the first).
pub fn adopt_socket(fd: RawFd) -> Result<UnixStream, String> {
    if fd < 0 {
        return Err(format!("descriptor {fd} is negative"));
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
    let adopted = adopted.get_or_insert_with(HashSet::new);
    if adopted.contains(&fd) {
        return Err(format!("descriptor {fd} is already in use by this process's bootstrap"));
    }
    // SAFETY: the borrow lives only for the two checks below, during which
    // nothing in this function closes `fd`; if `fd` is not open the calls
    // fail with EBADF and nothing is read through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map_err(|e| format!("descriptor {fd} is not open: {e}"))?;
    let stat = rustix::fs::fstat(borrowed).map_err(|e| format!("descriptor {fd}: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(format!("descriptor {fd} is not a socket"));
    }
    adopted.insert(fd);
    // SAFETY: `fd` is open (checked above), and the launcher handed it to
    // this process for the bootstrap alone; `ADOPTED` makes this the only
    // owner this process creates, so it is closed once, by the returned
    // stream.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let stream = UnixStream::from(owned);
    // Not inherited by programs this rank starts.
    rustix::io::fcntl_setfd(&stream, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("descriptor {}: {e}", stream.as_raw_fd()))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;

    #[test]
    fn a_socket_is_adopted_once_and_anything_else_refused() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        let mut adopted = adopt_socket(fd).unwrap();
        assert!(adopt_socket(fd).unwrap_err().contains("already in use"));
        adopted.write_all(b"x").unwrap();
        let mut got = [0u8];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert!(adopt_socket(-1).is_err());
        assert!(adopt_socket(1 << 20).unwrap_err().contains("not open"));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let e = adopt_socket(file.as_raw_fd()).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
    }
}

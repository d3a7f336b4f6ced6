//! A connection to a launcher that speaks in lines (and, for PMI-2, in
//! length-prefixed frames): bounded reads, so that a launcher that sends
//! garbage without end costs an error, not memory.

use std::io::{ErrorKind, Read, Write};

/// The longest line or frame accepted from a launcher.
pub const MAX_LINE: usize = 1 << 20;

/// A stream with its read buffer.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// Wraps `stream` (its read timeout, if any, is set by the caller).
    pub fn new(stream: S) -> Conn<S> {
        Conn { stream, buf: Vec::new() }
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends `bytes` in one write call where the kernel allows.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("cannot write: {e}"))
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the connection closed".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("no answer in time".into())
                }
                Err(e) => return Err(format!("cannot read: {e}")),
            }
        }
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(end + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return String::from_utf8(line).map_err(|_| "a line is not UTF-8".into());
            }
            if self.buf.len() > MAX_LINE {
                return Err(format!("a line longer than {MAX_LINE} bytes"));
            }
            self.fill()?;
        }
    }

    /// The next `n` bytes.
    pub fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        if n > MAX_LINE {
            return Err(format!("a frame of {n} bytes, more than {MAX_LINE}"));
        }
        while self.buf.len() < n {
            self.fill()?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn lines_and_frames_are_bounded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(a);
        b.write_all(b"one\ntwo\n000003abc").unwrap();
        assert_eq!(conn.line().unwrap(), "one");
        assert_eq!(conn.line().unwrap(), "two");
        assert_eq!(conn.exact(6).unwrap(), b"000003");
        assert_eq!(conn.exact(3).unwrap(), b"abc");
        assert!(conn.exact(MAX_LINE + 1).is_err());
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..(MAX_LINE >> 16) + 2 {
                if b.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        assert!(conn.line().unwrap_err().contains("longer than"));
        drop(conn);
        writer.join().unwrap();
    }

    #[test]
    fn a_closed_or_silent_launcher_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let mut conn = Conn::new(a);
        assert_eq!(conn.line().unwrap_err(), "no answer in time");
        drop(b);
        assert_eq!(conn.line().unwrap_err(), "the connection closed");
    }
}

//! Output relays: each rank's stdout and stderr copied line by line,
//! prefixed with the rank (`--tag-output`).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Relays started, and the channel on which each says it has finished.
pub struct Relays {
    count: usize,
    done_tx: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
}

impl Relays {
    /// No relays yet.
    pub fn new() -> Relays {
        let (done_tx, done) = mpsc::channel();
        Relays { count: 0, done_tx, done }
    }

    /// Copies `source` line by line, prefixed with `[rank] `, to the
    /// launcher's stderr or stdout.
    pub fn start(&mut self, rank: usize, source: impl Read + Send + 'static, to_stderr: bool) {
        let done = self.done_tx.clone();
        self.count += 1;
        thread::spawn(move || {
            for line in BufReader::new(source).split(b'\n').map_while(Result::ok) {
                let mut text = format!("[{rank}] ").into_bytes();
                text.extend_from_slice(&line);
                text.push(b'\n');
                if to_stderr {
                    let _ = std::io::stderr().lock().write_all(&text);
                } else {
                    let _ = std::io::stdout().lock().write_all(&text);
                }
            }
            let _ = done.send(());
        });
    }

    /// Waits until every relay has copied everything, or `limit` passes (a
    /// process a rank left behind in the background may hold a pipe
    /// open); whether they all finished.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        (0..self.count).all(|_| {
            let left = deadline.saturating_duration_since(Instant::now());
            self.done.recv_timeout(left).is_ok()
        })
    }
}

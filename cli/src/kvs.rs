//! The job's key-value server: a store and a fence for the ranks, over TCP,
//! for connections that present the job's secret (see
//! `hpcomm_runtime::bootstrap` for the protocol).
//!
//! The port is open to anyone who can reach the launcher's host, so a
//! connection costs little until it has said the secret: one thread accepts,
//! one greets. The greeter reads every new connection's first line without
//! blocking on any, gives each [`GREETING_TIME`] and at most 4 KiB, keeps at
//! most [`MAX_GREETING`] of them (the oldest goes first) and compares the
//! secret in constant time. Only a connection that presents it gets a thread
//! of its own (at most twice the job's ranks, plus a few), which may then
//! wait in `GET` or `FENCE` for as long as the job runs. Thousands of slow
//! strangers therefore hold a bounded number of descriptors and no
//! threads, and a real rank, which greets as it connects, is served at
//! once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hpcomm_runtime::bootstrap::{hex_decode, hex_encode};
use hpcomm_transport::tcp::handshake::same_secret;

/// How long a new connection may take to greet.
pub const GREETING_TIME: Duration = Duration::from_secs(5);
/// Connections still greeting, at most.
pub const MAX_GREETING: usize = 64;
/// The longest greeting line.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct State {
    values: HashMap<String, Vec<u8>>,
    arrived: usize,
    generation: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    secret: String,
    ranks: usize,
    /// Authenticated connections being served.
    serving: AtomicUsize,
}

/// A running server.
pub struct Kvs {
    addr: SocketAddr,
}

impl Kvs {
    /// Listens on `bind` (port 0: any) and serves in background threads for
    /// the life of the process.
    pub fn start(bind: &str, secret: String, ranks: usize) -> std::io::Result<Kvs> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            secret,
            ranks,
            serving: AtomicUsize::new(0),
        });
        let (to_greeter, arrivals) = mpsc::channel();
        thread::Builder::new().name("hpcomm-kvs".into()).spawn(move || loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if to_greeter.send((stream, from)).is_err() {
                        return;
                    }
                }
                // Out of descriptors, or a connection reset before it was
                // taken: the greeter frees descriptors as greetings expire.
                Err(e) if e.kind() != ErrorKind::Interrupted => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(_) => {}
            }
        })?;
        thread::Builder::new()
            .name("hpcomm-kvs-greet".into())
            .spawn(move || greet(&arrivals, &shared))?;
        Ok(Kvs { addr })
    }

    /// Where ranks reach the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Greeting {
    stream: TcpStream,
    from: SocketAddr,
    line: Vec<u8>,
    since: Instant,
}

/// Refusals so far; the first few are logged, then one in a thousand, so
/// that a flood of strangers does not flood the terminal too.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

fn refuse(mut stream: &TcpStream, from: SocketAddr, why: &str) {
    let n = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 20 || n % 1000 == 0 {
        eprintln!(
            "hpcomm run: refused a connection to the key-value server from {from}: {why} \
             ({n} refused so far)"
        );
    }
    let _ = stream.write_all(b"ERR refused\n");
}

/// Reads the greetings of new connections as they arrive, and hands each
/// connection that presents the secret to a thread of its own.
fn greet(arrivals: &mpsc::Receiver<(TcpStream, SocketAddr)>, shared: &Arc<Shared>) {
    let mut waiting: Vec<Greeting> = Vec::new();
    loop {
        // Idle: sleep until a connection arrives. Greeting: look again soon.
        let arrival = if waiting.is_empty() {
            arrivals.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            arrivals.recv_timeout(Duration::from_millis(2))
        };
        match arrival {
            Ok((stream, from)) => {
                if stream.set_nonblocking(true).is_ok() {
                    if waiting.len() == MAX_GREETING {
                        let oldest = waiting.remove(0);
                        refuse(&oldest.stream, oldest.from, "too many greetings at once");
                    }
                    waiting.push(Greeting {
                        stream,
                        from,
                        line: Vec::new(),
                        since: Instant::now(),
                    });
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let mut i = 0;
        while i < waiting.len() {
            match read_greeting(&mut waiting[i]) {
                Ok(None) if now.duration_since(waiting[i].since) <= GREETING_TIME => i += 1,
                Ok(None) => {
                    let g = waiting.swap_remove(i);
                    refuse(&g.stream, g.from, "no greeting in time");
                }
                Err(why) => {
                    let g = waiting.swap_remove(i);
                    refuse(&g.stream, g.from, &why);
                }
                Ok(Some(line)) => {
                    let g = waiting.swap_remove(i);
                    match check_greeting(&line, shared) {
                        Ok(()) => admit(g, shared),
                        Err(why) => refuse(&g.stream, g.from, why),
                    }
                }
            }
        }
    }
}

/// Reads what a connection has sent; its first line once it is complete.
fn read_greeting(g: &mut Greeting) -> Result<Option<String>, String> {
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = g.line.iter().position(|&b| b == b'\n') {
            if end + 1 != g.line.len() {
                return Err("spoke before it was answered".into());
            }
            g.line.pop();
            return String::from_utf8(std::mem::take(&mut g.line))
                .map(Some)
                .map_err(|_| "malformed greeting".into());
        }
        if g.line.len() > MAX_LINE {
            return Err("malformed greeting".into());
        }
        match g.stream.read(&mut buf) {
            Ok(0) => return Err("no greeting".into()),
            Ok(n) => g.line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// `HELLO <secret> <rank>`, with the job's secret and a rank of the job.
fn check_greeting(line: &str, shared: &Shared) -> Result<(), &'static str> {
    let mut words = line.split_whitespace();
    let (Some("HELLO"), Some(secret), Some(rank), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("malformed greeting");
    };
    if !same_secret(secret.as_bytes(), shared.secret.as_bytes()) {
        return Err("wrong secret");
    }
    if rank.parse::<usize>().map_or(true, |r| r >= shared.ranks) {
        return Err("rank outside the job");
    }
    Ok(())
}

/// Serves an authenticated connection on a thread of its own.
fn admit(g: Greeting, shared: &Arc<Shared>) {
    let limit = 2 * shared.ranks + 16;
    if shared.serving.fetch_add(1, Ordering::AcqRel) >= limit {
        shared.serving.fetch_sub(1, Ordering::AcqRel);
        return refuse(&g.stream, g.from, "too many connections for the job");
    }
    let worker = shared.clone();
    let from = g.from;
    let spawned = thread::Builder::new().name("hpcomm-kvs-conn".into()).spawn(move || {
        serve(g.stream, &worker);
        worker.serving.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = spawned {
        shared.serving.fetch_sub(1, Ordering::AcqRel);
        eprintln!("hpcomm run: cannot serve a rank's connection from {from}: {e}");
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    // A rank may wait in GET or FENCE for as long as the job runs.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    stream.set_nodelay(true).ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writer.write_all(b"OK\n").is_err() {
        return;
    }
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match Read::take(&mut reader, 1 << 20).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = handle(line.trim_end(), shared);
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(request: &str, shared: &Shared) -> String {
    let mut words = request.split(' ');
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    match (words.next(), words.next(), words.next()) {
        (Some("PUT"), Some(key), Some(value)) => match hex_decode(value) {
            Some(bytes) => {
                state.values.insert(key.to_string(), bytes);
                shared.changed.notify_all();
                "OK\n".into()
            }
            None => "ERR value is not hex\n".into(),
        },
        (Some("GET"), Some(key), None) => loop {
            if let Some(v) = state.values.get(key) {
                return format!("VAL {}\n", hex_encode(v));
            }
            state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        },
        (Some("FENCE"), None, None) => {
            let generation = state.generation;
            state.arrived += 1;
            if state.arrived == shared.ranks {
                state.arrived = 0;
                state.generation += 1;
                shared.changed.notify_all();
            }
            while state.generation == generation {
                state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            "OK\n".into()
        }
        _ => "ERR unknown request\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            secret: "s3cret".into(),
            ranks: 2,
            serving: AtomicUsize::new(0),
        }
    }

    #[test]
    fn greetings_are_checked_word_by_word() {
        let s = shared();
        assert_eq!(check_greeting("HELLO s3cret 1", &s), Ok(()));
        assert_eq!(check_greeting("HELLO s3cret 2", &s), Err("rank outside the job"));
        assert_eq!(check_greeting("HELLO s3creT 0", &s), Err("wrong secret"));
        assert_eq!(check_greeting("HELLO s3cret 0 extra", &s), Err("malformed greeting"));
        assert_eq!(check_greeting("GET x", &s), Err("malformed greeting"));
        assert_eq!(check_greeting("", &s), Err("malformed greeting"));
    }

    /// Random and mutated request lines: every one gets an answer line or a
    /// refusal, none panics. (A `GET` of a key nobody put waits, as it
    /// should, so those are answered by putting the key first.)
    #[test]
    fn random_requests_never_crash_the_server() {
        use hpcomm_transport::fuzz::{self, Rng};

        let s = Shared { ranks: 1, ..shared() };
        let mut rng = Rng::new(fuzz::seed());
        let words = ["HELLO", "PUT", "GET", "FENCE", "s3cret", "0", "1", "k", "0aff", "zz"];
        for _ in 0..fuzz::cases(10_000) {
            let mut line: Vec<u8> = (0..rng.below(5))
                .flat_map(|_| {
                    let w = words[rng.below(words.len() as u64) as usize].as_bytes().to_vec();
                    w.into_iter().chain([b' '])
                })
                .collect();
            rng.mutate(&mut line, 2);
            if rng.below(8) == 0 {
                line = rng.bytes_below(64);
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let _ = check_greeting(&line, &s);
            if let Some(key) = line.strip_prefix("GET ") {
                if !key.contains(' ') {
                    handle(&format!("PUT {key} 00"), &s);
                }
            }
            let answer = handle(&line, &s);
            assert!(answer.ends_with('\n') && answer.lines().count() == 1, "{answer:?}");
        }
    }

    #[test]
    fn requests_get_answers_and_bad_ones_errors() {
        let s = shared();
        assert_eq!(handle("PUT k 0aff", &s), "OK\n");
        assert_eq!(handle("GET k", &s), "VAL 0aff\n");
        assert_eq!(handle("PUT k zz", &s), "ERR value is not hex\n");
        assert_eq!(handle("DELETE k", &s), "ERR unknown request\n");
    }
}

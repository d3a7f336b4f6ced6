//! The job's key-value server: a store and a fence for the ranks, over TCP,
//! for connections that present the job's secret (see
//! `hpcomm_runtime::bootstrap` for the protocol).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use hpcomm_runtime::bootstrap::{hex_decode, hex_encode};

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
        });
        thread::Builder::new().name("hpcomm-kvs".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                let _ = thread::Builder::new()
                    .name("hpcomm-kvs-conn".into())
                    .spawn(move || serve(stream, &shared));
            }
        })?;
        Ok(Kvs { addr })
    }

    /// Where ranks reach the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Compares without an early exit, so that timing tells nothing about the
/// secret.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serve(stream: TcpStream, shared: &Shared) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let refuse = |mut stream: &TcpStream, why: &str| {
        eprintln!("hpcomm run: refused a connection to the key-value server from {peer}: {why}");
        let _ = stream.write_all(b"ERR refused\n");
    };
    // A stranger gets a few seconds to say hello, and a bounded line.
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    stream.set_nodelay(true).ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    match Read::take(&mut reader, 4096).read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return refuse(&stream, "no greeting"),
    }
    let mut words = line.split_whitespace();
    let (Some("HELLO"), Some(secret), Some(rank)) = (words.next(), words.next(), words.next())
    else {
        return refuse(&stream, "malformed greeting");
    };
    if !same_secret(secret, &shared.secret) {
        return refuse(&stream, "wrong secret");
    }
    if rank.parse::<usize>().map_or(true, |r| r >= shared.ranks) {
        return refuse(&stream, "rank outside the job");
    }
    // A rank may wait in GET or FENCE for as long as the job runs.
    stream.set_read_timeout(None).ok();
    if writer.write_all(b"OK\n").is_err() {
        return;
    }
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

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}

//! The job's key-value server: a store, a fence and a gather for the ranks,
//! over TCP, for connections that present the job's secret. `hpcomm run`
//! serves one (under `--batch` also for the other nodes' launchers, which
//! report their ranks' ends); under a PMI launcher, rank 0 serves one for
//! the job, so that every bootstrap gathers in one round trip. The
//! protocol is [`super::kvs_protocol`], which the ranks' client speaks too.
//!
//! The port is open to anyone who can reach the launcher's host, so a
//! connection costs little until it has said the secret: one thread accepts,
//! one greets. The greeter reads every new connection's first line without
//! blocking on any, gives each [`GREETING_TIME`] and at most 4 KiB, keeps at
//! most [`MAX_GREETING`] of them, or as many as the job has ranks (the oldest
//! goes first), and compares the
//! secret in constant time. Only a connection that presents it gets a thread
//! of its own (at most twice the job's ranks, plus a few), which may then
//! wait in `GET` or `FENCE` for as long as the job runs. Thousands of slow
//! strangers therefore hold a bounded number of descriptors and no
//! threads, and a real rank, which greets as it connects, is served at
//! once.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::kvs_protocol::{Answer, Peer, Request, MAX_LINE as MAX_REQUEST};
use hpcomm_transport::tcp::handshake::same_secret;

/// How long a new connection may take to greet: long enough for a rank
/// whose greeting a lossy network drops several times over (a connection
/// whose handshake was retransmitted starts at a three-second timeout;
/// five seconds had refused real ranks on a link losing 10% of packets),
/// and harmless to the server, which keeps only a bounded number waiting.
pub const GREETING_TIME: Duration = Duration::from_secs(15);
/// Connections still greeting, at most.
pub const MAX_GREETING: usize = 64;
/// The longest greeting line.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct State {
    values: HashMap<String, Vec<u8>>,
    arrived: usize,
    generation: u64,
    /// The answer of each gather, built once, with its generation.
    gathered: HashMap<String, (u64, Arc<String>)>,
    /// Nodes whose launcher has connected.
    nodes_seen: HashSet<usize>,
}

/// What the job is, for the launchers of other nodes.
#[derive(Clone, Debug)]
pub struct JobInfo {
    /// The job's id.
    pub job: String,
    /// The transport's name.
    pub transport: String,
    /// Nodes of an AWS Batch job whose launchers may connect (0: none).
    pub nodes: usize,
}

/// What connections tell the launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A rank asked to end the job.
    Abort {
        /// The rank.
        rank: usize,
        /// The exit code it asked for.
        code: i32,
        /// Why.
        message: String,
    },
    /// A node's launcher reports that one of its ranks ended.
    Exit {
        /// The node.
        node: usize,
        /// The rank.
        rank: usize,
        /// Its code (128 + signal when killed).
        code: i32,
    },
    /// A node's launcher has gone.
    NodeGone {
        /// The node.
        node: usize,
    },
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    secret: String,
    ranks: usize,
    info: JobInfo,
    notices: Mutex<mpsc::Sender<Notice>>,
    /// Authenticated connections being served.
    serving: AtomicUsize,
}

/// A running server.
#[derive(Debug)]
pub struct Kvs {
    addr: SocketAddr,
    notices: mpsc::Receiver<Notice>,
}

impl Kvs {
    /// Listens on `bind` (port 0: any) and serves in background threads for
    /// the life of the process.
    pub fn start(bind: &str, secret: String, ranks: usize, info: JobInfo) -> std::io::Result<Kvs> {
        // A connection per rank: a job of thousands needs more descriptors
        // than the usual soft limit of 1,024, and the hard limit allows it.
        hpcomm_transport::backend::raise_fd_limit(2 * ranks + 256);
        let listener = TcpListener::bind(bind)?;
        hpcomm_transport::tcp::bound_retransmission_timeout(&listener);
        let addr = listener.local_addr()?;
        let (notify, notices) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            secret,
            ranks,
            info,
            notices: Mutex::new(notify),
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
        Ok(Kvs { addr, notices })
    }

    /// Where ranks reach the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What connections have said since the last call.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.try_iter().collect()
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
            "hpcomm: refused a connection to the key-value server from {from}: {why} \
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
        // Then take every connection that has arrived meanwhile: a job of
        // thousands of ranks connects at once.
        let first = if waiting.is_empty() {
            arrivals.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            arrivals.recv_timeout(Duration::from_millis(2))
        };
        let first = match first {
            Ok(arrival) => Some(arrival),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // At most MAX_GREETING strangers, or a whole job's ranks and nodes
        // greeting at once.
        let limit = MAX_GREETING.max(shared.ranks + shared.info.nodes);
        for (stream, from) in
            first.into_iter().chain(std::iter::from_fn(|| arrivals.try_recv().ok()))
        {
            if stream.set_nonblocking(true).is_ok() {
                if waiting.len() >= limit {
                    let oldest = waiting.remove(0);
                    refuse(&oldest.stream, oldest.from, "too many greetings at once");
                }
                waiting.push(Greeting { stream, from, line: Vec::new(), since: Instant::now() });
            }
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
                        Ok(peer) => admit(g, peer, shared),
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

/// `HELLO <secret> <rank>` with the job's secret and a rank of the job, or
/// `HELLO <secret> node <index>` with a node of a Batch job that has not
/// connected before.
fn check_greeting(line: &str, shared: &Shared) -> Result<Peer, &'static str> {
    let Ok(Request::Hello { secret, peer }) = Request::parse(line) else {
        return Err("malformed greeting");
    };
    if !same_secret(secret.as_bytes(), shared.secret.as_bytes()) {
        return Err("wrong secret");
    }
    match peer {
        Peer::Rank(r) if r >= shared.ranks => Err("rank outside the job"),
        Peer::Node(n) if n >= shared.info.nodes => Err("node outside the job"),
        Peer::Node(n) => {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.nodes_seen.insert(n) {
                Ok(peer)
            } else {
                Err("node already connected")
            }
        }
        Peer::Rank(_) => Ok(peer),
    }
}

/// Serves an authenticated connection on a thread of its own.
fn admit(g: Greeting, peer: Peer, shared: &Arc<Shared>) {
    let limit = 2 * shared.ranks + shared.info.nodes + 16;
    if shared.serving.fetch_add(1, Ordering::AcqRel) >= limit {
        shared.serving.fetch_sub(1, Ordering::AcqRel);
        return refuse(&g.stream, g.from, "too many connections for the job");
    }
    let worker = shared.clone();
    let from = g.from;
    let spawned = thread::Builder::new().name("hpcomm-kvs-conn".into()).spawn(move || {
        serve(g.stream, peer, &worker);
        if let Peer::Node(node) = peer {
            worker.notify(Notice::NodeGone { node });
        }
        worker.serving.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = spawned {
        shared.serving.fetch_sub(1, Ordering::AcqRel);
        eprintln!("hpcomm: cannot serve a rank's connection from {from}: {e}");
    }
}

impl Shared {
    fn notify(&self, notice: Notice) {
        let _ = self.notices.lock().unwrap_or_else(|e| e.into_inner()).send(notice);
    }
}

fn serve(stream: TcpStream, peer: Peer, shared: &Shared) {
    // A rank may wait in GET or FENCE for as long as the job runs.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    stream.set_nodelay(true).ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let welcome = match peer {
        Peer::Rank(_) => Answer::Ok,
        Peer::Node(_) => Answer::Job {
            job: shared.info.job.clone(),
            ranks: shared.ranks,
            transport: shared.info.transport.clone(),
        },
    };
    if writer.write_all(format!("{}\n", welcome.line()).as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match Read::take(&mut reader, MAX_REQUEST as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(answer) = handle(line.trim_end_matches('\n'), peer, shared) else {
            continue;
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The answer line to `request` from `peer`, if it has one.
fn handle(request: &str, peer: Peer, shared: &Shared) -> Option<String> {
    let request = match Request::parse(request) {
        Ok(r) => r,
        Err(why) => return Some(format!("{}\n", Answer::Err(why.into()).line())),
    };
    let answer = match (request, peer) {
        (Request::Put { key, value }, Peer::Rank(_)) => {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.values.insert(key, value);
            shared.changed.notify_all();
            Answer::Ok.line()
        }
        (Request::Get { key }, Peer::Rank(_)) => {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(v) = state.values.get(&key) {
                    break Answer::Value(v.clone()).line();
                }
                state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        (Request::Fence, Peer::Rank(_)) => {
            fence(shared, None);
            Answer::Ok.line()
        }
        (Request::Gather { key, value }, Peer::Rank(rank)) => {
            return Some(format!("{}\n", fence(shared, Some((key, rank, value)))));
        }
        (Request::Abort { code, message }, Peer::Rank(rank)) => {
            shared.notify(Notice::Abort { rank, code, message });
            return None;
        }
        (Request::Exit { rank, code }, Peer::Node(node)) => {
            shared.notify(Notice::Exit { node, rank, code });
            return None;
        }
        _ => Answer::Err("not a request for this connection".into()).line(),
    };
    Some(format!("{answer}\n"))
}

/// Waits until every rank has arrived; for a gather, first publishes the
/// rank's value and then answers with everyone's (built once per gather).
fn fence(shared: &Shared, gather: Option<(String, usize, Vec<u8>)>) -> Arc<String> {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let key = gather.map(|(key, rank, value)| {
        state.values.insert(format!("{key}-{rank}"), value);
        key
    });
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
    let Some(key) = key else {
        return Arc::new(String::new());
    };
    if let Some((g, line)) = state.gathered.get(&key) {
        if *g == generation {
            return line.clone();
        }
    }
    let values: Option<Vec<Vec<u8>>> =
        (0..shared.ranks).map(|r| state.values.get(&format!("{key}-{r}")).cloned()).collect();
    let line = Arc::new(match values {
        Some(values) => Answer::All(values).line(),
        None => Answer::Err(format!("some rank fenced instead of gathering {key}")).line(),
    });
    state.gathered.insert(key, (generation, line.clone()));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(ranks: usize, nodes: usize) -> (Shared, mpsc::Receiver<Notice>) {
        let (notify, notices) = mpsc::channel();
        let shared = Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            secret: "s3cret".into(),
            ranks,
            info: JobInfo { job: "j1".into(), transport: "auto".into(), nodes },
            notices: Mutex::new(notify),
            serving: AtomicUsize::new(0),
        };
        (shared, notices)
    }

    fn shared() -> Shared {
        shared_with(2, 0).0
    }

    const RANK0: Peer = Peer::Rank(0);

    #[test]
    fn greetings_are_checked_word_by_word() {
        let s = shared();
        assert_eq!(check_greeting("HELLO s3cret 1", &s), Ok(Peer::Rank(1)));
        assert_eq!(check_greeting("HELLO s3cret 2", &s), Err("rank outside the job"));
        assert_eq!(check_greeting("HELLO s3creT 0", &s), Err("wrong secret"));
        assert_eq!(check_greeting("HELLO s3cret 0 extra", &s), Err("malformed greeting"));
        assert_eq!(check_greeting("GET x", &s), Err("malformed greeting"));
        assert_eq!(check_greeting("", &s), Err("malformed greeting"));
        // Node launchers only in a Batch job, each node once.
        assert_eq!(check_greeting("HELLO s3cret node 0", &s), Err("node outside the job"));
        let (batch, _) = shared_with(4, 2);
        assert_eq!(check_greeting("HELLO s3cret node 1", &batch), Ok(Peer::Node(1)));
        assert_eq!(check_greeting("HELLO s3cret node 1", &batch), Err("node already connected"));
        assert_eq!(check_greeting("HELLO s3cret node 2", &batch), Err("node outside the job"));
    }

    /// Random and mutated request lines: every one gets an answer line or
    /// none (the requests that are notices), never a panic. (A `GET` of a
    /// key nobody put waits, as it should, so those are answered by
    /// putting the key first; fences and gathers need a job of one.)
    #[test]
    fn random_requests_never_crash_the_server() {
        use hpcomm_transport::fuzz::{self, Rng};

        let (s, _notices) = shared_with(1, 1);
        let mut rng = Rng::new(fuzz::seed());
        let words = [
            "HELLO", "PUT", "GET", "FENCE", "GATHER", "ABORT", "EXIT", "node", "s3cret", "0", "1",
            "k", "0aff", "zz", "-",
        ];
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
            if let Ok(Request::Get { key }) = Request::parse(&line) {
                handle(&format!("PUT {key} 00"), RANK0, &s);
            }
            let peer = if rng.below(2) == 0 { RANK0 } else { Peer::Node(0) };
            if let Some(answer) = handle(&line, peer, &s) {
                assert!(answer.ends_with('\n') && answer.lines().count() == 1, "{answer:?}");
            }
        }
    }

    #[test]
    fn requests_get_answers_and_bad_ones_errors() {
        let s = shared();
        let ask = |line: &str| handle(line, RANK0, &s).unwrap();
        assert_eq!(ask("PUT k 0aff"), "OK\n");
        assert_eq!(ask("GET k"), "VAL 0aff\n");
        assert_eq!(ask("PUT k zz"), "ERR value is not hex\n");
        assert_eq!(ask("DELETE k"), "ERR unknown request\n");
        assert_eq!(ask("EXIT 1 0"), "ERR not a request for this connection\n");
        assert_eq!(
            handle("PUT k 00", Peer::Node(0), &s).unwrap(),
            "ERR not a request for this connection\n"
        );
    }

    #[test]
    fn a_gather_answers_every_rank_with_every_value_once_all_arrived() {
        let (s, _) = shared_with(3, 0);
        let s = Arc::new(s);
        let answers: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3)
                .map(|r| {
                    let s = s.clone();
                    scope.spawn(move || {
                        let value = if r == 1 { "-".to_string() } else { format!("0{r}") };
                        handle(&format!("GATHER addr {value}"), Peer::Rank(r), &s).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for a in &answers {
            assert_eq!(a, "ALL 00 - 02\n");
        }
        // The next gather under the same key is a new one.
        let (one, _) = shared_with(1, 0);
        assert_eq!(handle("GATHER a 01", RANK0, &one).unwrap(), "ALL 01\n");
        assert_eq!(handle("GATHER a 02", RANK0, &one).unwrap(), "ALL 02\n");
    }

    #[test]
    fn aborts_and_remote_exits_become_notices() {
        let (s, notices) = shared_with(4, 2);
        assert_eq!(handle("ABORT 3 6f6f6d", Peer::Rank(2), &s), None);
        assert_eq!(handle("EXIT 3 137", Peer::Node(1), &s), None);
        let got: Vec<Notice> = notices.try_iter().collect();
        assert_eq!(
            got,
            [
                Notice::Abort { rank: 2, code: 3, message: "oom".into() },
                Notice::Exit { node: 1, rank: 3, code: 137 }
            ]
        );
    }

    /// A job's ranks connect all at once, far more than the strangers the
    /// greeter keeps: every one is admitted (the greeter used to keep 64
    /// greeting and refuse the oldest beyond).
    #[test]
    fn a_whole_job_connecting_at_once_is_admitted() {
        use super::super::{Exchange, KvsClient};
        let ranks = 4 * MAX_GREETING + 10;
        let secret = "0123456789abcdef0123456789abcdef".to_string();
        let info = JobInfo { job: "burst".into(), transport: "auto".into(), nodes: 0 };
        let server = Kvs::start("127.0.0.1:0", secret.clone(), ranks, info).unwrap();
        let start = Arc::new(std::sync::Barrier::new(ranks));
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let (start, secret, addr) = (start.clone(), secret.clone(), server.addr());
                thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn(move || {
                        let launch = crate::config::Launch {
                            rank,
                            size: ranks,
                            kvs: addr,
                            secret,
                            job: "burst".into(),
                            launcher_pid: None,
                        };
                        start.wait();
                        let mut client = KvsClient::connect(&launch, Duration::from_secs(60))?;
                        let all = client
                            .allgather(rank, ranks, "r", &(rank as u32).to_le_bytes())
                            .map_err(crate::error::Error::Bootstrap)?;
                        Ok::<_, crate::error::Error>(all.len())
                    })
                    .unwrap()
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), ranks);
        }
    }
}

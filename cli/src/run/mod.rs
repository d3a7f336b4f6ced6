//! `hpcomm run`: start the ranks of a job on this machine or on several
//! hosts, serve them the key-value store, supervise them, and leave nothing
//! behind; `--batch`, the same across the nodes of an AWS Batch job.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the options, and the loop that feeds supervision and carries out its actions |
//! | `spawn.rs` | starting ranks (here or through `--exec`), waiting for their ends, ending them, clean-up |
//! | `remote.rs` | the command line of a rank on another host |
//! | `supervise.rs` | supervision: a pure function from events to actions |
//! | `relay.rs` | `--tag-output` relays |
//! | `batch.rs` | `--batch`: the main node and the other nodes of an AWS Batch job |

mod batch;
mod relay;
mod remote;
mod spawn;
mod supervise;

use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpcomm_runtime::bootstrap::vars::hpcomm as var;

use hpcomm_runtime::bootstrap::kvs_server::{JobInfo, Kvs, Notice};
use spawn::{Place, RankProcess, Spawner};
use supervise::{Action, Ended, Event, Outcome, Supervisor};

/// Prints `hpcomm run: MESSAGE` on stderr with one write, so that it does
/// not interleave with the lines the ranks write at the same time.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("hpcomm run: {}\n", format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}
pub(crate) use say;

/// What `hpcomm run` was asked to do.
pub struct RunOptions {
    /// Ranks in the job (`--batch`: ranks per node, if given).
    pub ranks: Option<usize>,
    /// Hosts to start ranks on (empty: this machine).
    pub hosts: Vec<String>,
    /// The remote-exec template, with `{host}`.
    pub exec: String,
    /// The key-value server's address, if given.
    pub bind: Option<std::net::IpAddr>,
    /// The transport's name.
    pub transport: String,
    /// Ends the job after this long.
    pub timeout: Option<Duration>,
    /// How long the other ranks may take to end by themselves once one
    /// has failed.
    pub grace: Duration,
    /// Prefix every line of output with its rank.
    pub tag_output: bool,
    /// Say what the launcher does.
    pub verbose: bool,
    /// An AWS Batch multi-node job: `Some(port)` of the main node's server.
    pub batch: Option<u16>,
    /// Under `--batch`, how long another node waits for the main node.
    pub batch_wait: Duration,
    /// The program and its arguments.
    pub program: Vec<String>,
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hpcomm_runtime::bootstrap::hex_encode(&buf))
}

/// Runs the job; returns the launcher's exit code.
pub fn run(options: RunOptions) -> i32 {
    let outcome = if options.batch.is_some() { batch::run(&options) } else { launch(&options) };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            say!("{message}");
            1
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, as the supervision loop sees them: a flag,
/// and a bell that wakes the loop at once.
pub(crate) struct Interrupts {
    flag: Arc<AtomicBool>,
    /// Readable once a signal has come (the handlers write to its twin).
    bell: UnixStream,
}

impl Interrupts {
    /// Handles the three signals from now on.
    fn install() -> Result<Interrupts, String> {
        let failed = |e: std::io::Error| format!("cannot handle signals: {e}");
        let flag = Arc::new(AtomicBool::new(false));
        let (bell, ringer) = UnixStream::pair().map_err(failed)?;
        bell.set_nonblocking(true).map_err(failed)?;
        for sig in
            [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP]
        {
            let ringer = ringer.try_clone().map_err(failed)?;
            signal_hook::flag::register(sig, flag.clone())
                .and_then(|_| signal_hook::low_level::pipe::register(sig, ringer))
                .map_err(failed)?;
        }
        Ok(Interrupts { flag, bell })
    }

    /// Whether a signal has come; empties the bell.
    fn came(&self) -> bool {
        let mut sink = [0u8; 64];
        while matches!((&self.bell).read(&mut sink), Ok(n) if n > 0) {}
        self.flag.load(Ordering::Relaxed)
    }
}

/// The launch variables of rank `rank`.
fn rank_vars(
    rank: usize,
    ranks: usize,
    kvs: std::net::SocketAddr,
    job: &str,
    transport: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (var::RANK, rank.to_string()),
        (var::SIZE, ranks.to_string()),
        (var::KVS, kvs.to_string()),
        (var::JOB, job.to_string()),
        (var::TRANSPORT, transport.to_string()),
    ]
}

fn launch(o: &RunOptions) -> Result<i32, String> {
    let ranks = o.ranks.ok_or("-n is required (without --batch)")?;
    if ranks == 0 {
        return Err("-n must be at least 1".into());
    }
    if o.program.is_empty() {
        return Err("no program given: hpcomm run -n N -- PROGRAM ARGS…".into());
    }
    let secret = random_hex(16).map_err(|e| format!("cannot make the job secret: {e}"))?;
    let job = random_hex(4).map_err(|e| format!("cannot make the job id: {e}"))?;
    if !o.hosts.is_empty() && !o.exec.contains("{host}") {
        return Err(format!("--exec {:?} does not contain {{host}}", o.exec));
    }
    for host in &o.hosts {
        remote::check_host(host)?;
    }
    let bind = match (o.bind, o.hosts.first()) {
        (Some(ip), _) => ip,
        (None, None) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        (None, Some(host)) => route_to(host).ok_or_else(|| {
            format!("cannot tell which address reaches {host}; give one with --bind")
        })?,
    };
    let info = JobInfo { job: job.clone(), transport: o.transport.clone(), nodes: 0 };
    let kvs =
        Kvs::start(&std::net::SocketAddr::new(bind, 0).to_string(), secret.clone(), ranks, info)
            .map_err(|e| format!("cannot start the key-value server on {bind}: {e}"))?;
    let stop = Interrupts::install()?;
    if o.verbose {
        say!(
            "job {job}: {ranks} ranks of {} over {}, key-value server at {}",
            o.program[0],
            o.transport,
            kvs.addr()
        );
    }
    let mut spawner = Spawner::new(&o.program, &secret, o.tag_output);
    let mut procs = Vec::with_capacity(ranks);
    for r in 0..ranks {
        let vars = rank_vars(r, ranks, kvs.addr(), &job, &o.transport);
        let place = match o.hosts.get(r % o.hosts.len().max(1)) {
            None => Place::Here,
            Some(host) => Place::Remote { exec: &o.exec, host },
        };
        match spawner.spawn(r, &vars, place) {
            Ok(p) => procs.push(p),
            Err(e) => {
                spawner.end_all(&mut procs);
                spawn::cleanup(&job);
                say!("{e}");
                return Ok(127);
            }
        }
    }
    let mut supervisor = Supervisor::new(0..ranks, o.grace, o.timeout, Instant::now());
    let more = |events: &mut Vec<Event>| notice_events(&kvs, 0, events);
    let code = supervise(&mut supervisor, &spawner, &mut procs, &stop, more, |_| {});
    spawn::cleanup(&job);
    if !spawner.relays.drain(Duration::from_secs(5)) {
        say!("some output may be missing (a pipe stayed open)");
    }
    Ok(code)
}

/// The ranks of node `node` of a Batch job of `per_node` ranks per node.
fn node_ranks(node: usize, per_node: usize) -> Range<usize> {
    node * per_node..(node + 1) * per_node
}

/// What the key-value server's notices mean for supervision (under
/// `--batch`, nodes hold `per_node` ranks each).
fn notice_events(kvs: &Kvs, per_node: usize, events: &mut Vec<Event>) {
    for notice in kvs.notices() {
        events.push(match notice {
            Notice::Abort { rank, code, message } => Event::Abort { rank, code, message },
            Notice::Exit { node, rank, code } if node_ranks(node, per_node).contains(&rank) => {
                Event::Ended(vec![Ended {
                    rank,
                    pid: None,
                    node: Some(node),
                    outcome: Outcome::from_reported(code),
                }])
            }
            Notice::Exit { node, rank, .. } => {
                say!("node {node} reported rank {rank}, which is not one of its ranks");
                continue;
            }
            Notice::NodeGone { node } => Event::NodeLost {
                node,
                ranks: node_ranks(node, per_node),
                why: "its launcher's connection closed".into(),
            },
        });
    }
}

/// How long the supervision loop sleeps at most when nothing wakes it (a
/// rank's end and a signal do at once): how late the key-value server's
/// notices and the deadlines may be seen. Not shorter: on a machine whose
/// cores the ranks fill, each wake-up of the launcher takes a core from a
/// rank.
const TICK: Duration = Duration::from_millis(50);

/// Feeds supervision with what happens to the local ranks `procs`, what
/// `more` adds (the server's notices) and interruptions, and carries out
/// its actions until the job is over; `ended` hears of every local rank's
/// end. The launcher's exit code.
fn supervise(
    supervisor: &mut Supervisor,
    spawner: &Spawner<'_>,
    procs: &mut [RankProcess],
    stop: &Interrupts,
    mut more: impl FnMut(&mut Vec<Event>),
    mut ended: impl FnMut(&Ended),
) -> i32 {
    loop {
        let mut events = Vec::new();
        let local = spawner.sweep(procs);
        local.iter().for_each(&mut ended);
        if !local.is_empty() {
            events.push(Event::Ended(local));
        }
        more(&mut events);
        if stop.came() {
            events.push(Event::Interrupted);
        }
        events.push(Event::Tick);
        for event in events {
            for action in supervisor.on(event, Instant::now()) {
                match action {
                    Action::Say(message) => say!("{message}"),
                    Action::EndAll => spawner.end_all(procs),
                    Action::Finish(code) => return code,
                }
            }
        }
        spawner.wait(procs, stop.bell.as_fd(), TICK);
    }
}

/// The local address the kernel would use to reach `host` (no packet is
/// sent: a UDP socket is only connected).
fn route_to(host: &str) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let target = (host, 9).to_socket_addrs().ok()?.next()?;
    let any: std::net::SocketAddr =
        if target.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

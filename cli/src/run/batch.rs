//! `hpcomm run --batch`: one container command for every node of an AWS
//! Batch multi-node parallel job.
//!
//! - The **main node** serves the job's key-value store on the fixed port
//!   `--batch PORT` (all addresses, or `--bind`), starts its own ranks, and
//!   supervises every rank of the job: its own directly, the others through
//!   the `EXIT` reports of their nodes' launchers. It exits non-zero on the
//!   first failure anywhere — Batch judges the job by the main node — and
//!   when a node's launcher disappears with ranks still running.
//! - **Every other node** connects to the main node
//!   (`AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`), retrying with
//!   back-off for `--batch-wait` (nodes start in any order), learns the job
//!   from it, starts its own ranks, reports each one's end, and ends its
//!   ranks when the main node's connection closes.
//!
//! Node `i` runs ranks `i·K … i·K+K−1`, `K` being the main node's
//! `--ranks-per-node` (default: its cores). The job's secret comes from
//! `HPCOMM_BATCH_SECRET`, set in the job definition (16 characters or more);
//! without it, nothing starts.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpcomm_runtime::bootstrap::batch::BatchNode;
use hpcomm_runtime::bootstrap::kvs_protocol::{Answer, Peer, Request};
use hpcomm_runtime::bootstrap::vars::hpcomm as var;

use super::spawn::{self, Place, RankProcess, Spawner};
use super::supervise::{Event, Supervisor};
use super::{
    node_ranks, notice_events, random_hex, rank_vars, say, supervise, Interrupts, RunOptions,
};
use hpcomm_runtime::bootstrap::kvs_server::{JobInfo, Kvs};

/// The shortest secret accepted.
const MIN_SECRET: usize = 16;

/// Runs this node's part of the job; the node's exit code.
pub fn run(o: &RunOptions) -> Result<i32, String> {
    let node = BatchNode::from_lookup(&|name: &str| std::env::var(name).ok())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "--batch: {} is not set: this is not an AWS Batch multi-node job",
                hpcomm_runtime::bootstrap::vars::batch::NODE_INDEX
            )
        })?;
    let secret = std::env::var(var::BATCH_SECRET).unwrap_or_default();
    if secret.trim().len() < MIN_SECRET || secret.contains(char::is_whitespace) {
        return Err(format!(
            "--batch needs the job's secret in {}, set in the job definition: at least \
             {MIN_SECRET} characters without spaces",
            var::BATCH_SECRET
        ));
    }
    if o.program.is_empty() {
        return Err("no program given: hpcomm run --batch -- PROGRAM ARGS…".into());
    }
    if node.is_main() {
        main_node(o, &node, &secret)
    } else {
        other_node(o, &node, &secret)
    }
}

fn main_node(o: &RunOptions, node: &BatchNode, secret: &str) -> Result<i32, String> {
    let per_node = match o.ranks {
        Some(0) => return Err("--ranks-per-node must be at least 1".into()),
        Some(k) => k,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let ranks = per_node * node.nodes;
    let port = o.batch.expect("--batch");
    let job = random_hex(4).map_err(|e| format!("cannot make the job id: {e}"))?;
    let bind = o.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let info = JobInfo { job: job.clone(), transport: o.transport.clone(), nodes: node.nodes };
    let kvs = Kvs::start(&SocketAddr::new(bind, port).to_string(), secret.to_string(), ranks, info)
        .map_err(|e| format!("cannot serve the job on {bind}:{port}: {e}"))?;
    // This node's ranks reach the server at an address the other nodes'
    // ranks can reach them back from (they listen where they came from).
    let advertise = o
        .bind
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or_else(hpcomm_runtime::bootstrap::default_route_ip);
    let stop = Interrupts::install()?;
    if o.verbose {
        say!(
            "AWS Batch job {job}: main node {} of {}, {ranks} ranks, serving on {bind}:{port}",
            node.index,
            node.nodes
        );
    }
    let mut spawner = Spawner::new(&o.program, secret, o.tag_output);
    let kvs_addr = SocketAddr::new(advertise, port);
    let Some(mut procs) =
        start_ranks(&mut spawner, node.index, per_node, ranks, kvs_addr, &job, &o.transport)
    else {
        return Ok(127);
    };
    let mut supervisor = Supervisor::new(0..ranks, o.grace, o.timeout, Instant::now());
    let more = |events: &mut Vec<Event>| notice_events(&kvs, per_node, events);
    let code = supervise(&mut supervisor, &spawner, &mut procs, &stop, more, |_| {});
    spawn::cleanup(&job);
    spawner.relays.drain(Duration::from_secs(5));
    Ok(code)
}

/// Starts node `index`'s ranks of a job of `ranks`, `per_node` on each
/// node, that reach the job's server at `kvs`; `None` (having said why and
/// ended those started) when one cannot start.
fn start_ranks(
    spawner: &mut Spawner<'_>,
    index: usize,
    per_node: usize,
    ranks: usize,
    kvs: SocketAddr,
    job: &str,
    transport: &str,
) -> Option<Vec<RankProcess>> {
    let mut procs = Vec::new();
    for r in node_ranks(index, per_node) {
        let mut vars = rank_vars(r, ranks, kvs, job, transport);
        vars.push((var::NODE, format!("batch-node-{index}")));
        match spawner.spawn(r, &vars, Place::Here) {
            Ok(p) => procs.push(p),
            Err(e) => {
                spawner.end_all(&mut procs);
                say!("{e}");
                return None;
            }
        }
    }
    Some(procs)
}

/// Connects to the main node, retrying with back-off until `wait` has
/// passed; the connection and the job's id, size and transport.
fn join(
    main: SocketAddr,
    node: usize,
    secret: &str,
    wait: Duration,
    verbose: bool,
) -> Result<(TcpStream, String, usize, String), String> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = (|| -> Result<_, String> {
            let stream = TcpStream::connect_timeout(&main, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
            let hello = Request::Hello { secret: secret.into(), peer: Peer::Node(node) };
            (&stream)
                .write_all(format!("{}\n", hello.line()).as_bytes())
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line)
                .map_err(|e| e.to_string())?;
            match Answer::parse(line.trim_end()) {
                Ok(Answer::Job { job, ranks, transport }) => Ok((stream, job, ranks, transport)),
                Ok(other) => Err(format!("the main node refused this node: {}", other.line())),
                Err(e) => Err(e),
            }
        })();
        match attempt {
            Ok(joined) => return Ok(joined),
            // A refusal is final; anything else may be a main node that
            // has not started yet.
            Err(e) if e.starts_with("the main node refused") => return Err(e),
            Err(e) if Instant::now() + delay > deadline => {
                return Err(format!("cannot join the main node at {main} within {wait:?}: {e}"))
            }
            Err(e) => {
                if verbose {
                    say!("main node at {main} not ready ({e}); retrying in {delay:?}");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn other_node(o: &RunOptions, node: &BatchNode, secret: &str) -> Result<i32, String> {
    let port = o.batch.expect("--batch");
    let main = SocketAddr::new(IpAddr::V4(node.main_address.expect("checked")), port);
    let (stream, job, ranks, transport) = join(main, node.index, secret, o.batch_wait, o.verbose)?;
    if ranks == 0 || ranks % node.nodes != 0 {
        return Err(format!(
            "the main node's job has {ranks} ranks, not a multiple of {} nodes",
            node.nodes
        ));
    }
    let per_node = ranks / node.nodes;
    if o.ranks.is_some_and(|k| k != per_node) {
        say!("the main node runs {per_node} ranks per node; --ranks-per-node here is ignored");
    }
    if transport.parse::<hpcomm_runtime::TransportChoice>().is_err() {
        return Err(format!("the main node asks for an unknown transport {transport:?}"));
    }
    // The main node sends nothing more: the end of the connection means it
    // is gone.
    let main_gone = Arc::new(AtomicBool::new(false));
    {
        let mut watch = stream.try_clone().map_err(|e| e.to_string())?;
        watch.set_read_timeout(None).map_err(|e| e.to_string())?;
        let gone = main_gone.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut watch, &mut std::io::sink());
            gone.store(true, Ordering::Release);
        });
    }
    let stop = Interrupts::install()?;
    let mut spawner = Spawner::new(&o.program, secret, o.tag_output);
    let local = node_ranks(node.index, per_node);
    let Some(mut procs) =
        start_ranks(&mut spawner, node.index, per_node, ranks, main, &job, &transport)
    else {
        return Ok(127);
    };
    let mut supervisor = Supervisor::new(local.clone(), o.grace, o.timeout, Instant::now());
    let mut told = false;
    let more = |events: &mut Vec<Event>| {
        if !told && main_gone.load(Ordering::Acquire) {
            told = true;
            events.push(Event::NodeLost {
                node: node.main,
                ranks: local.clone(),
                why: "the main node's launcher is gone".into(),
            });
        }
    };
    let report = |e: &super::supervise::Ended| {
        let line = Request::Exit { rank: e.rank, code: e.outcome.code() }.line();
        let _ = (&stream).write_all(format!("{line}\n").as_bytes());
    };
    let code = supervise(&mut supervisor, &spawner, &mut procs, &stop, more, report);
    spawn::cleanup(&job);
    spawner.relays.drain(Duration::from_secs(5));
    Ok(code)
}

//! `hpcomm run`: start the ranks of a job on this machine, serve them the
//! key-value store, supervise them, and leave nothing behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use crate::kvs::Kvs;
use crate::remote;

/// Prints `hpcomm run: MESSAGE` on stderr with one write, so that it does
/// not interleave with the lines the ranks write at the same time.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!("hpcomm run: {}\n", format_args!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// What `hpcomm run` was asked to do.
pub struct RunOptions {
    pub ranks: usize,
    /// Hosts to start ranks on (empty: this machine).
    pub hosts: Vec<String>,
    /// The remote-exec template, with `{host}`.
    pub exec: String,
    /// The key-value server's address, if given.
    pub bind: Option<std::net::IpAddr>,
    pub transport: String,
    pub timeout: Option<Duration>,
    /// How long the other ranks may take to end by themselves once one
    /// has failed.
    pub grace: Duration,
    pub tag_output: bool,
    pub verbose: bool,
    pub program: Vec<String>,
}

struct Rank {
    child: Child,
    pid: u32,
    status: Option<ExitStatus>,
}

/// Whether the launcher may read its standard input for rank 0: not when
/// it is a terminal whose foreground is another process group (a job in
/// the background would be stopped by the read).
fn stdin_forwardable() -> bool {
    let stdin = std::io::stdin();
    if !rustix::termios::isatty(&stdin) {
        return true;
    }
    match (rustix::termios::tcgetpgrp(&stdin), rustix::process::getpgrp()) {
        (Ok(foreground), mine) => foreground == mine,
        _ => false,
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hpcomm_runtime::bootstrap::hex_encode(&buf))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

fn describe(rank: usize, pid: u32, status: ExitStatus) -> (String, i32) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (format!("rank {rank} (pid {pid}) exited with code {code}"), code),
        (None, Some(sig)) => (
            format!("rank {rank} (pid {pid}) killed by signal {sig} ({})", signal_name(sig)),
            128 + sig,
        ),
        _ => (format!("rank {rank} (pid {pid}) ended abnormally"), 1),
    }
}

/// Copies a rank's output line by line, prefixed with its rank; says on
/// `done` when the stream has ended.
fn relay(rank: usize, source: impl Read + Send + 'static, to_stderr: bool, done: mpsc::Sender<()>) {
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

/// Waits until `count` relays have copied everything, or `limit` passes
/// (a process a rank left behind in the background may hold a pipe open).
fn drain_relays(done: &mpsc::Receiver<()>, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    for _ in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        if done.recv_timeout(left).is_err() {
            say!("some output may be missing (a pipe stayed open)");
            return;
        }
    }
}

/// Runs the job; returns the launcher's exit code.
pub fn run(options: RunOptions) -> i32 {
    match launch(options) {
        Ok(code) => code,
        Err(message) => {
            say!("{message}");
            1
        }
    }
}

fn launch(o: RunOptions) -> Result<i32, String> {
    if o.ranks == 0 {
        return Err("-n must be at least 1".into());
    }
    let Some(program) = o.program.first() else {
        return Err("no program given: hpcomm run -n N -- PROGRAM ARGS…".into());
    };
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
    let kvs = Kvs::start(&std::net::SocketAddr::new(bind, 0).to_string(), secret.clone(), o.ranks)
        .map_err(|e| format!("cannot start the key-value server on {bind}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in
        [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP]
    {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    if o.verbose {
        say!(
            "job {job}: {} ranks of {program} over {}, key-value server at {}",
            o.ranks,
            o.transport,
            kvs.addr()
        );
    }

    let mut ranks: Vec<Rank> = Vec::with_capacity(o.ranks);
    let mut group: Option<u32> = None;
    let (relay_done, relays_done) = mpsc::channel();
    let mut relays = 0;
    for r in 0..o.ranks {
        let mut vars = vec![
            ("HPCOMM_RANK", r.to_string()),
            ("HPCOMM_SIZE", o.ranks.to_string()),
            ("HPCOMM_KVS", kvs.addr().to_string()),
            ("HPCOMM_JOB", job.clone()),
            ("HPCOMM_TRANSPORT", o.transport.clone()),
        ];
        let host = o.hosts.get(r % o.hosts.len().max(1));
        let mut cmd = match host {
            None => {
                // The environment of a process is readable only by its
                // owner: the secret may go there.
                let mut cmd = Command::new(program);
                cmd.args(&o.program[1..])
                    .envs(vars.iter().map(|(k, v)| (k, v)))
                    .env("HPCOMM_SECRET", &secret)
                    .env("HPCOMM_LAUNCHER_PID", std::process::id().to_string());
                cmd
            }
            Some(host) => {
                // `TEMPLATE env VAR=… PROGRAM ARGS…`, the secret not among
                // them: a command line is readable by every local user.
                vars.push(("HPCOMM_SECRET_FD", "0".into()));
                let words = remote::command(&o.exec, host, &vars, &o.program)?;
                let mut cmd = Command::new(&words[0]);
                cmd.args(&words[1..]);
                cmd
            }
        };
        // One process group for the job, so that ending it reaches
        // everything the ranks started too.
        cmd.process_group(group.map_or(0, |g| g as i32));
        // Standard input: rank 0 gets the launcher's, through a pipe (a rank
        // in a process group of its own that read the terminal would be
        // stopped); a remote rank first gets the secret's line; the others
        // get nothing.
        let forward = r == 0 && stdin_forwardable();
        cmd.stdin(if host.is_some() || forward { Stdio::piped() } else { Stdio::null() });
        if o.tag_output {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                group.get_or_insert(pid);
                if let Some(mut input) = child.stdin.take() {
                    if host.is_some() {
                        // A rank that is gone already is reported below.
                        let _ = input.write_all(format!("{secret}\n").as_bytes());
                    }
                    if forward {
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
                        });
                    }
                }
                if o.tag_output {
                    if let Some(out) = child.stdout.take() {
                        relay(r, out, false, relay_done.clone());
                        relays += 1;
                    }
                    if let Some(err) = child.stderr.take() {
                        relay(r, err, true, relay_done.clone());
                        relays += 1;
                    }
                }
                ranks.push(Rank { child, pid, status: None });
            }
            Err(e) => {
                end_all(&mut ranks, group);
                cleanup(&job);
                say!("cannot start {program}: {e}");
                return Ok(127);
            }
        }
    }

    let started = Instant::now();
    // The first failure is the job's cause and decides the exit code; the
    // other ranks then have `grace` to notice the loss and end by
    // themselves (reporting their errors), before they are ended.
    let mut cause: Option<(String, i32)> = None;
    let mut grace_until = None;
    let code = loop {
        let mut failure: Option<(String, i32, bool)> = None;
        for (r, rank) in ranks.iter_mut().enumerate() {
            if rank.status.is_none() {
                if let Ok(Some(status)) = rank.child.try_wait() {
                    rank.status = Some(status);
                    // Of the failures seen in one sweep, a rank killed by
                    // a signal is the cause; ranks that exited with an
                    // error then were mostly reporting its loss.
                    let signalled = status.signal().is_some();
                    let better = match &failure {
                        None => true,
                        Some((_, _, was_signalled)) => signalled && !was_signalled,
                    };
                    if !status.success() && better {
                        let (message, code) = describe(r, rank.pid, status);
                        failure = Some((message, code, signalled));
                    }
                }
            }
        }
        if let (None, Some((message, code, _))) = (&cause, failure) {
            let running = ranks.iter().filter(|r| r.status.is_none()).count();
            if running > 0 {
                say!(
                    "{message}; ending the job ({running} ranks left, {} s to end)",
                    o.grace.as_secs_f64()
                );
            } else {
                say!("{message}; ending the job");
            }
            cause = Some((message, code));
            grace_until = Some(Instant::now() + o.grace);
        }
        let running = ranks.iter().filter(|r| r.status.is_none()).count();
        if running == 0 {
            break cause.map_or(0, |(_, code)| code);
        }
        if let (Some((_, code)), Some(until)) = (&cause, grace_until) {
            if Instant::now() >= until {
                end_all(&mut ranks, group);
                break *code;
            }
        }
        if stop.load(Ordering::Relaxed) {
            say!("interrupted; ending the job");
            end_all(&mut ranks, group);
            break 130;
        }
        if let Some(limit) = o.timeout {
            if started.elapsed() >= limit {
                say!(
                    "the job did not finish within {} s (--timeout); ending its {running} ranks",
                    limit.as_secs_f64(),
                );
                end_all(&mut ranks, group);
                break 124;
            }
        }
        thread::sleep(Duration::from_millis(5));
    };
    cleanup(&job);
    drain_relays(&relays_done, relays, Duration::from_secs(5));
    Ok(code)
}

/// Ends every rank still running: SIGTERM to the job's process group, then
/// SIGKILL after a grace period; reaps them all.
fn end_all(ranks: &mut [Rank], group: Option<u32>) {
    let Some(pgid) = group.and_then(|g| Pid::from_raw(g as i32)) else {
        return;
    };
    let _ = kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let mut running = 0;
        for rank in ranks.iter_mut().filter(|r| r.status.is_none()) {
            match rank.child.try_wait() {
                Ok(Some(status)) => rank.status = Some(status),
                _ => running += 1,
            }
        }
        if running == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    for rank in ranks.iter_mut().filter(|r| r.status.is_none()) {
        let _ = rank.child.kill();
        rank.status = rank.child.wait().ok();
    }
}

/// Removes a shared-memory segment of this job that a rank could not
/// unlink (the job ended while starting).
fn cleanup(job: &str) {
    let prefix = format!("hpcomm-{job}-");
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for entry in dir.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
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

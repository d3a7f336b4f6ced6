//! Starting ranks and ending them: one process group per job, the secret
//! kept off command lines, rank 0's standard input forwarded, and nothing
//! left behind.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hpcomm_runtime::bootstrap::vars::hpcomm as var;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{kill_process_group, pidfd_open, Pid, PidfdFlags, Signal};

use super::relay::Relays;
use super::remote;
use super::supervise::{Ended, Outcome};

/// How often the launcher looks for ranks' ends it cannot wait for.
pub const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(5);

/// A rank this launcher started.
pub struct RankProcess {
    /// Its rank in the job.
    pub rank: usize,
    child: Child,
    pid: u32,
    /// Readable once the process has ended (a pidfd); `None` where the
    /// kernel has none (before Linux 5.3): its end is then seen by polling.
    exit: Option<OwnedFd>,
    ended: bool,
}

/// Where a rank runs.
pub enum Place<'a> {
    /// On this machine.
    Here,
    /// On `host`, through the remote-exec template `exec`.
    Remote {
        /// The `--exec` template.
        exec: &'a str,
        /// The host.
        host: &'a str,
    },
}

/// Starts the ranks of one job, in one process group.
pub struct Spawner<'a> {
    /// The program and its arguments.
    pub program: &'a [String],
    /// The job's secret.
    pub secret: &'a str,
    /// Relay each rank's output with its rank as prefix.
    pub tag_output: bool,
    /// The relays started.
    pub relays: Relays,
    group: Option<u32>,
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

fn outcome(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Code(code),
        (None, Some(sig)) => Outcome::Signal(sig),
        _ => Outcome::Code(1),
    }
}

impl<'a> Spawner<'a> {
    /// A spawner for `program`.
    pub fn new(program: &'a [String], secret: &'a str, tag_output: bool) -> Spawner<'a> {
        Spawner { program, secret, tag_output, relays: Relays::new(), group: None }
    }

    /// Starts `rank` at `place` with the launch variables `vars` (the
    /// secret is added here, where it may go).
    pub fn spawn(
        &mut self,
        rank: usize,
        vars: &[(&'static str, String)],
        place: Place<'_>,
    ) -> Result<RankProcess, String> {
        let program = &self.program[0];
        let remote = matches!(place, Place::Remote { .. });
        let mut cmd = match place {
            Place::Here => {
                // The environment of a process is readable only by its
                // owner: the secret may go there.
                let mut cmd = Command::new(program);
                cmd.args(&self.program[1..])
                    .envs(vars.iter().map(|(k, v)| (k, v)))
                    .env(var::SECRET, self.secret)
                    .env(var::LAUNCHER_PID, std::process::id().to_string());
                cmd
            }
            Place::Remote { exec, host } => {
                // `TEMPLATE env VAR=… PROGRAM ARGS…`, the secret not among
                // them: a command line is readable by every local user.
                let mut vars = vars.to_vec();
                vars.push((var::SECRET_FD, "0".into()));
                let words = remote::command(exec, host, &vars, self.program)?;
                let mut cmd = Command::new(&words[0]);
                cmd.args(&words[1..]);
                cmd
            }
        };
        // One process group for the job, so that ending it reaches
        // everything the ranks started too.
        cmd.process_group(self.group.map_or(0, |g| g as i32));
        // Standard input: rank 0 gets the launcher's, through a pipe (a rank
        // in a process group of its own that read the terminal would be
        // stopped); a remote rank first gets the secret's line; the others
        // get nothing.
        let forward = rank == 0 && stdin_forwardable();
        cmd.stdin(if remote || forward { Stdio::piped() } else { Stdio::null() });
        if self.tag_output {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id();
        self.group.get_or_insert(pid);
        if let Some(mut input) = child.stdin.take() {
            if remote {
                // A rank that is gone already is reported by supervision.
                let _ = input.write_all(format!("{}\n", self.secret).as_bytes());
            }
            if forward {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
                });
            }
        }
        if self.tag_output {
            if let Some(out) = child.stdout.take() {
                self.relays.start(rank, out, false);
            }
            if let Some(err) = child.stderr.take() {
                self.relays.start(rank, err, true);
            }
        }
        let exit = Pid::from_raw(pid as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
        Ok(RankProcess { rank, child, pid, exit, ended: false })
    }

    /// Waits until a rank in `ranks` may have ended, `also` is readable,
    /// or `limit` has passed, whichever is first: the launcher sleeps in
    /// the kernel instead of waking on a timer, so that it does not take a
    /// core from the ranks while they run. Where a rank's end cannot be
    /// waited for (no pidfd), waits at most [`POLL_WITHOUT_PIDFD`].
    pub fn wait(&self, ranks: &[RankProcess], also: BorrowedFd<'_>, limit: Duration) {
        let running = ranks.iter().filter(|r| !r.ended);
        let mut limit = limit;
        if running.clone().any(|r| r.exit.is_none()) {
            limit = limit.min(POLL_WITHOUT_PIDFD);
        }
        let mut fds: Vec<PollFd<'_>> = running
            .filter_map(|r| r.exit.as_ref())
            .map(|fd| PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::IN))
            .collect();
        fds.push(PollFd::from_borrowed_fd(also, PollFlags::IN));
        let timeout = Timespec::try_from(limit).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
        // An interruption (EINTR) or an error is a wake-up like any other:
        // the caller sweeps and comes back.
        let _ = poll(&mut fds, Some(&timeout));
    }

    /// The ranks that have ended since the last sweep.
    pub fn sweep(&self, ranks: &mut [RankProcess]) -> Vec<Ended> {
        let mut ended = Vec::new();
        for r in ranks.iter_mut().filter(|r| !r.ended) {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.ended = true;
                ended.push(Ended {
                    rank: r.rank,
                    pid: Some(r.pid),
                    node: None,
                    outcome: outcome(status),
                });
            }
        }
        ended
    }

    /// Ends every rank still running: SIGTERM to the job's process group,
    /// then SIGKILL after 2 s; reaps them all.
    pub fn end_all(&self, ranks: &mut [RankProcess]) {
        let Some(pgid) = self.group.and_then(|g| Pid::from_raw(g as i32)) else {
            return;
        };
        let _ = kill_process_group(pgid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let mut running = 0;
            for r in ranks.iter_mut().filter(|r| !r.ended) {
                match r.child.try_wait() {
                    Ok(Some(_)) => r.ended = true,
                    _ => running += 1,
                }
            }
            if running == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = kill_process_group(pgid, Signal::KILL);
        for r in ranks.iter_mut().filter(|r| !r.ended) {
            let _ = r.child.kill();
            let _ = r.child.wait();
            r.ended = true;
        }
    }
}

/// Removes what the ranks of job `job` could not (shm segments, when the
/// job ended while starting).
pub fn cleanup(job: &str) {
    hpcomm_transport::backend::cleanup(job);
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn program(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_rank_that_ends_wakes_the_launcher_at_once() {
        let short = program(&["sleep", "0.2"]);
        let long = program(&["sleep", "30"]);
        let mut spawner = Spawner::new(&short, "s", false);
        let mut ranks = vec![spawner.spawn(0, &[], Place::Here).unwrap()];
        spawner.program = &long;
        ranks.push(spawner.spawn(1, &[], Place::Here).unwrap());
        assert!(ranks.iter().all(|r| r.exit.is_some()), "this kernel has pidfds");
        let (bell, _ringer) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut ended = Vec::new();
        while ended.is_empty() && start.elapsed() < Duration::from_secs(20) {
            spawner.wait(&ranks, bell.as_fd(), Duration::from_secs(20));
            ended = spawner.sweep(&mut ranks);
        }
        let took = start.elapsed();
        spawner.end_all(&mut ranks);
        assert_eq!(
            ended.iter().map(|e| (e.rank, e.outcome)).collect::<Vec<_>>(),
            [(0, Outcome::Code(0))]
        );
        assert!(took < Duration::from_secs(10), "woken {took:?} after the start, not at the end");
    }

    #[test]
    fn the_bell_wakes_the_launcher() {
        let long = program(&["sleep", "30"]);
        let mut spawner = Spawner::new(&long, "s", false);
        let mut ranks = vec![spawner.spawn(0, &[], Place::Here).unwrap()];
        let (bell, mut ringer) = UnixStream::pair().unwrap();
        ringer.write_all(b"!").unwrap();
        let start = Instant::now();
        spawner.wait(&ranks, bell.as_fd(), Duration::from_secs(20));
        let took = start.elapsed();
        assert!(spawner.sweep(&mut ranks).is_empty(), "the rank still runs");
        spawner.end_all(&mut ranks);
        assert!(took < Duration::from_secs(10), "the bell did not wake it ({took:?})");
    }
}

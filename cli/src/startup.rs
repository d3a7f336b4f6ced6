//! `hpcomm startup`: how long joining a job takes, for `ci/startup.sh` and
//! `ci/scale.sh`. Every rank joins (`hpcomm::init`) and passes one barrier;
//! rank 0 then prints the wall-clock time (µs since the epoch, comparable
//! with the launch time the script took) and its own share: `init` and the
//! barrier. Then the job checks itself — a token once around the ring of
//! ranks, and an `all_reduce` of every rank's number — and rank 0 prints the
//! resident memory of the ranks (its own, and the largest).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hpcomm::op::{Max, Sum};
use hpcomm::{Collectives, Communicator};

/// Runs this rank's part; the exit code.
pub fn run() -> i32 {
    let started = Instant::now();
    let outcome = (|| -> hpcomm::Result<()> {
        let universe = hpcomm::init()?;
        let joined = started.elapsed();
        let world = universe.world();
        world.barrier()?;
        let done = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        if world.rank() == 0 {
            println!(
                "startup ranks={} transport={} barrier_end_us={done} init_us={} first_barrier_us={}",
                world.size(),
                world.transport_name(),
                joined.as_micros(),
                (started.elapsed() - joined).as_micros()
            );
        }
        check(world)?;
        // Peak resident memory (VmHWM) of each rank, and its share of the
        // shm segment now (RssShmem), in KiB.
        let mine = [resident("VmHWM:"), resident("RssShmem:")];
        let mut most = [0u64; 2];
        world.all_reduce(&mine, &mut most, Max)?;
        if world.rank() == 0 {
            println!(
                "checked ranks={} ring=ok all_reduce=ok rank0_peak_kib={} largest_peak_kib={} \
                 largest_shm_kib={}",
                world.size(),
                mine[0],
                most[0],
                most[1]
            );
        }
        universe.finalize()
    })();
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hpcomm startup: {e}");
            1
        }
    }
}

/// A token once around the ring (each rank adds its number) and an
/// `all_reduce` of the ranks' numbers, both checked on every rank.
fn check(world: &Communicator) -> hpcomm::Result<()> {
    let (n, me) = (world.size(), world.rank());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let mut token = [0u64];
    if me == 0 {
        world.send(&token, right, 7)?;
        world.recv(&mut token, left, 7)?;
        let want = (n as u64) * (n as u64 - 1) / 2;
        if token[0] != want {
            return Err(hpcomm::Error::Config(format!(
                "ring token {} instead of {want}",
                token[0]
            )));
        }
    } else {
        world.recv(&mut token, left, 7)?;
        token[0] += me as u64;
        world.send(&token, right, 7)?;
    }
    let mut total = [0u64];
    world.all_reduce(&[me as u64], &mut total, Sum)?;
    let want = (n as u64) * (n as u64 - 1) / 2;
    if total[0] != want {
        return Err(hpcomm::Error::Config(format!(
            "all_reduce gave {} instead of {want}",
            total[0]
        )));
    }
    Ok(())
}

/// A `/proc/self/status` figure in KiB (0 where there is none).
fn resident(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `hpcomm startup --server-load N`: the key-value server's share of a
/// start-up at `n` ranks, measured in this process. `n` clients (threads)
/// connect to a server, then do what `--transport auto` does through it:
/// a gather of 8 bytes per rank (node ids), three fences (shm), a gather of
/// 21 bytes per rank (tcp addresses) and a fence. Prints the time of each
/// step, from the first client's request to the last client's answer.
pub fn server_load(n: usize) -> i32 {
    use hpcomm_runtime::bootstrap::kvs_server::{JobInfo, Kvs};
    use hpcomm_runtime::bootstrap::{Exchange, KvsClient};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    let secret = "0123456789abcdef0123456789abcdef".to_string();
    let info = JobInfo { job: "load".into(), transport: "auto".into(), nodes: 0 };
    let server = match Kvs::start("127.0.0.1:0", secret.clone(), n, info) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hpcomm startup: {e}");
            return 1;
        }
    };
    let steps = ["connect", "gather 8 B", "fence", "fence", "fence", "gather 21 B", "fence"];
    let start = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let (start, secret, addr) = (start.clone(), secret.clone(), server.addr());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> Result<Vec<Instant>, String> {
                    let launch = hpcomm_runtime::Launch {
                        rank,
                        size: n,
                        kvs: addr,
                        secret,
                        job: "load".into(),
                        launcher_pid: None,
                    };
                    start.wait();
                    let mut done = Vec::new();
                    let mut client = KvsClient::connect(&launch, Duration::from_secs(600))
                        .map_err(|e| e.to_string())?;
                    done.push(Instant::now());
                    client.allgather(rank, n, "node", &[7u8; 8])?;
                    done.push(Instant::now());
                    for _ in 0..3 {
                        client.fence()?;
                        done.push(Instant::now());
                    }
                    client.allgather(rank, n, "tcp", b"10.0.123.45:654321xyz")?;
                    done.push(Instant::now());
                    client.fence()?;
                    done.push(Instant::now());
                    Ok(done)
                })
                .expect("a client thread")
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut last = vec![t0; steps.len()];
    for h in handles {
        match h.join().expect("a client") {
            Ok(done) => {
                for (l, d) in last.iter_mut().zip(done) {
                    *l = (*l).max(d);
                }
            }
            Err(e) => {
                eprintln!("hpcomm startup: a client: {e}");
                return 1;
            }
        }
    }
    let mut previous = t0;
    let mut line = format!("server-load ranks={n}");
    for (step, at) in steps.iter().zip(&last) {
        line.push_str(&format!(" [{step}]={}us", at.duration_since(previous).as_micros()));
        previous = *at;
    }
    println!("{line} total={}us", previous.duration_since(t0).as_micros());
    0
}

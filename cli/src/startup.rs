//! `hpcomm startup`: how long joining a job takes, for `ci/startup.sh`.
//! Every rank joins (`hpcomm::init`) and passes one barrier; rank 0 then
//! prints the wall-clock time (µs since the epoch, comparable with the
//! launch time the script took) and its own share: `init` and the barrier.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hpcomm::Collectives;

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

//! One program, `hpcomm selftest`, started unchanged by the launchers
//! clusters run: MPICH's `mpiexec` (PMI-1), Slurm's `srun --mpi=pmi2` and
//! `--mpi=pmix` (and plain `srun`'s error), Open MPI's `mpirun` (PMIx), and
//! `hpcomm run --batch` across the nodes of an AWS Batch job (network
//! namespaces standing in for the instances). `.ci/run` installs the
//! launchers; `ci/slurm.sh` and `ci/cluster.sh` start Slurm and the hosts.

#[path = "../../tests/common/mod.rs"]
mod common;
mod jobs;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::watchdog;
use jobs::{command, suite_passed, text, EXE};

fn script(name: &str) -> String {
    format!("{}/../ci/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The whole suite under MPICH's Hydra on 1 to 8 processes: shm between
/// them, or tcp when asked with `HPCOMM_TRANSPORT`; through an inherited
/// descriptor (`PMI_FD`) and through Hydra's port (`-pmi-port`: `PMI_PORT`
/// and `PMI_ID`, rank and size from the server).
#[test]
fn selftest_passes_under_mpich_mpiexec() {
    watchdog(900, "mpiexec", || {
        let mut failures = Vec::new();
        let runs: [(usize, &str, &str, &[&str]); 6] = [
            (1, "auto", "over", &[]),
            (2, "auto", "over shm", &[]),
            (3, "tcp", "over tcp", &[]),
            (3, "auto", "over shm", &["-pmi-port"]),
            (4, "auto", "over shm", &[]),
            (8, "auto", "over shm", &[]),
        ];
        for (n, transport, over, extra) in runs {
            let out = output(
                command("mpiexec.hydra")
                    .env("HYDRA_LAUNCHER", "fork")
                    .env("HPCOMM_TRANSPORT", transport)
                    .args(extra)
                    .args(["-n", &n.to_string(), EXE, "selftest"]),
            );
            if let Err(e) = suite_passed(&out, n, over) {
                failures.push(format!("mpiexec {extra:?} -n {n} ({transport}): {e}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

/// The whole suite under Open MPI's `mpirun`, which serves PMIx.
#[test]
fn selftest_passes_under_open_mpi_mpirun() {
    watchdog(900, "mpirun", || {
        let mut failures = Vec::new();
        for n in [1, 2, 4] {
            let out = output(
                command("mpirun")
                    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                    .args(["--oversubscribe", "-n", &n.to_string(), EXE, "selftest"]),
            );
            let over = if n == 1 { "over" } else { "over shm" };
            if let Err(e) = suite_passed(&out, n, over) {
                failures.push(format!("mpirun -n {n}: {e}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

/// The namespace hosts of `ci/cluster.sh`, one test at a time.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Under a real single-node Slurm: the suite through PMI-2 and through
/// PMIx, on more tasks than cores; plain `srun` (no PMI, as on
/// ParallelCluster) fails at once and says what to type. Then two Slurm
/// nodes, each a namespace host: the suite through PMI-2 over shm within a
/// node and tcp between (`PMI_process_mapping` tells the nodes apart).
#[test]
fn selftest_passes_under_slurm_srun() {
    watchdog(900, "srun", || {
        let up = output(Command::new("bash").args([&script("slurm.sh"), "up"]));
        assert!(up.status.success(), "ci/slurm.sh up: {}{}", text(&up.stdout), text(&up.stderr));
        let mut failures = Vec::new();
        for (mpi, n) in [("pmi2", 1), ("pmi2", 4), ("pmix", 4)] {
            let out = output(command("srun").args([
                &format!("--mpi={mpi}"),
                "-O",
                "-n",
                &n.to_string(),
                EXE,
                "selftest",
            ]));
            let over = if n == 1 { "over" } else { "over shm" };
            if let Err(e) = suite_passed(&out, n, over) {
                failures.push(format!("srun --mpi={mpi} -n {n}: {e}"));
            }
        }
        let started = Instant::now();
        let plain = output(command("srun").args(["-O", "-n", "2", EXE, "selftest"]));
        let err = text(&plain.stderr);
        if plain.status.success() || !err.contains("run it with `srun --mpi=pmi2`") {
            failures.push(format!("plain srun: {}: {err}", plain.status));
        }
        // A program that can also run alone (`hpcomm::job`) must not become
        // two separate jobs of threads under plain srun.
        let ring =
            std::path::Path::new(EXE).parent().expect("the target directory").join("examples/ring");
        let plain =
            output(command("srun").args(["-O", "-n", "2"]).arg(&ring).args(["--laps", "1"]));
        let err = text(&plain.stderr);
        if plain.status.success() || !err.contains("srun --mpi=pmi2") {
            failures.push(format!("plain srun of examples/ring: {}: {err}", plain.status));
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "plain srun took {:?}",
            started.elapsed()
        );
        let down = output(Command::new("bash").args([&script("slurm.sh"), "down"]));
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(down.status.success(), "ci/slurm.sh down: {}", text(&down.stderr));
    });
}

const SECRET: &str = "0123456789abcdef0123";
const MAIN_ADDRESS: &str = "10.77.0.11";

/// Starts node `index` of a 3-node AWS Batch job in the namespace host
/// `hpc{index+1}`, as Batch would: the same command everywhere, the
/// variables Batch sets, the secret from the job definition.
fn batch_node(index: usize, args: &[&str]) -> Child {
    let mut cmd = command("ip");
    cmd.args([
        "netns",
        "exec",
        &format!("hpc{}", index + 1),
        EXE,
        "run",
        "--batch",
        "--ranks-per-node",
        "2",
    ])
    .args(args)
    .env("AWS_BATCH_JOB_NODE_INDEX", index.to_string())
    .env("AWS_BATCH_JOB_NUM_NODES", "3")
    .env("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0")
    .env("HPCOMM_BATCH_SECRET", SECRET)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if index != 0 {
        cmd.env("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", MAIN_ADDRESS);
    }
    cmd.spawn().expect("start a Batch node")
}

/// A Batch job of 3 nodes × 2 ranks across namespace hosts, its nodes
/// started in a shuffled order and one of the other nodes 5 s late: the
/// suite passes, over shm within a node and tcp between. Then a rank of
/// another node is killed: the main node exits non-zero within seconds.
/// A node without the secret starts nothing.
#[test]
fn an_aws_batch_job_runs_across_namespace_hosts() {
    watchdog(900, "aws batch", || {
        let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let cluster = script("cluster.sh");
        let up = output(Command::new("bash").args([&cluster, "up", "3"]));
        assert!(up.status.success(), "ci/cluster.sh up 3: {}", text(&up.stderr));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let orders = [[0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]];
        let order = orders[seed as usize % orders.len()];
        let late = if order[2] == 0 { order[1] } else { order[2] };
        let mut failures = Vec::new();

        let suite = ["--timeout", "300", "--", EXE, "selftest"];
        let mut nodes: Vec<(usize, Child)> = Vec::new();
        for &index in &order {
            if index == late {
                std::thread::sleep(Duration::from_secs(5));
            }
            nodes.push((index, batch_node(index, &suite)));
        }
        for (index, node) in nodes {
            let out = node.wait_with_output().expect("a Batch node");
            let result = if index == 0 {
                suite_passed(&out, 6, "over shm+tcp")
            } else if out.status.success() {
                Ok(())
            } else {
                Err(format!("{}: {}", out.status, text(&out.stderr)))
            };
            if let Err(e) = result {
                failures.push(format!("node {index} (order {order:?}, {late} late): {e}"));
            }
        }

        // Rank 3 runs on node 1: it kills itself in the middle of
        // all_reduce calls.
        let crash = ["--grace", "1", "--timeout", "120", "--", EXE, "selftest", "--crash", "3"];
        let mut nodes: Vec<(usize, Child)> = (0..3).map(|i| (i, batch_node(i, &crash))).collect();
        let started = Instant::now();
        let main = nodes.remove(0).1.wait_with_output().expect("the main node");
        let took = started.elapsed();
        let err = text(&main.stderr);
        if main.status.success() || took > Duration::from_secs(60) {
            failures.push(format!("crash: the main node {} after {took:?}: {err}", main.status));
        } else if !err.contains("ending the job") {
            failures.push(format!("crash: the main node did not say why: {err}"));
        }
        for (index, mut node) in nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            while node.try_wait().expect("wait").is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if node.try_wait().expect("wait").is_none() {
                let _ = node.kill();
                failures.push(format!("crash: node {index} outlived the main node by 30 s"));
            }
        }

        let unsecured = output(
            command("ip")
                .args(["netns", "exec", "hpc1", EXE, "run", "--batch", "--", EXE, "selftest"])
                .env("AWS_BATCH_JOB_NODE_INDEX", "0")
                .env("AWS_BATCH_JOB_NUM_NODES", "3")
                .env("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"),
        );
        if unsecured.status.success() || !text(&unsecured.stderr).contains("HPCOMM_BATCH_SECRET") {
            failures.push(format!("no secret: {}: {}", unsecured.status, text(&unsecured.stderr)));
        }
        let down = output(Command::new("bash").args([&cluster, "down"]));
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(down.status.success(), "ci/cluster.sh down: {}", text(&down.stderr));
    });
}

//! `hpcomm run` end to end: real multi-process jobs over shm, the launcher's
//! supervision and clean-up, and the `bench` and `info` commands.

#[path = "../../tests/common/mod.rs"]
mod common;
mod jobs;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::watchdog;
use jobs::{suite_passed, text};

/// Environment variables for a job.
type Env<'a> = &'a [(&'a str, &'a str)];

fn hpcomm() -> Command {
    jobs::command(jobs::EXE)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let output = hpcomm().args(args).envs(env.iter().copied()).output().expect("run hpcomm");
    (output, started.elapsed())
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = text(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("cargo") {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The whole semantic suite, point-to-point and collective, as 1 to 8
/// processes over shm, with single-copy reads.
#[test]
fn selftest_passes_over_shm_processes() {
    watchdog(900, "selftest shm", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        for n in [1usize, 2, 3, 4, 7, 8] {
            let ranks = n.to_string();
            let (out, _) =
                run(&["run", "-n", &ranks, "--timeout", "300", "--", exe, "selftest"], &[]);
            suite_passed(&out, n, "over shm").unwrap_or_else(|e| panic!("{n} ranks: {e}"));
        }
    });
}

/// The whole semantic suite, point-to-point and collective, as processes
/// over tcp on the loopback interface: one connection per pair, four
/// stripes with a small eager limit so that rendezvous data is striped,
/// and a cap of one open connection per rank.
#[test]
fn selftest_passes_over_tcp_processes() {
    watchdog(900, "selftest tcp", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let runs: [(usize, Env); 7] = [
            (1, &[]),
            (2, &[]),
            (3, &[]),
            (4, &[("HPCOMM_TCP_STRIPES", "4"), ("HPCOMM_EAGER_LIMIT", "1024")]),
            // One open connection: every change of peer closes one and
            // makes another, under every operation of the suite.
            (5, &[("HPCOMM_TCP_MAX_CONNS", "1")]),
            (7, &[]),
            (8, &[]),
        ];
        for (n, env) in runs {
            let ranks = n.to_string();
            let args = ["run", "-n", &ranks, "--transport", "tcp", "--timeout", "300", "--", exe];
            let mut args = args.to_vec();
            args.push("selftest");
            let (out, _) = run(&args, env);
            suite_passed(&out, n, "over tcp").unwrap_or_else(|e| panic!("{n} ranks {env:?}: {e}"));
        }
    });
}

/// A job across "hosts": network namespaces made by `ci/cluster.sh`, each
/// with its own address, the ranks started in them with `--exec 'ip netns
/// exec {host}'`. The whole suite passes on 2 to 4 hosts with 1 or 2 ranks
/// each: over tcp, with one and with several stripes; and with `--transport
/// auto`, which uses shm between the ranks of a host and tcp between hosts
/// (and plain tcp when every host has one rank) — or ofi between hosts, as
/// EFA jobs run, with `tcp;ofi_rxm` standing in for EFA
/// (`HPCOMM_AUTO_NETWORK=ofi`), where a rank killed on one host is then
/// reported by every other rank; and over ofi on two NICs per host.
#[test]
fn a_job_spans_network_namespace_hosts() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(900, "namespace hosts", || {
        let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/cluster.sh");
        let up =
            Command::new("bash").args([cluster, "up", "4", "2"]).output().expect("run cluster.sh");
        assert!(up.status.success(), "ci/cluster.sh up 4 2: {}", text(&up.stderr));
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let striped: Env = &[("HPCOMM_TCP_STRIPES", "3"), ("HPCOMM_EAGER_LIMIT", "2048")];
        let ofi: Env = &[("HPCOMM_AUTO_NETWORK", "ofi"), ("HPCOMM_OFI_PROVIDER", "tcp;ofi_rxm")];
        // Two NICs per host (eth0 and eth1, two networks), every large
        // message streamed and striped over both.
        let two_nics: Env = &[
            ("HPCOMM_OFI_PROVIDER", "tcp;ofi_rxm"),
            ("HPCOMM_OFI_NICS", "eth0,eth1"),
            ("HPCOMM_EAGER_LIMIT", "2048"),
        ];
        let runs: [(&str, &str, &str, &str, Env); 9] = [
            ("hpc1,hpc2", "2", "tcp", "over tcp", &[]),
            ("hpc1,hpc2,hpc3", "6", "tcp", "over tcp", striped),
            ("hpc1,hpc2,hpc3,hpc4", "4", "tcp", "over tcp", &[]),
            ("hpc1,hpc2", "4", "auto", "over shm+tcp", &[]),
            ("hpc1,hpc2,hpc3", "6", "auto", "over shm+tcp", striped),
            ("hpc1,hpc2,hpc3,hpc4", "4", "auto", "over tcp", &[]),
            ("hpc1,hpc2,hpc3", "6", "auto", "over shm+ofi", ofi),
            ("hpc1,hpc2,hpc3,hpc4", "4", "auto", "over ofi", ofi),
            ("hpc1,hpc2,hpc3", "6", "ofi", "over ofi", two_nics),
        ];
        let mut failures = Vec::new();
        let netns_args = |hosts: &'static str, transport: &'static str, n: &'static str| {
            [
                "run",
                "--hosts",
                hosts,
                "--exec",
                "ip netns exec {host}",
                "--bind",
                "10.77.0.1",
                "--transport",
                transport,
                "-n",
                n,
                "--timeout",
                "300",
                "--",
                exe,
                "selftest",
            ]
        };
        for (hosts, n, transport, over, env) in runs {
            let args = netns_args(hosts, transport, n);
            let (out, _) = run(&args, env);
            let ranks = n.parse().expect("a rank count");
            if let Err(e) = suite_passed(&out, ranks, over) {
                failures.push(format!("{hosts} × {n} {transport} {env:?}: {e}"));
            }
        }
        // A rank killed on the second host, shm to its neighbour and ofi to
        // the first host's ranks: everyone else reports the loss — found by
        // shm, by a goodbye, or (tcp;ofi_rxm retries a refused connection
        // for ever) by a keep-alive unfinished after the peer timeout — well
        // within the launcher's grace.
        let mut args = netns_args("hpc1,hpc2", "auto", "4").to_vec();
        args.splice(1..1, ["--grace", "30"]);
        args.extend(["--crash", "3"]);
        let with_timeout: Env = &[
            ("HPCOMM_AUTO_NETWORK", "ofi"),
            ("HPCOMM_OFI_PROVIDER", "tcp;ofi_rxm"),
            ("HPCOMM_PEER_TIMEOUT", "2"),
        ];
        let (out, took) = run(&args, with_timeout);
        let crash = std::panic::catch_unwind(|| {
            check_crash_found(&out, 4, 3, &["failed or exited", "stopped answering"]);
            assert!(took < Duration::from_secs(25), "the survivors took {took:?}");
        });
        let down = Command::new("bash").args([cluster, "down"]).output().expect("run cluster.sh");
        if let Err(e) = crash {
            std::panic::resume_unwind(e);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(down.status.success(), "ci/cluster.sh down: {}", text(&down.stderr));
    });
}

/// `--transport auto` on one machine with ranks told their node through
/// `HPCOMM_NODE` (set by the `--exec` template): shm between the ranks of a
/// node, tcp between nodes, and the whole suite passes on 3 ranks over 2
/// nodes and 5 over 3; on a single node the job is plain shm.
#[test]
fn auto_transport_uses_shm_within_and_tcp_between_nodes() {
    watchdog(600, "auto transport", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let runs = [
            ("a,b", "3", "over shm+tcp)"),
            ("a,b,c", "5", "over shm+tcp)"),
            ("a", "3", "over shm)"),
        ];
        for (nodes, n, over) in runs {
            let args = [
                "run",
                "--hosts",
                nodes,
                "--exec",
                "env HPCOMM_NODE={host}",
                "--bind",
                "127.0.0.1",
                "-n",
                n,
                "--timeout",
                "300",
                "--",
                exe,
                "selftest",
            ];
            let (out, _) = run(&args, &[]);
            let ranks = n.parse().expect("a rank count");
            suite_passed(&out, ranks, over).unwrap_or_else(|e| panic!("{nodes} × {n}: {e}"));
        }
    });
}

/// The whole suite over libfabric (Debian's libfabric1) as 2 to 4
/// processes, on `tcp;ofi_rxm`, `shm` and `udp;ofi_rxd`; on `tcp;ofi_rxm`
/// and `shm` asked for EFA's `mr_mode` bits; and on `tcp;ofi_rxm` without
/// reads (the pipelined rendezvous, as on a provider without `FI_RMA`).
#[test]
fn the_suite_passes_over_ofi_providers() {
    watchdog(900, "ofi suite", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let runs: [(&str, &str, &str, &str); 6] = [
            ("tcp;ofi_rxm", "", "1", "2"),
            ("tcp;ofi_rxm", "efa", "1", "3"),
            // Pipelined rendezvous over a manual-progress provider needs
            // both ranks to run: with 4 ranks on 2 busy cores it takes
            // minutes, so 2 ranks here.
            ("tcp;ofi_rxm", "", "0", "2"),
            ("shm", "", "1", "4"),
            ("shm", "efa", "1", "2"),
            ("udp;ofi_rxd", "", "1", "3"),
        ];
        for (provider, mr_mode, reads, n) in runs {
            let env = [
                ("HPCOMM_OFI_PROVIDER", provider),
                ("HPCOMM_OFI_MR_MODE", mr_mode),
                ("HPCOMM_OFI_READS", reads),
            ];
            let args =
                ["run", "-n", n, "--transport", "ofi", "--timeout", "300", "--", exe, "selftest"];
            let (out, _) = run(&args, &env);
            let what = format!("{provider} mr_mode={mr_mode} reads={reads} × {n}");
            let ranks = n.parse().expect("a rank count");
            suite_passed(&out, ranks, "over ofi)").unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    });
}

/// Clear errors from the ofi transport: libfabric missing, and a provider
/// that does not exist.
#[test]
fn ofi_set_up_errors_are_clear() {
    watchdog(120, "ofi errors", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let args = ["run", "-n", "2", "--transport", "ofi", "--", exe, "selftest", "self"];
        let (missing, _) = run(&args, &[("HPCOMM_LIBFABRIC", "/nonexistent/libfabric.so.1")]);
        let err = text(&missing.stderr);
        assert!(!missing.status.success(), "{err}");
        assert!(err.contains("libfabric not found") && err.contains("HPCOMM_LIBFABRIC"), "{err}");
        let (unknown, _) = run(&args, &[("HPCOMM_OFI_PROVIDER", "verbs-nowhere")]);
        let err = text(&unknown.stderr);
        assert!(!unknown.status.success(), "{err}");
        assert!(err.contains("no RDM provider \"verbs-nowhere\""), "{err}");
        // Every other transport still works without libfabric.
        let shm = ["run", "-n", "2", "--transport", "shm", "--", exe, "selftest", "self"];
        let (fine, _) = run(&shm, &[("HPCOMM_LIBFABRIC", "/nonexistent/libfabric.so.1")]);
        assert!(fine.status.success(), "{}", text(&fine.stderr));
    });
}

/// The namespace hosts of `ci/cluster.sh` are shared: one test at a time.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What networks do, between namespace hosts over tcp: 10% of packets
/// dropped at random (nftables) and a shaped link (`tc tbf`) still give
/// correct results; a rank killed in the middle of all_reduce calls makes
/// every survivor's all_reduce fail, and the launcher names it; a link cut
/// mid-transfer is an `PeerUnresponsive` error within `HPCOMM_TCP_TIMEOUT`,
/// not a hang.
#[test]
fn faults_between_namespace_hosts() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(900, "namespace faults", || {
        let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/cluster.sh");
        let sh = |script: &str| {
            let out = Command::new("sh").args(["-c", script]).output().expect("run sh");
            assert!(out.status.success(), "{script}: {}", text(&out.stderr));
        };
        sh(&format!("bash {cluster} up 2"));
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let job = |cases: &[&str]| {
            let mut args = vec![
                "run",
                "--hosts",
                "hpc1,hpc2",
                "--exec",
                "ip netns exec {host}",
                "--bind",
                "10.77.0.1",
                "--transport",
                "tcp",
                "-n",
                "2",
                "--timeout",
                "400",
                "--",
                exe,
                "selftest",
            ];
            args.extend(cases);
            run(&args, &[])
        };
        let cases = ["order", "coll-allreduce", "coll-alltoall"];

        sh("ip netns exec hpc1 nft -f - <<'EOF'
table inet hpcloss {
  chain in { type filter hook input priority 0; numgen random mod 10 0 drop; }
  chain out { type filter hook output priority 0; numgen random mod 10 0 drop; }
}
EOF");
        let (lossy, _) = job(&cases);
        sh("ip netns exec hpc1 nft delete table inet hpcloss");

        sh("ip netns exec hpc1 tc qdisc add dev eth0 root tbf rate 200mbit burst 64kb latency 50ms");
        let (shaped, _) = job(&cases);
        sh("ip netns exec hpc1 tc qdisc del dev eth0 root");

        // Two ranks on each host, shm between them and tcp between hosts:
        // the survivors on the victim's host and on the other one all see
        // their all_reduce fail.
        let (killed, took) = run(
            &[
                "run",
                "--hosts",
                "hpc1,hpc2",
                "--exec",
                "ip netns exec {host}",
                "--bind",
                "10.77.0.1",
                "--transport",
                "auto",
                "-n",
                "4",
                "--timeout",
                "100",
                "--",
                exe,
                "selftest",
                "--crash",
                "1",
            ],
            &[],
        );

        // A link cut in the middle of a transfer: with a 3-second peer
        // timeout the job fails with a peer-failure error well within the
        // launcher's own bound, instead of hanging.
        let cutter = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            Command::new("ip").args(["link", "set", "hpcv2", "down"]).status()
        });
        let bw = [
            "run",
            "--hosts",
            "hpc1,hpc2",
            "--exec",
            "ip netns exec {host}",
            "--bind",
            "10.77.0.1",
            "--transport",
            "tcp",
            "-n",
            "2",
            "--timeout",
            "200",
            "--",
            exe,
            "bench",
            "bw",
            "--min-size",
            "65536",
            "--max-size",
            "65536",
            "--iters",
            "100000000",
        ];
        let (cut, cut_took) = run(&bw, &[("HPCOMM_TCP_TIMEOUT", "3")]);
        let cut_status = cutter.join().expect("cutter");
        sh(&format!("bash {cluster} down"));
        assert!(cut_status.is_ok_and(|s| s.success()), "ip link set hpcv2 down failed");
        let cut_err = text(&cut.stderr);
        assert!(!cut.status.success(), "{cut_err}");
        assert!(cut_err.contains("(world) stopped answering"), "{cut_err}");
        assert!(cut_took < Duration::from_secs(30), "the cut link was noticed after {cut_took:?}");

        for (what, out) in [("10% loss", &lossy), ("tbf", &shaped)] {
            let stdout = text(&out.stdout);
            assert!(out.status.success(), "{what}: {}\n{stdout}", text(&out.stderr));
            assert_eq!(stdout.matches("ok ").count(), cases.len(), "{what}: {stdout}");
        }
        check_crash(&killed, 4, 1);
        assert!(took < Duration::from_secs(30), "the killed job took {took:?} to end");
    });
}

/// The collective cases as processes over shm with each algorithm forced
/// in turn through `HPCOMM_<COLLECTIVE>`.
#[test]
fn every_collective_algorithm_over_shm_processes() {
    use hpcomm::select;
    fn names<A: Copy>(all: &[A], name: fn(A) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|&a| name(a)).collect()
    }
    watchdog(900, "collective algorithms shm", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let algorithms = [
            ("barrier", names(select::Barrier::ALL, select::Barrier::name)),
            ("bcast", names(select::Bcast::ALL, select::Bcast::name)),
            ("reduce", names(select::Reduce::ALL, select::Reduce::name)),
            ("allreduce", names(select::Allreduce::ALL, select::Allreduce::name)),
            ("allgather", names(select::Allgather::ALL, select::Allgather::name)),
            ("alltoall", names(select::Alltoall::ALL, select::Alltoall::name)),
        ];
        for (collective, names) in algorithms {
            let (_, cases) = hpcomm_cli::selftest::COLLECTIVE_CASES
                .iter()
                .find(|(c, _)| *c == collective)
                .expect("known collective");
            let var = format!("HPCOMM_{}", collective.to_uppercase());
            for algorithm in names {
                for n in ["1", "2", "3", "4", "7", "8"] {
                    let mut args = vec!["run", "-n", n, "--timeout", "200", "--", exe, "selftest"];
                    args.extend(cases.iter());
                    let (out, _) = run(&args, &[(&var, algorithm)]);
                    let stdout = text(&out.stdout);
                    assert!(
                        out.status.success(),
                        "{var}={algorithm} on {n} ranks: {}\n{stdout}",
                        text(&out.stderr)
                    );
                    assert_eq!(stdout.matches("ok ").count(), cases.len(), "{stdout}");
                }
            }
        }
    });
}

/// The suite again with the pipelined rendezvous (no single-copy reads), a
/// 256-byte eager limit and the smallest rings, so that back-pressure is
/// constant; the fallback is logged once.
#[test]
fn selftest_passes_with_pipelined_copies_and_small_rings() {
    watchdog(600, "selftest pipelined", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let env = [
            ("HPCOMM_SHM_CMA", "0"),
            ("HPCOMM_EAGER_LIMIT", "256"),
            ("HPCOMM_SHM_RING_BYTES", "16384"),
        ];
        for n in ["2", "4"] {
            let (out, _) = run(&["run", "-n", n, "--timeout", "240", "--", exe, "selftest"], &env);
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert!(out.status.success(), "{n} ranks: {stderr}\n{stdout}");
            assert_eq!(
                stdout.lines().filter(|l| l.starts_with("ok ")).count(),
                hpcomm_cli::selftest::CASES.len()
            );
            assert_eq!(
                stderr.matches("large messages use the pipelined copy").count(),
                1,
                "{stderr}"
            );
        }
    });
}

/// Ranks may be started through a tool that stays their parent (`perf
/// record`, valgrind, a shell that does not `exec`): they still join the job.
#[test]
fn ranks_started_through_a_wrapper_join_the_job() {
    watchdog(120, "wrapper", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        // `; exit $?` keeps the shell alive as the rank's parent.
        let script = format!("{exe} selftest; exit $?");
        let (out, _) = run(&["run", "-n", "2", "--timeout", "100", "--", "sh", "-c", &script], &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            hpcomm_cli::selftest::CASES.len()
        );
    });
}

/// A rank that exits with an error code ends the job at once; the launcher
/// names it and exits with its code; no rank is left behind.
#[test]
fn an_abnormal_exit_is_reported_and_ends_the_job() {
    watchdog(60, "abnormal exit", || {
        let script = r#"if [ "$HPCOMM_RANK" = 1 ]; then exit 3; fi; sleep 30.1357"#;
        let (out, took) = run(&["run", "-n", "3", "--", "sh", "-c", script], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("rank 1 (pid ") && stderr.contains("exited with code 3"),
            "{stderr}"
        );
        assert!(took < Duration::from_secs(20), "the other ranks were not ended ({took:?})");
        assert_eq!(processes_with("30.1357"), Vec::<String>::new());
    });
}

/// A rank killed by a signal is reported with the signal.
#[test]
fn a_killed_rank_is_reported_with_its_signal() {
    watchdog(60, "signal", || {
        let script = r#"if [ "$HPCOMM_RANK" = 0 ]; then kill -9 $$; fi; sleep 30.2461"#;
        let (out, _) = run(&["run", "-n", "2", "--", "sh", "-c", script], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(137), "{stderr}");
        assert!(
            stderr.contains("rank 0 (pid ") && stderr.contains("killed by signal 9 (SIGKILL)"),
            "{stderr}"
        );
        assert_eq!(processes_with("30.2461"), Vec::<String>::new());
    });
}

/// `--timeout` ends a hung job with a clear message, including processes
/// the ranks started themselves.
#[test]
fn timeout_ends_a_hung_job_and_everything_it_started() {
    watchdog(60, "timeout", || {
        let (out, took) = run(
            &["run", "-n", "2", "--timeout", "1", "--", "sh", "-c", "sleep 30.3579 & wait"],
            &[],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(124), "{stderr}");
        assert!(stderr.contains("did not finish within 1 s"), "{stderr}");
        assert!(took < Duration::from_secs(20), "{took:?}");
        assert_eq!(processes_with("30.3579"), Vec::<String>::new());
    });
}

/// Checks a `selftest --crash VICTIM` job: the launcher names the killed
/// rank and exits with 128 + 9, and every other rank reports that its
/// all_reduce failed because a peer was lost.
fn check_crash(out: &Output, ranks: usize, victim: usize) {
    check_crash_found(out, ranks, victim, &["failed or exited"]);
}

/// [`check_crash`], with the ways a survivor may say it found the loss.
fn check_crash_found(out: &Output, ranks: usize, victim: usize, found: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{stderr}");
    assert!(
        stderr.contains(&format!("rank {victim} (pid ")) && stderr.contains("killed by signal 9"),
        "{stderr}"
    );
    for r in (0..ranks).filter(|&r| r != victim) {
        let report = format!("hpcomm selftest: rank {r}: all_reduce ");
        let line = stderr
            .lines()
            .find_map(|l| l.find(&report).map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("rank {r} reported no failure:\n{stderr}"));
        assert!(found.iter().any(|f| line.contains(f)), "{line}");
    }
}

/// A rank killed with SIGKILL in the middle of a run of all_reduce calls:
/// every other rank's all_reduce returns a peer-failure error, the launcher
/// names the killed rank, and nothing of the job is left in /dev/shm.
#[test]
fn a_crash_after_start_leaves_no_segment() {
    watchdog(60, "crash", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let (out, took) =
            run(&["run", "-n", "4", "-v", "--", exe, "selftest", "--crash", "1"], &[]);
        check_crash(&out, 4, 1);
        // The survivors end by themselves, well within the grace period.
        assert!(took < Duration::from_secs(10), "{took:?}");
        let stderr = text(&out.stderr);
        let job = stderr
            .split("job ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .expect("-v names the job")
            .to_string();
        let left: Vec<_> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(&job))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "segment of job {job} left behind");
    });
}

/// Connections without the job's secret are refused and logged, and the
/// job goes on.
#[test]
fn strangers_are_refused_and_logged() {
    watchdog(60, "strangers", || {
        let script = r#"
            host=${HPCOMM_KVS%:*}; port=${HPCOMM_KVS#*:}
            exec 3<>/dev/tcp/$host/$port; echo "HELLO wrong-secret 0" >&3; read -r a <&3; exec 3>&-
            exec 3<>/dev/tcp/$host/$port; printf 'GET shm.path\n' >&3; read -r b <&3; exec 3>&-
            exec 3<>/dev/tcp/$host/$port; printf '\001\377\376 random bytes\n' >&3; read -r c <&3; exec 3>&-
            echo "answers: $a / $b / $c"
        "#;
        let (out, _) = run(&["run", "-n", "1", "--", "bash", "-c", script], &[]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("answers: ERR refused / ERR refused / ERR refused"), "{stdout}");
        assert_eq!(
            stderr.matches("refused a connection to the key-value server").count(),
            3,
            "{stderr}"
        );
        assert!(
            stderr.contains("wrong secret") && stderr.contains("malformed greeting"),
            "{stderr}"
        );
    });
}

/// `--tag-output` prefixes every line with its rank.
#[test]
fn tag_output_prefixes_lines_with_the_rank() {
    watchdog(60, "tag-output", || {
        let (out, _) = run(
            &["run", "-n", "2", "--tag-output", "--", "sh", "-c", "echo hello from $HPCOMM_RANK"],
            &[],
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success());
        assert!(
            stdout.contains("[0] hello from 0") && stdout.contains("[1] hello from 1"),
            "{stdout}"
        );
    });
}

/// Set-up failures are clear errors: a full /dev/shm (a segment far larger
/// than it can hold), a remote-exec template without `{host}`, a missing
/// program. (The ofi transport's are in `ofi_set_up_errors_are_clear`.)
#[test]
fn setup_failures_are_clear_errors() {
    watchdog(60, "setup failures", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let (out, _) = run(
            &["run", "-n", "2", "--", exe, "selftest"],
            &[("HPCOMM_SHM_RING_BYTES", "1099511627776")],
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("/dev/shm is full") && stderr.contains("bytes"), "{stderr}");

        let (out, _) = run(&["run", "-n", "2", "--hosts", "a,b", "--exec", "ssh", "--", exe], &[]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("does not contain {host}"), "{}", text(&out.stderr));

        let (out, _) = run(&["run", "-n", "2", "--", "/nonexistent/program"], &[]);
        assert_eq!(out.status.code(), Some(127));
        assert!(text(&out.stderr).contains("cannot start /nonexistent/program"));
    });
}

/// The benchmarks run under the launcher and print OSU tables or JSON;
/// outside a 2-rank job they refuse with a clear message.
#[test]
fn benchmarks_print_osu_tables_and_json() {
    watchdog(120, "bench", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let (out, _) = run(
            &["run", "-n", "2", "--", exe, "bench", "latency", "--max-size", "64", "--iters", "50"],
            &[],
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(stdout.contains("# Size") && stdout.contains("Latency (us)"), "{stdout}");
        let rows: Vec<_> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows.len(), 8, "sizes 0, 1, 2, …, 64: {stdout}");
        for (kind, column) in
            [("bw", "Bandwidth (MB/s)"), ("bibw", "Bandwidth (MB/s)"), ("mr", "Messages/s")]
        {
            let args = [
                "run",
                "-n",
                "2",
                "--",
                exe,
                "bench",
                kind,
                "--min-size",
                "1",
                "--max-size",
                "65536",
                "--iters",
                "5",
                "--window",
                "8",
            ];
            let (out, _) = run(&args, &[]);
            let stdout = text(&out.stdout);
            assert!(out.status.success() && stdout.contains(column), "{kind}: {stdout}");
            assert_eq!(stdout.lines().filter(|l| !l.starts_with('#')).count(), 17, "{stdout}");
        }
        let args = [
            "run",
            "-n",
            "2",
            "--",
            exe,
            "bench",
            "mr",
            "--min-size",
            "8",
            "--max-size",
            "8",
            "--iters",
            "5",
            "--json",
        ];
        let (out, _) = run(&args, &[]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        assert_eq!(json["benchmark"], "mr");
        assert_eq!(json["transport"], "shm");
        assert!(json["results"][0]["value"].as_f64().unwrap() > 0.0);

        let (out, _) = run(&["bench", "latency"], &[]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("even number of ranks"), "{}", text(&out.stderr));
    });
}

/// The C twin of `hpcomm bench` (benches/c-compare/osu.c) runs the plan
/// `hpcomm bench --plan` prints, so the two cannot drift: the plan is OSU's
/// sizes and iterations, and the twin knows exactly the benchmarks that
/// `hpcomm bench` has.
#[test]
fn the_c_twin_runs_hpcomms_plan() {
    let (out, _) = run(&["bench", "latency", "--max-size", "4194304", "--plan"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<usize>> = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|w| w.parse().expect("a number")).collect())
        .collect();
    assert_eq!(rows.len(), 24, "0, then 1 to 4 MiB: {stdout}");
    assert_eq!(rows[0], [0, 10_000, 100]);
    assert_eq!(rows[14], [8192, 10_000, 100]);
    assert_eq!(rows[15], [16384, 1000, 10]);
    assert_eq!(rows[23], [4 << 20, 1000, 10]);
    let (out, _) = run(&["bench", "barrier", "--plan", "--iters", "50"], &[]);
    assert_eq!(text(&out.stdout).lines().nth(1), Some("0 50 5"));
    let (out, _) = run(&["bench", "bw", "--min-size", "9", "--max-size", "8", "--plan"], &[]);
    assert!(!out.status.success());

    // The twin's list of benchmarks is `hpcomm bench`'s.
    let c = include_str!("../../benches/c-compare/osu.c");
    let list = c.split("KINDS[] = {").nth(1).and_then(|r| r.split("};").next()).expect("KINDS");
    let twin: Vec<&str> =
        list.split(',').map(|k| k.trim().trim_matches('"')).filter(|k| !k.is_empty()).collect();
    let (out, _) = run(&["bench", "-h"], &[]);
    let help = text(&out.stdout);
    let ours: Vec<&str> = help
        .split("[possible values: ")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("the benchmarks in --help")
        .split(", ")
        .collect();
    assert_eq!(twin, ours);
}

/// `hpcomm info` lists the transports and their limits; without a launcher
/// a program runs as a singleton.
#[test]
fn info_and_singleton() {
    watchdog(60, "info", || {
        let (out, _) = run(&["info"], &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success());
        assert!(stdout.contains("shm: available") && stdout.contains("eager limit"), "{stdout}");
        assert!(stdout.contains("tcp: available"), "{stdout}");
        assert!(stdout.contains("ofi: available") && stdout.contains("libfabric 1."), "{stdout}");
        assert!(stdout.contains("tcp;ofi_rxm") && stdout.contains("chosen: "), "{stdout}");
        let (out, _) = run(&["selftest", "arguments"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("ok   arguments (1 ranks over loopback)"));
    });
}

/// `hpcomm model` prints a table per collective, with hpcomm's choice in
/// every cell — across nodes the model's cheapest, so no cell names a
/// cheaper one, and small all-reduces go node-aware; it rejects a machine
/// that cannot exist.
#[test]
fn model_prints_the_choice_at_scale() {
    let out = hpcomm().args(["model", "--ranks", "64,16384"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let titles = [
        "### all_reduce",
        "### reduce",
        "### broadcast",
        "### all_gather",
        "### gather",
        "### all_to_all",
        "### barrier",
    ];
    for title in titles {
        assert!(text.contains(title), "{title} missing:\n{text}");
    }
    let small = text.lines().find(|l| l.starts_with("| 8 B |")).expect("an 8-byte row");
    assert_eq!(small.matches("hierarchical").count(), 2, "{small}");
    let rows = text.lines().filter(|l| l.starts_with('|'));
    assert!(rows.clone().count() > 20, "{text}");
    for row in rows {
        assert!(!row.contains(" ["), "a cheaper algorithm than the choice across nodes: {row}");
    }
    // Inside one node the measured rules choose, and the model may differ.
    let one = hpcomm().args(["model", "--ranks", "8"]).output().unwrap();
    let one = String::from_utf8_lossy(&one.stdout);
    let small = one.lines().find(|l| l.starts_with("| 8 B |")).expect("an 8-byte row");
    assert!(small.contains("recursive_doubling"), "{small}");
    assert!(text.contains("| 64 ranks | 16384 ranks |"), "{text}");
    let bad = hpcomm().args(["model", "--bandwidth-gbs", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be positive"));
}

/// Ranks started through a remote-exec template that hands its command to a
/// shell, as ssh does (a stand-in named `ssh` that runs `sh -c "$*"` here):
/// the job's secret is in no process's command line — the rank reads it
/// from its standard input — and words with spaces and `$(…)` arrive as
/// given. A host name that would be an ssh option is refused. Then a real
/// job over the same template: the suite passes.
#[test]
fn remote_ranks_get_the_secret_on_stdin_and_their_words_unchanged() {
    watchdog(300, "remote secret", || {
        let (dir, exec) = fake_ssh("secret");
        let script = r#"read -r s; f=$(mktemp); printf '%s\n' "$s" > "$f"
            n=$(for c in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$c"; echo; done | grep -c -F -f "$f" || true)
            rm -f "$f"; echo "secret in $n command lines; length ${#s}"; printf '%s|' "$@"; echo"#;
        let args = ["run", "-n", "2", "--hosts", "localhost", "--exec", &exec, "--timeout", "60"];
        let mut all = args.to_vec();
        all.extend(["--", "sh", "-c", script, "rank", "a b", "$(id)"]);
        let (out, _) = run(&all, &[]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
        assert_eq!(stdout.matches("secret in 0 command lines; length 32").count(), 2, "{stdout}");
        assert_eq!(stdout.matches("a b|$(id)|").count(), 2, "{stdout}");

        let (out, _) =
            run(&["run", "-n", "1", "--hosts=node1,-oProxyCommand=id", "--", "true"], &[]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("is not a host name"), "{}", text(&out.stderr));

        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let mut all = args.to_vec();
        all.extend(["--transport", "tcp", "--", exe, "selftest"]);
        let (out, _) = run(&all, &[]);
        std::fs::remove_dir_all(&dir).ok();
        suite_passed(&out, 2, "tcp").unwrap();
    });
}

/// A stand-in for ssh, in a directory of its own: `ssh HOST WORDS…` runs
/// `sh -c "WORDS…"` here, as the remote user's shell would. Returns the
/// directory and the `--exec` template.
fn fake_ssh(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("hpcomm-ssh-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ssh = dir.join("ssh");
    std::fs::write(&ssh, "#!/bin/sh\nshift\nexec sh -c \"$*\"\n").unwrap();
    Command::new("chmod").arg("755").arg(&ssh).status().unwrap();
    let exec = format!("{} {{host}}", ssh.display());
    (dir, exec)
}

/// Ranks started through a remote-exec template are not the launcher's
/// process group's only members on a real cluster, nor tied to it by a
/// parent-death signal: when the launcher is killed outright, each rank sees
/// its key-value connection close and ends by itself.
#[test]
fn remote_ranks_end_when_their_launcher_is_killed() {
    watchdog(120, "orphans", || {
        let (dir, exec) = fake_ssh("orphans");
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let marker = "987654321";
        let mut launcher = hpcomm()
            .args(["run", "-n", "2", "--hosts", "localhost", "--exec", &exec, "--"])
            .args([exe, "bench", "latency", "--iters", marker])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run hpcomm");
        // The launcher and its two ranks.
        let start = Instant::now();
        while processes_with(marker).len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(30), "{:?}", processes_with(marker));
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        launcher.kill().unwrap();
        launcher.wait().unwrap();
        let killed = Instant::now();
        while !processes_with(marker).is_empty() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "orphaned ranks: {:?}",
                processes_with(marker)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::remove_dir_all(&dir).ok();
    });
}

/// 2,000 strangers that connect to the key-value server and say nothing,
/// over and over, while the launcher may hold only 256 descriptors: the
/// real ranks still greet, are served, and the job runs to its end. (One
/// thread per connection, each waiting 5 s for a greeting, ran the launcher
/// out of descriptors and kept the ranks out.)
#[test]
fn slow_strangers_do_not_keep_a_job_from_starting() {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    watchdog(120, "kvs strangers", || {
        let exe = env!("CARGO_BIN_EXE_hpcomm");
        let script = format!(
            "ulimit -n 256; exec {exe} run -v -n 2 -- sh -c 'sleep 2; exec {exe} selftest'"
        );
        let mut launcher = Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut stderr = BufReader::new(launcher.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let addr = first
            .split("key-value server at ")
            .nth(1)
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| panic!("no server address in {first:?}"));
        // Keep reading what the launcher says, or it would wait on a full
        // pipe.
        let said = std::thread::spawn(move || {
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut rest).ok();
            rest
        });
        let stop = Arc::new(AtomicBool::new(false));
        let crowd: Vec<_> = (0..4)
            .map(|_| {
                let (addr, stop) = (addr.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut open = std::collections::VecDeque::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(c) = TcpStream::connect(&addr) {
                            open.push_back(c);
                        }
                        if open.len() > 500 {
                            open.pop_front();
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let out = launcher.wait_with_output().unwrap();
        stop.store(true, Ordering::Relaxed);
        crowd.into_iter().for_each(|t| t.join().unwrap());
        let out = Output { stderr: said.join().unwrap().into_bytes(), ..out };
        suite_passed(&out, 2, "shm").unwrap();
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    });
}

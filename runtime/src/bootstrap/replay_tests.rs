//! The PMI clients against scripted servers that answer as Hydra and
//! Slurm do (their lines recorded from `mpiexec.hydra` 4.0 and Slurm 22.05's
//! pmi2 plugin), and that fail in the ways a launcher can: dying in a
//! fence, answering garbage, missing a key, small maxima, silence.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::line::Conn;
use super::pmi1::Pmi1;
use super::pmi2::Pmi2;
use super::{Bootstrap, Exchange};
use crate::error::Error;

/// Where rank 0 serves the job's key-value store.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Hydra,
    Slurm,
}

/// How the scripted server misbehaves, at the first request of command
/// `at` (PMI-1 `cmd` names; PMI-2's with `-`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Die(&'static str),
    Garbage(&'static str),
    Silent(&'static str),
}

struct Script {
    dialect: Dialect,
    fault: Fault,
    vallen_max: usize,
}

fn lookup(name: &str) -> Option<String> {
    match name {
        "PMI_FD" => Some("3".into()),
        "PMI_RANK" => Some("0".into()),
        "PMI_SIZE" => Some("1".into()),
        _ => None,
    }
}

/// What the fault says to do with a request of `cmd`: `None` to answer.
fn misbehave(fault: Fault, cmd: &str, stream: &mut UnixStream) -> Option<bool> {
    match fault {
        Fault::Die(at) if at == cmd => Some(false),
        Fault::Garbage(at) if at == cmd => {
            let _ = stream.write_all(b"this is not PMI\n000003abc");
            Some(true)
        }
        Fault::Silent(at) if at == cmd => {
            std::thread::sleep(Duration::from_secs(5));
            Some(false)
        }
        _ => None,
    }
}

/// A single-rank PMI-1 server.
fn pmi1_server(mut stream: UnixStream, script: Script) {
    let mut kvs: HashMap<String, String> = HashMap::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while {
        line.clear();
        reader.read_line(&mut line).unwrap_or(0) > 0
    } {
        let fields = super::pmi1::parse_line(line.trim_end()).unwrap();
        let cmd = fields["cmd"].clone();
        match misbehave(script.fault, &cmd, &mut stream) {
            Some(true) => continue,
            Some(false) => return,
            None => {}
        }
        let hydra = script.dialect == Dialect::Hydra;
        let answer = match cmd.as_str() {
            "init" if hydra => "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".into(),
            "init" => "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1".into(),
            "get_maxes" if hydra => {
                format!("cmd=maxes kvsname_max=256 keylen_max=64 vallen_max={}", script.vallen_max)
            }
            "get_maxes" => {
                format!(
                    "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max={}",
                    script.vallen_max
                )
            }
            "get_my_kvsname" if hydra => "cmd=my_kvsname kvsname=kvs_5950_0_56384580_vm".into(),
            "get_my_kvsname" => "cmd=my_kvsname rc=0 kvsname=9.0".into(),
            "put" => {
                kvs.insert(fields["key"].clone(), fields["value"].clone());
                if hydra { "cmd=put_result rc=0 msg=success" } else { "cmd=put_result rc=0" }.into()
            }
            "barrier_in" if hydra => "cmd=barrier_out".into(),
            "barrier_in" => "cmd=barrier_out rc=0".into(),
            "get" => match (fields["key"].as_str(), kvs.get(&fields["key"])) {
                ("PMI_process_mapping", _) if hydra => {
                    "cmd=get_result rc=0 msg=success value=(vector,(0,1,1))".into()
                }
                ("PMI_process_mapping", _) => "cmd=get_result rc=0 value=(vector,(0,1,1))".into(),
                (_, Some(v)) if hydra => format!("cmd=get_result rc=0 msg=success value={v}"),
                (_, Some(v)) => format!("cmd=get_result rc=0 value={v}"),
                (key, None) if hydra => {
                    format!("cmd=get_result rc=-1 msg=key_{key}_not_found value=unknown")
                }
                (_, None) => "cmd=get_result rc=1".into(),
            },
            "finalize" if hydra => "cmd=finalize_ack".into(),
            "finalize" => "cmd=finalize_ack rc=0".into(),
            other => panic!("the scripted server does not know cmd={other}"),
        };
        if stream.write_all(format!("{answer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A single-rank PMI-2 server.
fn pmi2_server(mut stream: UnixStream, script: Script) {
    let mut kvs: HashMap<String, String> = HashMap::new();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut init = String::new();
    if reader.read_line(&mut init).unwrap_or(0) == 0 {
        return;
    }
    let hydra = script.dialect == Dialect::Hydra;
    let hello = if hydra {
        "cmd=response_to_init pmi_version=2 pmi_subversion=0 rc=0\n"
    } else {
        "cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n"
    };
    stream.write_all(hello.as_bytes()).unwrap();
    loop {
        let mut head = [0u8; 6];
        if reader.read_exact(&mut head).is_err() {
            return;
        }
        let len: usize = std::str::from_utf8(&head).unwrap().trim().parse().unwrap();
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        let fields = super::pmi2::parse_body(std::str::from_utf8(&body).unwrap()).unwrap();
        let cmd = fields["cmd"].clone();
        match misbehave(script.fault, &cmd, &mut stream) {
            Some(true) => continue,
            Some(false) => return,
            None => {}
        }
        let body = match cmd.as_str() {
            "fullinit" if hydra => "cmd=fullinit-response;pmi-version=2;pmi-subversion=0;rank=0;\
                size=1;appnum=0;debugged=FALSE;pmiverbose=FALSE;rc=0;"
                .to_string(),
            "fullinit" => "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=0;\
                size=1;appnum=-1;debugged=FALSE;pmiverbose=FALSE;"
                .to_string(),
            "job-getid" if hydra => {
                "cmd=job-getid-response;jobid=kvs_5994_0_643238896_vm;rc=0;".into()
            }
            "job-getid" => "cmd=job-getid-response;rc=0;jobid=8.0;".into(),
            "info-getjobattr" if hydra => {
                "cmd=info-getjobattr-response;found=TRUE;value=(vector,(0,1,1));rc=0;".into()
            }
            "info-getjobattr" => {
                "cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,1));".into()
            }
            "kvs-put" => {
                kvs.insert(fields["key"].clone(), fields["value"].clone());
                "cmd=kvs-put-response;rc=0;".into()
            }
            "kvs-fence" => "cmd=kvs-fence-response;rc=0;".into(),
            "kvs-get" => match kvs.get(&fields["key"]) {
                Some(v) if hydra => format!("cmd=kvs-get-response;found=TRUE;value={v};rc=0;"),
                Some(v) => format!("cmd=kvs-get-response;rc=0;found=TRUE;value={v};"),
                None if hydra => "cmd=kvs-get-response;found=FALSE;rc=0;".into(),
                None => "cmd=kvs-get-response;rc=0;found=FALSE;".into(),
            },
            "finalize" => "cmd=finalize-response;rc=0;".into(),
            other => panic!("the scripted server does not know cmd={other}"),
        };
        if stream.write_all(super::pmi2::frame_body(&body).as_bytes()).is_err() {
            return;
        }
    }
}

/// A PMI-1 client of a scripted server; its reads time out after 2 s.
fn pmi1(script: Script) -> crate::error::Result<Pmi1> {
    let (client, server) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    std::thread::spawn(move || pmi1_server(server, script));
    Pmi1::start(Conn::new(client), &lookup, Duration::from_secs(2), Some(LOOPBACK))
}

fn pmi2(script: Script) -> crate::error::Result<Pmi2> {
    let (client, server) = UnixStream::pair().unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    std::thread::spawn(move || pmi2_server(server, script));
    Pmi2::start(Conn::new(client), &lookup, Duration::from_secs(2), Some(LOOPBACK))
}

fn good(dialect: Dialect) -> Script {
    Script { dialect, fault: Fault::None, vallen_max: 1024 }
}

/// The launcher's own key-value space (`pmi`), and the job's store that
/// rank 0 serves through it (`boot.exchange()`), both work.
fn exchange_works<B: Bootstrap + Exchange>(boot: &mut B, name: &str) {
    assert_eq!((boot.rank(), boot.size()), (0, 1), "{name}");
    assert_eq!(boot.node().as_deref(), Some("pmi-node-0"), "{name}: the process mapping");
    assert_eq!(boot.secret().len(), 32, "{name}");
    assert!(boot.local_ip().is_some(), "{name}: the relay's address");
    boot.put("addr", b"\x00\x01 ;=x").unwrap();
    boot.fence().unwrap();
    assert_eq!(boot.get("addr").unwrap(), b"\x00\x01 ;=x", "{name}");
    let e = boot.get("missing").unwrap_err();
    assert!(e.contains(name) && e.contains("missing"), "{name}: {e}");
    let ex = boot.exchange();
    ex.put("k", b"v").unwrap();
    ex.fence().unwrap();
    assert_eq!(ex.get("k").unwrap(), b"v", "{name}: the relayed store");
    assert_eq!(ex.allgather(0, 1, "all", b"v").unwrap(), vec![b"v".to_vec()], "{name}");
    boot.finalize().unwrap();
}

#[test]
fn pmi1_sets_up_against_hydra_and_slurm() {
    for dialect in [Dialect::Hydra, Dialect::Slurm] {
        let mut boot = pmi1(good(dialect)).unwrap();
        exchange_works(&mut boot, "PMI-1");
    }
}

#[test]
fn pmi2_sets_up_against_hydra_and_slurm() {
    for dialect in [Dialect::Hydra, Dialect::Slurm] {
        let mut boot = pmi2(good(dialect)).unwrap();
        exchange_works(&mut boot, "PMI-2");
    }
}

/// `result` is an error that names the launcher and says `what`, reached
/// well within the client's 2 s of patience.
fn refused<T: std::fmt::Debug>(
    result: Result<T, String>,
    launcher: &str,
    what: &str,
    since: Instant,
) {
    let e = result.unwrap_err();
    assert!(e.contains(launcher) && e.contains(what), "{e:?} should name {launcher} and {what:?}");
    assert!(since.elapsed() < Duration::from_secs(4), "took {:?}", since.elapsed());
}

fn bootstrap_error<T>(r: crate::error::Result<T>) -> Result<T, String> {
    r.map_err(|e| match e {
        Error::Bootstrap(m) => m,
        other => panic!("not a bootstrap error: {other}"),
    })
}

#[test]
fn pmi1_launcher_faults_are_errors_never_hangs() {
    for dialect in [Dialect::Hydra, Dialect::Slurm] {
        let t = Instant::now();
        let died = pmi1(Script { fault: Fault::Die("barrier_in"), ..good(dialect) });
        refused(bootstrap_error(died), "PMI-1", "the connection closed", t);
        let t = Instant::now();
        let garbage = pmi1(Script { fault: Fault::Garbage("get_maxes"), ..good(dialect) });
        refused(bootstrap_error(garbage), "PMI-1", "malformed PMI line", t);
        let t = Instant::now();
        let silent = pmi1(Script { fault: Fault::Silent("get_my_kvsname"), ..good(dialect) });
        refused(bootstrap_error(silent), "PMI-1", "no answer in time", t);
        // Maxima too small for the job's own key-value server's address.
        let t = Instant::now();
        let tiny = pmi1(Script { vallen_max: 33, ..good(dialect) });
        refused(bootstrap_error(tiny), "PMI-1", "vallen_max of 32", t);
        let mut small = pmi1(Script { vallen_max: 129, ..good(dialect) }).unwrap();
        let t = Instant::now();
        refused(small.put("big", &[7u8; 65]), "PMI-1", "vallen_max of 128", t);
        refused(small.put(&"k".repeat(64), b"v"), "PMI-1", "keys of 63 bytes", t);
        small.put("fits", &[7u8; 64]).unwrap();
    }
}

#[test]
fn pmi2_launcher_faults_are_errors_never_hangs() {
    for dialect in [Dialect::Hydra, Dialect::Slurm] {
        let t = Instant::now();
        let died = pmi2(Script { fault: Fault::Die("kvs-fence"), ..good(dialect) });
        refused(bootstrap_error(died), "PMI-2", "the connection closed", t);
        let t = Instant::now();
        let garbage = pmi2(Script { fault: Fault::Garbage("fullinit"), ..good(dialect) });
        refused(bootstrap_error(garbage), "PMI-2", "malformed frame length", t);
        let t = Instant::now();
        let silent = pmi2(Script { fault: Fault::Silent("job-getid"), ..good(dialect) });
        refused(bootstrap_error(silent), "PMI-2", "no answer in time", t);
        let mut boot = pmi2(good(dialect)).unwrap();
        let t = Instant::now();
        refused(boot.put("big", &[7u8; 513]), "PMI-2", "longer than PMI-2's 1024", t);
        boot.put("fits", &[7u8; 512]).unwrap();
    }
}

/// Random and mutated launcher lines, frames and process mappings: the
/// parsers answer every one with a value or an error, never a panic, and a
/// mapping they accept places every rank.
#[test]
fn random_launcher_bytes_never_crash_the_parsers() {
    use hpcomm_transport::fuzz::{self, Rng};

    let mut rng = Rng::new(fuzz::seed());
    let seeds = [
        "cmd=get_result rc=0 msg=success value=0aff",
        "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024",
        "cmd=kvs-get-response;rc=0;found=TRUE;value=0aff;",
        "cmd=fullinit-response;rc=0;rank=0;size=1;",
        "(vector,(0,2,4),(2,1,3))",
    ];
    for _ in 0..fuzz::cases(10_000) {
        let mut bytes = seeds[rng.below(seeds.len() as u64) as usize].as_bytes().to_vec();
        rng.mutate(&mut bytes, 3);
        if rng.below(8) == 0 {
            bytes = rng.bytes_below(64);
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = super::pmi1::parse_line(&text);
        let _ = super::pmi2::parse_body(&text);
        let _ = super::pmi1::decode_value(&text);
        let size = rng.below(64) as usize;
        if let Ok(nodes) = super::mapping::nodes_of(&text, size) {
            assert_eq!(nodes.len(), size, "{text:?}");
        }
    }
}

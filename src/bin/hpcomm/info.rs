//! `hpcomm info`: which transports work on this machine, and their limits.

use hpcomm_transport::shm::{Shm, ShmConfig};
use hpcomm_transport::tcp::{Tcp, TcpConfig};
use hpcomm_transport::{Capabilities, Transport};

fn print_caps(caps: &Capabilities) {
    println!("    frame payload  {} B (header {} B)", caps.max_payload, caps.max_header);
    println!("    inline limit   {} B", caps.inline_limit);
    println!("    eager limit    {} B", caps.eager_limit);
    println!(
        "    rendezvous     {}",
        if caps.rma_read {
            "single copy (the receiver reads the sender's buffer)"
        } else {
            "pipelined copy"
        }
    );
    println!(
        "    ordered        {}",
        if caps.ordered { "yes" } else { "no (the runtime restores order)" }
    );
}

fn ptrace_scope() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(v) => v.trim().to_string(),
        Err(_) => "not present (no Yama)".into(),
    }
}

/// Prints the report; returns the exit code.
pub fn info() -> i32 {
    println!("hpcomm {}", env!("CARGO_PKG_VERSION"));
    println!("transports:");
    println!("  loopback: available (ranks as threads of one process: hpcomm::threads)");
    let loopback = hpcomm_transport::loopback::Loopback::fabric(1, Default::default());
    print_caps(loopback[0].capabilities());
    match Shm::local_job(2, &ShmConfig::default()) {
        Ok(job) => {
            println!("  shm: available (processes on this host)");
            print_caps(job[0].capabilities());
            println!("    ptrace scope   {}", ptrace_scope());
        }
        Err(e) => println!("  shm: unavailable: {e}"),
    }
    let tcp = TcpConfig { secret: "info".into(), ..TcpConfig::default() };
    match Tcp::local_job(2, &tcp) {
        Ok(job) => {
            println!("  tcp: available (processes on any hosts; checked over 127.0.0.1)");
            print_caps(job[0].capabilities());
            println!("    stripes        1 per pair by default (HPCOMM_TCP_STRIPES)");
        }
        Err(e) => println!("  tcp: unavailable: {e}"),
    }
    println!("  ofi: not part of this build yet");
    println!(
        "hpcomm run --transport auto uses: shm between the ranks of a host, tcp between hosts"
    );
    0
}

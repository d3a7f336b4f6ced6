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

/// The libfabric part: the library, its RDM providers, and the one
/// `--transport ofi` would use with the current settings.
fn ofi() {
    use hpcomm_transport::ofi::{self, Ofi, OfiConfig};
    let library = match ofi::library() {
        Ok(library) => library,
        Err(e) => {
            println!("  ofi: unavailable: {e}");
            return;
        }
    };
    let (major, minor) = library.version;
    let (api_major, api_minor) = library.api;
    println!(
        "  ofi: libfabric {major}.{minor} from {} (API {api_major}.{api_minor} asked for; HPCOMM_LIBFABRIC to change)",
        library.path
    );
    let fork: Vec<String> = ["FI_EFA_FORK_SAFE", "RDMAV_FORK_SAFE"]
        .iter()
        .map(|v| format!("{v}={}", std::env::var(v).unwrap_or_default()))
        .collect();
    println!("    fork safety    {}", fork.join(" "));
    match ofi::providers() {
        Ok(list) if list.is_empty() => println!("    no RDM provider found"),
        Ok(list) => {
            println!("    RDM providers (libfabric's order of preference):");
            for p in list {
                let max = match p.max_msg_size {
                    m if m >= 1 << 48 => "any size".to_string(),
                    m => format!("up to {m} B"),
                };
                println!(
                    "      {:<14} {:<16} {:<6} inject {:>6} B, messages {max}, reads {}, mr_mode {:#x}",
                    p.name,
                    p.fabric,
                    p.domain,
                    p.inject_size,
                    if p.rma { "yes" } else { "no" },
                    p.mr_mode
                );
            }
        }
        Err(e) => println!("    cannot list providers: {e}"),
    }
    let config = OfiConfig {
        provider: std::env::var("HPCOMM_OFI_PROVIDER").ok().filter(|p| !p.is_empty()),
        efa_mr_mode: std::env::var("HPCOMM_OFI_MR_MODE").is_ok_and(|m| m == "efa"),
        ..OfiConfig::default()
    };
    match Ofi::local_job(1, &config) {
        Ok(job) => {
            println!(
                "    chosen: {}, mr_mode {:#x} (HPCOMM_OFI_PROVIDER or FI_PROVIDER to change)",
                job[0].provider(),
                job[0].mr_mode()
            );
            let reads = match job[0].emulated_reads() {
                Some(true) => "emulated by the provider (no RDMA read on this device): not used",
                Some(false) => "by the device",
                None => "as the provider offers them (it does not say whether they are emulated)",
            };
            println!("    reads          {reads}");
            print_caps(job[0].capabilities());
        }
        Err(e) => println!("    unusable: {e}"),
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
    ofi();
    println!(
        "hpcomm run --transport auto uses: shm between the ranks of a host, tcp between hosts"
    );
    bootstrap();
    0
}

/// Which launcher `hpcomm::init()` would join here, and what each needs.
fn bootstrap() {
    use hpcomm_runtime::bootstrap::{detect, Kind};
    println!("bootstrap (how hpcomm::init() joins a job; HPCOMM_BOOTSTRAP forces one):");
    match detect(&|name: &str| std::env::var(name).ok()) {
        Ok(kind) => println!("  this environment: {} ({})", kind.name(), kind.describe()),
        Err(e) => println!("  this environment: none that works: {e}"),
    }
    for kind in [Kind::Hpcomm, Kind::Pmix, Kind::Pmi2, Kind::Pmi1] {
        let needs = match kind {
            Kind::Pmix => match hpcomm_transport::pmix::probe() {
                Ok(path) => format!("the PMIx client library: {path}"),
                Err(e) => format!("the PMIx client library: not found ({e})"),
            },
            Kind::Hpcomm => "nothing: built in".into(),
            _ => "nothing: the wire protocol is built in".into(),
        };
        println!("  {:<10} {:<42} needs {needs}", kind.name(), kind.describe());
    }
}

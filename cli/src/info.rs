//! `hpcomm info`: which transports work on this machine, and their limits.

use hpcomm_transport::backend::{self, Kind, Settings};
use hpcomm_transport::Capabilities;

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
    let windows = match (caps.rma_read && caps.reads_from_outside, caps.rma_write) {
        (true, true) => "large gets and puts one-sided (the owner takes no part)",
        (true, false) => "large gets one-sided; puts served by the owner",
        (false, _) => "served by the owner's progress",
    };
    println!("    windows        {windows}");
    println!(
        "    ordered        {}",
        if caps.ordered { "yes" } else { "no (the runtime restores order)" }
    );
}

/// Prints the report; returns the exit code.
pub fn info() -> i32 {
    println!("hpcomm {}", env!("CARGO_PKG_VERSION"));
    let settings = match Settings::from_lookup(&|name: &str| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(e) => {
            println!("settings: {e}; showing the defaults");
            Settings::default()
        }
    };
    println!("transports:");
    for kind in Kind::ALL {
        let probe = backend::probe(kind, &settings);
        match &probe.status {
            Ok(_) => println!("  {}: available ({})", kind.name(), kind.reach()),
            Err(e) => println!("  {}: unavailable: {e}", kind.name()),
        }
        for note in &probe.notes {
            println!("    {note}");
        }
        if let Ok(caps) = &probe.status {
            print_caps(caps);
        }
    }
    let network = match settings.auto_network {
        Some(kind) => format!("{} (HPCOMM_AUTO_NETWORK)", kind.name()),
        None if hpcomm_transport::ofi::kernel_bypass_present() => {
            "ofi (a kernel-bypass provider is present; tcp if some rank has none)".into()
        }
        None => "tcp (no kernel-bypass provider here)".into(),
    };
    println!("hpcomm run --transport auto uses: shm between the ranks of a host, {network} between hosts");
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

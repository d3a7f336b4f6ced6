//! The transport conformance suite over the hybrid backend, with the ranks
//! of one process spread over pretend nodes so that both of its routes are
//! exercised: ranks 0 and 1 on one node (shm) and rank 2 on another (the
//! network: tcp, or ofi over `tcp;ofi_rxm` standing in for EFA); and the
//! layout that puts every other rank on a node of its own.

use hpcomm_transport::backend::{Kind, Settings};
use hpcomm_transport::conformance;
use hpcomm_transport::hybrid::Hybrid;
use hpcomm_transport::ofi::OfiConfig;
use hpcomm_transport::tcp::TcpConfig;
use hpcomm_transport::{PeerId, Transport};

/// One libfabric job at a time in this process (see conformance_ofi.rs).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn over(network: Kind) -> Settings {
    Settings {
        tcp: TcpConfig { secret: "conformance".into(), ..TcpConfig::default() },
        ofi: OfiConfig { provider: Some("tcp;ofi_rxm".into()), ..OfiConfig::default() },
        auto_network: Some(network),
        ..Settings::default()
    }
}

fn suite(network: Kind, node: fn(usize) -> String) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let settings = over(network);
    conformance::run_all(|n| Hybrid::local_job(n, node, &settings).expect("hybrid job"));
}

/// Nodes of two ranks: with 2 ranks every frame and read goes through shm;
/// with 3, rank 2 is remote — lost-peer reports come over tcp.
#[test]
fn hybrid_pairs_per_node() {
    suite(Kind::Tcp, |r| format!("node{}", r / 2));
}

/// Ranks 0 and 2 share a node, rank 1 is alone: 2-rank checks run over tcp,
/// and the lost peer of the 3-rank check is an shm peer.
#[test]
fn hybrid_alternating_nodes() {
    suite(Kind::Tcp, |r| format!("node{}", r % 2));
}

/// shm within a node and ofi between nodes, as EFA jobs run, with
/// `tcp;ofi_rxm` standing in for EFA.
#[test]
fn hybrid_over_ofi_pairs_per_node() {
    suite(Kind::Ofi, |r| format!("node{}", r / 2));
}

#[test]
fn hybrid_over_ofi_alternating_nodes() {
    suite(Kind::Ofi, |r| format!("node{}", r % 2));
}

/// Each peer's capabilities are those of the backend that reaches it, with
/// no reads between nodes (one key cannot serve both kinds of reader).
#[test]
fn peers_get_their_route_capabilities() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for network in [Kind::Tcp, Kind::Ofi] {
        let eps =
            Hybrid::local_job(4, |r| format!("node{}", r % 2), &over(network)).expect("hybrid job");
        for (me, ep) in eps.iter().enumerate() {
            assert_eq!(ep.capabilities().name, format!("shm+{}", network.name()));
            assert_eq!(ep.network(), network.name());
            assert_eq!(ep.local_ranks(), 2);
            for peer in 0..4 {
                let caps = ep.peer_capabilities(PeerId(peer as u32));
                let want = if peer % 2 == me % 2 { "shm" } else { network.name() };
                assert_eq!(caps.name, want, "rank {me} to {peer}");
                assert!(caps.name == "shm" || !caps.rma_read, "no reads between nodes");
            }
        }
    }
}

//! The transport conformance suite over the hybrid backend, with the ranks
//! of one process spread over pretend nodes so that both of its routes are
//! exercised: ranks 0 and 1 on one node (shm) and rank 2 on another (tcp);
//! and the layout that puts every other rank on a node of its own.

use hpcomm_transport::conformance;
use hpcomm_transport::hybrid::Hybrid;
use hpcomm_transport::shm::ShmConfig;
use hpcomm_transport::tcp::TcpConfig;
use hpcomm_transport::{PeerId, Transport};

fn tcp() -> TcpConfig {
    TcpConfig { secret: "conformance".into(), ..TcpConfig::default() }
}

/// Nodes of two ranks: with 2 ranks every frame and read goes through shm;
/// with 3, rank 2 is remote — lost-peer reports come over tcp.
#[test]
fn hybrid_pairs_per_node() {
    conformance::run_all(|n| {
        Hybrid::local_job(n, |r| format!("node{}", r / 2), &ShmConfig::default(), &tcp())
            .expect("hybrid job")
    });
}

/// Ranks 0 and 2 share a node, rank 1 is alone: 2-rank checks run over tcp,
/// and the lost peer of the 3-rank check is an shm peer.
#[test]
fn hybrid_alternating_nodes() {
    conformance::run_all(|n| {
        Hybrid::local_job(n, |r| format!("node{}", r % 2), &ShmConfig::default(), &tcp())
            .expect("hybrid job")
    });
}

/// Each peer's capabilities are those of the backend that reaches it.
#[test]
fn peers_get_their_route_capabilities() {
    let eps = Hybrid::local_job(4, |r| format!("node{}", r % 2), &ShmConfig::default(), &tcp())
        .expect("hybrid job");
    for (me, ep) in eps.iter().enumerate() {
        assert_eq!(ep.capabilities().name, "shm+tcp");
        assert_eq!(ep.local_ranks(), 2);
        for peer in 0..4 {
            let name = ep.peer_capabilities(PeerId(peer as u32)).name;
            let want = if peer % 2 == me % 2 { "shm" } else { "tcp" };
            assert_eq!(name, want, "rank {me} to {peer}");
        }
    }
}

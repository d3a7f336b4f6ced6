//! Threads: what a universe and its communicators may do across threads,
//! checked by the compiler, and a universe moved to another thread. The
//! endpoint cases (threads exchanging at once, an endpoint used from a
//! second thread) are in `hpcomm_cli::selftest` (run by `p2p.rs` and
//! `launcher.rs`).

mod common;

use common::watchdog;
use hpcomm::{
    Communicator, Endpoint, Group, Message, PersistentRecv, PersistentSend, Request, Universe,
};

/// Compiles only if every type the API hands out moves between threads:
/// a universe and everything it made can go to another thread together.
#[allow(dead_code)]
fn everything_a_universe_makes_is_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Universe>();
    send::<Communicator>();
    sync::<Communicator>();
    send::<Endpoint>();
    send::<Group>();
    send::<Message<'static>>();
    send::<Request<'static>>();
    send::<PersistentSend<'static, f64>>();
    send::<PersistentRecv<'static, f64>>();
    send::<hpcomm::Error>();
}

/// A universe made on one thread is used and finalized on another.
#[test]
fn a_universe_moves_to_another_thread() {
    watchdog(60, "moved universe", || {
        let universe = hpcomm::init().expect("a singleton");
        let world = universe.world().dup().expect("a duplicate");
        let moved = std::thread::spawn(move || {
            let comm = universe.world();
            let mut got = [0u32; 3];
            comm.sendrecv(&[1u32, 2, 3], 0, 5, &mut got, 0, 5).expect("to itself");
            let dup_size = world.size();
            drop(world);
            universe.finalize().expect("finalized on the other thread");
            (got, dup_size)
        });
        assert_eq!(moved.join().expect("no panic"), ([1, 2, 3], 1));
    });
}

//! A hostile or broken peer against a window's server: whatever it sends on
//! the window's tags, the target's window fails with an error at its next
//! synchronisation — no panic, no write outside the window, no rank left
//! waiting — and the communicator still works afterwards.

use std::sync::mpsc;
use std::time::Duration;

use hpcomm_runtime::{Communicator, Error};

use super::wire::{Kind, LockKind, Request, Then, HEADER_LEN, INLINE_MAX};
use super::{OpCode, Window};
use crate::Collectives;

/// Fails the test binary if `f` takes longer than `secs`: a hang fails.
fn watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("watchdog: a window test hung");
            std::process::exit(3);
        }
        _ => t.join().unwrap(),
    }
}

fn header(kind: Kind, inline: bool, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    Request { kind, inline, then: Then::Nothing, offset, len }.encode(&mut out);
    out
}

/// Requests a correct origin never sends.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    let mut inline_put = header(Kind::Put, true, 8, 4);
    inline_put.extend_from_slice(&[1, 2, 3, 4]);
    let mut past_end = header(Kind::Put, true, 64, 8);
    past_end.extend_from_slice(&[9; 8]);
    let mut wraps = header(Kind::Put, true, u64::MAX - 3, 8);
    wraps.extend_from_slice(&[9; 8]);
    let mut float_bits = header(Kind::Accumulate(OpCode::BitAnd), true, 0, 8);
    float_bits.extend_from_slice(&[0; 8]);
    let mut version = header(Kind::Flush, false, 0, 0);
    version[0] = 9;
    let mut get_then = header(Kind::Get, false, 0, 8);
    get_then[4] = 1;
    let mut put_unlock = header(Kind::Put, true, 0, 8);
    put_unlock[4] = 2;
    put_unlock.extend_from_slice(&[5; 8]);
    vec![
        ("empty", vec![]),
        ("truncated header", vec![1, 1, 0]),
        ("bad version", version),
        ("a partial element", inline_put),
        ("past the window's end", past_end),
        ("an offset that wraps", wraps),
        ("a get past the end", header(Kind::Get, false, 0, 1 << 40)),
        ("longer than any request", vec![0; HEADER_LEN + INLINE_MAX + 1]),
        ("an unlock without a lock", header(Kind::Unlock, false, 0, 0)),
        ("a follow-up on a get", get_then),
        ("a put's unlock without a lock", put_unlock),
        ("a second lock", header(Kind::Lock(LockKind::Shared), false, 0, 0)),
        ("a bitwise operation on floats", float_bits),
    ]
}

fn attack(comm: &Communicator, case: usize, what: &str, bytes: &[u8]) {
    let mut memory = [1.5f64; 8];
    let canary = [7.0f64; 4];
    let (me, n) = (comm.rank(), comm.size());
    let outcome = comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        let raw = comm.collective_comm();
        if me == 1 {
            if what == "a second lock" {
                raw.send(
                    &header(Kind::Lock(LockKind::Shared), false, 0, 0)[..],
                    0,
                    win.tags.request,
                )?;
                let mut granted = [0u8; 8];
                raw.recv(&mut granted, 0, win.tags.reply)?;
            }
            if what == "a second lock" && n > 2 {
                comm.send(&[0u8], 2, 0)?;
            }
            raw.send(bytes, 0, win.tags.request)?;
        }
        if me == 2 && what == "a second lock" {
            // Waiting for a lock that rank 1 holds when it fails the window:
            // told so, not left waiting.
            comm.recv(&mut [0u8], 1, 0)?;
            let waited = win.lock(LockKind::Exclusive, 0);
            assert!(matches!(waited, Err(Error::Protocol(_))), "{waited:?}");
            let fenced = win.fence();
            let freed = win.free();
            assert!(fenced.is_err() || freed.is_err());
            return Ok((Ok(()), Ok(())));
        }
        let fenced = win.fence();
        let freed = win.free();
        Ok((fenced, freed))
    });
    let (fenced, freed) = outcome.unwrap_or_else(|e| panic!("case {case} ({what}): scope {e}"));
    if me == 0 {
        let said = format!("{fenced:?} {freed:?}");
        assert!(matches!(fenced, Err(Error::Protocol(_))), "{what}: {said}");
        assert!(said.contains("rank 1"), "{what}: the error names the origin: {said}");
        assert!(freed.is_err(), "{what}: free reports the failure too");
        assert_eq!(memory, [1.5; 8], "{what}: the window was written");
    } else {
        assert_eq!(fenced, Ok(()), "{what} on rank {me}");
        assert_eq!(freed, Ok(()), "{what} on rank {me}");
    }
    assert_eq!(canary, [7.0; 4]);
    // The communicator still works.
    let mut all = vec![0usize; n];
    comm.all_gather(&[me], &mut all).unwrap();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
}

#[test]
fn a_hostile_origin_fails_the_window_and_nothing_else() {
    watchdog(120, || {
        hpcomm_runtime::threads(3, |comm| {
            for (case, (what, bytes)) in malformed().iter().enumerate() {
                attack(comm, case, what, bytes);
            }
        })
        .unwrap();
    });
}

/// Loopback reads a peer's memory from inside the process, where a read
/// racing a write to the window would be a data race: its windows are
/// never read directly, with reads on or off (`rma-passive` in the
/// self-test checks direct reads over shm processes).
#[test]
fn loopback_windows_are_served_not_read() {
    watchdog(120, || {
        for rma_read in [true, false] {
            let config = hpcomm_runtime::ThreadsConfig {
                loopback: hpcomm_transport::loopback::LoopbackConfig {
                    rma_read,
                    ..Default::default()
                },
                ..Default::default()
            };
            hpcomm_runtime::threads_with(2, &config, |comm| {
                let mut memory = [comm.rank() as u8; 8];
                comm.scope(|s| {
                    let win = Window::create(s, &mut memory)?;
                    assert!(!win.reads_directly(1 - comm.rank()));
                    win.fence()?;
                    let mut got = [0u8; 8];
                    win.get(&mut got, 1 - comm.rank(), 0)?;
                    assert_eq!(got, [1 - comm.rank() as u8; 8]);
                    win.free()
                })
                .unwrap();
            })
            .unwrap();
        }
    });
}

#[test]
fn a_window_of_zero_sized_elements_is_refused() {
    watchdog(60, || {
        hpcomm_runtime::threads(2, |comm| {
            let mut nothing = [[0u8; 0]; 4];
            let made = comm.scope(|s| Window::create(s, &mut nothing).map(|_| ()));
            assert!(matches!(made, Err(Error::InvalidCount(_))), "{made:?}");
            // Nothing collective started: the communicator goes on.
            comm.barrier().unwrap();
        })
        .unwrap();
    });
}

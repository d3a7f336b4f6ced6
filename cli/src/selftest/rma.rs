//! One-sided windows, after MPICH's `rma` tests: fence epochs at every
//! protocol's sizes, exclusive locks guarding read-modify-writes, every
//! accumulate operation, a 4 MiB get, and misuse as errors.

use hpcomm::op::{BitAnd, BitOr, BitXor, LogicalAnd, LogicalOr, Max, Min, Operation, Prod, Sum};
use hpcomm::window::{Accumulate, LockKind, Replace, Window, WindowOp};
use hpcomm::{Collectives, Communicator, Error};

/// The value rank `rank` writes at element `k` in round `round`.
fn value(rank: usize, round: usize, k: usize) -> u64 {
    (rank as u64) << 48 | (round as u64) << 32 | k as u64
}

/// Fence epochs: in each, every rank puts a block into every rank's window
/// (its own included) at lengths from one element to past the rendezvous
/// threshold, then reads its left neighbour's window back with gets in the
/// next epoch; the window's memory holds the last epoch's blocks after it.
pub(super) fn fence_epochs(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let eager = comm.eager_limit() / 8;
    let lens = [1, 511, 512, eager + 1, 1 << 16];
    let block = *lens.iter().max().unwrap();
    let mut memory = vec![0u64; n * block];
    comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        assert_eq!(win.len_of(n - 1), Some(n * block));
        win.fence()?;
        for (round, &len) in lens.iter().enumerate() {
            let data: Vec<u64> = (0..len).map(|k| value(me, round, k)).collect();
            for target in 0..n {
                win.put(&data, target, me * block)?;
            }
            win.fence()?;
            let left = (me + n - 1) % n;
            let mut back = vec![0u64; len];
            for origin in 0..n {
                win.get(&mut back, left, origin * block)?;
                let want = (0..len).map(|k| value(origin, round, k));
                assert!(back.iter().copied().eq(want), "round {round}: rank {origin}'s block");
            }
            win.fence()?;
        }
        win.free()
    })
    .unwrap();
    let last = lens.len() - 1;
    for origin in 0..n {
        let got = &memory[origin * block..][..block];
        assert!(got.iter().enumerate().all(|(k, &v)| v == value(origin, last, k)));
    }
}

/// Every rank increments rank 0's counter 1,000 times as a get and a put
/// under an exclusive lock (a lost update shows if two ranks ever hold it
/// at once), and another 1,000 times as accumulates in one shared epoch
/// with every rank (a lost update shows if accumulates are not atomic).
pub(super) fn lock_counters(comm: &Communicator) {
    let n = comm.size() as u64;
    let rounds: u64 = 1000;
    let mut counters = [0u64; 2];
    comm.scope(|s| {
        let win = Window::create(s, &mut counters)?;
        for _ in 0..rounds {
            win.lock(LockKind::Exclusive, 0)?;
            let mut c = [0u64];
            win.get(&mut c, 0, 0)?;
            win.put(&[c[0] + 1], 0, 0)?;
            win.unlock(0)?;
        }
        // Accumulates in one shared epoch, all ranks at once.
        win.lock(LockKind::Shared, 0)?;
        for _ in 0..rounds {
            win.accumulate(&[1], 0, 1, Sum)?;
        }
        win.unlock(0)?;
        // Everyone is done once the fence passes.
        win.fence()?;
        let mut both = [0u64; 2];
        win.get(&mut both, 0, 0)?;
        assert_eq!(both, [n * rounds; 2]);
        win.fence()?;
        // Flush inside a lock completes what came before it.
        win.lock_all()?;
        win.accumulate(&[1], 0, 1, Sum)?;
        win.flush_all()?;
        win.unlock_all()?;
        win.fence()?;
        win.get(&mut both, 0, 0)?;
        assert_eq!(both, [n * rounds, n * rounds + n]);
        win.free()
    })
    .unwrap();
    if comm.rank() == 0 {
        assert_eq!(counters, [n * rounds, n * rounds + n]);
    }
}

/// Every rank accumulates into every rank's window with `op`; the result
/// is checked against the same combination done locally, in rank order for
/// `Replace` (whose result depends on the order, so each rank writes its
/// own slot).
fn accumulate_with<T, O>(comm: &Communicator, op: O, start: T, of: impl Fn(usize, usize) -> T)
where
    T: Accumulate + PartialEq + std::fmt::Debug,
    O: Operation<T> + WindowOp + Copy,
{
    let (me, n) = (comm.rank(), comm.size());
    let len = 700; // past the inline data of a request on some settings
    let mut memory = vec![start; len];
    let mine: Vec<T> = (0..len).map(|k| of(me, k)).collect();
    comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        win.fence()?;
        for target in 0..n {
            win.accumulate(&mine, target, 0, op)?;
        }
        win.fence()?;
        win.free()
    })
    .unwrap();
    let mut want = vec![start; len];
    for rank in 0..n {
        let theirs: Vec<T> = (0..len).map(|k| of(rank, k)).collect();
        op.apply(&mut want, &theirs, true);
    }
    if O::CODE == Replace::CODE {
        // Some rank's data won, whole or element by element.
        assert!(memory.iter().enumerate().all(|(k, v)| (0..n).any(|r| *v == of(r, k))));
    } else {
        assert_eq!(memory, want, "{:?}", O::CODE);
    }
}

/// Accumulate with every operation, on integers and floats (integers that
/// floats hold exactly, so that the order of the sums does not matter).
pub(super) fn accumulate_every_op(comm: &Communicator) {
    let bits = |r: usize, k: usize| ((r * 7 + k) % 64) as u32 | 1 << (r % 5 + 8);
    accumulate_with(comm, Sum, 0u32, bits);
    accumulate_with(comm, Prod, 1u32, |r, k| (r + k) as u32 % 3 + 1);
    accumulate_with(comm, Min, u32::MAX, bits);
    accumulate_with(comm, Max, 0u32, bits);
    accumulate_with(comm, BitAnd, u32::MAX, bits);
    accumulate_with(comm, BitOr, 0u32, bits);
    accumulate_with(comm, BitXor, 0u32, bits);
    accumulate_with(comm, LogicalAnd, 1i64, |r, k| ((r + k) % 4) as i64);
    accumulate_with(comm, LogicalOr, 0i64, |r, k| ((r * k) % 3 == 1) as i64);
    accumulate_with(comm, Replace, 0u32, bits);
    accumulate_with(comm, Sum, 0.5f64, |r, k| (r * 1000 + k) as f64);
    accumulate_with(comm, Prod, 1.0f64, |r, k| ((r + k) % 3 + 1) as f64);
    accumulate_with(comm, Min, f64::MAX, |r, k| ((r * 31 + k) % 97) as f64 - 40.0);
    accumulate_with(comm, Max, f64::MIN, |r, k| ((r * 31 + k) % 97) as f64 - 40.0);
    accumulate_with(comm, Replace, 0.0f64, |r, k| (r * k) as f64);
}

/// A 4 MiB get from the right neighbour, and a 4 MiB put back into it.
pub(super) fn large_get(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let right = (me + 1) % n;
    const LEN: usize = 1 << 19; // u64s: 4 MiB
    let mut memory: Vec<u64> = (0..LEN).map(|k| value(me, 0, k)).collect();
    let mut got = vec![0u64; LEN];
    comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        win.lock(LockKind::Shared, right)?;
        win.get(&mut got, right, 0)?;
        win.unlock(right)?;
        assert!(got.iter().enumerate().all(|(k, &v)| v == value(right, 0, k)));
        win.fence()?;
        let back: Vec<u64> = (0..LEN).map(|k| value(me, 1, k)).collect();
        win.put(&back, right, 0)?;
        win.fence()?;
        win.free()
    })
    .unwrap();
    let left = (me + n - 1) % n;
    assert!(memory.iter().enumerate().all(|(k, &v)| v == value(left, 1, k)));
}

/// Misuse is an error before anything is sent, and the window still works
/// after it: accesses out of range and outside an epoch, bad ranks,
/// unbalanced locks, a fence while locked. Windows of different lengths
/// (an empty one on rank 0); a window dropped without `free` is freed; a
/// leaked one ends its scope with an error.
pub(super) fn misuse(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let right = (me + 1) % n;
    let mut memory = vec![0u32; me];
    comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        let sync = |r: hpcomm::Result<()>| assert!(matches!(r, Err(Error::WindowSync(_))), "{r:?}");
        sync(win.put(&[1], right, 0));
        sync(win.get(&mut [0], right, 0));
        sync(win.unlock(right));
        sync(win.flush(right));
        sync(win.unlock_all());
        assert!(matches!(win.put(&[1], n, 0), Err(Error::InvalidRank { .. })));
        win.fence()?;
        let range = |r: hpcomm::Result<()>| assert!(matches!(r, Err(Error::WindowRange { .. })));
        range(win.put(&[1, 2], right, right.saturating_sub(1)));
        range(win.get(&mut [0], right, right));
        range(win.accumulate(&[1], right, usize::MAX / 2, Sum));
        range(win.put(&[1], 0, 0));
        win.put(&[], 0, 0)?;
        if right > 0 {
            win.put(&[7], right, right - 1)?;
        }
        win.lock(LockKind::Shared, right).expect_err("a lock inside a fence epoch with accesses");
        win.fence()?;
        win.lock(LockKind::Shared, right)?;
        sync(win.lock(LockKind::Exclusive, right));
        sync(win.fence());
        win.unlock(right)?;
        win.fence()?;
        win.free()
    })
    .unwrap();
    let left = (me + n - 1) % n;
    if me > 0 {
        assert_eq!(memory[me - 1], 7, "the put from rank {left}");
    }
    // Dropped without free: freed, its operations complete.
    let mut cell = [0u32];
    comm.scope(|s| {
        let win = Window::create(s, &mut cell)?;
        win.fence()?;
        win.accumulate(&[1], 0, 0, Sum)?;
        win.fence()?;
        Ok(())
    })
    .unwrap();
    if me == 0 {
        assert_eq!(cell, [n as u32]);
    }
    // Leaked: the scope ends it with an error instead of waiting forever.
    let leaked = comm.scope(|s| {
        std::mem::forget(Window::create(s, &mut cell)?);
        Ok(())
    });
    assert!(matches!(leaked, Err(Error::WindowSync(_))), "{leaked:?}");
    comm.barrier().unwrap();
}

/// Where the transport reads peers' memory (shm with single-copy reads,
/// libfabric with RDMA reads), a get needs nothing of its target: rank 1
/// reads rank 0's window while rank 0 makes no communication call at all
/// (it waits for a file that rank 1 writes after its get). Where it also
/// writes into peers' memory (shm with single-copy writes), so does a put:
/// rank 1 then writes 1 MiB into rank 0's window and reads it back in the
/// same wait, and rank 0 finds it in its memory afterwards. Elsewhere the
/// window serves gets and puts, and the case checks only that it says so
/// consistently.
pub(super) fn passive_access(comm: &Communicator) {
    let me = comm.rank();
    // 1 MiB: past the eager limit, below which accesses are served anyway.
    const LEN: usize = 1 << 17;
    let mut memory: Vec<u64> = (0..LEN).map(|k| value(me, 7, k)).collect();
    // A file name every rank agrees on: rank 0's process id and time.
    let mut id = [0u64; 2];
    if me == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        id = [u64::from(std::process::id()), nanos];
    }
    comm.broadcast(&mut id, 0).unwrap();
    let marker = std::env::temp_dir().join(format!("hpcomm-rma-{}-{}", id[0], id[1]));
    let mut direct = [0u8; 2];
    comm.scope(|s| {
        let win = Window::create(s, &mut memory)?;
        if me == 1 {
            direct = [u8::from(win.reads_directly(0)), u8::from(win.writes_directly(0))];
            assert!(direct[1] <= direct[0], "a window written but not read directly");
        }
        comm.broadcast(&mut direct, 1.min(comm.size() - 1))?;
        win.fence()?;
        if direct[0] == 1 {
            if me == 0 {
                let start = std::time::Instant::now();
                while !marker.exists() {
                    assert!(start.elapsed().as_secs() < 60, "rank 1's access waited for rank 0");
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let _ = std::fs::remove_file(&marker);
            } else if me == 1 {
                let mut got = vec![0u64; LEN];
                win.get(&mut got, 0, 0)?;
                assert!(got.iter().enumerate().all(|(k, &v)| v == value(0, 7, k)));
                if direct[1] == 1 {
                    let data: Vec<u64> = (0..LEN).map(|k| value(1, 8, k)).collect();
                    win.put(&data, 0, 0)?;
                    win.get(&mut got, 0, 0)?;
                    assert!(got == data, "a direct put did not land before the get after it");
                }
                std::fs::write(&marker, b"done").expect("the marker file");
            }
        }
        win.fence()?;
        win.free()
    })
    .unwrap();
    if me == 0 && direct[1] == 1 {
        assert!(memory.iter().enumerate().all(|(k, &v)| v == value(1, 8, k)));
    }
}

/// Request-based accesses (`rget`, `rput`): 64 gets in flight at once from
/// the right neighbour at sizes on both sides of the eager limit, then
/// puts from buffers borrowed by the scope, completed at an unlock; a
/// request started in a scope of another communicator is an error.
pub(super) fn requests(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let eager = comm.eager_limit() / 8;
    for len in [0, 1, 100, eager + 3, 1 << 15] {
        let mut memory: Vec<u64> = (0..64 * len).map(|k| value(me, 3, k)).collect();
        let mut got = vec![0u64; 64 * len];
        let out: Vec<u64> = (0..64 * len).map(|k| value(me, 4, k)).collect();
        comm.scope(|s| {
            let win = Window::create(s, &mut memory)?;
            win.lock(LockKind::Shared, right)?;
            // Empty, the one request moves nothing and completes.
            let gets = match len {
                0 => vec![win.rget(s, &mut got[..], right, 0)?],
                _ => got
                    .chunks_mut(len)
                    .enumerate()
                    .map(|(i, block)| win.rget(s, block, right, i * len))
                    .collect::<hpcomm::Result<Vec<_>>>()?,
            };
            for r in gets {
                r.wait()?;
            }
            win.unlock(right)?;
            win.fence()?;
            win.lock(LockKind::Exclusive, right)?;
            let puts = match len {
                0 => vec![win.rput(s, &out[..], right, 0)?],
                _ => out
                    .chunks(len)
                    .enumerate()
                    .map(|(i, block)| win.rput(s, block, right, i * len))
                    .collect::<hpcomm::Result<Vec<_>>>()?,
            };
            win.unlock(right)?;
            for r in puts {
                r.wait()?;
            }
            let other = comm.dup()?;
            let mut spare = [0u64];
            other.scope(|t| {
                let r = win.rget(t, &mut spare, right, 0);
                assert!(matches!(r, Err(Error::InvalidRequest(_))), "{r:?}");
                Ok(())
            })?;
            win.fence()?;
            win.free()
        })
        .unwrap();
        assert!(got.iter().enumerate().all(|(k, &v)| v == value(right, 3, k)), "len {len}");
        assert!(memory.iter().enumerate().all(|(k, &v)| v == value(left, 4, k)), "len {len}");
    }
}

/// Windows the runtime allocates (`Window::allocate`), held in a program's
/// state beyond any scope: zeroed at first; every rank puts a block past
/// the eager limit into every rank's window (one-sided writes into the
/// runtime's memory where the transport has them) and accumulates into a
/// counter; `into_vec` gives each rank's memory back as the last epoch
/// left it. A window over a borrowed buffer refuses `into_vec`; sizes that
/// cannot be allocated (an overflow on rank 0, too much memory on rank 1)
/// fail every rank alike, and the communicator still works, as it does
/// after an allocated window is leaked. A window outlives the communicator
/// it was allocated on.
pub(super) fn allocated(comm: &Communicator) {
    struct State {
        halo: Window<'static, u64>,
        count: Window<'static, u64>,
    }
    let (me, n) = (comm.rank(), comm.size());
    let block = comm.eager_limit() / 8 + 5;
    let state = State {
        halo: Window::allocate(comm, n * block).unwrap(),
        count: Window::allocate(comm, 1).unwrap(),
    };
    assert_eq!(state.halo.len_of(n - 1), Some(n * block));
    state.halo.fence().unwrap();
    let mut mine = vec![1u64; n * block];
    state.halo.get(&mut mine, me, 0).unwrap();
    assert!(mine.iter().all(|&v| v == 0), "allocated memory starts zeroed");
    state.halo.fence().unwrap();
    let data: Vec<u64> = (0..block).map(|k| value(me, 9, k)).collect();
    for target in 0..n {
        state.halo.put(&data, target, me * block).unwrap();
    }
    state.halo.fence().unwrap();
    state.count.fence().unwrap();
    state.count.accumulate(&[me as u64 + 1], 0, 0, Sum).unwrap();
    state.count.fence().unwrap();
    let halo = state.halo.into_vec().unwrap();
    for origin in 0..n {
        let got = &halo[origin * block..][..block];
        assert!(got.iter().enumerate().all(|(k, &v)| v == value(origin, 9, k)), "rank {origin}");
    }
    let total = if me == 0 { n * (n + 1) / 2 } else { 0 };
    assert_eq!(state.count.into_vec().unwrap(), [total as u64], "rank 0 counts");

    let mut cell = [0u64];
    comm.scope(|s| {
        let win = Window::create(s, &mut cell)?;
        assert!(matches!(win.into_vec(), Err(Error::InvalidRequest(_))));
        Ok(())
    })
    .unwrap();

    let len = match me {
        0 => usize::MAX / 4,
        1 => isize::MAX as usize / 8,
        _ => 4,
    };
    match (Window::<u64>::allocate(comm, len), me) {
        (Err(Error::InvalidCount(_)), 0 | 1) | (Err(Error::CollectiveMismatch(_)), _) => {}
        (other, _) => panic!("rank {me}: {other:?}"),
    }
    // An allocated window outlives the communicator it was made on: the
    // communicator's context stays while the window's server runs on it.
    let dup = comm.dup().unwrap();
    let orphan = Window::<u64>::allocate(&dup, 2).unwrap();
    drop(dup);
    orphan.fence().unwrap();
    orphan.accumulate(&[1, 2], 0, 0, Sum).unwrap();
    orphan.fence().unwrap();
    let got = orphan.into_vec().unwrap();
    assert_eq!(got, if me == 0 { [n as u64, 2 * n as u64] } else { [0, 0] });
    // Leaked, an allocated window's server keeps its memory and runs on;
    // nothing else notices.
    std::mem::forget(Window::<u64>::allocate(comm, 4).unwrap());
    comm.barrier().unwrap();
}

/// Every rank adds 1 to every element of a block of rank 0's window 100
/// times, as a get and a put of the whole block under an exclusive lock;
/// the block is past the eager limit, so that both are one-sided where the
/// transport reads and writes peers' memory. A lost update shows if an
/// unlock ever returned before its put landed, or a get saw a block before
/// the last holder's put.
pub(super) fn lock_large_blocks(comm: &Communicator) {
    let n = comm.size() as u64;
    let rounds = 100;
    let len = comm.eager_limit() / 8 + 3;
    let mut block = vec![0u64; len];
    comm.scope(|s| {
        let win = Window::create(s, &mut block)?;
        let mut mine = vec![0u64; len];
        for _ in 0..rounds {
            win.lock(LockKind::Exclusive, 0)?;
            win.get(&mut mine, 0, 0)?;
            mine.iter_mut().for_each(|v| *v += 1);
            win.put(&mine, 0, 0)?;
            win.unlock(0)?;
        }
        comm.barrier()?;
        win.free()
    })
    .unwrap();
    if comm.rank() == 0 {
        assert!(block.iter().all(|&v| v == n * rounds), "lost updates: {:?}", &block[..4]);
    }
}

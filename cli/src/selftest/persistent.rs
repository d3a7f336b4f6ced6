//! Persistent point-to-point requests: made once, started many times with
//! new data, at every protocol's sizes, and their misuse as errors.

use hpcomm::{Communicator, Error, Rank, Status, Tag};

/// Around a ring, at sizes from empty to rendezvous: a persistent send and
/// receive started five times, each with new data; a synchronous one; a
/// wildcard receive.
pub(super) fn round_trips(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let eager = comm.eager_limit() / 4;
    for (i, len) in [0, 1, eager, eager + 1, 1 << 18].into_iter().enumerate() {
        let tag = i as i32;
        let send = comm.send_init::<u32>(len, right, tag).unwrap();
        let ssend = comm.ssend_init::<u32>(len, right, tag + 100).unwrap();
        let recv = comm.recv_init::<u32>(len, left, tag).unwrap();
        let srecv = comm.recv_init::<u32>(len, left, tag + 100).unwrap();
        let any = comm.recv_init::<u32>(len, Rank::ANY, Tag::ANY).unwrap();
        assert_eq!((send.len(), recv.len()), (len, len));
        let mut out = vec![0u32; len];
        let mut got = vec![0u32; len];
        for step in 0..5u32 {
            let value = |rank: usize, k: usize| (rank as u32) << 24 | step << 20 | k as u32;
            for (k, v) in out.iter_mut().enumerate() {
                *v = value(me, k);
            }
            let synchronous = step % 2 == 1;
            let status = comm
                .scope(|s| {
                    let r = match (step, synchronous) {
                        (4, _) => any.start(s, &mut got)?,
                        (_, true) => srecv.start(s, &mut got)?,
                        (_, false) => recv.start(s, &mut got)?,
                    };
                    let w = match synchronous {
                        true => ssend.start(s, &out)?,
                        false => send.start(s, &out)?,
                    };
                    Ok(hpcomm::wait_all(&mut [r, w])?[0])
                })
                .unwrap();
            let want_tag = if synchronous { tag + 100 } else { tag };
            assert_eq!(
                status,
                Status { source: Rank(left as i32), tag: Tag(want_tag), count: len }
            );
            assert!(
                got.iter().enumerate().all(|(k, &v)| v == value(left, k)),
                "len {len} step {step}"
            );
        }
    }
}

/// Persistent requests with the null process complete at once; bad
/// arguments are errors when the request is made; starting one that is
/// still active, with a buffer of another length or in another
/// communicator's scope is an error, and the request (and communicator)
/// still works afterwards.
pub(super) fn misuse(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let size = n;
    assert!(matches!(comm.send_init::<u8>(1, size, 0), Err(Error::InvalidRank { .. })));
    assert!(matches!(comm.recv_init::<u8>(1, Rank(-7), 0), Err(Error::InvalidRank { .. })));
    assert!(matches!(comm.send_init::<u8>(1, 0, Tag::ANY), Err(Error::InvalidTag { .. })));
    let null = comm.send_init::<u8>(2, Rank::NULL, 0).unwrap();
    let null_recv = comm.recv_init::<u8>(2, Rank::NULL, 0).unwrap();
    let mut buf = [5u8; 2];
    comm.scope(|s| {
        assert_eq!(null.start(s, &[1, 2])?.wait()?, Status::EMPTY);
        assert_eq!(null_recv.start(s, &mut buf)?.wait()?, Status::EMPTY);
        Ok(())
    })
    .unwrap();
    assert_eq!(buf, [5, 5]);

    // A receive that stays active while misused (its message is sent only
    // once this rank says so); then completed.
    let len = comm.eager_limit() + 64;
    let recv = comm.recv_init::<u8>(len, left, 7).unwrap();
    let send = comm.send_init::<u8>(len, right, 7).unwrap();
    let other = comm.dup().unwrap();
    let out = vec![me as u8; len];
    let mut got = vec![0u8; len];
    let mut spare = vec![0u8; len];
    let short = vec![me as u8; len - 1];
    comm.scope(|s| {
        let r = recv.start(s, &mut got)?;
        let again = recv.start(s, &mut spare).err();
        assert!(matches!(again, Some(Error::InvalidRequest(_))), "{again:?}");
        let wrong = send.start(s, &out[1..]).err();
        assert!(matches!(wrong, Some(Error::InvalidCount(_))), "{wrong:?}");
        other
            .scope(|o| {
                let elsewhere = send.start(o, &out).err();
                assert!(matches!(elsewhere, Some(Error::InvalidRequest(_))), "{elsewhere:?}");
                Ok(())
            })
            .unwrap();
        // The go-ahead to the left, which sends to this rank; then the
        // right's, to send to it.
        comm.send(&[1u8], left, 8)?;
        comm.recv(&mut [0u8], right, 8)?;
        let w = send.start(s, &out)?;
        hpcomm::wait_all(&mut [r, w])?;
        Ok(())
    })
    .unwrap();
    assert!(got.iter().all(|&b| b == left as u8));
    // Inactive again: it starts (and a short message fills part of it).
    let short_send = comm.send_init::<u8>(len - 1, right, 7).unwrap();
    comm.scope(|s| {
        let r = recv.start(s, &mut spare)?;
        let w = short_send.start(s, &short)?;
        let statuses = hpcomm::wait_all(&mut [r, w])?;
        assert_eq!(statuses[0].count, len - 1);
        Ok(())
    })
    .unwrap();
    assert!(spare[..len - 1].iter().all(|&b| b == left as u8));
}

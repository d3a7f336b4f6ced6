//! Matched probes and receives into a new vector: a matched message is out
//! of every other receive's reach, comes back when its handle is dropped,
//! and is received whole at every protocol's sizes.

use hpcomm::{Communicator, Error, Rank, Status, Tag};

/// Around a ring: two messages with one tag; the first matched by a probe
/// is not taken by a wildcard receive, which gets the second; the first is
/// then received through its handle (blocking, or `imrecv` in a scope).
/// Dropping a handle puts its message back ahead of the later ones.
pub(super) fn matched_probe(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let eager = comm.eager_limit();
    for (i, len) in [0, 1, eager, eager + 1, 1 << 20].into_iter().enumerate() {
        let first: Vec<u8> = (0..len).map(|k| (k + me) as u8).collect();
        let second = vec![0xEEu8; len + 3];
        let expect: Vec<u8> = (0..len).map(|k| (k + left) as u8).collect();
        comm.scope(|s| {
            let w1 = s.isend(&first, right, 1)?;
            let w2 = s.isend(&second, right, 1)?;
            let (message, status) = comm.mprobe(left, 1)?;
            assert_eq!(status, Status { source: Rank(left as i32), tag: Tag(1), count: len });
            assert_eq!(message.status(), status);
            // The wildcard receive cannot take the matched message.
            let mut other = vec![0u8; len + 3];
            let st = comm.recv(&mut other, Rank::ANY, Tag::ANY)?;
            assert_eq!((st.count, other[..].iter().all(|&b| b == 0xEE)), (len + 3, true));
            let mut got = vec![0u8; len];
            let st = match i % 2 {
                0 => message.recv(&mut got)?,
                _ => comm.scope(|inner| inner.imrecv(message, &mut got)?.wait())?,
            };
            assert_eq!((st.count, st.source), (len, Rank(left as i32)));
            assert!(got == expect, "{len} B through the matched handle");
            hpcomm::wait_all(&mut [w1, w2])?;
            Ok(())
        })
        .unwrap();

        // Dropped unreceived: back ahead of the later message.
        comm.scope(|s| {
            let w1 = s.isend(&first, right, 2)?;
            let w2 = s.isend(&second, right, 2)?;
            let (message, _) = comm.mprobe(left, 2)?;
            drop(message);
            let mut got = vec![0u8; len + 3];
            assert_eq!(comm.recv(&mut got, left, 2)?.count, len, "the dropped one first");
            assert!(got[..len] == expect[..]);
            assert_eq!(comm.recv(&mut got, left, 2)?.count, len + 3);
            hpcomm::wait_all(&mut [w1, w2])?;
            Ok(())
        })
        .unwrap();
    }
}

/// `improbe` finds nothing until the message is there; a matched message
/// received on another communicator is an error and is put back; one
/// longer than the buffer is truncated and consumed; the null process's
/// message is empty.
pub(super) fn matched_edges(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    assert!(comm.improbe(left, 39).unwrap().is_none(), "no message has tag 39");
    let (message, status) = comm.mprobe(Rank::NULL, 3).unwrap();
    assert_eq!((status, message.recv(&mut [0u8; 1]).unwrap()), (Status::EMPTY, Status::EMPTY));
    assert!(matches!(comm.mprobe(Rank(n as i32), 0), Err(Error::InvalidRank { .. })));

    let other = comm.dup().unwrap();
    comm.send(&[me as u32; 3], right, 40).unwrap();
    let message = loop {
        if let Some((message, status)) = comm.improbe(left, 40).unwrap() {
            assert_eq!(status.count, 12);
            break message;
        }
    };
    let mut got = [0u32; 3];
    let refused = other.scope(|s| s.imrecv(message, &mut got).map(|_| ()));
    assert!(matches!(refused, Err(Error::InvalidRequest(_))), "{refused:?}");
    // Put back: an ordinary receive on the right communicator takes it.
    assert_eq!(comm.recv(&mut got, left, 40).unwrap().count, 3);
    assert_eq!(got, [left as u32; 3]);

    comm.send(&[7u8; 10], right, 41).unwrap();
    let (message, _) = comm.mprobe(left, 41).unwrap();
    let short = message.recv(&mut [0u8; 4]);
    assert_eq!(short, Err(Error::Truncated { needed: 10, capacity: 4 }));
    assert!(comm.improbe(left, 41).unwrap().is_none(), "a truncated message is consumed");
}

/// `recv_vec` at every protocol's sizes; a message that is not a whole
/// number of elements is an error and stays to be received otherwise.
pub(super) fn recv_vec(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let (right, left) = ((me + 1) % n, (me + n - 1) % n);
    let eager = comm.eager_limit() / 8;
    for len in [0, 1, eager, eager + 1, 1 << 17] {
        let out: Vec<f64> = (0..len).map(|k| (me * 1_000_000 + k) as f64).collect();
        let (got, status) = comm
            .scope(|s| {
                let w = s.isend(&out, right, 5)?;
                let got = comm.recv_vec::<f64>(Rank::ANY, 5)?;
                w.wait()?;
                Ok(got)
            })
            .unwrap();
        assert_eq!((status.count, status.source), (len, Rank(left as i32)));
        assert!(got.iter().enumerate().all(|(k, &v)| v == (left * 1_000_000 + k) as f64));
    }
    comm.send(&[1u8; 7], right, 6).unwrap();
    let odd = comm.recv_vec::<u32>(left, 6);
    assert_eq!(odd, Err(Error::PartialElement { bytes: 7, elem_size: 4 }));
    let (bytes, status) = comm.recv_vec::<u8>(left, 6).unwrap();
    assert_eq!((bytes, status.count), (vec![1u8; 7], 7));
}

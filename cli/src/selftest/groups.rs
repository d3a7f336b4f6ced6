//! Groups and the communicators made from them: set operations in MPI's
//! orders, rank translation, and `create_group` collective over the
//! group's members only, with disjoint groups made at the same time.

use hpcomm::{Communicator, Error, GroupOrder};

/// Set operations, `incl`, `excl`, `translate_ranks` and `compare` on
/// groups of the communicator, with their errors.
pub(super) fn group_operations(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let world = comm.group();
    assert_eq!((world.size(), world.rank()), (n, Some(me)));
    let all: Vec<usize> = (0..n).collect();
    let evens: Vec<usize> = all.iter().copied().filter(|r| r % 2 == 0).collect();
    let reversed: Vec<usize> = all.iter().rev().copied().collect();
    let even = world.incl(&evens).unwrap();
    let odd = world.excl(&evens).unwrap();
    let back = world.incl(&reversed).unwrap();
    assert_eq!(even.rank(), (me % 2 == 0).then_some(me / 2));
    assert_eq!(odd.rank(), (me % 2 == 1).then_some(me / 2));
    assert_eq!(back.rank(), Some(n - 1 - me));
    // Orders: a union is the first group, then the second's others.
    let u = odd.union(&back);
    let want: Vec<Option<usize>> = all.iter().map(|&r| Some(r)).collect();
    let in_world = u.translate_ranks(&(0..u.size()).collect::<Vec<_>>(), &world).unwrap();
    let mut expect: Vec<usize> = all.iter().copied().filter(|r| r % 2 == 1).collect();
    expect.extend(reversed.iter().filter(|r| *r % 2 == 0));
    assert_eq!(in_world, expect.iter().map(|&r| Some(r)).collect::<Vec<_>>());
    assert_eq!(world.translate_ranks(&all, &world).unwrap(), want);
    // Intersection and difference keep the first group's order.
    let i = back.intersection(&even);
    let ranks = i.translate_ranks(&(0..i.size()).collect::<Vec<_>>(), &world).unwrap();
    let descending: Vec<Option<usize>> = evens.iter().rev().map(|&r| Some(r)).collect();
    assert_eq!(ranks, descending);
    assert_eq!(back.difference(&odd).compare(&i), GroupOrder::Identical);
    assert_eq!(world.difference(&world).size(), 0);
    // Ranks missing from the other group translate to None.
    let t = world.translate_ranks(&all, &even).unwrap();
    assert!(t.iter().enumerate().all(|(r, x)| *x == (r % 2 == 0).then_some(r / 2)));
    assert_eq!(world.compare(&comm.group()), GroupOrder::Identical);
    let similar = if n > 1 { GroupOrder::Similar } else { GroupOrder::Identical };
    assert_eq!(world.compare(&back), similar);
    if n > 1 {
        assert_eq!(world.compare(&even), GroupOrder::Unequal);
    }
    // Errors: a rank outside the group, a rank named twice.
    assert!(matches!(world.incl(&[n]), Err(Error::InvalidGroup(_))));
    assert!(matches!(world.incl(&[0, 0]), Err(Error::InvalidGroup(_))));
    assert!(matches!(world.excl(&[0, n + 3]), Err(Error::InvalidGroup(_))));
    assert!(matches!(world.translate_ranks(&[n], &even), Err(Error::InvalidGroup(_))));
}

/// Sums `me + 1` over `comm` around a ring by point-to-point messages.
fn ring_sum(comm: &Communicator) -> usize {
    let (me, n) = (comm.rank(), comm.size());
    let mut total = me + 1;
    let mut passing = [me + 1];
    for _ in 1..n {
        let mut got = [0usize];
        comm.sendrecv(&passing, (me + 1) % n, 3, &mut got, (me + n - 1) % n, 3).unwrap();
        total += got[0];
        passing = got;
    }
    total
}

/// The even and the odd ranks each make a communicator of their own at the
/// same time, by `create_group` among themselves only; a reversed group
/// ranks in reverse; `create` over everyone; the errors.
pub(super) fn create_group(comm: &Communicator) {
    let (me, n) = (comm.rank(), comm.size());
    let world = comm.group();
    let mine: Vec<usize> = (0..n).filter(|r| r % 2 == me % 2).collect();
    let half = world.incl(&mine).unwrap();
    let sub = comm.create_group(&half, 7).unwrap().expect("a member of its half");
    assert_eq!((sub.size(), sub.rank()), (mine.len(), me / 2));
    let size = mine.len();
    assert_eq!(ring_sum(&sub), size * (size + 1) / 2, "messages inside the new communicator");
    // Not a member: None at once, nothing sent.
    let other: Vec<usize> = (0..n).filter(|r| r % 2 != me % 2).collect();
    if !other.is_empty() {
        assert!(comm.create_group(&world.incl(&other).unwrap(), 7).unwrap().is_none());
    }
    // Group order is rank order.
    let reversed: Vec<usize> = (0..n).rev().collect();
    let back = comm.create_group(&world.incl(&reversed).unwrap(), 8).unwrap().unwrap();
    assert_eq!(back.rank(), n - 1 - me);
    assert_eq!(ring_sum(&back), n * (n + 1) / 2);
    // create: collective over all, the non-members get None.
    let rest = world.excl(&[0]).unwrap();
    let made = comm.create(&rest).unwrap();
    assert_eq!(made.as_ref().map(|c| (c.size(), c.rank())), (me > 0).then(|| (n - 1, me - 1)));
    // A group with a process outside the communicator: an error before
    // anything is sent, on every rank.
    if let Some(sub) = &made {
        assert!(matches!(sub.create_group(&world, 1), Err(Error::InvalidGroup(_))));
    }
    if n >= 2 && me < 2 {
        // Members that disagree on the tag all learn it.
        let pair = world.incl(&[0, 1]).unwrap();
        let mismatch = comm.create_group(&pair, 20 + me as i32).err();
        assert!(matches!(mismatch, Some(Error::CollectiveMismatch(_))), "{mismatch:?}");
        let again = comm.create_group(&pair, 30).unwrap().unwrap();
        assert_eq!(ring_sum(&again), 3);
    }
    assert_eq!(ring_sum(comm), n * (n + 1) / 2, "the parent still works");
}

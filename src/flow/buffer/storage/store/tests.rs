use super::*;
use crate::flow::buffer::storage::ledger::LEDGER_FILE;
use crate::flow::buffer::storage::record::frame_len;

const SMALL: u64 = 1 << 20; // 256 KiB segments

fn payload(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"seq":{seq},"message":"{}"}}"#,
        "x".repeat((seq % 40) as usize)
    )
    .into_bytes()
}

/// Appends `n` records whose payloads name the seqs they should get.
fn append(store: &mut Store, n: u64) -> Range<u64> {
    let mut batch = EncodedBatch::default();
    for seq in store.next_seq()..store.next_seq() + n {
        batch.push(&payload(seq)).unwrap();
    }
    store.append(&batch).unwrap()
}

type Records = Vec<(u64, Vec<u8>)>;

/// Reads everything from `from` on, in calls of `step` records: the
/// records, the corrupt ones counted, the gaps.
fn read_all(store: &mut Store, from: u64, step: usize) -> (Records, u64, Vec<Range<u64>>) {
    let (mut out, mut corrupt, mut gaps, mut at) = (Vec::new(), 0, Vec::new(), from);
    loop {
        let before = out.len();
        let r = store.read(at, step, &mut out);
        corrupt += r.corrupt;
        gaps.extend(r.gaps);
        if out.len() == before && r.next_seq == at {
            return (out, corrupt, gaps);
        }
        at = r.next_seq;
    }
}

fn assert_intact(records: &[(u64, Vec<u8>)]) {
    for (seq, bytes) in records {
        assert_eq!(*bytes, payload(*seq), "seq {seq}");
    }
}

fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(s, _)| *s).collect()
}

#[test]
fn a_new_buffer_starts_at_seq_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p").join("c");
    let (store, opened) = Store::open(&path, SMALL).unwrap();
    assert_eq!(
        (
            opened.next_seq,
            opened.acked_seq,
            opened.events,
            opened.corrupt
        ),
        (1, 0, 0, 0)
    );
    assert_eq!(store.segment_size(), 256 << 10);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn records_come_back_in_order_across_segments_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    for _ in 0..40 {
        append(&mut store, 500);
    }
    assert_eq!(store.sync().unwrap(), 20_000);
    assert!(
        store.segment_count() > 4,
        "{} segments",
        store.segment_count()
    );
    let on_disk: u64 = segment::list(dir.path())
        .unwrap()
        .iter()
        .map(|s| s.len)
        .sum();
    assert_eq!(store.bytes(), on_disk);
    assert_eq!(store.events(), 20_000);
    let (records, corrupt, gaps) = read_all(&mut store, 1, 333);
    assert_eq!(seqs(&records), (1..=20_000).collect::<Vec<_>>());
    assert_intact(&records);
    assert_eq!((corrupt, gaps.len()), (0, 0));
    drop(store);
    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.next_seq, opened.events, opened.corrupt, opened.bytes),
        (20_001, 20_000, 0, on_disk)
    );
    assert_eq!(append(&mut store, 10), 20_001..20_011);
    let (records, ..) = read_all(&mut store, 19_990, 1000);
    assert_eq!(seqs(&records), (19_990..20_011).collect::<Vec<_>>());
}

#[test]
fn a_reader_follows_the_writer_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    let (mut at, mut got) = (1, Vec::new());
    for round in 0..300 {
        append(&mut store, 37);
        if round % 3 == 0 {
            store.sync().unwrap();
        }
        let r = store.read(at, 50, &mut got);
        assert!(r.gaps.is_empty());
        at = r.next_seq;
    }
    let r = store.read(at, usize::MAX, &mut got);
    assert_eq!(r.next_seq, store.next_seq());
    assert_eq!(seqs(&got), (1..=300 * 37).collect::<Vec<_>>());
    assert_intact(&got);
    assert!(store.segment_count() > 2);
}

#[test]
fn acknowledging_deletes_segments_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    for _ in 0..20 {
        append(&mut store, 500);
    }
    store.sync().unwrap();
    let (before, segments) = (store.bytes(), store.segment_count());
    assert_eq!(
        store.acknowledge(10).unwrap(),
        0,
        "nothing wholly acknowledged"
    );
    let freed = store.acknowledge(6_000).unwrap();
    assert!(freed > 0 && store.bytes() == before - freed);
    assert!(store.segment_count() < segments);
    assert_eq!(store.events(), 4_000);
    let first = segment::list(dir.path()).unwrap()[0].first_seq;
    assert!(first <= 6_001, "a segment holding seq 6001 was deleted");
    let (records, ..) = read_all(&mut store, 1, 1000);
    assert_eq!(seqs(&records), (6_001..=10_000).collect::<Vec<_>>());
    drop(store);
    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.acked_seq, opened.events, opened.next_seq),
        (6_000, 4_000, 10_001)
    );
    // Everything acknowledged: only the segment being written remains.
    store.acknowledge(10_000).unwrap();
    assert_eq!(store.segment_count(), 1);
    assert!(store.bytes() <= store.segment_size() + 500 * 100);
    assert_eq!(store.events(), 0);
}

#[test]
fn a_ledger_ahead_of_the_data_moves_next_seq_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    append(&mut store, 100);
    store.sync().unwrap();
    // Delivered from memory and acknowledged before their append.
    store.acknowledge(150).unwrap();
    assert_eq!(store.events(), 0);
    drop(store);
    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.next_seq, opened.acked_seq, opened.events),
        (151, 150, 0)
    );
    assert_eq!(
        opened.segments, 0,
        "the wholly acknowledged segment is gone"
    );
    assert_eq!(append(&mut store, 5), 151..156);
    store.sync().unwrap();
    let (records, corrupt, gaps) = read_all(&mut store, 1, 100);
    assert_eq!(seqs(&records), (151..156).collect::<Vec<_>>());
    assert_eq!((corrupt, gaps.len()), (0, 0));
}

#[test]
fn a_last_record_cut_at_every_byte_is_one_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    append(&mut store, 30);
    store.sync().unwrap();
    drop(store);
    let seg = segment::list(dir.path()).unwrap().remove(0);
    let good = std::fs::read(&seg.path).unwrap();
    let last = frame_len(payload(30).len());
    for cut in 1..last {
        std::fs::write(&seg.path, &good[..good.len() - cut]).unwrap();
        let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
        assert_eq!((opened.corrupt, opened.torn_tail), (1, true), "cut {cut}");
        assert_eq!((opened.next_seq, opened.events), (30, 29), "cut {cut}");
        assert_eq!(
            std::fs::metadata(&seg.path).unwrap().len(),
            (good.len() - last) as u64
        );
        let (records, corrupt, _) = read_all(&mut store, 1, 7);
        assert_eq!(seqs(&records), (1..30).collect::<Vec<_>>(), "cut {cut}");
        assert_intact(&records);
        assert_eq!(corrupt, 0);
        assert_eq!(store.corrupt_records(), 1);
    }
    // A whole record missing is no damage: it was never synced.
    std::fs::write(&seg.path, &good[..good.len() - last]).unwrap();
    let (_, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.corrupt, opened.torn_tail, opened.next_seq),
        (0, false, 30)
    );
}

#[test]
fn damage_in_an_older_segment_is_skipped_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    for _ in 0..10 {
        append(&mut store, 1000);
    }
    store.sync().unwrap();
    drop(store);
    let segs = segment::list(dir.path()).unwrap();
    assert!(segs.len() >= 3);
    // Flip a byte in the middle of the first segment and cut the second's
    // tail off (records there are lost up to the third's first seq).
    let mut first = std::fs::read(&segs[0].path).unwrap();
    let mid = first.len() / 2;
    first[mid] ^= 0x10;
    std::fs::write(&segs[0].path, &first).unwrap();
    let second = std::fs::read(&segs[1].path).unwrap();
    std::fs::write(&segs[1].path, &second[..second.len() - 1000]).unwrap();

    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.corrupt, opened.events),
        (0, 10_000),
        "open scans only the newest"
    );
    let (records, corrupt, gaps) = read_all(&mut store, 1, 999);
    assert_intact(&records);
    let lost: u64 = gaps.iter().map(|g| g.end - g.start).sum();
    assert_eq!(records.len() as u64 + lost, 10_000);
    assert_eq!(corrupt, lost);
    assert!((2..60).contains(&lost), "lost {lost}");
    assert_eq!(store.corrupt_records(), lost);
    assert_eq!(store.events(), 10_000 - lost);
    // The tail of the second segment is lost up to the third's first seq.
    assert_eq!(gaps.last().unwrap().end, segs[2].first_seq);
    // Reading again (a redelivery) meets the damage without counting it.
    let (again, corrupt, gaps_again) = read_all(&mut store, 1, 10_000);
    assert_eq!((again.len(), corrupt), (records.len(), 0));
    assert_eq!(gaps_again, gaps);
    // Acknowledging past it forgets it.
    store.acknowledge(10_000).unwrap();
    assert_eq!(store.events(), 0);
}

#[test]
fn a_second_open_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), SMALL).unwrap();
    let err = Store::open(dir.path(), SMALL).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    drop(store);
    Store::open(dir.path(), SMALL).unwrap();
}

#[test]
fn a_torn_ledger_write_falls_back_to_the_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    append(&mut store, 300);
    store.sync().unwrap();
    store.acknowledge(100).unwrap(); // slot 0
    store.acknowledge(200).unwrap(); // slot 1
    drop(store);
    let ledger = dir.path().join(LEDGER_FILE);
    let mut bytes = std::fs::read(&ledger).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&ledger, &bytes).unwrap();
    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!((opened.acked_seq, opened.events), (100, 200));
    let (records, ..) = read_all(&mut store, 1, 1000);
    assert_eq!(records.first().map(|r| r.0), Some(101));
}

#[test]
fn reads_stop_at_the_byte_limit_and_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), 64 << 20).unwrap();
    let mut batch = EncodedBatch::default();
    let big = vec![b'a'; 3 << 20];
    for _ in 0..4 {
        batch.push(&big).unwrap();
    }
    store.append(&batch).unwrap();
    append(&mut store, 10);
    let mut out = Vec::new();
    let r = store.read(1, 100, &mut out);
    assert_eq!((out.len(), r.next_seq), (3, 4), "stops past 8 MiB");
    let r = store.read(r.next_seq, 4, &mut out);
    assert_eq!((out.len(), r.next_seq), (7, 8));
    assert_eq!(
        store.read(store.next_seq(), 10, &mut out).next_seq,
        store.next_seq()
    );
}

#[test]
fn a_segment_gone_from_under_the_store_is_counted_lost_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    for _ in 0..10 {
        append(&mut store, 1000);
    }
    store.sync().unwrap();
    let segs = segment::list(dir.path()).unwrap();
    std::fs::remove_file(&segs[1].path).unwrap();
    let (records, corrupt, gaps) = read_all(&mut store, 1, 500);
    assert_eq!(gaps, vec![segs[1].first_seq..segs[2].first_seq]);
    assert_eq!(corrupt, segs[2].first_seq - segs[1].first_seq);
    assert_eq!(records.len() as u64 + corrupt, 10_000);
    assert_eq!(store.events(), 10_000 - corrupt);
    // The store still takes and returns records.
    let more = append(&mut store, 3);
    let (records, ..) = read_all(&mut store, more.start, 10);
    assert_eq!(seqs(&records), more.collect::<Vec<_>>());
}

#[test]
fn a_torn_tail_already_acknowledged_is_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    append(&mut store, 10);
    store.sync().unwrap();
    store.acknowledge(10).unwrap();
    drop(store);
    let seg = segment::list(dir.path()).unwrap().remove(0);
    let bytes = std::fs::read(&seg.path).unwrap();
    std::fs::write(&seg.path, &bytes[..bytes.len() - 3]).unwrap();
    let (mut store, opened) = Store::open(dir.path(), SMALL).unwrap();
    assert_eq!(
        (opened.corrupt, opened.torn_tail, opened.next_seq),
        (0, true, 11)
    );
    assert_eq!(append(&mut store, 1), 11..12);
}

#[test]
fn the_store_can_move_to_its_io_thread() {
    fn send<T: Send>() {}
    send::<Store>();
}

#[test]
fn a_redelivery_read_behind_the_cursor_leaves_the_cursor_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path(), SMALL).unwrap();
    for _ in 0..10 {
        append(&mut store, 1000);
    }
    let mut out = Vec::new();
    let r = store.read(1, 4321, &mut out);
    assert_eq!(r.next_seq, 4322);
    let mut redo = Vec::new();
    assert_eq!(store.read(17, 3, &mut redo).next_seq, 20);
    assert_eq!(seqs(&redo), [17, 18, 19]);
    // Skipping ahead within a segment works too.
    let r = store.read(r.next_seq, 10, &mut out);
    assert_eq!(r.next_seq, 4332);
    let r = store.read(4400, 5, &mut out);
    assert_eq!(r.next_seq, 4405);
    assert_eq!(
        seqs(&out[4321..]),
        [(4322..4332).collect::<Vec<_>>(), (4400..4405).collect()].concat()
    );
    assert_intact(&out);
}

#[test]
fn a_failed_append_voids_its_seqs_and_the_next_one_starts_a_segment() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("buffer");
    let (mut store, _) = Store::open(&dir, SMALL).unwrap();
    append(&mut store, 10);
    // With the directory gone, the roll that a big batch needs fails.
    let moved = data.path().join("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let mut big = EncodedBatch::default();
    for _ in 0..5 {
        big.push(&vec![b'x'; 100 << 10]).unwrap();
    }
    let err = store.append(&big).unwrap_err();
    assert!(
        err.to_string().contains("00000000000000000011.seg"),
        "{err}"
    );
    assert_eq!(store.next_seq(), 16, "the failed append took its seqs");
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(append(&mut store, 5), 16..21);
    assert_eq!(store.sync().unwrap(), 20);
    assert_eq!(store.events(), 15);
    let (records, corrupt, gaps) = read_all(&mut store, 1, 100);
    assert_eq!(
        seqs(&records),
        [(1..11).collect::<Vec<_>>(), (16..21).collect()].concat()
    );
    let void = Range { start: 11, end: 16 };
    assert_eq!(
        (corrupt, gaps),
        (0, vec![void]),
        "void seqs are not corrupt"
    );
    assert_eq!(store.corrupt_records(), 0);
}

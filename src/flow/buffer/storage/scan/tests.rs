use super::*;

/// A segment's bytes and where each record's frame lies.
fn segment(first_seq: u64, payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut bytes = SEGMENT_MAGIC.to_vec();
    let mut spans = Vec::new();
    for (seq, p) in (first_seq..).zip(payloads) {
        let start = bytes.len();
        record::encode(&mut bytes, seq, p);
        spans.push(start..bytes.len());
    }
    (bytes, spans)
}

struct Scanned {
    records: Vec<(u64, Vec<u8>)>,
    skipped: Vec<Range<u64>>,
    damaged_at: Option<u64>,
    end_lost: Range<u64>,
}

fn scan(path: &Path, first_seq: u64, bound: Option<u64>) -> Scanned {
    let mut s = Scanner::open(path, first_seq, None, bound).unwrap();
    let limit = 4 * s.end + 10;
    let (mut records, mut skipped) = (Vec::new(), Vec::new());
    for _ in 0..limit {
        match s.next_step().unwrap() {
            Step::Record { seq, payload } => records.push((seq, payload.to_vec())),
            Step::Skipped { lost, .. } => skipped.push(lost),
            Step::End { damaged_at, lost } => {
                return Scanned {
                    records,
                    skipped,
                    damaged_at,
                    end_lost: lost,
                };
            }
        }
    }
    panic!("the scan did not end within {limit} steps");
}

fn json_payload(rng: &mut fastrand::Rng) -> Vec<u8> {
    let n = rng.usize(0..300);
    let text: String = (0..n).map(|_| rng.alphanumeric()).collect();
    format!(r#"{{"id":{},"message":"{text}"}}"#, rng.u32(..)).into_bytes()
}

/// Random truncations, byte flips and inserted garbage: the scan ends,
/// yields exactly the intact records, in order and unchanged, and
/// accounts for every other seq as lost.
#[test]
fn the_scanner_survives_random_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000001000.seg");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (mut resynced, mut torn) = (0, 0);
    for round in 0..3000 {
        let first = 1000;
        let n = rng.usize(1..60);
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                if rng.u8(..8) == 0 {
                    (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect()
                } else {
                    json_payload(&mut rng)
                }
            })
            .collect();
        let (good, spans) = segment(first, &payloads);
        // Each byte remembers where it came from (None: garbage).
        let mut file: Vec<(u8, Option<usize>)> = good
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, Some(i)))
            .collect();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(..3) {
                0 => {
                    let at = rng.usize(..file.len());
                    file[at].0 ^= rng.u8(1..);
                }
                1 => {
                    let at = rng.usize(..=file.len());
                    let garbage: Vec<(u8, Option<usize>)> =
                        (0..rng.usize(1..100)).map(|_| (rng.u8(..), None)).collect();
                    file.splice(at..at, garbage);
                }
                _ => file.truncate(rng.usize(..=file.len())),
            }
        }
        let bytes: Vec<u8> = file.iter().map(|e| e.0).collect();
        std::fs::write(&path, &bytes).unwrap();
        let intact: Vec<u64> = spans
            .iter()
            .zip(first..)
            .filter(|(span, _)| {
                let Some(at) = file.iter().position(|e| e.1 == Some(span.start)) else {
                    return false;
                };
                (span.start..span.end).zip(at..).all(|(orig, i)| {
                    file.get(i)
                        .is_some_and(|&(b, o)| o == Some(orig) && b == good[orig])
                })
            })
            .map(|(_, seq)| seq)
            .collect();
        let end = first + n as u64;
        for bound in [Some(end), None] {
            let s = scan(&path, first, bound);
            let yielded: Vec<u64> = s.records.iter().map(|r| r.0).collect();
            assert_eq!(yielded, intact, "round {round}, bound {bound:?}");
            for (seq, p) in &s.records {
                assert_eq!(p, &payloads[(seq - first) as usize]);
            }
            // Every seq up to where the scan stopped is yielded or lost, once.
            let lost: u64 = s.skipped.iter().map(|r| r.end - r.start).sum();
            resynced += usize::from(
                !s.skipped.is_empty() && yielded.last() > s.skipped.last().map(|r| &r.end),
            );
            torn += usize::from(bound.is_none() && s.damaged_at.is_some());
            assert_eq!(
                yielded.len() as u64 + lost,
                s.end_lost.start - first,
                "round {round}"
            );
            match bound {
                Some(b) => assert_eq!(s.end_lost.end, b),
                None => assert!(s.end_lost.is_empty()),
            }
            // Damage with nothing valid after it: a torn tail.
            let tail_torn = s.damaged_at.is_some();
            if bound.is_none() && !tail_torn && bytes.len() as u64 >= SEGMENT_HEADER_LEN {
                assert_eq!(s.end_lost.start, intact.last().map_or(first, |l| l + 1));
            }
        }
    }
    // The damage exercised both paths, many times.
    assert!(
        resynced > 500 && torn > 500,
        "resynced {resynced}, torn {torn}"
    );
}

#[test]
fn a_cut_at_every_offset_of_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.seg");
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
        .collect();
    let (good, spans) = segment(1, &payloads);
    let last = spans.last().unwrap().clone();
    for cut in last.start + 1..last.end {
        std::fs::write(&path, &good[..cut]).unwrap();
        let s = scan(&path, 1, None);
        assert_eq!(s.records.len(), 4);
        assert_eq!(
            (s.damaged_at, s.end_lost.clone()),
            (Some(last.start as u64), 5..5)
        );
    }
    std::fs::write(&path, &good[..last.start]).unwrap();
    let s = scan(&path, 1, None);
    assert_eq!((s.records.len(), s.damaged_at), (4, None));
}

/// Records larger than the window, and damage across window edges.
#[test]
fn large_records_and_damage_across_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.seg");
    let mut rng = fastrand::Rng::with_seed(11);
    let payloads: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            vec![
                b'a' + (i % 26) as u8;
                if i % 7 == 3 {
                    700 << 10
                } else {
                    rng.usize(1..90_000)
                }
            ]
        })
        .collect();
    let (mut bytes, spans) = segment(1, &payloads);
    let damaged = [5usize, 17, 18, 40];
    for &i in &damaged {
        let span = &spans[i];
        let at = rng.usize(span.start..span.end);
        bytes[at] ^= 0x01;
    }
    std::fs::write(&path, &bytes).unwrap();
    let s = scan(&path, 1, Some(61));
    let expected: Vec<u64> = (1..=60)
        .filter(|s| !damaged.contains(&((s - 1) as usize)))
        .collect();
    assert_eq!(s.records.iter().map(|r| r.0).collect::<Vec<_>>(), expected);
    assert_eq!(s.skipped.iter().map(|r| r.end - r.start).sum::<u64>(), 4);
    for (seq, p) in &s.records {
        assert_eq!(p, &payloads[(seq - 1) as usize]);
    }
}

#[test]
fn a_damaged_magic_or_a_short_file_does_not_stop_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.seg");
    let (mut bytes, _) = segment(7, &[b"{}".to_vec(), b"[]".to_vec()]);
    bytes[2] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let s = scan(&path, 7, None);
    assert_eq!(s.records.len(), 2);
    assert!(!Scanner::open(&path, 7, None, None).unwrap().magic_ok());
    std::fs::write(&path, &bytes[..3]).unwrap();
    let s = scan(&path, 7, Some(9));
    assert_eq!((s.records.len(), s.end_lost.clone()), (0, 7..9));
}

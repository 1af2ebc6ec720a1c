//! The disk buffer's storage alone (`flow::buffer::storage::Store`):
//! append + sync, then a reopen and a full read, then acknowledgement.
//!
//! `cargo bench --bench buffer_store` — 1,000,000 records of ~200 bytes in
//! batches of 1000 (`BENCH_EVENTS`, `BENCH_BATCH` change them), in a temp
//! dir under `BENCH_DIR` (default: the system's), twice: an fdatasync (and
//! an acknowledgement) after every batch, then grouped as the I/O thread
//! does (one when 10 ms have passed since the last). Encoding the payloads
//! is timed apart. The read follows a reopen, but from the page cache.

use flowgate::flow::buffer::storage::{EncodedBatch, Store};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let events = env("BENCH_EVENTS", 1_000_000);
    let batch_size = env("BENCH_BATCH", 1000);
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    for grouped in [false, true] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let (mut store, _) = Store::open(dir.path(), 1 << 30).expect("open");
        let (mut gen_time, mut write_time) = (Duration::ZERO, Duration::ZERO);
        let mut batch = EncodedBatch::with_capacity(batch_size as usize, 256 * batch_size as usize);
        let (mut n, mut payload_bytes, mut syncs) = (0u64, 0u64, 0u64);
        let mut last_sync = Instant::now();
        while n < events {
            let t = Instant::now();
            batch.clear();
            for _ in 0..batch_size.min(events - n) {
                n += 1;
                batch
                    .push_with(|v| {
                        use std::io::Write;
                        write!(
                            v,
                            r#"{{"ts":"2024-05-01T12:{:02}:{:02}.{:03}Z","level":"info","host":"web-{:02}","method":"GET","path":"/api/v1/items/{}","status":200,"bytes":{},"user_agent":"curl/8.5","message":"request served in {} ms"}}"#,
                            n / 60 % 60, n % 60, n % 1000, n % 17, n, n * 7 % 100_000, n % 250
                        )
                    })
                    .expect("encode");
            }
            payload_bytes += batch.payload_bytes() as u64;
            gen_time += t.elapsed();
            let t = Instant::now();
            store.append(&batch).expect("append");
            if !grouped || last_sync.elapsed() >= Duration::from_millis(10) {
                last_sync = Instant::now();
                store.sync().expect("sync");
                syncs += 1;
            }
            write_time += t.elapsed();
        }
        let t = Instant::now();
        store.sync().expect("sync");
        write_time += t.elapsed();
        let bytes = store.bytes();
        drop(store);

        let t = Instant::now();
        let (mut store, opened) = Store::open(dir.path(), 1 << 30).expect("reopen");
        let open_time = t.elapsed();
        assert_eq!(opened.events, events);
        let t = Instant::now();
        let (mut at, mut read, mut out) = (1, 0u64, Vec::with_capacity(batch_size as usize));
        while at < store.next_seq() {
            out.clear();
            let r = store.read(at, batch_size as usize, &mut out);
            read += out.len() as u64;
            at = r.next_seq;
        }
        let read_time = t.elapsed();
        assert_eq!(read, events);
        // One acknowledgement per batch: each is a ledger write + fdatasync.
        let t = Instant::now();
        let mut acked = 0;
        while acked < events {
            acked = (acked + batch_size).min(events);
            store.acknowledge(acked).expect("acknowledge");
        }
        let ack_time = t.elapsed();
        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        println!(
            "{}: {events} events, {:.0} B/event, {:.1} MB on disk, {syncs} fdatasyncs\n  \
             encode {:>6.2} M ev/s | append+sync {:>5.2} M ev/s ({:.0} MB/s) | reopen {:.1} ms | \
             read {:>5.2} M ev/s | acknowledge {:.0} µs per call, {} B left",
            if grouped {
                "sync every 10 ms"
            } else {
                "sync every batch"
            },
            payload_bytes as f64 / events as f64,
            bytes as f64 / 1e6,
            rate(gen_time) / 1e6,
            rate(write_time) / 1e6,
            bytes as f64 / 1e6 / write_time.as_secs_f64(),
            open_time.as_secs_f64() * 1e3,
            rate(read_time) / 1e6,
            ack_time.as_secs_f64() * 1e6 / events.div_ceil(batch_size) as f64,
            store.bytes(),
        );
    }
}

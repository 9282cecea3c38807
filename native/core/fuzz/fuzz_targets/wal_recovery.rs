//! WAL recovery on any bytes: never panics; when it accepts the file, the valid prefix is
//! exactly the frames it returns (re-encoding them gives the prefix back), and rescanning the
//! prefix gives the same records with nothing torn. (Empty frames are valid in WAL v1: see
//! docs/reliability.md on zero-filled tails.)
#![no_main]
use gatewaylab_core::wal::{encode_file, scan, MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = scan(data) else { return };
    assert!(s.valid_end <= data.len());
    if s.header_incomplete {
        assert!(s.payloads.is_empty() && MAGIC.starts_with(data));
        return;
    }
    let payloads: Vec<&[u8]> = s.payloads.iter().map(|r| &data[r.clone()]).collect();
    let again = encode_file(payloads.iter().copied());
    assert_eq!(&again[..], &data[..s.valid_end], "the valid prefix is the frames, re-encoded");
    let rescan = scan(&data[..s.valid_end]).expect("a valid prefix scans");
    assert_eq!(rescan.payloads, s.payloads);
    assert_eq!(rescan.valid_end, s.valid_end);
});

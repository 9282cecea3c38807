//! WAL recovery on any bytes: never panics; when it accepts the file, the valid prefix is
//! exactly the frames it returns in the file's version (re-encoding them gives the prefix
//! back), and rescanning the prefix gives the same records with nothing torn. In v2 a run of
//! zero bytes after the valid prefix is always torn, never records.
#![no_main]
use gatewaylab_core::wal::{encode_file, scan, Version, MAGIC_V1, MAGIC_V2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = scan(data) else { return };
    assert!(s.valid_end <= data.len());
    if s.header_incomplete {
        assert!(
            s.payloads.is_empty() && (MAGIC_V1.starts_with(data) || MAGIC_V2.starts_with(data))
        );
        return;
    }
    assert_eq!(Version::of_header(&data[..8]), Some(s.version));
    let payloads: Vec<&[u8]> = s.payloads.iter().map(|r| &data[r.clone()]).collect();
    let again = encode_file(s.version, payloads.iter().copied());
    assert_eq!(
        &again[..],
        &data[..s.valid_end],
        "the valid prefix is the frames, re-encoded"
    );
    let rescan = scan(&data[..s.valid_end]).expect("a valid prefix scans");
    assert_eq!(rescan.payloads, s.payloads);
    assert_eq!(rescan.valid_end, s.valid_end);
    if s.version == Version::V2 {
        let mut zeroed = data[..s.valid_end].to_vec();
        zeroed.extend(std::iter::repeat_n(0u8, 1 + data.len() % 40));
        let z = scan(&zeroed).expect("zero fill after a valid prefix is torn, not corrupt");
        assert_eq!(z.payloads, s.payloads, "zero fill adds no records");
        assert_eq!(z.valid_end, s.valid_end);
    }
});

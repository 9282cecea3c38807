//! The adapter's parsers on any bytes, both kinds, all three directions: never panics, and
//! whatever it produces parses again with the adapter's own (Python-compatible) JSON reader.
#![no_main]
use gatewaylab_core::stages::adapter::{parse, Adapter, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = if sel & 1 == 0 {
        Kind::OpenAi
    } else {
        Kind::Anthropic
    };
    let a = Adapter::new(kind);
    match (sel >> 1) % 3 {
        0 => {
            if let Ok(out) = a.to_upstream(body, "upstream-model") {
                assert!(parse(&out).is_ok(), "to_upstream emits JSON");
            }
        }
        1 => {
            if let Ok(out) = a.from_upstream(body, "public-model") {
                assert!(parse(&out).is_ok(), "from_upstream emits JSON");
            }
        }
        _ => {
            if let Ok(events) = a.stream_event(body, "public-model") {
                for e in events {
                    assert!(parse(&e).is_ok(), "stream_event emits JSON");
                }
            }
        }
    }
});

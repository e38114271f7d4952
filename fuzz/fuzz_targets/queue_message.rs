//! Bodies the worker receives from SQS: any text through its decoding; what it accepts
//! is a well-formed message, control or campaign reference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shared::queue::Incoming;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    if let Ok(Incoming::Message(m)) = worker_native::ingest::parse(body) {
        assert!(shared::id::is_message_id(&m.id) && !m.creator_id.is_empty() && !m.content.is_empty());
    }
});

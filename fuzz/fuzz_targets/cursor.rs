//! Pagination cursors (`GET /failed`, `GET /campaigns`): any string decoded for an
//! account; one that decodes encodes back to itself and is refused to another account.
#![no_main]
use edge::ledger::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(cursor) = Cursor::decode(s, "creator-a") {
        let again = cursor.encode("creator-a");
        assert_eq!(Cursor::decode(&again, "creator-a"), Some(cursor.clone()));
        assert_eq!(Cursor::decode(&again, "creator-b"), None, "a cursor of another account");
    }
});

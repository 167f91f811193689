//! `cargo +nightly fuzz run qmp_reply` (from the repository root).
//! QMP replies come from a QEMU process: the parser must never panic, must
//! refuse lines over the limit before decoding, and what it accepts must be
//! one of the four message shapes with the fields it promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratus_microvm::qmp::{parse_message, QmpMessage, QmpParseError, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    match parse_message(data) {
        Ok(QmpMessage::Return(_)) | Ok(QmpMessage::Event { .. }) => {}
        Ok(QmpMessage::Error { class, desc }) => {
            // Both came from JSON strings of the input.
            assert!(class.len() + desc.len() <= data.len());
        }
        Ok(QmpMessage::Greeting { version }) => {
            assert!(version == "unknown" || version.split('.').count() == 3);
        }
        Err(QmpParseError::TooLong(n)) => assert!(n > MAX_LINE && n == data.len()),
        Err(_) => assert!(data.len() <= MAX_LINE),
    }
});

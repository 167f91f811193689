//! `cargo +nightly fuzz run whole_wire` (from the repository root).
//! The body of a whole workflow run sent to an agent, and its answer
//! (`stratus_dag::whole`): parsing never panics; a run that parses has a
//! plan with its steps and a slot for each step's function, and formats
//! back to a body that parses to the same run; an answer's output holds
//! exactly the bytes after its head.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratus_dag::whole::{format_done, format_run, parse_done, parse_run};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok((run, plan, input)) = parse_run(&body) {
        assert_eq!(plan.step_count(), run.workflow.steps.len());
        for s in &run.workflow.steps {
            assert!(run.slots.iter().any(|x| x.function == s.function));
        }
        let again = Bytes::from(format_run(&run, &input).concat());
        let (back, _, input2) = parse_run(&again).expect("a formatted run parses");
        assert_eq!(back, run);
        assert_eq!(input2, input);
    }
    if let Ok((done, out)) = parse_done(&body) {
        let again = Bytes::from(format_done(&done, Some(&out)).concat());
        let (back, out2) = parse_done(&again).expect("a formatted answer parses");
        assert_eq!(back, done);
        assert_eq!(out2, out);
    }
});

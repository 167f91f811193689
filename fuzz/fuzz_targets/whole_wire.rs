//! `cargo +nightly fuzz run whole_wire` (from the repository root).
//! The body of a whole workflow run sent to an agent, its answer
//! (`stratus_dag::whole`) and a spread run's event between workers
//! (`stratus_dag::spread`): parsing never panics; a run that parses has a
//! plan with its steps and a slot for each function of the steps it owns
//! (all of them when not spread), and formats back to a body that parses
//! to the same run; an answer's output holds exactly the bytes after its
//! head; an event's bytes are its output's when sent, none otherwise.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratus_dag::spread::{format_event, parse_event, Outcome};
use stratus_dag::whole::{format_done, format_run, parse_done, parse_run};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok((run, plan, input)) = parse_run(&body) {
        assert_eq!(plan.step_count(), run.workflow.steps.len());
        for (k, s) in run.workflow.steps.iter().enumerate() {
            let mine = run.spread.as_ref().is_none_or(|sp| {
                assert!((sp.me as usize) < sp.peers.len());
                sp.owners[k].contains(&sp.me)
            });
            assert!(!mine || run.slots.iter().any(|x| x.function == s.function));
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
    if let Ok((ev, bytes)) = parse_event(&body) {
        match &ev.outcome {
            Outcome::Succeeded { len, sent: true, .. } => assert_eq!(*len, bytes.len() as u64),
            _ => assert!(bytes.is_empty()),
        }
        let again = Bytes::from(format_event(&ev, Some(&bytes)).concat());
        let (back, bytes2) = parse_event(&again).expect("a formatted event parses");
        assert_eq!(back, ev);
        assert_eq!(bytes2, bytes);
    }
});

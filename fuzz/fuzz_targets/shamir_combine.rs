//! Shamir shares typed or pasted by people (`rcrt kek combine`): any lines are refused or
//! combined without a panic. The first byte picks the threshold and options; the rest is the
//! shares, one per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcrt_shamir::{combine, Mode};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let shares: Vec<&str> = text.lines().collect();
    let threshold = head & 0x0f;
    let mode = if head & 0x10 == 0 { Mode::Hex } else { Mode::Ascii };
    let _ = combine(&shares, threshold, mode, head & 0x20 != 0);
});

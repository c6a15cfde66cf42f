#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| l3::fuzzing::policy_spec(data));

mod common;
#[test]
fn timing() { common::scratch_timing(); }

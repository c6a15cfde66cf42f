//! The committed CRD must equal what `l3 crdgen` prints (run `make crds` after changing the
//! LatencyPolicy types).

#[test]
fn committed_crd_is_up_to_date() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/latencypolicies.l3.dev.yaml"
    );
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; run `make crds`"));
    let generated = l3::operator::crd_yaml().expect("the CRD renders as YAML");
    assert!(
        committed == generated,
        "crds/latencypolicies.l3.dev.yaml is out of date; run `make crds`"
    );
}

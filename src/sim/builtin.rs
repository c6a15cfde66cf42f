//! The built-in scenarios, embedded in the binary from `scenarios/*.yaml`.

use super::scenario::Scenario;
use super::{Error, Result};

/// Name and YAML text of every built-in scenario, default first.
pub const BUILTINS: [(&str, &str); 8] = [
    (
        "hotel-reservation",
        include_str!("../../scenarios/hotel-reservation.yaml"),
    ),
    (
        "scenario-1",
        include_str!("../../scenarios/scenario-1.yaml"),
    ),
    (
        "scenario-2",
        include_str!("../../scenarios/scenario-2.yaml"),
    ),
    (
        "scenario-3",
        include_str!("../../scenarios/scenario-3.yaml"),
    ),
    (
        "scenario-4",
        include_str!("../../scenarios/scenario-4.yaml"),
    ),
    (
        "scenario-5",
        include_str!("../../scenarios/scenario-5.yaml"),
    ),
    ("failure-1", include_str!("../../scenarios/failure-1.yaml")),
    ("failure-2", include_str!("../../scenarios/failure-2.yaml")),
];

/// The default scenario of `l3 simulate` and `make demo`.
pub const DEFAULT: &str = "hotel-reservation";

/// A built-in scenario by name.
pub fn get(name: &str) -> Option<Result<Scenario>> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Scenario::from_yaml(text, &format!("built-in scenario {n}")))
}

/// Every built-in scenario, parsed.
pub fn all() -> Result<Vec<Scenario>> {
    BUILTINS
        .iter()
        .map(|(n, _)| get(n).unwrap_or_else(|| Err(Error::UnknownScenario((*n).to_owned()))))
        .collect()
}

/// `l3 simulate --list`: one line per scenario with its note's first sentence.
pub fn list() -> Result<String> {
    let mut out = String::new();
    for sc in all()? {
        // The note's first clause says what the scenario follows.
        let first = sc.note.split(':').next().unwrap_or("").trim();
        out += &format!("{:<18} {first}\n", sc.name);
    }
    Ok(out)
}

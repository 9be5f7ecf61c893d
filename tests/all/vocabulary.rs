//! Core and the mock keep their own lists of TikTok's words (a mock that shared the
//! client's lists could not catch the client's mistakes); these tests hold the two equal,
//! so a word added on one side only fails here instead of in production.

use std::collections::BTreeSet;

fn set<'a>(words: impl IntoIterator<Item = &'a &'a str>) -> BTreeSet<&'a str> {
    words.into_iter().copied().collect()
}

#[test]
fn objectives_and_budget_modes_are_the_same_words() {
    use tiktok_edge_core::ads::rules;
    assert_eq!(
        set(rules::OBJECTIVES),
        set(tiktok_mock::campaigns::OBJECTIVES)
    );
    assert_eq!(
        set(rules::BUDGET_MODES),
        set(tiktok_mock::campaigns::BUDGET_MODES)
    );
}

#[test]
fn standard_event_names_are_the_same_words() {
    assert_eq!(
        set(tiktok_edge_core::pixel::event::STANDARD_EVENTS),
        set(tiktok_mock::events::STANDARD_EVENTS)
    );
}

#[test]
fn every_metric_core_requests_is_one_the_mock_reports() {
    let core = set(&tiktok_edge_core::metrics::report::BASE);
    let mock = set(tiktok_mock::reports::BASE_METRICS);
    assert_eq!(core, mock);
}

#[test]
fn catalog_types_and_availability_are_the_same_words() {
    use tiktok_edge_core::ads::catalog;
    assert_eq!(
        set(catalog::CATALOG_TYPES),
        set(tiktok_mock::catalog::CATALOG_TYPES)
    );
    assert_eq!(
        set(catalog::AVAILABILITY),
        set(tiktok_mock::catalog::AVAILABILITY)
    );
}

#[test]
fn audience_identifier_types_core_sends_are_ones_the_mock_takes() {
    use tiktok_edge_core::ads::audiences;
    let core: BTreeSet<&str> = audiences::HASHED_HERE
        .iter()
        .copied()
        .chain(audiences::PREHASHED_ONLY.iter().map(|(name, _)| *name))
        .collect();
    let mock = set(tiktok_mock::files::CALCULATE_TYPES);
    let unknown: Vec<_> = core.difference(&mock).collect();
    assert!(
        unknown.is_empty(),
        "core sends types the mock refuses: {unknown:?}"
    );
}

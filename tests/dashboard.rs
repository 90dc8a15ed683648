//! The Grafana dashboard only queries metrics the crate emits, so the two cannot drift apart.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/fusebox.json");

/// Every PromQL string: panel targets' `expr` and template variables' queries.
fn queries(value: &Value, key: Option<&str>, out: &mut Vec<String>) {
    match value {
        Value::String(s) if matches!(key, Some("expr" | "definition" | "query")) => {
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| queries(v, Some(k), out)),
        _ => {}
    }
}

/// Every `fusebox_[a-z_]+` identifier in `text`, histogram suffixes stripped.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("fusebox_") {
        let preceded_by_ident = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.push(base.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_one_the_crate_emits() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut found = Vec::new();
    queries(&dashboard, None, &mut found);
    let exprs = found
        .iter()
        .filter(|q| q.contains("fusebox_"))
        .collect::<Vec<_>>();
    assert!(exprs.len() >= 10, "{exprs:#?}");

    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                fusebox::metrics::ALL.contains(&name.as_str()),
                "the dashboard queries `{name}`, which fusebox does not emit: {expr}"
            );
            used.insert(name);
        }
    }
    assert!(
        used.len() >= 8,
        "only {} metrics used: {used:?}",
        used.len()
    );
    // The histogram is queried through its buckets.
    assert!(text.contains("fusebox_call_duration_seconds_bucket"));
}

#[test]
fn the_dashboard_is_importable() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        assert!(!panel["targets"].as_array().unwrap().is_empty());
    }
}

#[test]
fn the_name_scanner_finds_names_and_strips_histogram_suffixes() {
    assert_eq!(
        metric_names("sum(rate(fusebox_call_duration_seconds_bucket{a=\"fusebox_x\"}[5m])) / fusebox_in_flight"),
        ["fusebox_call_duration_seconds", "fusebox_x", "fusebox_in_flight"]
    );
    assert!(metric_names("my_fusebox_calls").is_empty());
}

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts.yml");

/// Metrics the alerting rules may name before the crate emits them: the fleet link's gauge
/// comes with the fleet module (feature `redis`).
const PENDING: &[&str] = &["fusebox_fleet_connected"];

#[test]
fn every_metric_the_alerts_query_is_one_the_crate_emits_or_announces() {
    let text = std::fs::read_to_string(ALERTS).unwrap();
    let names = metric_names(&text);
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        assert!(
            fusebox::metrics::ALL.contains(&name.as_str()) || PENDING.contains(&name.as_str()),
            "the alerts query `{name}`, which fusebox does not emit"
        );
    }
    for alert in [
        "FuseboxCircuitOpen",
        "FuseboxCircuitFlapping",
        "FuseboxMostCircuitsOpen",
        "FuseboxProviderIsolated",
        "FuseboxFleetLinkDown",
    ] {
        assert!(text.contains(&format!("alert: {alert}\n")), "{alert}");
        let tests =
            std::fs::read_to_string(ALERTS.replace("alerts.yml", "alerts_test.yml")).unwrap();
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
}

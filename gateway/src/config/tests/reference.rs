//! The committed reference matches the model, and every field is documented.

use std::path::PathBuf;

use crate::config::reference::missing_descriptions;
use crate::config::reference_markdown;

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/REFERENCE.md")
}

#[test]
fn config_reference_is_up_to_date() {
    let generated = reference_markdown();
    let path = reference_path();
    if std::env::var_os("PHIGATE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write config/REFERENCE.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        // `println!` in the CLI adds a final newline: not a difference worth failing on.
        committed.trim_end() == generated.trim_end(),
        "config/REFERENCE.md is out of date with the config types. Regenerate it with\n  \
         cargo run -p phigate -- config schema > config/REFERENCE.md\nor\n  \
         PHIGATE_BLESS=1 cargo test -p phigate config_reference_is_up_to_date"
    );
}

#[test]
fn every_config_field_has_a_description() {
    let missing = missing_descriptions();
    assert!(missing.is_empty(), "add a `///` doc to: {}", missing.join(", "));
}

#[test]
fn reference_documents_every_section_and_variant() {
    let md = reference_markdown();
    for section in ["Config", "ListenerConfig", "ListenerTlsConfig", "UpstreamTlsConfig", "ClientCertMode"] {
        assert!(md.contains(&format!("## `{section}`")), "{section} missing");
    }
    assert!(md.contains("| `listeners` | list of [`ListenerConfig`](#listenerconfig) | **required** |"));
    assert!(md.contains("- `required`: Require a valid client certificate in the handshake."));
}

#[test]
fn every_config_type_has_a_section_map_values_included() {
    let md = reference_markdown();
    let schema = crate::config::json_schema();
    let defs = schema["$defs"].as_object().expect("$defs");
    let missing: Vec<&str> =
        defs.keys().map(String::as_str).filter(|name| !md.contains(&format!("## `{name}`"))).collect();
    assert!(missing.is_empty(), "types without a section: {missing:?}");
    // A per-route map links to the type of its values.
    assert!(md.contains("| `routes` | map of name → [`RouteAssertionConfig`](#routeassertionconfig) |"));
}

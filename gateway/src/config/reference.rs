//! The config reference (`config/REFERENCE.md`), generated from the model's `///` docs through
//! its JSON Schema, so that the docs cannot drift from the code.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::Config;

const TITLE: &str = "# phigate config reference

Generated from the doc comments of the config types (`gateway/src/config/model.rs`); do not edit.
Regenerate with `cargo run -p phigate -- config schema > config/REFERENCE.md`
(or `PHIGATE_BLESS=1 cargo test -p phigate config_reference_is_up_to_date`).

Every struct rejects unknown keys. Relative file paths resolve against the config file's directory.
";

/// The JSON Schema of the config file (draft 2020-12).
pub fn json_schema() -> Value {
    schemars::schema_for!(Config).to_value()
}

/// The config reference in Markdown: one section per struct (a table of key, type, default and
/// description) and per enum (its variants).
pub fn reference_markdown() -> String {
    let schema = json_schema();
    let empty = Map::new();
    let defs = schema.get("$defs").and_then(Value::as_object).unwrap_or(&empty);
    let mut out = String::from(TITLE);
    let mut queue = VecDeque::from([("Config".to_owned(), &schema)]);
    let mut seen = vec!["Config".to_owned()];
    while let Some((name, def)) = queue.pop_front() {
        out.push_str(&format!("\n## `{name}`\n\n"));
        if let Some(text) = def.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{}\n", paragraphs(text)));
        }
        if let Some(variants) = def.get("oneOf").and_then(Value::as_array) {
            out.push_str(&variants_markdown(variants));
        } else {
            out.push_str(&table_markdown(def, defs));
        }
        for referenced in refs_in(def) {
            if !seen.contains(&referenced) {
                if let Some(target) = defs.get(&referenced) {
                    seen.push(referenced.clone());
                    queue.push_back((referenced, target));
                }
            }
        }
    }
    out
}

/// Every struct field, struct and enum variant without a description, as `Type.field` names.
#[cfg(test)]
pub(crate) fn missing_descriptions() -> Vec<String> {
    let schema = json_schema();
    let mut missing = Vec::new();
    let mut defs: Vec<(&str, &Value)> = vec![("Config", &schema)];
    if let Some(map) = schema.get("$defs").and_then(Value::as_object) {
        defs.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
    }
    for (name, def) in defs {
        if !has_description(def) {
            missing.push(name.to_owned());
        }
        for (key, prop) in properties(def) {
            if !has_description(prop) {
                missing.push(format!("{name}.{key}"));
            }
        }
        for variant in def.get("oneOf").and_then(Value::as_array).into_iter().flatten() {
            if !has_description(variant) {
                missing.push(format!("{name}.{}", variant_name(variant)));
            }
        }
    }
    missing
}

#[cfg(test)]
fn has_description(v: &Value) -> bool {
    v.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty())
}

/// A struct's properties: required ones first, in declaration order, then the others by name.
fn properties(def: &Value) -> Vec<(&str, &Value)> {
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required = required(def);
    let mut out: Vec<(&str, &Value)> =
        required.iter().filter_map(|k| props.get_key_value(*k).map(|(k, v)| (k.as_str(), v))).collect();
    out.extend(props.iter().filter(|(k, _)| !required.contains(&k.as_str())).map(|(k, v)| (k.as_str(), v)));
    out
}

fn required(def: &Value) -> Vec<&str> {
    def.get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn table_markdown(def: &Value, defs: &Map<String, Value>) -> String {
    let required = required(def);
    let mut out = String::from("\n| Key | Type | Default | Description |\n|---|---|---|---|\n");
    for (key, prop) in properties(def) {
        let default =
            if required.contains(&key) { "**required**".to_owned() } else { default_text(prop, defs) };
        let description = prop.get("description").and_then(Value::as_str).unwrap_or("");
        let row = format!("| `{key}` | {} | {default} | {} |\n", type_text(prop), cell(description));
        out.push_str(&row);
    }
    out
}

fn variants_markdown(variants: &[Value]) -> String {
    let mut out = String::from("\nOne of:\n\n");
    for variant in variants {
        let description = variant.get("description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("- `{}`: {}\n", variant_name(variant), cell(description)));
    }
    out
}

fn variant_name(variant: &Value) -> String {
    match variant.get("const").or_else(|| variant.pointer("/enum/0")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "?".to_owned(),
    }
}

/// The type of a property, with links to the sections of referenced types.
fn type_text(prop: &Value) -> String {
    let prop = unwrap_optional(prop);
    if let Some(name) = ref_name(prop) {
        return format!("[`{name}`](#{})", name.to_lowercase());
    }
    if let Some(items) = prop.get("items") {
        return format!("list of {}", type_text(items));
    }
    if let Some(values) = map_values(prop) {
        return format!("map of name → {}", type_text(values));
    }
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let main: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    match main.as_slice() {
        [] => "any".to_owned(),
        ["integer"] if prop.get("minimum").and_then(Value::as_f64) == Some(0.0) => "integer ≥ 0".to_owned(),
        ts => ts.join(" or "),
    }
}

fn default_text(prop: &Value, defs: &Map<String, Value>) -> String {
    let is_struct = |name: &str| defs.get(name).is_some_and(|d| d.get("properties").is_some());
    match prop.get("default") {
        Some(Value::Null) => "none".to_owned(),
        Some(Value::String(s)) => format!("`{s}`"),
        Some(other) => format!("`{other}`"),
        None if prop.get("anyOf").is_some() => "none".to_owned(),
        None if ref_name(prop).is_some_and(is_struct) => "see section".to_owned(),
        None => "see description".to_owned(),
    }
}

/// `Option<T>` appears as `anyOf: [T, null]`: the `T` branch.
fn unwrap_optional(prop: &Value) -> &Value {
    prop.get("anyOf")
        .and_then(Value::as_array)
        .and_then(|branches| branches.iter().find(|b| b.get("type").and_then(Value::as_str) != Some("null")))
        .unwrap_or(prop)
}

fn ref_name(v: &Value) -> Option<&str> {
    unwrap_optional(v).get("$ref")?.as_str()?.strip_prefix("#/$defs/")
}

/// The value schema of a map keyed by name (`BTreeMap<String, T>`): `additionalProperties`.
fn map_values(prop: &Value) -> Option<&Value> {
    unwrap_optional(prop).get("additionalProperties").filter(|v| v.is_object())
}

/// Names of the types a definition refers to (directly, as list items or as map values), in
/// property order.
fn refs_in(def: &Value) -> Vec<String> {
    properties(def)
        .into_iter()
        .filter_map(|(_, p)| {
            ref_name(p)
                .or_else(|| p.get("items").and_then(ref_name))
                .or_else(|| map_values(p).and_then(ref_name))
        })
        .map(str::to_owned)
        .collect()
}

/// A description inside a table cell: one line, pipes escaped, paragraphs kept.
fn cell(text: &str) -> String {
    paragraphs(text).replace("\n\n", "<br><br>").replace('|', "\\|")
}

/// Joins the wrapped lines of each paragraph (schemars keeps the `///` line breaks).
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

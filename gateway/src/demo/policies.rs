//! The shipped policies, embedded so `phigate demo` runs anywhere: written into the demo
//! directory, with the care-team data generated from the demo's personas.

use std::path::Path;

/// Every policy and data file of the repository's `policies/` (a test keeps this complete).
pub const FILES: &[(&str, &str)] = &[
    ("authz.rego", include_str!("../../../policies/authz.rego")),
    ("authz_test.rego", include_str!("../../../policies/authz_test.rego")),
    ("break_glass.rego", include_str!("../../../policies/break_glass.rego")),
    ("break_glass_test.rego", include_str!("../../../policies/break_glass_test.rego")),
    ("common.rego", include_str!("../../../policies/common.rego")),
    ("common_test.rego", include_str!("../../../policies/common_test.rego")),
    ("export.rego", include_str!("../../../policies/export.rego")),
    ("export_test.rego", include_str!("../../../policies/export_test.rego")),
    ("fixtures_test.rego", include_str!("../../../policies/fixtures_test.rego")),
    ("labels.rego", include_str!("../../../policies/labels.rego")),
    ("labels_test.rego", include_str!("../../../policies/labels_test.rego")),
    ("patients.rego", include_str!("../../../policies/patients.rego")),
    ("patients_test.rego", include_str!("../../../policies/patients_test.rego")),
    ("probes.json", include_str!("../../../policies/probes.json")),
    ("scopes.rego", include_str!("../../../policies/scopes.rego")),
    ("scopes_test.rego", include_str!("../../../policies/scopes_test.rego")),
    ("tenant.rego", include_str!("../../../policies/tenant.rego")),
    ("tenant_test.rego", include_str!("../../../policies/tenant_test.rego")),
    ("data/care_teams.yaml", include_str!("../../../policies/data/care_teams.yaml")),
    ("data/fhir.json", include_str!("../../../policies/data/fhir.json")),
    ("data/roles.yaml", include_str!("../../../policies/data/roles.yaml")),
    ("data/security_labels.yaml", include_str!("../../../policies/data/security_labels.yaml")),
    ("data/tenants.json", include_str!("../../../policies/data/tenants.json")),
];

/// Writes the policies into `dir` (`dir/data/care_teams.yaml` from the personas).
///
/// # Errors
/// When a file cannot be written.
pub fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, text) in FILES {
        let text = if *name == "data/care_teams.yaml" {
            super::personas::care_teams_yaml()
        } else {
            (*text).to_owned()
        };
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_policy_file_is_embedded() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
        let mut on_disk = Vec::new();
        for sub in ["", "data"] {
            for entry in std::fs::read_dir(Path::new(root).join(sub)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_file()
                    && (name.ends_with(".rego") || name.ends_with(".json") || name.ends_with(".yaml"))
                {
                    on_disk.push(if sub.is_empty() { name } else { format!("{sub}/{name}") });
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "add new policy files to gateway/src/demo/policies.rs");
    }

    #[test]
    fn the_demo_policies_pass_their_own_tests() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path()).unwrap();
        let report = phigate_policy::run_policy_tests(dir.path());
        assert!(report.success(), "{report}");
    }
}

//! Parse errors: one error with file, line, key path and a message without the value.

use super::{replace, Fixture, SECRET, VALID};

struct Case {
    name: &'static str,
    yaml: String,
    key_path: &'static str,
    line: Option<usize>,
    message: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "unknown key names the key and the expected ones",
            yaml: replace("    address: 127.0.0.1:8443", "    adress: 127.0.0.1:8443"),
            key_path: "listeners[0].adress",
            line: Some(3),
            message: "unknown key, expected one of `name`, `address`, `tls`, `http2`",
        },
        Case {
            name: "unknown top-level key",
            yaml: format!("{VALID}lsteners: []\n"),
            key_path: "lsteners",
            line: Some(20),
            message: "unknown key, expected one of",
        },
        Case {
            name: "wrong type names the expected type, not the value",
            yaml: replace("    fhir: true", &format!("    fhir: true\n    upstream_path_prefix: [{SECRET}]")),
            key_path: "routes[0].upstream_path_prefix",
            line: Some(20),
            message: "wrong type: expected a string, found a sequence",
        },
        Case {
            name: "string where a number is expected",
            yaml: replace(
                "    sni: fhir.internal",
                &format!("    sni: fhir.internal\n    read_timeout_ms: \"{SECRET}\""),
            ),
            key_path: "upstreams[0].read_timeout_ms",
            line: Some(11),
            message: "wrong type: expected an integer ≥ 0, found a string",
        },
        Case {
            name: "unknown enum variant is not echoed",
            yaml: replace(
                "      key_path: pki/gateway.key",
                &format!("      key_path: pki/gateway.key\n      client_cert: {SECRET}"),
            ),
            key_path: "listeners[0].tls.client_cert",
            line: Some(7),
            message: "unknown variant, expected one of `none`, `optional`, `required`",
        },
        Case {
            name: "missing required key is reported at its parent",
            yaml: replace("    upstream: fhir\n", ""),
            key_path: "routes[0]",
            line: Some(16),
            message: "missing required key `upstream`",
        },
        Case {
            name: "missing top-level section",
            yaml: VALID.split("routes:").next().unwrap_or_default().to_owned(),
            key_path: "",
            line: Some(1),
            message: "missing required key `routes`",
        },
        Case {
            name: "bad YAML syntax names the line",
            yaml: replace("    sni: fhir.internal", &format!("    sni: \"{SECRET}")),
            key_path: "upstreams[0].sni",
            line: Some(10),
            message: "found unexpected end of stream, while scanning a quoted scalar",
        },
        Case {
            name: "a second colon on one line",
            yaml: replace("    upstream: fhir", "    upstream: fhir: true"),
            key_path: "routes[0]",
            line: Some(18),
            message: "mapping values are not allowed in this context",
        },
        Case {
            name: "duplicate key",
            yaml: replace("    fhir: true", "    fhir: true\n    name: again"),
            key_path: "routes[0].name",
            line: Some(20),
            message: "duplicate key `name`",
        },
    ]
}

#[test]
fn parse_errors_name_file_line_and_key_path_without_the_value() {
    for case in cases() {
        let fixture = Fixture::new(&case.yaml);
        let errors = match fixture.load() {
            Ok(_) => panic!("{}: accepted", case.name),
            Err(errors) => errors,
        };
        assert_eq!(errors.0.len(), 1, "{}: {errors}", case.name);
        let error = &errors.0[0];
        assert_eq!(error.file, fixture.path, "{}", case.name);
        assert_eq!(error.key_path, case.key_path, "{}: {error}", case.name);
        assert_eq!(error.line, case.line, "{}: {error}", case.name);
        assert!(error.message.contains(case.message), "{}: {error}", case.name);
        assert!(!errors.to_string().contains(SECRET), "{}: value echoed: {errors}", case.name);
    }
}

#[test]
fn error_line_format_is_file_line_key_message() {
    let fixture = Fixture::new(&replace("    address: 127.0.0.1:8443", "    adress: x"));
    let errors = fixture.load().expect_err("unknown key");
    let want = format!(
        "{}:3: listeners[0].adress: unknown key, expected one of `name`, `address`, `tls`, `http2`",
        fixture.path.display()
    );
    assert_eq!(errors.to_string(), want);
}

#[test]
fn missing_config_file_is_one_error_without_os_text() {
    let fixture = Fixture::new(VALID);
    let missing = fixture.dir().join("nope.yaml");
    let errors = crate::config::load(&missing).expect_err("missing file");
    assert_eq!(
        errors.to_string(),
        format!("{}: cannot read the config file: entity not found", missing.display())
    );
}

#[test]
fn empty_file_is_an_error() {
    let errors = Fixture::new("").load().expect_err("empty");
    assert_eq!(errors.0.len(), 1, "{errors}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let fixture = Fixture::new(VALID);
    let loaded = fixture.load().expect("valid");
    let dir = std::path::absolute(fixture.dir()).expect("absolute");
    assert_eq!(loaded.dir, dir);
    assert_eq!(loaded.config.listeners[0].tls.cert_path, dir.join("pki/gateway.crt"));
    let tls = loaded.config.upstreams[0].tls.as_ref().expect("tls");
    assert_eq!(tls.client_key_path, dir.join("pki/gateway-client.key"));
    // Absolute paths (the defaults here) are kept.
    assert_eq!(loaded.config.server.pid_file, std::path::PathBuf::from("/tmp/phigate.pid"));
}

#[test]
fn malformed_values_are_never_echoed() {
    let docs = [
        format!("listeners: !{SECRET} []\n"),
        format!("listeners: [{SECRET}\n"),
        format!("listeners: *{SECRET}\n"),
        format!("listeners: &{SECRET}\n"),
        format!("routes: {SECRET}\n"),
        format!("server: {{threads: {SECRET}}}\n"),
        format!("server:\n  threads: 1{SECRET}\n"),
        format!("server:\n  threads: \"\\q{SECRET}\"\n"),
        format!("trusted_proxies: {{a: {SECRET}}}\n"),
        format!("limits:\n  max_target_bytes: 184467440737095516150{}\n", SECRET.len()),
        format!("{VALID}\t{SECRET}: x\n"),
        format!("{VALID}---\n{SECRET}: 1\n"),
    ];
    for doc in docs {
        let errors = Fixture::new(&doc).load().expect_err(&doc);
        let text = errors.to_string();
        assert!(!text.contains(SECRET), "value echoed for {doc:?}: {text}");
        assert!(!text.contains("184467440737095516150"), "number echoed: {text}");
        assert_eq!(errors.0.len(), 1, "{text}");
    }
}

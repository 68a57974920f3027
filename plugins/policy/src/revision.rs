//! One policy revision: the files of a policy directory, content-hashed, parsed and prepared once,
//! then evaluated many times.
//!
//! regorus evaluates through `&mut`, so a revision keeps a pool of warm VMs and hands each
//! evaluation its own. See `benches/decide.rs` for the strategy numbers.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{RegoVM, VmError};
use regorus::{Engine, Value};
use sha2::{Digest, Sha256};

use crate::error::{EvalError, LoadError};
use crate::permit::PatientTenants;

/// Interpreter work units between two clock reads of the execution timer.
pub(crate) const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(31);

/// VMs kept warm per revision; more concurrent evaluations build a fresh one.
const POOL_MAX: usize = 64;

/// A deterministic bound beside the clock: bytecode instructions per evaluation.
const MAX_INSTRUCTIONS: usize = 5_000_000;

/// Values the gateway injects as `data.gateway` (its config, visible to policies and their tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewaySettings {
    /// The role that may use break-glass.
    pub(crate) break_glass_role: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings { break_glass_role: crate::config::default_break_glass_role() }
    }
}

impl GatewaySettings {
    fn to_value(&self) -> Value {
        let mut gw = std::collections::BTreeMap::new();
        gw.insert(Value::from("break_glass_role"), Value::from(self.break_glass_role.as_str()));
        let mut root = std::collections::BTreeMap::new();
        root.insert(Value::from("gateway"), Value::from(gw));
        Value::from(root)
    }
}

/// The files of a policy directory, read and hashed.
#[derive(Debug)]
pub(crate) struct Sources {
    /// Policies (`*.rego` but not `*_test.rego`), by relative path.
    pub(crate) policies: Vec<(String, String)>,
    /// Test modules (`*_test.rego`), by relative path.
    pub(crate) tests: Vec<(String, String)>,
    /// Data documents, by relative path.
    pub(crate) data: Vec<(String, Value)>,
    /// Probe inputs both engines must decide alike (`probes.json`), by name.
    pub(crate) probes: Vec<(String, Value)>,
    /// Content hash of everything above plus the gateway settings.
    pub(crate) revision: Arc<str>,
}

impl Sources {
    /// Reads every `.rego` under `dir` and every `.json`/`.yaml`/`.yml` under `data_dir`.
    pub(crate) fn read(
        dir: &Path,
        data_dir: &Path,
        settings: &GatewaySettings,
    ) -> Result<Sources, LoadError> {
        let mut rego = Vec::new();
        walk(dir, dir, &|p| p.extension().is_some_and(|e| e == "rego"), &mut rego)?;
        let mut data_files = Vec::new();
        if data_dir.is_dir() {
            let is_data = |p: &Path| p.extension().is_some_and(|e| e == "json" || e == "yaml" || e == "yml");
            walk(data_dir, data_dir, &is_data, &mut data_files)?;
        }
        rego.sort();
        data_files.sort();
        let mut hasher = Sha256::new();
        let (mut policies, mut tests, mut data) = (Vec::new(), Vec::new(), Vec::new());
        for (rel, abs) in rego {
            let text = read_text(&abs, &rel)?;
            hash_file(&mut hasher, "rego", &rel, text.as_bytes());
            if rel.ends_with("_test.rego") {
                tests.push((rel, text));
            } else {
                policies.push((rel, text));
            }
        }
        for (rel, abs) in data_files {
            let text = read_text(&abs, &rel)?;
            hash_file(&mut hasher, "data", &rel, text.as_bytes());
            data.push((rel.clone(), parse_data(&rel, &text)?));
        }
        let probes_path = dir.join(crate::agreement::PROBES_FILE);
        let probes = if probes_path.is_file() {
            let text = read_text(&probes_path, crate::agreement::PROBES_FILE)?;
            hash_file(&mut hasher, "probes", crate::agreement::PROBES_FILE, text.as_bytes());
            crate::agreement::parse(&text)?
        } else {
            Vec::new()
        };
        hash_file(&mut hasher, "gateway", "", settings.break_glass_role.as_bytes());
        if policies.is_empty() {
            return Err(LoadError::Empty);
        }
        let digest = hex::encode(hasher.finalize());
        let revision = Arc::from(digest.get(..16).unwrap_or(&digest));
        Ok(Sources { policies, tests, data, probes, revision })
    }

    /// An engine with the data and the given modules loaded.
    pub(crate) fn engine(&self, settings: &GatewaySettings, with_tests: bool) -> Result<Engine, LoadError> {
        let mut engine = Engine::new();
        for (rel, doc) in &self.data {
            engine
                .add_data(doc.clone())
                .map_err(|e| LoadError::Data { path: rel.clone(), message: e.to_string() })?;
        }
        engine.add_data(settings.to_value()).map_err(|e| LoadError::Rego(format!("data.gateway: {e}")))?;
        let modules = self.policies.iter().chain(self.tests.iter().filter(|_| with_tests));
        for (rel, text) in modules {
            engine.add_policy(rel.clone(), text.clone()).map_err(|e| LoadError::Rego(e.to_string()))?;
        }
        Ok(engine)
    }
}

fn hash_file(h: &mut Sha256, kind: &str, rel: &str, bytes: &[u8]) {
    for part in [kind.as_bytes(), rel.as_bytes(), bytes] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
}

fn read_text(abs: &Path, rel: &str) -> Result<String, LoadError> {
    std::fs::read_to_string(abs).map_err(|source| LoadError::Io { path: rel.to_owned(), source })
}

fn parse_data(rel: &str, text: &str) -> Result<Value, LoadError> {
    let parsed: Result<serde_json::Value, String> = if rel.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    };
    let json = parsed.map_err(|message| LoadError::Data { path: rel.to_owned(), message })?;
    if !json.is_object() {
        return Err(LoadError::Data {
            path: rel.to_owned(),
            message: "the top level must be an object".into(),
        });
    }
    Ok(Value::from(json))
}

/// Collects matching files under `dir` (sorted later), skipping hidden entries.
fn walk(
    root: &Path,
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), LoadError> {
    let io = |source| LoadError::Io { path: dir.display().to_string(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, keep, out)?;
        } else if keep(&path) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push((rel.to_string_lossy().replace('\\', "/"), path));
        }
    }
    Ok(())
}

/// A compiled revision ready to evaluate.
///
/// Served by the regorus VM (RVM): the Rego is compiled once to bytecode, and each evaluation
/// runs on a pooled VM (`execute` needs `&mut`). The tree-walking interpreter is kept for the
/// policy tests and coverage; at load time both must agree on every probe input (see
/// [`crate::agreement`]).
#[derive(Debug)]
pub(crate) struct Revision {
    /// Content hash (16 hex digits of SHA-256).
    pub(crate) id: Arc<str>,
    program: Arc<Program>,
    data: Value,
    /// `data.fhir.patient_compartment`'s types and `data.fhir.patient_linked`'s, sorted; `None`
    /// when the data has no compartment map.
    compartment: Option<Vec<Box<str>>>,
    /// `data.patients`: each patient's tenant, for checking responses of tenant-scoped decisions.
    pub(crate) patient_tenants: Arc<PatientTenants>,
    /// `data.security_labels`' keys (label tokens, sorted): the labels withheld from every
    /// decision that does not clear them.
    pub(crate) security_labels: Arc<[String]>,
    max_eval: Duration,
    pool: Mutex<Vec<RegoVM>>,
}

impl Revision {
    /// Compiles the serving program (no test modules) and checks it on a probe input.
    pub(crate) fn compile(
        sources: &Sources,
        settings: &GatewaySettings,
        entrypoint: &str,
        max_eval: Duration,
    ) -> Result<Revision, LoadError> {
        let mut engine = sources.engine(settings, false)?;
        let expected = probe(&mut engine, entrypoint)?;
        let compiled =
            engine.compile_with_entrypoint(&entrypoint.into()).map_err(|e| LoadError::Rego(e.to_string()))?;
        let program = Compiler::compile_from_policy(&compiled, &[entrypoint])
            .map_err(|e| LoadError::Rego(format!("bytecode: {e}")))?;
        let data = engine.get_data();
        let revision = Revision {
            id: sources.revision.clone(),
            program,
            compartment: compartment_types(&data),
            patient_tenants: Arc::new(PatientTenants::from_data(&data["patients"])),
            security_labels: security_labels(&data)?,
            data,
            max_eval,
            pool: Mutex::new(Vec::new()),
        };
        let got =
            revision.evaluate(probe_input()?).map_err(|e| LoadError::Rego(format!("bytecode probe: {e}")))?;
        if got != expected {
            return Err(LoadError::Disagreement { probe: "(built-in anonymous request)".into() });
        }
        crate::agreement::check(&mut engine, &revision, entrypoint, &sources.probes)?;
        Ok(revision)
    }

    /// Evaluates the entrypoint for one input. Safe to call from many threads at once.
    pub(crate) fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        let mut vm = self.checkout()?;
        vm.set_input(input);
        match vm.execute() {
            Ok(Value::Undefined) => {
                self.checkin(vm);
                Err(EvalError::Output("entrypoint is undefined"))
            }
            Ok(v) => {
                self.checkin(vm);
                Ok(v)
            }
            // A VM interrupted mid-evaluation is dropped rather than reused.
            Err(VmError::TimeLimitExceeded { .. } | VmError::InstructionLimitExceeded { .. }) => {
                Err(EvalError::Timeout)
            }
            Err(e) => Err(EvalError::Rego(e.to_string())),
        }
    }

    /// Whether resources of type `ty` belong to a patient, by the policy data the policies
    /// themselves use (`data.fhir.patient_compartment` and `data.fhir.patient_linked`). Without
    /// the compartment map every type counts: the check it gates then runs too often rather than
    /// too rarely.
    pub(crate) fn in_patient_compartment(&self, ty: &str) -> bool {
        self.compartment.as_ref().is_none_or(|types| types.binary_search_by(|t| (**t).cmp(ty)).is_ok())
    }

    fn checkout(&self) -> Result<RegoVM, EvalError> {
        if let Some(vm) = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None) {
            return Ok(vm);
        }
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| EvalError::Rego(e.to_string()))?;
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: self.max_eval,
            check_interval: TIMER_CHECK_INTERVAL,
        }));
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        Ok(vm)
    }

    fn checkin(&self, vm: RegoVM) {
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < POOL_MAX {
                pool.push(vm);
            }
        }
    }
}

/// The labels `data.security_labels` enforces: its keys, each a `system|code` token (or a bare
/// code, any system). Another shape is a load error: a typo must not switch enforcement off; so
/// is a patient's `security` list (`data.patients`) of another shape.
fn security_labels(data: &Value) -> Result<Arc<[String]>, LoadError> {
    PatientTenants::check_labels(&data["patients"])
        .map_err(|m| LoadError::Rego(format!("data.patients: {m}")))?;
    let bad = |message: &str| LoadError::Rego(format!("data.security_labels: {message}"));
    match &data["security_labels"] {
        Value::Undefined => Ok(Arc::from([])),
        Value::Object(map) => map
            .keys()
            .map(|k| match k {
                Value::String(s) if !s.is_empty() && !s.ends_with('|') => Ok(s.to_string()),
                _ => Err(bad("each key must be a label token, system|code")),
            })
            .collect(),
        _ => Err(bad("must be an object keyed by label token (system|code)")),
    }
}

/// The types whose resources belong to a patient: `data.fhir.patient_compartment`, and
/// `data.fhir.patient_linked` (types outside the compartment that name their patient).
fn compartment_types(data: &Value) -> Option<Vec<Box<str>>> {
    let Value::Object(map) = &data["fhir"]["patient_compartment"] else {
        return None;
    };
    let linked = match &data["fhir"]["patient_linked"] {
        Value::Object(linked) => Some(linked),
        _ => None,
    };
    let mut types: Vec<Box<str>> = map
        .iter()
        .chain(linked.into_iter().flat_map(|l| l.iter()))
        .filter(|(_, member)| **member == Value::Bool(true))
        .filter_map(|(ty, _)| ty.as_string().ok().map(|t| Box::from(t.as_ref())))
        .collect();
    types.sort_unstable();
    types.dedup();
    Some(types)
}

fn probe_input() -> Result<Value, LoadError> {
    Value::from_json_str(r#"{"v":1,"request":{"method":"GET","route":"probe","patients":[],"prefer":[]}}"#)
        .map_err(|e| LoadError::Rego(e.to_string()))
}

/// Evaluates the entrypoint once on an anonymous request: it must yield an object with a boolean
/// `allow`, so a renamed rule or a broken import is caught before the revision is swapped in.
fn probe(engine: &mut Engine, entrypoint: &str) -> Result<Value, LoadError> {
    let bad = |message: String| LoadError::Entrypoint { entrypoint: entrypoint.to_owned(), message };
    engine.set_input(probe_input()?);
    let out = engine.eval_rule(entrypoint.to_owned()).map_err(|e| bad(e.to_string()))?;
    match &out["allow"] {
        Value::Bool(_) => Ok(out),
        _ => Err(bad("no boolean `allow`".into())),
    }
}

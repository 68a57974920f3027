fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut e = regorus::Engine::new();
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = if p.extension().is_some_and(|x| x == "json") { serde_json::from_str(&text).unwrap() } else { serde_yaml::from_str(&text).unwrap() };
        e.add_data(regorus::Value::from(v)).unwrap();
    }
    e.add_data(regorus::Value::from_json_str(r#"{"gateway":{"break_glass_role":"break_glass"}}"#).unwrap()).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.to_string_lossy().to_string();
        if name.ends_with(".rego") && !name.ends_with("_test.rego") { e.add_policy_from_file(&p).unwrap(); }
    }
    let input = regorus::Value::from_json_str(r#"{"v":1,"principal":{"sub":"clinician_a","tenant":"tenant-a","roles":["clinician"],"scopes":["user/*.rs"],"amr":[],"cert_bound":false},
 "request":{"method":"GET","route":"fhir","path":"/fhir/Patient/a-p1","tenant":"tenant-a","patients":["a-p1"],"prefer":[],
 "fhir":{"interaction":"read","resource_type":"Patient","id":"a-p1","patients":["a-p1"],"unresolved":[],"entries":[]}},"client":{},"time":{"unix_secs":1}}"#).unwrap();
    for rule in std::env::args().skip(1) {
        let mut e2 = e.clone();
        let cp = e2.compile_with_entrypoint(&rule.as_str().into()).unwrap();
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(&cp, &[rule.as_str()]).unwrap();
        let mut vm = regorus::rvm::vm::RegoVM::new();
        vm.load_program(program);
        vm.set_max_instructions(10_000_000);
        vm.set_data(e.get_data()).unwrap();
        vm.set_input(input.clone());
        vm.execute().unwrap();
        let t = std::time::Instant::now();
        for _ in 0..2000 { vm.set_input(input.clone()); std::hint::black_box(vm.execute().unwrap()); }
        println!("{rule:<45} {:?}", t.elapsed() / 2000);
    }
}

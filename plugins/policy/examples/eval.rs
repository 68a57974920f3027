//! Evaluates input files against a policy directory, one JSON result per line:
//! `cargo run --example eval -- DIR INPUT.json...` (what `phigate policy eval` does; used by
//! `policies/opa_diff.py`).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: eval DIR INPUT.json...");
        std::process::exit(2);
    };
    let mut failed = false;
    for file in &args[2..] {
        let input = std::fs::read_to_string(file).unwrap_or_default();
        match phigate_policy::eval_input(std::path::Path::new(dir), &input) {
            Ok(v) => println!("{}", serde_json::json!({"file": file, "result": v})),
            Err(e) => {
                failed = true;
                println!("{}", serde_json::json!({"file": file, "error": e.to_string()}));
            }
        }
    }
    std::process::exit(i32::from(failed));
}

//! Evaluates one input file against a policy directory: `cargo run --example eval -- DIR FILE`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: eval DIR INPUT.json");
        std::process::exit(2);
    };
    let input = std::fs::read_to_string(file).unwrap_or_default();
    match phigate_policy::eval_input(std::path::Path::new(dir), &input) {
        Ok(v) => println!("{v:#}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

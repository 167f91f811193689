//! Runs one built-in function without the platform binary:
//! `PORT=8080 cargo run --release -p stratus-functions --example serve -- echo`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        eprintln!("usage: serve <function> [--port N] [--host ADDR]\n\nfunctions:");
        for (name, description) in stratus_functions::FUNCTIONS {
            eprintln!("  {name:<10} {description}");
        }
        std::process::exit(2);
    };
    if let Err(e) = stratus_functions::main_for(name, rest) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

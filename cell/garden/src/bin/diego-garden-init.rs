//! The in-container helper of diego-garden: `init <json>` becomes a container's shim and
//! pid 1; `exec <json>` runs one process inside a container. See `diego_garden::container`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("init"), Some(config)) => diego_garden::container::shim_main(config),
        (Some("exec"), Some(spec)) => diego_garden::container::exec_main(spec),
        (Some("-h" | "--help"), _) => {
            println!(
                "usage: diego-garden-init init <json> | exec <json>  (started by diego-garden)"
            );
            0
        }
        _ => {
            eprintln!("usage: diego-garden-init init <json> | exec <json>");
            2
        }
    };
    #[allow(clippy::exit)] // the process's exit status is the container's or the process's
    std::process::exit(code);
}

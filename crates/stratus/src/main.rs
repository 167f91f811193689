//! `stratus`: a thin command line over the library crates.

mod backends;
#[cfg(feature = "etcd")]
mod bench_across;
mod bench_cluster;
#[cfg(feature = "etcd")]
mod bench_netns;
#[cfg(feature = "etcd")]
mod bench_netns_sim;
#[cfg(feature = "etcd")]
mod bench_netns_workflows;
mod bench_placement;
mod cli;
mod cluster_cmd;
mod controlplane;
mod etcd;
mod export;
mod runs;
mod sim_cmd;
mod trace;
mod worker;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // Function servers get no tracing subscriber and no multi-thread runtime.
    if let cli::Cmd::Fn { name, args } = &args.cmd {
        return match stratus_functions::main_for(name, args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stratus fn {name}: {:#}", anyhow::Error::from(e));
                std::process::ExitCode::FAILURE
            }
        };
    }
    // fuser logs benign races (a reply to a request the kernel already
    // dropped because the reading process was killed) as errors; lazyfs
    // counts its own failures in its stats.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
                .unwrap_or_else(|_| "stratus=info,stratus_gateway=info,fuser=off,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

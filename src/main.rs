use clap::Parser;

fn main() -> std::process::ExitCode {
    match l3::cli::run(l3::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

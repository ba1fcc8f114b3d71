//! Wiring only: install the rustls provider, parse the CLI, init tracing, dispatch.

use clap::Parser;

use regate::cli::{self, Cli, Command};

// The global allocator is declared by regorus (its `allocator-memory-limits` feature):
// mimalloc v3, counting the bytes each thread holds (`crates/regorus-mimalloc`).

fn main() -> std::process::ExitCode {
    tune_process();
    quiet_on_closed_stdout();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // Logs are for the server; a command prints what was asked for, and warnings and errors.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    regate::telemetry::init(cli.log_format, cli.log_level.as_deref(), default_level);
    let result = run(cli);
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        // A reader that went away (`regate audit -f x | head`) is not an error to report.
        Err(e) if cli::is_broken_pipe(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {}", cli::error_message(&e));
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Some(strategy) = cli.eval_strategy {
        regate::policy::bytecode::set_strategy(strategy.into());
    }
    regate::policy::memory::set_limits(cli.evaluation_memory_mib, cli.memory_ceiling_mib);
    match cli.command {
        Command::Serve(args) => {
            // Memory freed after a burst of large requests goes back to the OS at once instead
            // of a second later, and only then if the allocator is used again (an operator's
            // MIMALLOC_PURGE_DELAY wins). docs/RELIABILITY.md, "Memory under hostile load".
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                alloc_release::purge_without_delay();
            }
            if std::env::var_os("MIMALLOC_PAGE_RECLAIM_ON_FREE").is_none() {
                alloc_release::reclaim_pages_of_ended_threads_on_free();
            }
            // Evaluation is CPU-bound: a judgement that needs longer than the worker may be held
            // (`server::in_place`) turns its worker thread into a blocking one
            // (`block_in_place`), and the thread that takes over the worker's tasks comes from the
            // blocking pool. A few threads per core use the cores fully; hundreds (tokio's default ceiling, reached under a burst of
            // `max_in_flight` requests) only add memory, each with its own engines and heap.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(cores * 2 + 2)
                // A worker that read a large body keeps its pages until it collects, even once
                // the body was dropped on another thread; one that then idles would keep them
                // for good. One atomic load per park unless a large body was released since.
                .on_thread_park(alloc_release::collect_if_released_elsewhere)
                .on_thread_stop(regate::policy::memory::thread_ends)
                .build()?;
            runtime.block_on(cli::serve::run(args))
        }
        Command::Eval(args) => cli::eval::run(args),
        Command::Diff(args) => cli::diff::run(args),
        Command::Check(args) => cli::check::run(args, false),
        Command::Policies(args) => cli::check::run(args, true),
        Command::Certs(args) => cli::certs::run(args),
        Command::Test(args) => cli::test::run(args),
        Command::Audit(args) => cli::audit::run(args),
        Command::Verify(args) => cli::verify::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Completions(args) => cli::completions::run(args),
        Command::New(args) => cli::new::run(args),
    }
}

/// `regate policies | head` closes stdout early; println! then panics. Exit quietly with the
/// shell's SIGPIPE status instead, as other command-line tools do. A panic inside a policy's
/// evaluation is caught and reported as that policy's failure (`policy::panics`): print nothing.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") {
            std::process::exit(141);
        }
        if regate::policy::panics::is_caught() {
            // A policy's evaluation: reported as that policy's failure, where its message
            // is withheld or scrubbed as any engine error is (it may quote a Secret's value).
            if let Some(location) = info.location() {
                regate::policy::panics::note_location(location);
            }
            return;
        }
        default_hook(info);
    }));
}

/// Process-wide settings, made before any thread starts (issue 7):
/// - library errors capture no backtrace unless `RUST_LIB_BACKTRACE` asks for one (regorus's
///   parser reports every backtrack through `anyhow`; with `RUST_BACKTRACE=1` alone, loading the
///   default policies took twice as long). Panics still get theirs from `RUST_BACKTRACE`.
/// - no transparent huge pages: mimalloc would back its arenas with 2 MiB pages, adding tens of
///   MiB of resident memory to a server whose heap is a few MiB.
fn tune_process() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

//! `dochash`: the command-line front end. Each subcommand lives in its own module; everything
//! they share with `dochash-tui` is in the library.

mod bench;
mod bench_search;
mod cli;
mod embed;
mod eval;
mod index_cmd;
mod mcp;
mod model_cmd;
mod query;
mod retrieval;
mod shared;
mod train_cmd;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Before anything else: this process may be the document reader another dochash started.
    if let Some(code) = dochash::corpus::document_helper_main() {
        return code;
    }
    dochash::corpus::use_document_helper();
    dochash::fsx::private_umask();
    dochash::encoder::keep_large_buffers();
    let cli = Cli::parse();
    shared::init_logging(cli.global.verbose, cli.global.quiet);
    if let Ok(home) = dochash::app::Home::locate() {
        home.narrow();
    }
    let result = match &cli.command {
        Command::Model(m) => model_cmd::run(&cli.global, m),
        Command::Embed(e) => embed::run(&cli.global, e),
        Command::Index(a) => index_cmd::run(&cli.global, a),
        Command::Query(a) => query::run(&cli.global, a),
        Command::Status(a) => query::status(a),
        Command::Bench(b) => bench::run(&cli.global, b),
        Command::Watch(a) => watch::run(&cli.global, a),
        Command::Mcp(a) => mcp::run(&cli.global, a),
        Command::Eval(e) => eval::run(&cli.global, e),
        Command::Train(a) => train_cmd::run(&cli.global, a),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`dochash status | head -1`): nothing is wrong,
        // and there is nobody to tell.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            shared::print_error(&e);
            ExitCode::from(2)
        }
    }
}

fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

//! `fake-llm --script FILE [--addr 127.0.0.1:0]`: serve a scripted fake LLM for
//! end-to-end tests in other processes. Prints the base URL on stdout (one line), then
//! serves until killed. `GET /_fake/requests` returns every recorded request;
//! `POST /_fake/script` replaces the script.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use worktrain_testkit::{FakeLlm, Script};

fn usage() -> ExitCode {
    eprintln!("usage: fake-llm [--script FILE] [--addr 127.0.0.1:0]");
    ExitCode::from(3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut script = Script::default();
    let mut addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--script" => {
                let Some(p) = args.next() else { return usage() };
                match Script::load(&PathBuf::from(p)) {
                    Ok(s) => script = s,
                    Err(e) => {
                        eprintln!("fake-llm: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            "--addr" => {
                let Some(v) = args.next() else { return usage() };
                match v.parse() {
                    Ok(a) => addr = a,
                    Err(e) => {
                        eprintln!("fake-llm: bad --addr {v}: {e}");
                        return usage();
                    }
                }
            }
            _ => return usage(),
        }
    }
    let (base_url, handle) = match FakeLlm::start_on(addr, script).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("fake-llm: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{base_url}");
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown();
    ExitCode::SUCCESS
}

//! health-predict-store: s3s-fs's S3 service on the folder given as the one argument, with AWS
//! Signature V4 authentication for the key pair in S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY (read
//! from the environment, never the command line: argv is world-readable in /proc). It refuses to
//! start without both. Listens on STORE_ADDRESS (default 0.0.0.0:9000); stops on SIGTERM or
//! SIGINT after finishing the requests in flight (at most 10 s). s3s-fs writes each object to a
//! temporary file and renames it into place, so a killed process leaves no half-written object.

use std::env;
use std::process::exit;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s_fs::FileSystem;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

fn required(name: &str) -> String {
    match env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => {
            eprintln!("error: {name} is not set: the store does not run without credentials");
            exit(2);
        }
    }
}

fn main() -> s3s_fs::Result {
    let mut args = env::args_os().skip(1);
    let (Some(root), None) = (args.next(), args.next()) else {
        eprintln!("usage: health-predict-store <data folder>");
        eprintln!("  env: S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, STORE_ADDRESS (0.0.0.0:9000)");
        exit(2);
    };
    let auth = SimpleAuth::from_single(required("S3_ACCESS_KEY_ID"), required("S3_SECRET_ACCESS_KEY"));
    let address = env::var("STORE_ADDRESS").unwrap_or_else(|_| "0.0.0.0:9000".to_owned());
    // RUST_LOG chooses what is logged; by default the start, the stop and every error.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
    serve(root.into(), auth, address)
}

#[tokio::main]
async fn serve(root: std::path::PathBuf, auth: SimpleAuth, address: String) -> s3s_fs::Result {
    let mut builder = S3ServiceBuilder::new(FileSystem::new(root)?);
    builder.set_auth(auth);
    let service = builder.build();

    let listener = TcpListener::bind(address.as_str()).await?;
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    info!("serving S3 at http://{}, signature V4 required", listener.local_addr()?);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    error!("error accepting a connection: {err}");
                    continue;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let connection = http.serve_connection(TokioIo::new(socket), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(Duration::from_secs(10)) => {},
    }
    info!("stopped");
    Ok(())
}

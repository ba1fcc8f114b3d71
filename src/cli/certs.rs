//! `regate certs generate`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a CA and a server certificate signed by it (ECDSA P-256, server auth).
    Generate {
        /// DNS names (and IPs) for the server certificate, besides localhost and 127.0.0.1.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Output directory for ca.crt, tls.crt and tls.key.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<i32> {
    match args.command {
        CertsCommand::Generate { dns, out, days } => {
            let generated = crate::tls::certs::generate(&dns, &out, days)?;
            println!("wrote {}", generated.ca_path.display());
            println!("wrote {}", generated.cert_path.display());
            println!("wrote {} (mode 0600)", generated.key_path.display());
            println!("caBundle: {}", generated.ca_bundle);
            Ok(0)
        }
    }
}

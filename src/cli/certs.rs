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
    /// Generate a server certificate (ECDSA P-256, server auth) signed by the CA in the output
    /// directory (ca.crt and ca.key), or by a new CA written there.
    Generate {
        /// DNS names (and IPs) for the server certificate, besides localhost and 127.0.0.1.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Output directory for ca.crt, ca.key, tls.crt and tls.key.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace an existing server certificate and key (the CA is kept when its key is
        /// there).
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<i32> {
    match args.command {
        CertsCommand::Generate {
            dns,
            out,
            days,
            force,
        } => {
            let replaced = crate::tls::certs::would_replace(&out);
            if !force && !replaced.is_empty() {
                let names: Vec<String> = replaced.iter().map(|p| p.display().to_string()).collect();
                eprintln!(
                    "regate certs generate: {} already exist(s); pass --force to replace {}",
                    names.join(", "),
                    if replaced.len() == 1 { "it" } else { "them" }
                );
                return Ok(2);
            }
            let generated = crate::tls::certs::generate(&dns, &out, days)?;
            if generated.reused_ca {
                println!(
                    "kept {} (signed by the existing CA; the caBundle is unchanged)",
                    generated.ca_path.display()
                );
            } else {
                println!("wrote {}", generated.ca_path.display());
                println!("wrote {} (mode 0600)", generated.ca_key_path.display());
            }
            println!("wrote {}", generated.cert_path.display());
            println!("wrote {} (mode 0600)", generated.key_path.display());
            println!("caBundle: {}", generated.ca_bundle);
            Ok(0)
        }
    }
}

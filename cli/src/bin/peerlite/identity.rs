//! `peerlite identity`: create, export, delete and list stored TLS identities.

use std::path::Path;

use clap::Subcommand;
use peerlite_cli::admin::api::NewIdentity;
use peerlite_cli::admin::ops;

use crate::target::Target;

/// Identity subcommands.
#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Create a self-signed identity and store it under LABEL.
    Create {
        /// The label to store it under.
        label: String,
        /// Common name (e.g. the host name clients use).
        #[arg(long, default_value = "peerlite")]
        common_name: String,
        /// Organization.
        #[arg(long)]
        organization: Option<String>,
        /// Organizational unit.
        #[arg(long)]
        organization_unit: Option<String>,
        /// Contact email address.
        #[arg(long)]
        email: Option<String>,
        /// Expiration, RFC 3339 (e.g. 2030-01-01T00:00:00Z); default one year from now.
        #[arg(long)]
        expiration: Option<String>,
    },
    /// Renew the self-signed identity LABEL (e.g. once it expired): a new certificate with
    /// the same attributes and server names. Its fingerprint is new: give the new
    /// certificate to clients that pin the old one.
    Renew {
        /// The identity's label.
        label: String,
        /// Expiration, RFC 3339 (e.g. 2030-01-01T00:00:00Z); default one year from now.
        #[arg(long)]
        expiration: Option<String>,
    },
    /// Print the certificate of LABEL in PEM (give it to clients to pin).
    ExportCert {
        /// The identity's label.
        label: String,
    },
    /// Delete the identity stored under LABEL.
    Delete {
        /// The identity's label.
        label: String,
    },
    /// List stored identities: label, SHA-256 fingerprint, expiration.
    List,
}

pub(crate) fn run(db_path: &Path, command: IdentityCommand) -> Result<(), String> {
    let text = |e: ops::Failure| e.to_string();
    match command {
        IdentityCommand::Create {
            label,
            common_name,
            organization,
            organization_unit,
            email,
            expiration,
        } => {
            let request = NewIdentity {
                common_name,
                organization,
                organization_unit,
                email,
                expiration,
            };
            // Made first, so that bad options create no database.
            let made = ops::make_identity(&request).map_err(text)?;
            let mut db = Target::open(db_path)?;
            let id = db.create_identity(&label, &request, &made).map_err(text)?;
            println!("created {label} sha256 {}", id.sha256);
        }
        IdentityCommand::Renew { label, expiration } => {
            if let Some(t) = &expiration {
                ops::parse_time(t).map_err(text)?;
            }
            let mut db = Target::open_existing(db_path)?;
            let id = db
                .renew_identity(&label, expiration.as_deref())
                .map_err(text)?;
            println!(
                "renewed {label} sha256 {} expires {}",
                id.sha256, id.expires
            );
        }
        IdentityCommand::ExportCert { label } => {
            let mut db = Target::open_existing(db_path)?;
            print!("{}", db.certificate(&label).map_err(text)?);
        }
        IdentityCommand::Delete { label } => {
            let mut db = Target::open_existing(db_path)?;
            db.delete_identity(&label).map_err(text)?;
            println!("deleted {label}");
        }
        IdentityCommand::List => {
            let mut db = Target::open_existing(db_path)?;
            for id in db.identities().map_err(text)? {
                println!("{}\tsha256 {}\texpires {}", id.label, id.sha256, id.expires);
            }
        }
    }
    Ok(())
}

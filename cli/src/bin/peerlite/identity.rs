//! `peerlite identity`: create, export, delete and list stored TLS identities.

use std::path::Path;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use peerlite_smol::{IdentityAttributes, TlsIdentity};

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
    if let IdentityCommand::Create {
        label,
        common_name,
        organization,
        organization_unit,
        email,
        expiration,
    } = command
    {
        // Made first, so that bad options create no database.
        let now = SystemTime::now();
        let expiration = match expiration {
            Some(text) => parse_time(&text)?,
            None => now + Duration::from_secs(365 * 24 * 3600),
        };
        let attributes = IdentityAttributes {
            common_name: common_name.clone(),
            organization,
            organization_unit,
            email,
        };
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            common_name,
        ];
        let id = TlsIdentity::self_signed(&attributes, expiration, now, &names)
            .map_err(|e| e.to_string())?;
        let db = crate::open_db(db_path)?;
        if TlsIdentity::load(&db, &label)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err(format!(
                "an identity labelled {label:?} exists; delete it first (or renew it)"
            ));
        }
        id.save(&db, &label).map_err(|e| e.to_string())?;
        println!("created {label} sha256 {}", id.sha256_fingerprint());
        return Ok(());
    }
    // The other commands read (or change) an existing database.
    let db = crate::open_existing_db(db_path)?;
    match command {
        IdentityCommand::Create { .. } => {}
        IdentityCommand::Renew { label, expiration } => {
            let old = load(&db, &label)?;
            let now = SystemTime::now();
            let expiration = match expiration {
                Some(text) => parse_time(&text)?,
                None => now + Duration::from_secs(365 * 24 * 3600),
            };
            let new = old.renewed(expiration, now).map_err(|e| e.to_string())?;
            new.save(&db, &label).map_err(|e| e.to_string())?;
            println!(
                "renewed {label} sha256 {} expires {}",
                new.sha256_fingerprint(),
                format_time(expiration)
            );
        }
        IdentityCommand::ExportCert { label } => print!("{}", load(&db, &label)?.certificate_pem()),
        IdentityCommand::Delete { label } => {
            if !TlsIdentity::delete(&db, &label).map_err(|e| e.to_string())? {
                return Err(format!("no identity labelled {label:?}"));
            }
            println!("deleted {label}");
        }
        IdentityCommand::List => {
            for key in db.local_ids("identity/").map_err(|e| e.to_string())? {
                let label = key.trim_start_matches("identity/");
                let id = load(&db, label)?;
                let expires = id
                    .expiration()
                    .map(format_time)
                    .unwrap_or_else(|| "?".into());
                println!(
                    "{label}\tsha256 {}\texpires {expires}",
                    id.sha256_fingerprint()
                );
            }
        }
    }
    Ok(())
}

fn load(db: &peerlite_storage::Database, label: &str) -> Result<TlsIdentity, String> {
    TlsIdentity::load(db, label)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no identity labelled {label:?}"))
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!("invalid --expiration {text:?} (use RFC 3339, e.g. 2030-01-01T00:00:00Z): {e}")
        })?;
    Ok(t.into())
}

fn format_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

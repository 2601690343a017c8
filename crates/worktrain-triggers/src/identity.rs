//! Forge clients for the identities of `triggers.yml`.

use std::sync::Arc;

use worktrain_core::run::ForgeKind;
use worktrain_forge::{Credentials, Forge, ForgeError};

use crate::config::IdentityDef;

/// A client for an identity (its API base URL, token or GitHub App).
pub fn connect(def: &IdentityDef) -> Result<Arc<dyn Forge>, ForgeError> {
    match def {
        IdentityDef::Github(g) => worktrain_forge::connect(
            ForgeKind::Github,
            g.api_url.as_ref().map(|u| u.value()),
            Credentials::Token(g.token.value().to_owned()),
        ),
        IdentityDef::GithubApp(a) => {
            let pem = match (&a.private_key, &a.private_key_file) {
                (Some(k), _) => k.value().to_owned(),
                (None, Some(f)) => std::fs::read_to_string(f.value())
                    .map_err(|e| ForgeError::Invalid(format!("{}: {e}", f.value())))?,
                (None, None) => {
                    return Err(ForgeError::Invalid(
                        "the GitHub App has no private key".into(),
                    ));
                }
            };
            worktrain_forge::connect(
                ForgeKind::Github,
                a.api_url.as_ref().map(|u| u.value()),
                Credentials::GithubApp {
                    app_id: a.app_id,
                    installation_id: a.installation_id,
                    private_key_pem: pem,
                },
            )
        }
        IdentityDef::Gitlab(g) => worktrain_forge::connect(
            ForgeKind::Gitlab,
            g.api_url.as_ref().map(|u| u.value()),
            Credentials::Token(g.token.value().to_owned()),
        ),
    }
}

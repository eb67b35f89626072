//! Reading `kubernetes.io/tls` Secrets into certificate material, checked well enough that a
//! plan already says when a Secret is unusable.

use super::FastMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tollgate_contract::TlsMaterial;

/// Verdicts on Secrets, kept between builds by [`BuildCache`](super::BuildCache): keyed by
/// the Secret's allocation, which the cache holds on to, so an address is never reused for a
/// different Secret while its verdict is kept. Sources share unchanged objects, so a Secret
/// that did not change is not parsed again (key parsing was most of a change's cost with
/// thousands of certificates).
#[derive(Debug, Default)]
pub struct SecretVerdicts(FastMap<usize, (Arc<Secret>, Result<TlsMaterial, String>)>);

impl SecretVerdicts {
    /// Forgets the verdicts of Secrets the last build's snapshot no longer has.
    fn keep_only(&mut self, secrets: &[Arc<Secret>]) {
        if self.0.is_empty() {
            return;
        }
        let live: std::collections::HashSet<usize> =
            secrets.iter().map(|s| Arc::as_ptr(s) as usize).collect();
        self.0.retain(|k, _| live.contains(k));
    }
}

/// Secrets by namespace and name, with each one's verdict cached.
pub(crate) struct SecretIndex<'a> {
    secrets: FastMap<(&'a str, &'a str), &'a Arc<Secret>>,
    verdicts: &'a mut SecretVerdicts,
    all: &'a [Arc<Secret>],
}

impl Drop for SecretIndex<'_> {
    fn drop(&mut self) {
        self.verdicts.keep_only(self.all);
    }
}

impl<'a> SecretIndex<'a> {
    pub(crate) fn new(secrets: &'a [Arc<Secret>], verdicts: &'a mut SecretVerdicts) -> Self {
        SecretIndex {
            secrets: secrets
                .iter()
                .map(|s| {
                    (
                        (
                            s.metadata.namespace.as_deref().unwrap_or("default"),
                            s.metadata.name.as_deref().unwrap_or_default(),
                        ),
                        s,
                    )
                })
                .collect(),
            verdicts,
            all: secrets,
        }
    }

    /// A Secret by namespace and name.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&'a Arc<Secret>> {
        self.secrets.get(&(namespace, name)).copied()
    }

    /// The certificate material of a Secret, or why it cannot be used.
    /// `Err(None)` means the Secret does not exist.
    pub(crate) fn material(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<TlsMaterial, Option<String>> {
        let Some(secret) = self.secrets.get(&(namespace, name)) else {
            return Err(None);
        };
        self.verdicts
            .0
            .entry(Arc::as_ptr(secret) as usize)
            .or_insert_with(|| ((*secret).clone(), read_tls_secret(secret)))
            .1
            .clone()
            .map_err(Some)
    }
}

/// The first 16 bytes of a digest in hex: the fingerprints the model prints for Secret
/// material instead of the material.
pub(crate) fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The value of a Secret's key, from `data` or (in manifests) `stringData`.
pub(crate) fn secret_bytes(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })
}

/// Checks a Secret holds a PEM certificate chain and a matching private key.
pub fn read_tls_secret(secret: &Secret) -> Result<TlsMaterial, String> {
    let get = |k: &str| secret_bytes(secret, k);
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    let (Some(crt), Some(key)) = (get("tls.crt"), get("tls.key")) else {
        return Err(format!("Secret of type {ty} lacks tls.crt or tls.key"));
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("tls.key holds no usable private key: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| format!("tls.key is not a supported private key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("tls.key does not belong to the certificate in tls.crt: {e}"))?;

    let cert_chain_pem =
        String::from_utf8(crt).map_err(|_| "tls.crt is not UTF-8 PEM".to_string())?;
    let private_key_pem =
        String::from_utf8(key).map_err(|_| "tls.key is not UTF-8 PEM".to_string())?;
    let mut h = Sha256::new();
    h.update(cert_chain_pem.as_bytes());
    h.update(private_key_pem.as_bytes());
    let fingerprint = hex16(&h.finalize());
    Ok(TlsMaterial {
        cert_chain_pem: cert_chain_pem.into(),
        private_key_pem: private_key_pem.into(),
        fingerprint,
    })
}

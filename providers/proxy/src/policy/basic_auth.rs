//! ingress-nginx basic authentication (`auth-type: basic`), one policy layer of a forwarding
//! route: a request without a listed user's password gets 401 and a `Basic` challenge, as
//! nginx's `auth_basic` (test/e2e/annotations/auth.go in ingress-nginx asserts the 401, its
//! `WWW-Authenticate` and that the right credentials pass).
//!
//! Password hashes are those nginx's `auth_basic_user_file` accepts: crypt(3) forms (`$apr1$`,
//! `$1$`, `$5$`, `$6$`, `$2y$`, DES), `{SHA}`, `{SSHA}` and `{PLAIN}`. The crypt forms are slow
//! by design (bcrypt takes milliseconds), so they are checked on the blocking pool, never on a
//! request worker, and a credential once accepted is remembered in a small lock-free table
//! for the life of this configuration generation: a browser sends the same header on every
//! request, and checking it anew each time would make every request as slow as a login.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use http::{header, HeaderMap, HeaderValue};
use sha1::{Digest, Sha1};

/// One user's stored password, ready to check.
#[derive(Debug)]
enum Stored {
    /// A crypt(3)-style hash (`$...$` or DES), checked on the blocking pool.
    Crypt(String),
    /// `{SHA}`: base64 of SHA-1 of the password.
    Sha([u8; 20]),
    /// `{SSHA}`: base64 of SHA-1 of password and salt, then the salt.
    Ssha { digest: [u8; 20], salt: Vec<u8> },
    /// `{PLAIN}`: the password itself.
    Plain(String),
}

/// How many accepted credentials are remembered. A slot is two words; collisions only
/// evict, so a full table costs a re-check, never a wrong answer.
const REMEMBERED: usize = 256;

/// A route's basic-authentication policy.
pub struct CompiledBasicAuth {
    /// `Basic realm="..."`, sent with every 401.
    challenge: HeaderValue,
    users: HashMap<String, Stored>,
    /// Keys of the remembered credentials: two independently keyed SipHash values of the
    /// `Authorization` header (128 bits, keys random per generation), so a header cannot be
    /// crafted to look remembered.
    seen: Box<[(AtomicU64, AtomicU64)]>,
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
}

impl std::fmt::Debug for CompiledBasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledBasicAuth")
            .field("challenge", &self.challenge)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of looking at a request's credentials without doing slow work.
pub enum Verdict {
    Allowed,
    Denied,
    /// A crypt hash must be computed: call [`CompiledBasicAuth::check_slow`] off the worker.
    Slow {
        password: String,
        hash: String,
        key: (u64, u64),
    },
}

impl CompiledBasicAuth {
    pub fn compile(policy: &tollgate_contract::BasicAuth) -> Arc<CompiledBasicAuth> {
        // nginx quotes the realm as given; a quote or control character would break the
        // header, so those are dropped (the builder refuses them already).
        let realm: String = policy
            .realm
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .unwrap_or(HeaderValue::from_static("Basic realm=\"\""));
        let mut users = HashMap::with_capacity(policy.users.len());
        for (name, hash) in &policy.users {
            if let Some(stored) = parse_stored(hash) {
                // The first line naming a user is the one nginx's file scan finds.
                users.entry(name.clone()).or_insert(stored);
            }
        }
        Arc::new(CompiledBasicAuth {
            challenge,
            users,
            seen: (0..REMEMBERED)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            keys: Default::default(),
        })
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    /// Checks a request's `Authorization: Basic` header as far as it can without a crypt
    /// computation.
    pub fn verdict(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Verdict::Denied;
        };
        let key = self.key_of(value.as_bytes());
        if self.remembered(key) {
            return Verdict::Allowed;
        }
        let Some((user, password)) = basic_credentials(value) else {
            return Verdict::Denied;
        };
        let ok = match self.users.get(&user) {
            None => false,
            Some(Stored::Plain(p)) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Some(Stored::Sha(d)) => constant_time_eq(d, &Sha1::digest(password.as_bytes())[..]),
            Some(Stored::Ssha { digest, salt }) => {
                let mut h = Sha1::new();
                h.update(password.as_bytes());
                h.update(salt);
                constant_time_eq(digest, &h.finalize()[..])
            }
            Some(Stored::Crypt(hash)) => {
                return Verdict::Slow {
                    password,
                    hash: hash.clone(),
                    key,
                }
            }
        };
        if ok {
            self.remember(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// The crypt check of a [`Verdict::Slow`]; blocking, seconds at worst for a bcrypt hash of
    /// a high cost. Remembers the credential when it is right.
    pub fn check_slow(&self, password: &str, hash: &str, key: (u64, u64)) -> bool {
        let ok = crypt3_rs::unix::verify(password, hash);
        if ok {
            self.remember(key);
        }
        ok
    }

    fn key_of(&self, header: &[u8]) -> (u64, u64) {
        let mut a = self.keys.0.build_hasher();
        a.write(header);
        let mut b = self.keys.1.build_hasher();
        b.write(header);
        // 0 marks an empty slot.
        (a.finish() | 1, b.finish())
    }

    fn remembered(&self, (a, b): (u64, u64)) -> bool {
        let slot = &self.seen[(a as usize >> 1) % REMEMBERED];
        // A slot torn between two writers matches neither: a re-check, not a wrong answer.
        slot.0.load(Ordering::Acquire) == a && slot.1.load(Ordering::Acquire) == b
    }

    fn remember(&self, (a, b): (u64, u64)) {
        let slot = &self.seen[(a as usize >> 1) % REMEMBERED];
        slot.0.store(0, Ordering::Release);
        slot.1.store(b, Ordering::Release);
        slot.0.store(a, Ordering::Release);
    }
}

/// The user and password of an `Authorization: Basic` value (RFC 7617): the scheme is
/// case-insensitive, the password is everything after the first colon.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let v = value.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Recognises a stored password in the forms nginx accepts; `None` for one it cannot check.
fn parse_stored(hash: &str) -> Option<Stored> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(p) = hash.strip_prefix("{PLAIN}") {
        return Some(Stored::Plain(p.to_string()));
    }
    if let Some(d) = hash.strip_prefix("{SHA}") {
        return b64.decode(d).ok()?.try_into().ok().map(Stored::Sha);
    }
    if let Some(d) = hash.strip_prefix("{SSHA}") {
        let raw = b64.decode(d).ok()?;
        if raw.len() <= 20 {
            return None;
        }
        let (digest, salt) = raw.split_at(20);
        return Some(Stored::Ssha {
            digest: digest.try_into().ok()?,
            salt: salt.to_vec(),
        });
    }
    crypt3_rs::Hash::try_from(hash)
        .ok()
        .map(|_| Stored::Crypt(hash.to_string()))
}

/// Whether a stored password is in a form this proxy can check (for the builder's
/// diagnostics: a user whose hash cannot be checked can never log in).
pub fn hash_is_supported(hash: &str) -> bool {
    parse_stored(hash).is_some()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(users: &[(&str, &str)]) -> Arc<CompiledBasicAuth> {
        CompiledBasicAuth::compile(&tollgate_contract::BasicAuth {
            realm: "team \"a\"".into(),
            users: users
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect(),
            secret: "ns/s".into(),
            fingerprint: String::new(),
        })
    }

    fn headers(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        h
    }

    fn allowed(p: &CompiledBasicAuth, h: &HeaderMap) -> bool {
        match p.verdict(h) {
            Verdict::Allowed => true,
            Verdict::Denied => false,
            Verdict::Slow {
                password,
                hash,
                key,
            } => p.check_slow(&password, &hash, key),
        }
    }

    #[test]
    fn every_hash_form_nginx_accepts() {
        // `openssl passwd -apr1 -salt Vg2PvzfF bar` (htpasswd's default), `-nbs` (SHA), `-nbB` (bcrypt), openssl passwd -1/-5/-6.
        let p = policy(&[
            ("apr", "$apr1$Vg2PvzfF$Y.yCbSb/.WzEyY7th3cn4/"),
            ("sha", "{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00="),
            ("plain", "{PLAIN}bar"),
            (
                "bcrypt",
                "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe",
            ),
        ]);
        assert!(allowed(&p, &headers("apr", "bar")));
        assert!(!allowed(&p, &headers("apr", "baz")));
        assert!(allowed(&p, &headers("sha", "bar")));
        assert!(!allowed(&p, &headers("sha", "bars")));
        assert!(allowed(&p, &headers("plain", "bar")));
        assert!(allowed(&p, &headers("bcrypt", "password")));
        assert!(!allowed(&p, &headers("bcrypt", "Password")));
        assert!(!allowed(&p, &headers("nobody", "bar")));
        assert!(!allowed(&p, &HeaderMap::new()));
        assert_eq!(p.challenge(), "Basic realm=\"team a\"");
    }

    #[test]
    fn a_remembered_credential_skips_the_slow_check_and_a_wrong_one_is_never_remembered() {
        let p = policy(&[(
            "bcrypt",
            "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe",
        )]);
        assert!(matches!(
            p.verdict(&headers("bcrypt", "password")),
            Verdict::Slow { .. }
        ));
        assert!(allowed(&p, &headers("bcrypt", "password")));
        assert!(matches!(
            p.verdict(&headers("bcrypt", "password")),
            Verdict::Allowed
        ));
        assert!(!allowed(&p, &headers("bcrypt", "wrong")));
        assert!(matches!(
            p.verdict(&headers("bcrypt", "wrong")),
            Verdict::Slow { .. }
        ));
    }

    #[test]
    fn passwords_may_hold_colons_and_schemes_any_case() {
        let p = policy(&[("u", "{PLAIN}a:b")]);
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode("u:a:b");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("bAsIc {token}")).unwrap(),
        );
        assert!(allowed(&p, &h));
        assert!(!hash_is_supported("not a hash"));
        assert!(hash_is_supported("{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00="));
    }
}

//! The credentials file: parsing and validation that collects every problem and never quotes a secret.
//!
//! Part of [`super`]; imports nothing outside it but std and the hashing crates.
use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialsFile {
    credentials: Vec<CredentialEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialEntry {
    access_key_id: String,
    #[serde(default)]
    secret_access_key_env: Option<String>,
    #[serde(default)]
    secret_access_key: Option<SecretString>,
    principal_id: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    accept_unsigned_payload: bool,
}

/// A string whose deserialization errors never quote the value (serde's default "invalid type:
/// integer `12345`" would print a mistyped secret).
pub(super) struct SecretString(String);

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        const NOT_A_STRING: &str = "secret_access_key must be a string";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretString, E> {
                Ok(SecretString(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretString, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Parses and validates a credentials file, collecting every problem.
pub(super) fn parse_credentials(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<SigV4Credential>, Vec<String>> {
    let file: CredentialsFile = serde_norway::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    if file.credentials.is_empty() {
        errors.push("no credentials are defined".to_owned());
    }
    let mut out: Vec<SigV4Credential> = Vec::with_capacity(file.credentials.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, entry) in file.credentials.into_iter().enumerate() {
        let CredentialEntry {
            access_key_id,
            secret_access_key_env,
            secret_access_key,
            principal_id,
            resources,
            accept_unsigned_payload,
        } = entry;
        let id_ok = !access_key_id.is_empty()
            && access_key_id.len() <= 128
            && access_key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        // Only a well-formed id is safe to echo; otherwise name the entry by position.
        let label = if id_ok {
            format!("credential {access_key_id}")
        } else {
            errors.push(format!(
                "credentials[{index}]: access_key_id must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'"
            ));
            format!("credentials[{index}]")
        };
        if id_ok && let Some(first) = seen.insert(access_key_id.clone(), index) {
            errors.push(format!(
                "{label}: duplicate access_key_id (also credentials[{first}])"
            ));
        }
        let from_env = secret_access_key_env
            .as_deref()
            .and_then(env)
            .filter(|s| !s.is_empty());
        let secret = match (from_env, secret_access_key) {
            (Some(secret), _) => Some(secret),
            (None, Some(SecretString(literal))) if !literal.is_empty() => Some(literal),
            (None, Some(_)) => {
                errors.push(format!("{label}: secret_access_key is empty"));
                None
            }
            (None, None) => {
                errors.push(match secret_access_key_env {
                    Some(var) => format!(
                        "{label}: environment variable {var} (secret_access_key_env) is not set and there is no secret_access_key"
                    ),
                    None => format!("{label}: set secret_access_key_env or secret_access_key"),
                });
                None
            }
        };
        if principal_id.trim().is_empty() {
            errors.push(format!("{label}: principal_id must not be empty"));
        }
        if resources.iter().any(|r| r.trim().is_empty()) {
            errors.push(format!(
                "{label}: resources must not contain empty patterns"
            ));
        }
        if let Some(secret_access_key) = secret {
            out.push(SigV4Credential {
                access_key_id,
                secret_access_key,
                principal_id,
                resources,
                accept_unsigned_payload,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

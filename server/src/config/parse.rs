//! The parse: YAML text and environment overrides into a [`Config`], with every error at once
//! ([`ConfigErrors`]); sections that fail keep the rest parsing ([`parse_partial`]).
use super::*;

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} configuration error(s):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// Parses and validates config text, with `TOLLGATE_*` overrides and `value_env` keys from
/// `env`: every error at once. Touches no file: a key's `value_file` is not read (its
/// `resolved_value` stays empty) and the files the config names are not looked at; a config
/// to serve from goes through [`crate::preflight`], which does both.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    parse_partial(text, env)?.into_result()
}

/// What [`parse_partial`] read: the config as far as it could be typed (a list item or section
/// that did not deserialize is left out or at its default) and every error found in it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The config, complete only when `errors` is empty.
    pub config: Config,
    /// Every problem found, in the order the file's sections are checked.
    pub errors: Vec<String>,
}

impl Parsed {
    /// The config, or every error.
    pub fn into_result(self) -> Result<Config, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(self.config)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// [`parse`], keeping the partial config next to its errors, so that the preflight can report
/// the problems of the files it names in the same run (one report, not one per fix). `Err`
/// only when there is no config at all: the text is not YAML, or its top level no mapping.
pub fn parse_partial(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigErrors> {
    let mut root: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_norway::from_str(text).map_err(|e| ConfigErrors(vec![format!("YAML: {e}")]))?
    };
    if root.is_null() {
        root = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = &mut root else {
        return Err(ConfigErrors(vec!["the top level must be a mapping".into()]));
    };
    let mut errors = Vec::new();
    env::apply(map, env, &mut errors);

    const KNOWN: [&str; 10] = [
        "server",
        "store",
        "failure_mode",
        "authorizers",
        "apis",
        "usage_plans",
        "api_keys",
        "identities",
        "envoy",
        "descriptors",
    ];
    for k in map.keys() {
        match k.as_str() {
            Some(k) if KNOWN.contains(&k) => {}
            other => errors.push(format!(
                "unknown top-level key {:?} (known: {})",
                other.unwrap_or("<non-string>"),
                KNOWN.join(", ")
            )),
        }
    }
    let server = section::<ServerConfig>(map, "server", &mut errors).unwrap_or_default();
    let store = section::<StoreConfig>(map, "store", &mut errors).unwrap_or_default();
    let failure_mode = section::<FailureMode>(map, "failure_mode", &mut errors).unwrap_or_default();
    let authorizers = list::<AuthorizerConfig>(map, "authorizers", &mut errors);
    let apis = list::<ApiConfig>(map, "apis", &mut errors);
    let usage_plans = list::<UsagePlanConfig>(map, "usage_plans", &mut errors);
    let mut api_keys = list::<ApiKeyConfig>(map, "api_keys", &mut errors);
    let identities = list::<IdentityConfig>(map, "identities", &mut errors);
    let envoy = section::<EnvoyConfig>(map, "envoy", &mut errors).unwrap_or_default();
    let descriptors = list::<DescriptorDomainConfig>(map, "descriptors", &mut errors);
    for (i, k) in api_keys.iter_mut().enumerate() {
        match k.value_source(env) {
            Ok(KeyValue::Known(v)) => k.resolved_value = v,
            // The preflight reads it.
            Ok(KeyValue::File(_)) => {}
            Err(e) => errors.push(format!("api_keys[{i}] ({}): {e}", k.id)),
        }
    }
    let config = Config {
        server,
        store,
        failure_mode,
        authorizers,
        apis,
        usage_plans,
        api_keys,
        identities,
        envoy,
        descriptors,
    };
    validate::validate(&config, &mut errors);
    Ok(Parsed { config, errors })
}

pub(super) fn section<T: DeserializeOwned>(
    map: &serde_norway::Mapping,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let v = map.get(key)?;
    if v.is_null() {
        return None;
    }
    serde_norway::from_value(v.clone())
        .map_err(|e| errors.push(format!("{key}: {e}")))
        .ok()
}

pub(super) fn list<T: DeserializeOwned>(
    map: &serde_norway::Mapping,
    key: &str,
    errors: &mut Vec<String>,
) -> Vec<T> {
    let Some(v) = map.get(key) else {
        return Vec::new();
    };
    match v {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                serde_norway::from_value(item.clone())
                    .map_err(|e| {
                        let id = item
                            .get("id")
                            .or_else(|| item.get("name"))
                            .and_then(Value::as_str)
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default();
                        errors.push(format!("{key}[{i}]{id}: {e}"))
                    })
                    .ok()
            })
            .collect(),
        _ => {
            errors.push(format!("{key}: expected a list"));
            Vec::new()
        }
    }
}

//! `ImportApiKeys`: API keys from CSV text (AWS's columns: `Key`/`Value`, `Name`,
//! `Description`, `Enabled`, `UsagePlanIds`, `Id`, `CustomerId`), all in one definitions write.
//! A row that breaks a rule is a warning naming its line (or refuses the whole import with
//! `fail_on_warnings`); a re-imported value overwrites its key, and columns the file does not
//! have keep the key's values.
//!
//! Must not import `api`, protos or `tonic`.
use std::collections::BTreeSet;

use super::keys::{BAD_ID, IDENTITY_SHAPED_ID, check_value};
use super::plans::check_plan_set;
use super::{
    Admin, AdminError, MAX_CUSTOMER_ID_LEN, MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, MAX_PLANS_PER_KEY,
    Result, check_len, dedup, new_id,
};
use crate::catalog::{is_identity_key_id, key_digest};
use crate::config::validate::{MAX_DESCRIPTION_LEN, MAX_NAME_LEN, valid_id};
use crate::defs::{Change, KeyRecord, Source};

/// Why CSV text was refused.
#[derive(Debug, PartialEq)]
pub enum CsvError {
    /// More rows than the parser was allowed.
    TooManyRows,
    /// A quoted field never closed (the line it started on).
    Unterminated(usize),
}

/// Splits CSV text into rows of fields (RFC 4180 quoting; CRLF or LF); blank lines are skipped.
/// More than `max_rows` rows is an error as soon as the next one ends (no more is parsed).
pub fn parse_csv(text: &str, max_rows: usize) -> Result<Vec<Vec<String>>, CsvError> {
    let too_many = || CsvError::TooManyRows;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                if row.iter().any(|f| !f.is_empty()) {
                    if rows.len() == max_rows {
                        return Err(too_many());
                    }
                    rows.push(std::mem::take(&mut row));
                } else {
                    row.clear();
                }
                line += 1;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(CsvError::Unterminated(line));
    }
    row.push(field);
    if row.iter().any(|f| !f.is_empty()) {
        if rows.len() == max_rows {
            return Err(too_many());
        }
        rows.push(row);
    }
    Ok(rows)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => Some(false),
        "true" | "1" | "yes" => Some(true),
        _ => None,
    }
}

/// The columns an import may have (lower case).
const KNOWN_COLUMNS: [&str; 8] = [
    "key",
    "value",
    "name",
    "description",
    "enabled",
    "usageplanids",
    "id",
    "customerid",
];

/// Column positions of a header row.
struct Columns {
    key: usize,
    name: Option<usize>,
    desc: Option<usize>,
    enabled: Option<usize>,
    plans: Option<usize>,
    id: Option<usize>,
    customer: Option<usize>,
}

impl Columns {
    fn of(header: &[String]) -> Result<Self> {
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let Some(key) = col("key").or_else(|| col("value")) else {
            return Err(AdminError::invalid_argument("csv: no Key column"));
        };
        for (i, h) in header.iter().enumerate() {
            if !KNOWN_COLUMNS.contains(&h.trim().to_ascii_lowercase().as_str()) {
                return Err(AdminError::invalid_argument(format!(
                    "csv: unknown column {h:?} (column {})",
                    i + 1
                )));
            }
        }
        Ok(Columns {
            key,
            name: col("name"),
            desc: col("description"),
            enabled: col("enabled"),
            plans: col("usageplanids"),
            id: col("id"),
            customer: col("customerid"),
        })
    }
}

/// The rows of `csv` after its header, checked against the bounds (before anything is read
/// into records): at most [`MAX_IMPORT_BYTES`] and [`MAX_IMPORT_ROWS`].
fn rows_of(csv: &str) -> Result<Vec<Vec<String>>> {
    if csv.len() > MAX_IMPORT_BYTES {
        return Err(AdminError::invalid_argument(format!(
            "csv: {} bytes; at most {MAX_IMPORT_BYTES} bytes per import (MAX_IMPORT_BYTES): split the file",
            csv.len()
        )));
    }
    // The header row plus MAX_IMPORT_ROWS.
    parse_csv(csv, MAX_IMPORT_ROWS + 1).map_err(|e| match e {
        CsvError::TooManyRows => AdminError::invalid_argument(format!(
            "csv: at most {MAX_IMPORT_ROWS} rows per import (MAX_IMPORT_ROWS), after the header row: split the file"
        )),
        CsvError::Unterminated(line) => AdminError::invalid_argument(format!(
            "csv: line {line}: unterminated quoted field"
        )),
    })
}

impl Admin {
    /// `ImportApiKeys`: the ids of the keys written and one warning per refused row
    /// (`line <n>: <why>`); with `fail_on_warnings`, any warning refuses the whole import.
    pub async fn import_keys(
        &self,
        csv: &str,
        fail_on_warnings: bool,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let rows = rows_of(csv)?;
        let Some((header, body)) = rows.split_first() else {
            return Err(AdminError::invalid_argument(
                "csv: empty (a header row is required)",
            ));
        };
        let c = Columns::of(header)?;
        let now = self.now();
        let out = parking_lot::Mutex::new((Vec::new(), Vec::new()));
        self.write(|d| {
            let mut next = d.clone();
            let mut changes = Vec::new();
            let mut ids = Vec::new();
            let mut warnings = Vec::new();
            let mut seen_values = BTreeSet::new();
            for (n, row) in body.iter().enumerate() {
                let line = n + 2;
                let get = |c: Option<usize>| {
                    c.and_then(|i| row.get(i))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default()
                };
                let value = get(Some(c.key));
                let row_result = (|| -> Result<KeyRecord, String> {
                    check_value(&value).map_err(|e| e.message().to_string())?;
                    if !seen_values.insert(value.clone()) {
                        return Err("the same value appears twice in the file".into());
                    }
                    let keep = |c: Option<usize>, old: Option<&String>| match (c, old) {
                        (None, Some(o)) => o.clone(),
                        _ => get(c),
                    };
                    let existing = next
                        .key_by_digest(&hex::encode(key_digest(&value)))
                        .cloned();
                    let name = keep(c.name, existing.as_ref().map(|e| &e.name));
                    let description = keep(c.desc, existing.as_ref().map(|e| &e.description));
                    let customer_id = keep(c.customer, existing.as_ref().map(|e| &e.customer_id));
                    let bounded = |field: &str, s: &str, max: usize| {
                        check_len(field, s, max).map_err(|e| e.message().to_string())
                    };
                    bounded("Name", &name, MAX_NAME_LEN)?;
                    bounded("Description", &description, MAX_DESCRIPTION_LEN)?;
                    bounded("CustomerId", &customer_id, MAX_CUSTOMER_ID_LEN)?;
                    let enabled = match (c.enabled, &existing) {
                        (None, Some(e)) => e.enabled,
                        _ => parse_bool(&get(c.enabled))
                            .ok_or_else(|| "Enabled: expected true or false".to_string())?,
                    };
                    let digest = hex::encode(key_digest(&value));
                    // Re-import overwrites the key with the same value; columns the file does
                    // not have keep the key's values.
                    let plans: Vec<String> = match (c.plans, &existing) {
                        (None, Some(e)) => e.usage_plans.clone(),
                        _ => dedup(
                            &get(c.plans)
                                .split([',', ';'])
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(String::from)
                                .collect::<Vec<_>>(),
                        ),
                    };
                    if plans.len() > MAX_PLANS_PER_KEY {
                        return Err(format!("UsagePlanIds: at most {MAX_PLANS_PER_KEY}"));
                    }
                    check_plan_set(&next, &plans).map_err(|e| e.message().to_string())?;
                    let id = match (&existing, get(c.id)) {
                        (Some(e), id) if id.is_empty() || id == e.id => e.id.clone(),
                        (Some(e), id) => {
                            return Err(format!("value belongs to key {:?}, not {id:?}", e.id));
                        }
                        (None, id) if id.is_empty() => new_id(|x| next.keys.contains_key(x)),
                        (None, id) if !valid_id(&id) => return Err(format!("Id: {BAD_ID}")),
                        (None, id) if is_identity_key_id(&id) => {
                            return Err(IDENTITY_SHAPED_ID.into());
                        }
                        (None, id) if next.keys.contains_key(&id) => {
                            return Err(format!("key {id:?} exists with another value"));
                        }
                        (None, id) => id,
                    };
                    if let Some(e) = &existing
                        && e.source == Source::Config
                    {
                        return Err(format!(
                            "key {:?} is defined in the config file; change it there",
                            e.id
                        ));
                    }
                    Ok(KeyRecord {
                        id,
                        name,
                        description,
                        enabled,
                        customer_id,
                        tags: existing
                            .as_ref()
                            .map(|e| e.tags.clone())
                            .unwrap_or_default(),
                        value_sha256: digest,
                        usage_plans: plans,
                        created_at_us: existing.as_ref().map_or(now, |e| e.created_at_us),
                        updated_at_us: now,
                        source: Source::Admin,
                        identity: None,
                    })
                })();
                match row_result {
                    Ok(rec) => {
                        ids.push(rec.id.clone());
                        let c = Change::PutKey(rec);
                        next.apply(std::slice::from_ref(&c));
                        changes.push(c);
                    }
                    Err(e) => warnings.push(format!("line {line}: {e}")),
                }
            }
            if fail_on_warnings && !warnings.is_empty() {
                return Err(AdminError::invalid_argument(warnings.join("; ")));
            }
            *out.lock() = (ids, warnings);
            Ok(changes)
        })
        .await?;
        Ok(out.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_crlf_and_blank_lines() {
        let rows = parse_csv("Key,Name\r\n\"a,b\",\"say \"\"hi\"\"\"\r\n\r\nx,y", 10).expect("csv");
        assert_eq!(
            rows,
            vec![
                vec!["Key".to_string(), "Name".into()],
                vec!["a,b".into(), "say \"hi\"".into()],
                vec!["x".into(), "y".into()],
            ]
        );
        assert!(parse_csv("Key\n\"open", 10).is_err());
    }

    #[test]
    fn csv_rows_are_bounded_while_parsing() {
        assert_eq!(parse_csv("Key\na\n\nb\n", 3).expect("fits").len(), 3);
        assert_eq!(parse_csv("Key\na\nb\nc", 3), Err(CsvError::TooManyRows));
        // Stops at the first row past the bound: what follows (unterminated quote) is never read.
        assert_eq!(
            parse_csv("Key\na\nb\nc\n\"open", 3),
            Err(CsvError::TooManyRows)
        );
        assert_eq!(parse_csv("Key\n\"open", 3), Err(CsvError::Unterminated(2)));
    }

    #[test]
    fn import_bounds_are_checked_before_parsing() {
        let big = "x".repeat(MAX_IMPORT_BYTES + 1);
        let e = rows_of(&big).unwrap_err();
        assert!(matches!(e, AdminError::InvalidArgument(_)));
        assert!(e.message().contains("(MAX_IMPORT_BYTES)"), "{e}");
        let e = rows_of("Key\n\"open").unwrap_err();
        assert_eq!(
            e,
            AdminError::invalid_argument("csv: line 2: unterminated quoted field")
        );
    }

    #[test]
    fn columns_need_a_key_and_only_known_names() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Columns::of(&h(&["Name", " value ", "UsagePlanIds"])).expect("columns");
        assert_eq!((c.key, c.name, c.plans, c.id), (1, Some(0), Some(2), None));
        assert_eq!(
            Columns::of(&h(&["Name"])).err(),
            Some(AdminError::invalid_argument("csv: no Key column"))
        );
        assert_eq!(
            Columns::of(&h(&["Key", "Colour"])).err(),
            Some(AdminError::invalid_argument(
                "csv: unknown column \"Colour\" (column 2)"
            ))
        );
    }

    #[test]
    fn booleans_as_aws_writes_them() {
        for (s, b) in [
            ("", false),
            ("FALSE", false),
            ("no", false),
            (" True ", true),
            ("1", true),
        ] {
            assert_eq!(parse_bool(s), Some(b), "{s:?}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }
}

//! What model tokens cost: the built-in table (`prices.toml`), with the operator's entries
//! (`ckrv-api serve --model-prices FILE`) over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const BUILT_IN: &str = include_str!("prices.toml");

/// One model's prices, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    models: BTreeMap<String, Price>,
}

/// Why a price file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("reading the model prices {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the model prices {path} are not valid: {problem} (expected `[models.NAME]` tables of `input` and `output` dollars per million tokens)"
    )]
    Invalid { path: PathBuf, problem: String },
}

/// Prices by model-name prefix.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let file: PriceFile = toml::from_str(BUILT_IN).unwrap_or(PriceFile {
            models: BTreeMap::new(),
        });
        Self {
            models: file.models,
        }
    }
}

impl PriceTable {
    /// The built-in table, with the entries of the operator's file (if any) over it.
    pub fn load(path: Option<&Path>) -> Result<Self, PriceError> {
        let mut table = Self::default();
        let Some(path) = path else {
            return Ok(table);
        };
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |problem: String| PriceError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let file: PriceFile = toml::from_str(&text).map_err(|e| invalid(e.message().into()))?;
        for (name, price) in file.models {
            let fine = |v: f64| v.is_finite() && (0.0..=1_000_000.0).contains(&v);
            if name.is_empty() || !fine(price.input) || !fine(price.output) {
                return Err(invalid(format!(
                    "`{name}`: a price is a number of dollars from 0 to 1000000"
                )));
            }
            table.models.insert(name, price);
        }
        Ok(table)
    }

    /// The price of `model`: the longest entry its name starts with.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.models
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, price)| *price)
    }

    /// What `input` and `output` tokens of `model` cost, in micro-dollars; `None` when no
    /// entry prices the model.
    pub fn cost_micros(&self, model: &str, input: u64, output: u64) -> Option<u64> {
        let price = self.price(model)?;
        // Dollars per million tokens are micro-dollars per token.
        let micros = input as f64 * price.input + output as f64 * price.output;
        Some(micros.round().clamp(0.0, u64::MAX as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_built_in_table_parses_and_the_longest_prefix_wins() {
        let file: PriceFile = toml::from_str(BUILT_IN).unwrap();
        assert!(file.models.len() >= 10);
        let table = PriceTable::default();
        let opus_45 = table.price("claude-opus-4-5-20251101").unwrap();
        assert_eq!((opus_45.input, opus_45.output), (5.0, 25.0));
        let opus_4 = table.price("claude-opus-4-1-20250805").unwrap();
        assert_eq!((opus_4.input, opus_4.output), (15.0, 75.0));
        assert!(table.price("llama-3").is_none());
        // 1,000 input and 200 output tokens of Sonnet: 0.003 + 0.003 dollars.
        assert_eq!(
            table.cost_micros("claude-sonnet-4-5", 1_000, 200),
            Some(6_000)
        );
        assert_eq!(table.cost_micros("unknown-model", 1_000, 200), None);
    }

    #[test]
    fn the_operators_file_overrides_and_adds_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.toml");
        std::fs::write(
            &path,
            "[models.claude-sonnet-4]\ninput = 1.5\noutput = 7.5\n[models.stand-in]\ninput = 2\noutput = 4\n",
        )
        .unwrap();
        let table = PriceTable::load(Some(&path)).unwrap();
        assert_eq!(
            table.cost_micros("claude-sonnet-4-5", 1_000, 0),
            Some(1_500)
        );
        assert_eq!(table.cost_micros("stand-in-1", 10, 10), Some(60));
        assert!(table.price("gpt-5").is_some(), "the built-in entries stay");
        for (text, says) in [
            (
                "[models.x]\ninput = -1\noutput = 1\n",
                "`x`: a price is a number",
            ),
            ("[models.x]\ninput = 1\n", "missing field `output`"),
            (
                "[models.x]\ninput = 1\noutput = 1\ncurrency = \"EUR\"\n",
                "unknown field",
            ),
            ("models = 3\n", "invalid type"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = PriceTable::load(Some(&path)).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains("prices.toml"), "{error}");
        }
        let missing = PriceTable::load(Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(missing.to_string().starts_with("reading the model prices"));
    }
}

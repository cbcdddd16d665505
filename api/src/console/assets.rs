//! The console's stylesheet and script, compiled into the binary and served under names that
//! hold a digest of their content, so a browser may keep them for a year and a new release is
//! never read from a stale cache. Nothing comes from elsewhere: the CSP allows only this origin.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::ErrorKind;
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// One asset: its content, type, and name with its digest (`console.3f2a….css`).
pub struct Asset {
    pub name: String,
    content: &'static str,
    content_type: &'static str,
}

impl Asset {
    fn new(stem: &str, extension: &str, content: &'static str, content_type: &'static str) -> Self {
        let digest = hex::encode(Sha256::digest(content.as_bytes()));
        Self {
            name: format!("{stem}.{}.{extension}", &digest[..16]),
            content,
            content_type,
        }
    }

    /// Where a page links it.
    pub fn href(&self) -> String {
        format!("/assets/{}", self.name)
    }
}

pub struct Assets {
    pub style: Asset,
    pub script: Asset,
}

pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        style: Asset::new(
            "console",
            "css",
            include_str!("../../assets/console.css"),
            "text/css; charset=utf-8",
        ),
        script: Asset::new(
            "console",
            "js",
            include_str!("../../assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
    })
}

pub async fn serve(Path(file): Path<String>) -> Result<Response, AppError> {
    let assets = assets();
    let asset = [&assets.style, &assets.script]
        .into_iter()
        .find(|asset| asset.name == file)
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::NotFound,
                format!("no asset {file}: reload the page for the current ones"),
            )
        })?;
    Ok((
        [
            (CONTENT_TYPE, asset.content_type),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.content,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_change_with_content() {
        let one = Asset::new("console", "js", "a", "text/javascript");
        let two = Asset::new("console", "js", "b", "text/javascript");
        assert_ne!(one.name, two.name);
        assert!(one.name.starts_with("console.") && one.name.ends_with(".js"));
        assert_eq!(one.href(), format!("/assets/{}", one.name));
    }
}

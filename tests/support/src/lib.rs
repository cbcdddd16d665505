//! What the test suites of several crates share. Test code: it panics on anything unexpected.

#![allow(clippy::unwrap_used)]

mod agent_stand_in;
mod agent_view;
#[cfg(feature = "api")]
pub mod api;
mod browser;
mod chromium;
mod database;
mod fake_endpoint;
mod forge;
mod git;
mod https_stand_in;
#[cfg(feature = "api")]
pub mod kube_mock;
pub mod kubernetes;
mod loopback_only;
mod model_api;
pub mod package_index;
mod requirement;
mod s3;
mod secret_service;
mod sshd;

pub use agent_stand_in::{egress_bridge, install_agent_stand_ins};
pub use agent_view::AgentView;
pub use browser::{Browser, PASSWORD, form_value};
pub use chromium::{Chromedriver, chromedriver, chromium_installed};
pub use database::{POSTGRES_ENV, TestDatabase};
pub use fake_endpoint::{FakeEndpoint, Recorded};
pub use forge::Forge;
pub use git::{StaticServer, create_served_repo, git};
pub use https_stand_in::{HttpsStandIn, localhost_authority};
pub use loopback_only::in_loopback_only_network;
pub use model_api::ModelApi;
pub use requirement::{SANDBOX_REQUIRED_ENV, required, sandbox_available, skip_unless_required};
pub use s3::{S3_ACCESS_KEY, S3_SECRET_KEY, S3_SERVER_ENV, S3Server};
pub use secret_service::{KEYRING_REQUIRED_ENV, SecretService};
pub use sshd::{SSHD_REQUIRED_ENV, SshServer, ssh_keygen};

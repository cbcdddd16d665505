//! The shared test API (`ckrv_test_support::api`): each test binary uses part of it.

#![allow(unused_imports)]

pub use ckrv_test_support::api::*;

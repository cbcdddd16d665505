//! End-to-end tests of the cloud-execution path live in `tests/`: they run the real `ckrv`,
//! `ckrv-api` and `ckrv-orchestrator` binaries against a git repository served over HTTP on
//! loopback. This library is intentionally empty.

//! Pipeline files that cannot run are rejected with a message that says why.
#![allow(clippy::unwrap_used)]

use ckrv_orchestrator::pipeline::{Pipeline, PipelineError};
use std::path::Path;

fn error(text: &str) -> String {
    Pipeline::parse(text, "test.toml", Path::new("."))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_pipelines_are_explained() {
    let e = error("[[stage]]\nstep = \"deploy\"\nphase = \"cloning\"\n");
    assert!(e.contains("unknown step `deploy`"), "{e}");
    assert!(e.contains("test.toml"), "{e}");

    let e = error("[[stage]]\nstep = \"clone\"\nagent = true\nphase = \"cloning\"\n");
    assert!(e.contains("exactly one of"), "{e}");

    let e = error("[[stage]]\nstep = \"clone\"\nphase = \"sleeping\"\n");
    assert!(e.contains("sleeping"), "{e}");

    let e = error("[[stage]]\nstep = \"clone\"\n");
    assert!(e.contains("phase"), "{e}");

    let e = error("");
    assert!(e.contains("no [[stage]]"), "{e}");

    let e = error(
        "[[stage]]\nagent = true\nphase = \"agent\"\n[[stage]]\nagent = true\nphase = \"agent\"\n",
    );
    assert!(e.contains("more than one"), "{e}");

    let e = error("[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\ncolour = \"red\"\n");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn a_missing_pipeline_file_names_the_path() {
    let err = Pipeline::load(Path::new("/nonexistent/pipeline.toml")).unwrap_err();
    assert!(matches!(err, PipelineError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/pipeline.toml"));
}

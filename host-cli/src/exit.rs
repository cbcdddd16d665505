//! Exit statuses beyond success and error, for scripts: `ckrv wait` says how a job ended.

/// An error that ends `ckrv` with a particular status; its message (if any) goes to stderr.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: Option<String>,
}

impl Exit {
    /// The job failed.
    pub const FAILED: u8 = 2;
    /// The job ran out of time.
    pub const TIMEOUT: u8 = 3;
    /// The job was cancelled.
    pub const CANCELLED: u8 = 4;
    /// `ckrv wait --timeout` gave up while the job still ran.
    pub const GAVE_UP: u8 = 5;

    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    /// An exit status whose reason was printed already.
    pub fn quiet(code: u8) -> Self {
        Self {
            code,
            message: None,
        }
    }

    /// The status for a job that ended in `state` (which is not `succeeded`).
    pub fn for_state(state: ckrv_wit::types::JobState) -> u8 {
        use ckrv_wit::types::JobState;
        match state {
            JobState::Timeout => Self::TIMEOUT,
            JobState::Cancelled => Self::CANCELLED,
            _ => Self::FAILED,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

//! A spinner on stderr for long waits, drawn only when stderr is a terminal, so pipes and CI
//! logs get no control characters.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Shows its message with a turning wheel until dropped.
pub struct Spinner {
    message: Option<Arc<Mutex<Option<String>>>>,
}

impl Spinner {
    /// Starts a spinner when `wanted` and stderr is a terminal; otherwise one that draws
    /// nothing.
    pub fn start(wanted: bool) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self { message: None };
        }
        let message = Arc::new(Mutex::new(Some(String::new())));
        let shared = Arc::clone(&message);
        std::thread::spawn(move || {
            for frame in FRAMES.iter().cycle() {
                let Ok(guard) = shared.lock() else { return };
                let Some(text) = guard.as_ref() else {
                    // Dropped: clear the line and stop.
                    eprint!("\r\x1b[2K");
                    return;
                };
                eprint!("\r\x1b[2K{frame} {text}");
                let _ = std::io::stderr().flush();
                drop(guard);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            message: Some(message),
        }
    }

    /// Replaces the message (made printable: it may quote a server).
    pub fn set(&self, text: impl Into<String>) {
        if let Some(message) = &self.message
            && let Ok(mut guard) = message.lock()
        {
            *guard = Some(crate::output::printable(&text.into()).into_owned());
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(message) = &self.message
            && let Ok(mut guard) = message.lock()
        {
            *guard = None;
            eprint!("\r\x1b[2K");
        }
    }
}

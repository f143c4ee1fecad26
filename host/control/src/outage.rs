//! Saying once that something is out of reach, and once that it is back,
//! for loops that retry every second or so.

use std::fmt::Display;

/// Whether the last try of one recurring task failed.
pub struct Outage {
    /// What the task does, for the log: "read the deployment records".
    task: &'static str,
    down: bool,
}

impl Outage {
    pub fn new(task: &'static str) -> Outage {
        Outage { task, down: false }
    }

    /// Note a try's `outcome`; logs only when it differs from the last.
    pub fn note<E: Display>(&mut self, outcome: Result<(), E>) {
        match outcome {
            Ok(()) if self.down => {
                tracing::info!("can {} again", self.task);
                self.down = false;
            }
            Err(e) if !self.down => {
                tracing::warn!("cannot {}: {e}; serving as before", self.task);
                self.down = true;
            }
            Ok(()) | Err(_) => {}
        }
    }
}

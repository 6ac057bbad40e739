//! How many lines of one batch are in flight: a window that grows by one line per window of
//! answers and, when the network says it has no room (no free worker within the batch's
//! price, every worker at its limit), drops to just below what was in flight then. A
//! refusal is the proxy reporting its capacity: the window settles one line under it and
//! probes upward slowly, so the workers stay nearly full without a stream of refusals.

/// The window of one batch.
#[derive(Debug, Clone)]
pub(super) struct Window {
    limit: f64,
    max: f64,
}

impl Window {
    /// Starts at a quarter of `max` (at least one line).
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1) as f64;
        Window {
            limit: (max / 4.0).max(1.0),
            max,
        }
    }

    /// Lines that may be in flight now.
    pub(super) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// A line was answered: one more line per window's worth of answers.
    pub(super) fn answered(&mut self) {
        self.limit = (self.limit + 1.0 / self.limit).min(self.max);
    }

    /// The network had no room for a line while `in_flight` lines were out: one fewer
    /// from now on (never more than before, never below one).
    pub(super) fn refused(&mut self, in_flight: usize) {
        let room = in_flight.saturating_sub(1) as f64;
        self.limit = self.limit.min(room).max(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_maximum_and_settles_under_the_capacity_refusals_show() {
        let mut w = Window::new(64);
        assert_eq!(w.limit(), 16);
        for _ in 0..10_000 {
            w.answered();
        }
        assert_eq!(w.limit(), 64);
        // Refused with 40 out: the network holds 39.
        w.refused(40);
        assert_eq!(w.limit(), 39);
        // A later refusal with more out than the window does not raise it.
        w.refused(60);
        assert_eq!(w.limit(), 39);
        // It probes upward again: one line per window of answers.
        for _ in 0..40 {
            w.answered();
        }
        assert_eq!(w.limit(), 40);
        w.refused(0);
        assert_eq!(w.limit(), 1, "never below one line");
        assert_eq!(Window::new(0).limit(), 1);
    }
}

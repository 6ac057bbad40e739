//! How many lines of one batch are in flight: a window that grows by one line per window of
//! answers and halves when the network says it has no room (no free worker within the
//! batch's price, workers busy), as TCP's congestion window does. The proxy's refusals
//! are the capacity it reports; the window follows them.

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

    /// The network had no room for a line: half as many.
    pub(super) fn refused(&mut self) {
        self.limit = (self.limit / 2.0).max(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_maximum_and_halves_on_refusal() {
        let mut w = Window::new(64);
        assert_eq!(w.limit(), 16);
        for _ in 0..10_000 {
            w.answered();
        }
        assert_eq!(w.limit(), 64);
        w.refused();
        assert_eq!(w.limit(), 32);
        for _ in 0..20 {
            w.refused();
        }
        assert_eq!(w.limit(), 1, "never below one line");
        assert_eq!(Window::new(0).limit(), 1);
    }
}

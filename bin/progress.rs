//! A progress bar on standard error for `storeput` and `storeget`, drawn
//! from the library's progress callback (`thrifty_p2p::stream::Progress`),
//! only while standard error is a terminal: a script reading standard error
//! sees nothing of it.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thrifty_p2p::stream::Progress;

/// A bar made on the first progress call (so a value stored or read in one
/// call shows none), or never when standard error is not a terminal.
pub struct Bar {
    shown: bool,
    bar: OnceLock<ProgressBar>,
}

impl Bar {
    /// A bar if `wanted` and standard error is a terminal; otherwise one that
    /// draws nothing.
    pub fn on_stderr(wanted: bool) -> Bar {
        Bar {
            shown: wanted && std::io::stderr().is_terminal(),
            bar: OnceLock::new(),
        }
    }

    /// Moves the bar to `progress`, making it first. `total` is the size when
    /// the caller knows it and the progress does not say.
    pub fn update(&self, progress: Progress, total: Option<u64>) {
        if !self.shown {
            return;
        }
        let bar = self.bar.get_or_init(|| {
            let total = progress.total.or(total);
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                    "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    "{spinner} {binary_bytes} {binary_bytes_per_sec}",
                ),
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            bar
        });
        bar.set_position(progress.bytes);
    }

    /// Clears the bar, if one was drawn.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}

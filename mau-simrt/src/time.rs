//! Virtual-time timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::sim::Shared;

/// Completes once virtual time reaches its deadline.
pub struct Sleep {
    shared: Arc<Shared>,
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Sleep {
    pub(crate) fn new(shared: Arc<Shared>, d: Duration) -> Sleep {
        let deadline = shared.state().now.saturating_add(d);
        Sleep {
            shared,
            deadline,
            key: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut st = this.shared.state();
        if st.now >= this.deadline {
            drop(st);
            if let Some(key) = this.key.take() {
                this.shared.cancel_timer(key);
            }
            return Poll::Ready(());
        }
        this.key = Some(
            this.shared
                .set_timer(&mut st, this.deadline, this.key, cx.waker()),
        );
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.cancel_timer(key);
        }
    }
}

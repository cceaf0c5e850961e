//! One request to the friend, and how a refusal (429, 503) is read. What
//! to do about a refusal (wait, retry, narrow the window, give up) is the
//! planner's decision ([`mau_proto::sync::pacing`]).

use std::time::{Duration, SystemTime};

use hyper::header::{self, HeaderName};

use super::wire::parse_retry_after;
use super::{FriendClient, SyncError};
use crate::client::Streaming;
use crate::runtime::Runtime;

pub use mau_proto::sync::RetryPolicy;

/// Most of a 429 or 503 answer's body read (so that its connection can be
/// reused); the rest is not.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// The wait a `Retry-After` header value asks for, read at `now`, as the
/// policy caps it (before the planner's random extra).
pub fn retry_wait(policy: &RetryPolicy, retry_after: Option<&str>, now: SystemTime) -> Duration {
    policy.wait(retry_after.and_then(|v| parse_retry_after(v, now)))
}

impl<R: Runtime> FriendClient<R> {
    /// `GET path` with `headers`, once. A `429` or `503` is
    /// [`SyncError::Refused`] with the answer's `Retry-After` read (its
    /// short body is read so that the connection is reused).
    pub(super) async fn request(
        &self,
        path: &str,
        headers: &[(HeaderName, String)],
    ) -> Result<Streaming<'_, R>, SyncError> {
        let mut resp = self
            .client
            .get_streaming(&self.peer, path, headers, self.opts.idle_timeout)
            .await?;
        let status = resp.status();
        if status != 429 && status != 503 {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.rt.system_time()));
        let _ = resp.collect(MAX_REFUSAL_BODY).await;
        Err(SyncError::Refused {
            peer: self.peer.fingerprint,
            status,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_policy_defaults_and_caps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let policy = RetryPolicy::default();
        let w = |v: Option<&str>| retry_wait(&policy, v, now);
        let secs = Duration::from_secs;
        assert_eq!(w(Some("2")), secs(2));
        assert_eq!(w(None), secs(1), "missing: the default");
        assert_eq!(w(Some("garbage")), secs(1), "unparsable: the default");
        assert_eq!(w(Some("-3")), secs(1));
        assert_eq!(w(Some("3600")), secs(60), "huge: capped");
        assert_eq!(
            w(Some("184467440737095516160")),
            secs(60),
            "overflow: capped"
        );
        let tomorrow = httpdate::fmt_http_date(now + secs(86_400));
        assert_eq!(w(Some(&tomorrow)), secs(60), "a far date: capped");
        let soon = httpdate::fmt_http_date(now + secs(5));
        assert_eq!(w(Some(&soon)), secs(5));
    }
}

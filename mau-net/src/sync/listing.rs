//! One listing request: a page of the friend's listing as the planner
//! reads it (its entries with their names checked, the `next` link, the
//! end mark, the friend's clock). Which page to ask for, and when the
//! listing is whole, is the planner's decision
//! ([`mau_proto::sync::listing`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderName};
use mau_proto::sync::{Entry, Event, Page, Target};

use super::wire::{item_name, next_link, parse_listing, LISTING_END};
use super::{FriendClient, SyncError};
use crate::content::ListItem;
use crate::runtime::Runtime;

/// Largest listing page body accepted.
const MAX_PAGE_BODY: usize = 16 * 1024 * 1024;

/// Seconds since the Unix epoch (0 before it).
pub(super) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An entry as the planner sees it.
pub(super) fn entry(fpr: &mau_proto::Fingerprint, item: ListItem) -> Entry {
    Entry {
        name: item_name(fpr, &item.path),
        path: item.path,
        size: item.size,
        sum: item.sum,
    }
}

/// Back to the wire's entry.
pub(super) fn item(e: &Entry) -> ListItem {
    ListItem {
        path: e.path.clone(),
        size: e.size,
        sum: e.sum.clone(),
    }
}

impl<R: Runtime> FriendClient<R> {
    /// Asks for the listing page at `link` (`If-Modified-Since: since`):
    /// [`Event::Page`], or [`Event::Refused`] if the friend is busy.
    pub(super) async fn ask_page(
        &self,
        link: &str,
        since: Option<u64>,
    ) -> Result<Event, SyncError> {
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if let Some(t) = since {
            let at = UNIX_EPOCH + Duration::from_secs(t);
            headers.push((header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(at)));
        }
        let resp = match self.request(link, &headers).await {
            Err(SyncError::Refused {
                status,
                retry_after,
                ..
            }) => {
                return Ok(Event::Refused {
                    target: Target::Listing,
                    status,
                    retry_after,
                })
            }
            r => r?,
        };
        let mut resp = resp.error_for_status().await?;
        let h = resp.headers();
        let date = h
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .map(secs);
        let next = h
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let end = h
            .get(LISTING_END.0)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(LISTING_END.1.as_bytes()));
        let body = resp.collect(MAX_PAGE_BODY).await?;
        let items = parse_listing(&body)
            .map_err(|e| self.protocol(format!("listing is not valid JSON: {e}")))?;
        let fpr = self.peer.fingerprint;
        tracing::debug!(peer = %fpr, entries = items.len(), "listing page");
        Ok(Event::Page(Page {
            entries: items.into_iter().map(|i| entry(&fpr, i)).collect(),
            next,
            end,
            date,
        }))
    }
}

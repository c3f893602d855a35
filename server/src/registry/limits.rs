//! Rate limits: a `429`'s `Retry-After` (seconds or an HTTP date) becomes a time before which
//! no request goes to that registry, and the pull budget a registry announces
//! (`ratelimit-remaining: 76;w=21600`, Docker Hub's form of the IETF RateLimit headers) is
//! recorded per registry for the server to show.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a registry that answered `429` without a usable `Retry-After` is left alone.
pub const DEFAULT_BACKOFF: Duration = Duration::minutes(5);
/// The longest back-off a `Retry-After` may ask for; more is taken as this (a broken header
/// must not silence a registry for a year).
pub const MAX_BACKOFF: Duration = Duration::hours(6);

/// A registry's announced budget, from its last answer that carried one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Requests (pulls, for Docker Hub) left in the window.
    pub remaining: u64,
    /// The window's allowance, when announced (`ratelimit-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The window's length in seconds (the `w=` part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// When the answer that carried it came.
    pub observed_at: DateTime<Utc>,
}

/// `76;w=21600` → (76, Some(21600)); `30` → (30, None).
pub fn parse_ratelimit(value: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = value.split(';').map(str::trim);
    let n = parts.next()?.parse().ok()?;
    let window = parts
        .filter_map(|p| p.strip_prefix("w="))
        .find_map(|w| w.trim().parse().ok());
    Some((n, window))
}

/// The budget in an answer's headers, if it announces one.
pub(crate) fn budget(headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) -> Option<Budget> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_ratelimit)
    };
    let (remaining, w1) = get("ratelimit-remaining")?;
    let limit = get("ratelimit-limit");
    Some(Budget {
        remaining,
        limit: limit.map(|(l, _)| l),
        window_secs: w1.or(limit.and_then(|(_, w)| w)),
        observed_at: now,
    })
}

/// When a `429` with this `Retry-After` (if any) allows the next request: `now` + seconds,
/// or the HTTP date; [`DEFAULT_BACKOFF`] when absent or unreadable, at most
/// [`MAX_BACKOFF`], and never before `now`.
pub fn retry_after(value: Option<&str>, now: DateTime<Utc>) -> DateTime<Utc> {
    let at = value.map(str::trim).and_then(|v| {
        if let Ok(secs) = v.parse::<u64>() {
            let secs = i64::try_from(secs)
                .unwrap_or(i64::MAX)
                .min(MAX_BACKOFF.num_seconds());
            return Some(now + Duration::seconds(secs));
        }
        httpdate::parse_http_date(v).ok().map(DateTime::<Utc>::from)
    });
    at.unwrap_or(now + DEFAULT_BACKOFF)
        .clamp(now, now + MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 20, 0).unwrap();
        assert_eq!(retry_after(Some("2"), now), now + Duration::seconds(2));
        assert_eq!(
            retry_after(Some(" 120 "), now),
            now + Duration::seconds(120)
        );
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap()
        );
        // RFC 850 and asctime, which HTTP still allows.
        assert_eq!(
            retry_after(Some("Wednesday, 21-Oct-15 07:28:00 GMT"), now),
            Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap()
        );
        assert_eq!(
            retry_after(Some("Wed Oct 21 07:28:00 2015"), now),
            Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap()
        );
        // A date in the past allows the next request now; none, or garbage, waits the default.
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:00:00 GMT"), now), now);
        assert_eq!(retry_after(None, now), now + DEFAULT_BACKOFF);
        assert_eq!(retry_after(Some("soon"), now), now + DEFAULT_BACKOFF);
        assert_eq!(retry_after(Some("99999999999"), now), now + MAX_BACKOFF);
    }

    #[test]
    fn docker_hub_budget_headers() {
        assert_eq!(parse_ratelimit("76;w=21600"), Some((76, Some(21600))));
        assert_eq!(parse_ratelimit("100; w=21600"), Some((100, Some(21600))));
        assert_eq!(parse_ratelimit("30"), Some((30, None)));
        assert_eq!(parse_ratelimit("many"), None);

        let now = Utc::now();
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(budget(&h, now), None);
        h.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        h.insert("RateLimit-Remaining", "76;w=21600".parse().unwrap());
        assert_eq!(
            budget(&h, now),
            Some(Budget {
                remaining: 76,
                limit: Some(100),
                window_secs: Some(21600),
                observed_at: now
            })
        );
    }
}

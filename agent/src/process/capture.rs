//! What a running child printed: the kept tail of each pipe, and when it last printed
//! anything (the hang watchdog's clock).

use super::MAX_OUTPUT;
use std::sync::Mutex;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// When the child last printed something.
pub(super) struct Activity(Mutex<Instant>);

impl Activity {
    pub(super) fn new() -> Self {
        Self(Mutex::new(Instant::now()))
    }

    pub(super) fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Instant::now();
        }
    }

    pub(super) fn last(&self) -> Instant {
        self.0.lock().map(|t| *t).unwrap_or_else(|_| Instant::now())
    }
}

/// The kept tail of one pipe (shared, so that a stopped command still shows its output).
#[derive(Default)]
pub(super) struct Tail(Mutex<(Vec<u8>, bool)>);

impl Tail {
    pub(super) fn push(&self, bytes: &[u8]) {
        if let Ok(mut g) = self.0.lock() {
            let (kept, dropped) = &mut *g;
            kept.extend_from_slice(bytes);
            if kept.len() > 2 * MAX_OUTPUT {
                let cut = kept.len() - MAX_OUTPUT;
                kept.drain(..cut);
                *dropped = true;
            }
        }
    }

    pub(super) fn text(&self) -> String {
        let Ok(g) = self.0.lock() else {
            return String::new();
        };
        let (kept, mut dropped) = (&g.0, g.1);
        let start = kept.len().saturating_sub(MAX_OUTPUT);
        dropped |= start > 0;
        let text = String::from_utf8_lossy(&kept[start..]).into_owned();
        if dropped {
            format!("[… output truncated to the last {MAX_OUTPUT} bytes …]\n{text}")
        } else {
            text
        }
    }
}

/// Reads a pipe to its end into `tail`, noting each read in `activity`.
pub(super) async fn pump<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    tail: &Tail,
    activity: &Activity,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.touch();
                tail.push(&buf[..n]);
            }
        }
    }
}

//! The browser's `EventSource`, kept open across an expired session: the stream's request
//! carries the access cookie, and when the server refuses it (the cookie expired) the
//! browser closes the stream for good. Then the session is refreshed (as [`crate::api::call`]
//! does for a request) and the stream opened again; a refresh the server refuses means the
//! session ended, and the user goes to the login page. A stream that fails for another
//! reason (the server restarting) is opened again after a pause that grows to 30 s.

use crate::api;
use gloo_timers::callback::Timeout;
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use yew::Callback;

/// An open stream; dropping it closes it.
pub struct EventStream {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    url: String,
    names: &'static [&'static str],
    on_event: Callback<(&'static str, String)>,
    on_expired: Callback<()>,
    source: Option<web_sys::EventSource>,
    listeners: Vec<Closure<dyn Fn(web_sys::MessageEvent)>>,
    on_error: Option<Closure<dyn Fn(web_sys::Event)>>,
    on_open: Option<Closure<dyn Fn(web_sys::Event)>>,
    /// Failed reopenings in a row (the pause before the next grows with it).
    failures: u32,
    retry: Option<Timeout>,
    closed: bool,
}

/// Opens `url` (below the page's base) and calls `on_event(name, data)` for each event named
/// in `names`; `on_expired` when the session ended.
pub fn open(
    url: &str,
    names: &'static [&'static str],
    on_event: Callback<(&'static str, String)>,
    on_expired: Callback<()>,
) -> EventStream {
    let inner = Rc::new(RefCell::new(Inner {
        url: format!("{}/{}", api::base(), url.trim_start_matches('/')),
        names,
        on_event,
        on_expired,
        source: None,
        listeners: Vec::new(),
        on_error: None,
        on_open: None,
        failures: 0,
        retry: None,
        closed: false,
    }));
    connect(&inner);
    EventStream { inner }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        inner.retry = None;
        if let Some(s) = inner.source.take() {
            s.close();
        }
    }
}

fn connect(inner: &Rc<RefCell<Inner>>) {
    let mut me = inner.borrow_mut();
    if me.closed {
        return;
    }
    let Ok(source) = web_sys::EventSource::new(&me.url) else {
        return;
    };
    me.listeners.clear();
    for &name in me.names {
        let on_event = me.on_event.clone();
        let cb = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            on_event.emit((name, e.data().as_string().unwrap_or_default()));
        });
        let _ = source.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
        me.listeners.push(cb);
    }
    let weak = Rc::downgrade(inner);
    let on_open = Closure::<dyn Fn(web_sys::Event)>::new(move |_| {
        if let Some(inner) = weak.upgrade() {
            inner.borrow_mut().failures = 0;
        }
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    let weak = Rc::downgrade(inner);
    let on_error = Closure::<dyn Fn(web_sys::Event)>::new(move |_| failed(&weak));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    me.on_open = Some(on_open);
    me.on_error = Some(on_error);
    me.source = Some(source);
}

/// The stream failed. While the browser reconnects by itself (`CONNECTING`) there is
/// nothing to do; once it gave up (`CLOSED`: the server refused the request), refresh the
/// session and open it again.
fn failed(weak: &Weak<RefCell<Inner>>) {
    let Some(inner) = weak.upgrade() else { return };
    let closed = inner
        .borrow()
        .source
        .as_ref()
        .is_some_and(|s| s.ready_state() == web_sys::EventSource::CLOSED);
    if !closed {
        return;
    }
    let weak = weak.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let refreshed = api::client().browser_refresh().await;
        let Some(inner) = weak.upgrade() else { return };
        match refreshed {
            Err(e) if e.status() == Some(401) => {
                let on_expired = inner.borrow().on_expired.clone();
                inner.borrow_mut().closed = true;
                on_expired.emit(());
            }
            _ => {
                let pause = {
                    let mut me = inner.borrow_mut();
                    me.failures += 1;
                    250u32
                        .saturating_mul(2u32.saturating_pow(me.failures - 1))
                        .min(30_000)
                };
                let again = Rc::downgrade(&inner);
                inner.borrow_mut().retry = Some(Timeout::new(pause, move || {
                    if let Some(inner) = again.upgrade() {
                        connect(&inner);
                    }
                }));
            }
        }
    });
}

//! One small helper for everything the dashboard loads: load when the inputs change,
//! optionally poll, keep the last answer while reloading, drop answers that arrive after a
//! newer request, and send the user to the login page when the session ended.

use crate::api::Failure;
use crate::session::SessionContext;
use gloo_timers::callback::Interval;
use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use yew::prelude::*;

/// The state of one load.
#[derive(Debug)]
pub enum Loadable<T> {
    Loading,
    Ready(Rc<T>),
    Failed(String),
}

impl<T> Clone for Loadable<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Loading => Self::Loading,
            Self::Ready(v) => Self::Ready(v.clone()),
            Self::Failed(e) => Self::Failed(e.clone()),
        }
    }
}

impl<T> PartialEq for Loadable<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Loading, Self::Loading) => true,
            (Self::Ready(a), Self::Ready(b)) => Rc::ptr_eq(a, b),
            (Self::Failed(a), Self::Failed(b)) => a == b,
            _ => false,
        }
    }
}

/// What a component gets back: the state and a way to load again now.
pub struct Handle<T> {
    pub state: Loadable<T>,
    #[allow(dead_code)] // no page has a Refresh button of this kind right now
    pub reload: Callback<()>,
}

/// Loads `fetch(deps)` now and whenever `deps` change, and every `poll_ms` if given.
#[hook]
pub fn use_loadable<T, D, F, Fut>(deps: D, poll_ms: Option<u32>, fetch: F) -> Handle<T>
where
    T: 'static,
    D: PartialEq + Clone + 'static,
    F: Fn(D) -> Fut + 'static,
    Fut: Future<Output = Result<T, Failure>> + 'static,
{
    let state = use_state(|| Loadable::<T>::Loading);
    let tick = use_state(|| 0u64);
    let latest = use_mut_ref(|| Rc::new(Cell::new(0u64)));
    let session = use_context::<SessionContext>();
    let fetch = Rc::new(fetch);
    let reload = {
        let tick = tick.clone();
        Callback::from(move |()| tick.set(*tick + 1))
    };
    {
        let state = state.clone();
        let reload = reload.clone();
        let latest = latest.borrow().clone();
        use_effect_with((deps, *tick), move |(deps, _)| {
            let ticket = latest.get() + 1;
            latest.set(ticket);
            let deps = deps.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let answer = fetch(deps).await;
                if latest.get() != ticket {
                    return; // a newer request was made meanwhile
                }
                match answer {
                    Ok(v) => state.set(Loadable::Ready(Rc::new(v))),
                    Err(Failure::LoggedOut) => {
                        if let Some(s) = session {
                            s.expired.emit(());
                        }
                    }
                    Err(e) => state.set(Loadable::Failed(e.message())),
                }
            });
            let poll = poll_ms.map(|ms| Interval::new(ms, move || reload.emit(())));
            move || drop(poll)
        });
    }
    Handle {
        state: (*state).clone(),
        reload,
    }
}

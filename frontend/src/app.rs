//! The root component.
use yew::prelude::*;

#[function_component(App)]
pub fn app() -> Html {
    html! { <main><h1>{"Canopy"}</h1></main> }
}

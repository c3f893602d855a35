//! Rollup badges, each with its meaning in words for screen readers and as a tooltip.

use crate::view::tree::Badge;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct BadgesProps {
    pub badges: Vec<Badge>,
}

#[function_component(Badges)]
pub fn badges(props: &BadgesProps) -> Html {
    html! {
        <span class="badges">
            { for props.badges.iter().map(|b| html! {
                <span class={classes!("badge", format!("badge-{}", b.class))}
                      title={b.label.clone()} aria-label={b.label.clone()} role="img">
                    {format!("{} {}", b.count, b.short)}
                </span>
            }) }
        </span>
    }
}

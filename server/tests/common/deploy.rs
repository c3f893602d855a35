//! Deploy checks the lab tests share.

use super::TestApp;
use canopy_api_types::deploy::{DeployAction, DeployOutcome, DeployRequest};
use canopy_server::operations::guest_lock::WAITING_STEP;

/// Two deploys started together on one guest: the later one's item waits, queued and saying
/// so, and starts only once the earlier one's item has ended (stored timestamps, not clocks).
pub async fn one_guest_at_a_time(app: &TestApp, selector: &str) {
    let req = DeployRequest {
        selector: selector.into(),
        action: DeployAction::Deploy,
    };
    let (a, b) = tokio::join!(app.admin.deploy(&req), app.admin.deploy(&req));
    let (mut steps_a, mut steps_b) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(
        app.admin
            .follow_operation(a.unwrap().id, |i| steps_a.extend(i.step.clone())),
        app.admin
            .follow_operation(b.unwrap().id, |i| steps_b.extend(i.step.clone())),
    );
    let mut items = [(a.unwrap().items, steps_a), (b.unwrap().items, steps_b)];
    items.sort_by_key(|(i, _)| i[0].started_at);
    let [(first, _), (second, waited)] = &items;
    let (first, second) = (&first[0], &second[0]);
    for i in [first, second] {
        assert_eq!(i.outcome, Some(DeployOutcome::Unchanged), "{i:?}");
    }
    assert!(
        second.started_at.unwrap() >= first.finished_at.unwrap(),
        "the second deploy started before the first one's item ended: {first:?} {second:?}"
    );
    assert_eq!(
        waited.first().map(String::as_str),
        Some(WAITING_STEP),
        "{waited:?}"
    );
}

//! The image steps of an update: the pinned pull (`REPO@DIGEST`, never a tag), the tags that
//! move (the reference's, and `canopy-previous` on the old image while the new one proves
//! itself).

use super::reference::{has_digest, Reference};
use super::{describe, short_id, Engine};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures::StreamExt;
use std::time::Duration;

/// The tag that keeps the old image while the new one proves itself.
pub const PREVIOUS_TAG: &str = "canopy-previous";

/// Pulls `REPO@DIGEST` for `reference` and checks that the engine lists that digest for the
/// image; the new image's id. `Err` says the registry does not serve it (naming both).
pub async fn pull(
    engine: &Engine,
    reference: &str,
    r: &Reference,
    digest: &str,
    deadline: Duration,
    log: &mut Vec<String>,
) -> Result<String, String> {
    let want = r.at(digest);
    log.push(format!("{reference}: pulling {want}"));
    let opts = CreateImageOptionsBuilder::default()
        .from_image(&want)
        .build();
    let api = engine.with_timeout(deadline);
    let mut stream = api.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return Err(format!(
                "the registry does not serve {want} (approved for {reference}) any more: {}; nothing was changed — run the check and the dry-run again",
                describe(&e)
            ));
        }
    }
    let image = engine.api.inspect_image(&want).await.map_err(|e| {
        format!(
            "pulled {want}, but the engine cannot find it: {}",
            describe(&e)
        )
    })?;
    let digests = image.repo_digests.clone().unwrap_or_default();
    if !has_digest(&digests, &r.repository, digest) {
        return Err(format!(
            "pulled {want}, but the image lists other digests ({}); nothing was changed",
            digests.join(", ")
        ));
    }
    let id = image.id.unwrap_or_default();
    log.push(format!(
        "{reference}: pulled {want}: image {}",
        short_id(&id)
    ));
    Ok(id)
}

/// Tags image `id` as `REPO:TAG` (moving the tag when it exists).
pub async fn tag(engine: &Engine, id: &str, repo: &str, tag: &str) -> Result<(), String> {
    let opts = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    engine
        .api
        .tag_image(id, Some(opts))
        .await
        .map_err(|e| format!("tagging {} as {repo}:{tag}: {}", short_id(id), describe(&e)))
}

/// Drops `REPO:canopy-previous` (the tag only; the image stays while anything uses it).
pub async fn untag_previous(engine: &Engine, r: &Reference, log: &mut Vec<String>) {
    let name = r.with_tag(PREVIOUS_TAG);
    let opts = RemoveImageOptionsBuilder::default().noprune(true).build();
    match engine.api.remove_image(&name, Some(opts), None).await {
        Ok(_) => log.push(format!("{}: dropped the tag {name}", r.repository)),
        Err(e) => log.push(format!(
            "{}: could not drop the tag {name}: {}",
            r.repository,
            describe(&e)
        )),
    }
}

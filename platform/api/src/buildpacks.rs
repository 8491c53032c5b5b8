//! Buildpacks: uploaded archives with `bin/detect` and `bin/compile` (or `bin/supply` /
//! `bin/finalize`), kept in detection order.

use std::path::Path;

use crate::archive::ArchiveLimits;
use crate::archive::buildpack_missing;
use crate::blobs::buildpack_key;
use crate::error::{ApiError, ApiResult};
use crate::model::{Buildpack, BuildpackView};
use crate::names::{NAME_RULE, is_dns_label};
use crate::state::State;
use crate::uploads;

fn view(state: &State, b: &Buildpack) -> BuildpackView {
    BuildpackView {
        name: b.name.clone(),
        position: b.position,
        key: b.key.clone(),
        sha256: b.sha256.clone(),
        url: state.blobs.url(&b.key),
    }
}

/// Positions 1..=n in list order.
fn renumber(list: &mut [Buildpack]) {
    for (i, b) in list.iter_mut().enumerate() {
        b.position = i as u32 + 1;
    }
}

pub async fn list(state: &State) -> ApiResult<Vec<BuildpackView>> {
    Ok(state
        .db
        .buildpacks()
        .await?
        .iter()
        .map(|b| view(state, b))
        .collect())
}

/// `PUT /v1/buildpacks/{name}?position=N`: creates or replaces; `position` (1 first) places
/// it, otherwise a new one goes last and a replaced one keeps its place.
pub async fn put(
    state: &State,
    name: &str,
    position: Option<u32>,
    upload: &Path,
) -> ApiResult<BuildpackView> {
    if !is_dns_label(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("buildpack name {name:?} is invalid: {NAME_RULE}"),
        ));
    }
    if position == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_position",
            "position starts at 1",
        ));
    }
    let zip = uploads::prepare_zip(
        upload,
        &state.config.data_dir.join("tmp"),
        ArchiveLimits::for_uploads(state.config.max_upload_bytes),
    )
    .await?;
    if let Some(missing) = buildpack_missing(&zip.contents) {
        return Err(ApiError::unprocessable("invalid_buildpack", missing));
    }
    let key = buildpack_key(name, &zip.sha256);
    let sha256 = state.blobs.put_file(&key, zip.path()).await?;
    let owned = name.to_owned();
    let new = Buildpack {
        name: owned.clone(),
        position: 0,
        key,
        sha256,
    };
    let (stored, old_key) = state
        .db
        .update_buildpacks(move |list| {
            let existing = list.iter().position(|b| b.name == owned);
            let old_key = existing.map(|i| list.remove(i).key);
            let at = match (position, existing) {
                (Some(p), _) => (p as usize - 1).min(list.len()),
                (None, Some(i)) => i.min(list.len()),
                (None, None) => list.len(),
            };
            list.insert(at, new);
            renumber(list);
            let stored = list[at].clone();
            Ok((stored, old_key))
        })
        .await?;
    if let Some(old) = old_key.filter(|k| *k != stored.key)
        && let Err(e) = state.blobs.delete(&old).await
    {
        tracing::warn!(key = %old, error = %e, "cannot delete a replaced buildpack");
    }
    Ok(view(state, &stored))
}

/// `DELETE /v1/buildpacks/{name}`.
pub async fn delete(state: &State, name: &str) -> ApiResult<()> {
    let owned = name.to_owned();
    let removed = state
        .db
        .update_buildpacks(move |list| {
            let i = list.iter().position(|b| b.name == owned).ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    "buildpack_not_found",
                    format!("buildpack {owned:?} not found"),
                )
            })?;
            let removed = list.remove(i);
            renumber(list);
            Ok(removed)
        })
        .await?;
    state.blobs.delete(&removed.key).await?;
    Ok(())
}

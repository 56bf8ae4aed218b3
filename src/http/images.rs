//! Images on the Docker host: list them (with the containers of this server that use each),
//! pull one ahead of time, remove a tag or an image no container on the daemon was made from.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerSummary, ImageSummary};
use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use serde_json::{json, Value};

use crate::error::{ApiCode, ApiError, ApiResult, Kind};
use crate::http::error_map::step_kind;
use crate::http::extract::{JsonObject, Query};
use crate::http::schema::{Image, ImageDeleted, ImageList, PullAccepted};
use crate::http::wait::Wait;
use crate::images::normalize;
use crate::lifecycle::ErrorCode;
use crate::state::AppState;
use crate::step_error::StepError;
use crate::tenancy::Principal;

/// Whether a container whose spec says `spec_image` runs the image `id` tagged `tags`
/// (with `digests`).
fn uses(spec_image: &str, id: &str, tags: &[String], digests: &[String]) -> bool {
    let want = normalize(spec_image);
    id == spec_image
        || id.strip_prefix("sha256:") == Some(spec_image)
        || tags.iter().any(|t| normalize(t) == want)
        || digests.iter().any(|d| normalize(d) == want)
}

/// Live containers of this server, `(cuid, image)`, in creation order.
async fn users(state: &AppState) -> ApiResult<Vec<(String, String)>> {
    Ok(state.store.images_in_use().await?)
}

/// The users a principal may see: a tenant's only its own containers.
async fn visible_users(
    state: &AppState,
    principal: &Principal,
) -> ApiResult<Vec<(String, String)>> {
    Ok(state
        .store
        .images_in_use_by(principal.tenant.as_deref())
        .await?)
}

fn used_by(
    users: &[(String, String)],
    id: &str,
    tags: &[String],
    digests: &[String],
) -> Vec<String> {
    users
        .iter()
        .filter(|(_, image)| uses(image, id, tags, digests))
        .map(|(cuid, _)| cuid.clone())
        .collect()
}

/// A newer digest the registry has for one of `tags` than the image's own (`checks`: the
/// registry digest of each checked reference, and when).
fn update_of(
    tags: &[String],
    digests: &[String],
    checks: &std::collections::HashMap<String, (String, String)>,
) -> Option<crate::store::updates::UpdateAvailable> {
    tags.iter().find_map(|t| {
        let (digest, at) = checks.get(&normalize(t))?;
        let own = crate::images::digest_for(digests, t);
        (own.as_ref() != Some(digest)).then(|| crate::store::updates::UpdateAvailable {
            digest: digest.clone(),
            seen_at: at.clone(),
        })
    })
}

fn image_json(i: &ImageSummary, users: &[(String, String)]) -> Image {
    // Docker shows an untagged image as `<none>:<none>`.
    let shown = |list: &[String], none: &str| -> Vec<String> {
        list.iter().filter(|t| *t != none).cloned().collect()
    };
    Image {
        id: i.id.clone(),
        tags: shown(&i.repo_tags, "<none>:<none>"),
        digests: shown(&i.repo_digests, "<none>@<none>"),
        size: i.size,
        created: chrono::DateTime::from_timestamp(i.created, 0).map(|t| t.to_rfc3339()),
        used_by: used_by(users, &i.id, &i.repo_tags, &i.repo_digests),
        update_available: None,
    }
}

fn docker_failure(e: DockerError) -> ApiError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => {
            tracing::warn!(error = %message, "docker image call failed");
            ApiError::new(Kind::Compose, ApiCode::DockerFailed, message)
        }
        other => crate::error::docker_unavailable(&other),
    }
}

/// `GET /images`
#[utoipa::path(get, path = "/images", operation_id = "list_images", tag = "images", summary = "Images on the host, with the containers using each", responses((status = 200, description = "Images", body = crate::http::schema::ImageList), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<ImageList>> {
    let docker = crate::http::docker_client(&state).await?;
    let images = docker
        .list_images(Some(ListImagesOptions {
            all: false,
            ..Default::default()
        }))
        .await
        .map_err(docker_failure)?;
    let users = visible_users(&state, &principal).await?;
    let checks: std::collections::HashMap<String, (String, String)> = state
        .store
        .image_checks()
        .await?
        .into_iter()
        .map(|(reference, digest, at)| (reference, (digest, at)))
        .collect();
    let images = images
        .iter()
        .map(|i| Image {
            update_available: update_of(&i.repo_tags, &i.repo_digests, &checks),
            ..image_json(i, &users)
        })
        .collect();
    Ok(Json(ImageList { images }))
}

fn step_to_api(f: StepError) -> ApiError {
    ApiError::new(step_kind(f.code), f.code.into(), f.message.clone())
        .with_details(json!({ "message": f.message }))
}

/// The one image `reference` names, as [`image_json`] shows it.
async fn describe(state: &AppState, reference: &str) -> ApiResult<Option<Image>> {
    let docker = crate::http::docker_client(state).await?;
    let inspect = match docker.inspect_image(reference).await {
        Ok(i) => i,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(docker_failure(e)),
    };
    let summary = ImageSummary {
        id: inspect.id.unwrap_or_default(),
        repo_tags: inspect.repo_tags.unwrap_or_default(),
        repo_digests: inspect.repo_digests.unwrap_or_default(),
        size: inspect.size.unwrap_or_default(),
        created: inspect
            .created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map_or(0, |t| t.timestamp()),
        ..Default::default()
    };
    Ok(Some(image_json(&summary, &users(state).await?)))
}

/// `POST /images/pull` `{"image": "…"}`: pulls whatever `IMAGE_PULL_POLICY` says (the
/// operator asked for this pull). Waits (within `ACTION_TIMEOUT`, then `408` while the pull
/// goes on) or, with `?wait=false`, answers `202` at once.
#[utoipa::path(post, path = "/images/pull", operation_id = "pull_image", tag = "images", summary = "Pull an image", params(("wait" = Option<bool>, Query)), request_body = crate::http::schema::PullBody, responses((status = 200, description = "Pulled", body = crate::http::schema::Image), (status = 202, description = "Pulling", body = crate::http::schema::PullAccepted), (status = 400, description = "Bad input", body = crate::http::schema::ErrorBody), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 408, description = "Still pulling", body = crate::http::schema::ErrorBody), (status = 422, description = "No such image, or the registry refused the credentials", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    Query(wait): Query<Wait>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let wait = wait.no_health()?;
    if let Some(k) = body.keys().find(|k| k.as_str() != "image") {
        return Err(ApiError::field(
            ApiCode::UnknownField,
            k.clone(),
            body[k].clone(),
            format!("unknown field `{k}`"),
        ));
    }
    let image = match body.get("image") {
        Some(Value::String(s)) if crate::spec::is_image_reference(s) => s.clone(),
        None => {
            return Err(ApiError::field(
                ApiCode::MissingImage,
                "image",
                Value::Null,
                "image is required",
            ))
        }
        Some(other) => {
            return Err(ApiError::field(
                ApiCode::InvalidImage,
                "image",
                other.clone(),
                "image must be an OCI image reference such as `python:3.12-slim`",
            ))
        }
    };
    if !state.config.registry_allowlist.allows(&normalize(&image)) {
        return Err(registry_not_allowed(&image));
    }
    let docker = crate::http::docker_client(&state).await?;
    // The pull runs on its own: a client that stops waiting (or never waited) does not
    // cut it short.
    let task = {
        let image = image.clone();
        let auth_file = state.config.registry_auth_file.clone();
        let allowlist = state.config.registry_allowlist.clone();
        let pulls = state.reconciler.pulls.clone();
        tokio::spawn(async move {
            crate::images::pull(&docker, &image, auth_file.as_deref(), &allowlist, &pulls).await
        })
    };
    if !wait.wait {
        let progress = state.reconciler.pulls.get(&image);
        return Ok((
            StatusCode::ACCEPTED,
            Json(PullAccepted {
                image,
                pull: progress,
            }),
        )
            .into_response());
    }
    match tokio::time::timeout(state.config.action_timeout, task).await {
        Err(_) => Err(ApiError::new(
            Kind::Timeout,
            ApiCode::ActionTimeout,
            "the pull did not finish in time; it goes on",
        )
        .with_details(json!({"image": image, "pull": state.reconciler.pulls.get(&image)}))),
        Ok(Err(join)) => Err(ApiError::new(
            Kind::Internal,
            ApiCode::InternalError,
            format!("the pull stopped: {join}"),
        )),
        Ok(Ok(Err(f))) => Err(step_to_api(f)),
        Ok(Ok(Ok(()))) => {
            let described = describe(&state, &normalize(&image)).await?;
            let body = described.ok_or_else(|| {
                step_to_api(StepError::new(
                    ErrorCode::ImageNotFound,
                    format!("image {image} is not on the host after its pull"),
                ))
            })?;
            Ok((StatusCode::OK, Json(body)).into_response())
        }
    }
}

fn registry_not_allowed(image: &str) -> ApiError {
    let refusal = crate::images::not_allowed(&normalize(image));
    ApiError::field(
        refusal.code.into(),
        "image",
        Value::String(image.to_owned()),
        refusal.message,
    )
}

/// Create and patch refuse an image that would have to be pulled from a registry
/// `REGISTRY_ALLOWLIST` does not name: under `IMAGE_PULL_POLICY=always` any such image, under
/// `missing` one the host does not hold (`never` pulls nothing). When Docker cannot say, the
/// reconciler's pull decides later (and records `REGISTRY_NOT_ALLOWED`).
pub async fn check_registry(state: &AppState, image: &str) -> ApiResult<()> {
    use crate::images::PullPolicy;
    let policy = state.config.image_pull_policy;
    if policy == PullPolicy::Never || state.config.registry_allowlist.allows(&normalize(image)) {
        return Ok(());
    }
    if policy == PullPolicy::Missing {
        let Ok(docker) = crate::http::docker_client(state).await else {
            return Ok(());
        };
        match docker.inspect_image(image).await {
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            // On the host (nothing to pull), or Docker cannot say.
            _ => return Ok(()),
        }
    }
    Err(registry_not_allowed(image))
}

fn image_not_found(reference: &str) -> ApiError {
    ApiError::not_found(
        ApiCode::ImageNotFound,
        format!("no image {reference} on this host"),
    )
    .with_details(json!({"image": reference}))
}

/// Image ids (`sha256:…` or its hex, whole or a prefix Docker resolves) and references.
fn is_image_ref_or_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    crate::spec::is_image_reference(s)
        || (!hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether Docker takes `reference` as the id of image `id` (then it removes the image, not
/// a tag): Docker's own test, a prefix of the id with or without `sha256:`.
fn names_id(reference: &str, id: &str) -> bool {
    id.starts_with(reference) || id.starts_with(&format!("sha256:{reference}"))
}

/// The containers a removal of `reference` (resolving to the image `id`) would take the
/// image from: `(cuids of this server, names of containers on the daemon)`.
///
/// A tag is decided on its own: Docker removes only the tag while the image has others, so
/// it is refused when a container (of this server by its spec, or any on the daemon by the
/// reference it was created from) names that tag, and allowed when none does even if the
/// image is used under another tag. Docker itself refuses the image's last tag while any
/// container runs the image. An id removes the image, so every container of it counts.
async fn holders(
    state: &AppState,
    reference: &str,
    image: &Image,
) -> ApiResult<(Vec<String>, Vec<String>)> {
    let id = image.id.as_str();
    let docker = crate::http::docker_client(state).await?;
    let on_daemon = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(docker_failure)?;
    let name = |c: &ContainerSummary| {
        c.names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .or_else(|| c.id.clone())
            .unwrap_or_default()
    };
    if names_id(reference, id) {
        let ours = image.used_by.clone();
        let others = on_daemon
            .iter()
            .filter(|c| c.image_id.as_deref() == Some(id))
            .map(name)
            .collect();
        return Ok((ours, others));
    }
    let want = normalize(reference);
    let ours = users(state)
        .await?
        .into_iter()
        .filter(|(_, spec_image)| normalize(spec_image) == want)
        .map(|(cuid, _)| cuid)
        .collect();
    // The daemon lists a container's image as the reference it was created from while that
    // still names the container's image (its id once the tag moved on).
    let others = on_daemon
        .iter()
        .filter(|c| c.image.as_deref().is_some_and(|i| normalize(i) == want))
        .map(name)
        .collect();
    Ok((ours, others))
}

/// `DELETE /images/{ref}` (the reference may hold `/`): `409` while a container uses what the
/// removal would take (see [`holders`]); a tag of an image with several tags only loses that
/// tag.
#[utoipa::path(delete, path = "/images/{reference}", operation_id = "delete_image", tag = "images", summary = "Remove an image or one of its tags (409 while a container was made from that tag)", params(("reference" = String, Path, description = "a reference (may hold /) or an id")), responses((status = 200, description = "Removed", body = crate::http::schema::ImageDeleted), (status = 401, description = "Missing or wrong credentials", body = crate::http::schema::ErrorBody), (status = 403, description = "Cross-origin write refused", body = crate::http::schema::ErrorBody), (status = 404, description = "Not found", body = crate::http::schema::ErrorBody), (status = 409, description = "In use", body = crate::http::schema::ErrorBody), (status = 503, description = "Docker unreachable", body = crate::http::schema::ErrorBody), (status = 429, description = "Blocked after repeated failed logins", body = crate::http::schema::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    // A path that does not even decode (`%FF`) names no image.
    let Ok(axum::extract::Path(reference)) = path else {
        return Err(image_not_found("?"));
    };
    if !is_image_ref_or_id(&reference) {
        return Err(image_not_found(&reference));
    }
    let Some(image) = describe(&state, &reference).await? else {
        return Err(image_not_found(&reference));
    };
    let (used_by, containers) = holders(&state, &reference, &image).await?;
    if !used_by.is_empty() || !containers.is_empty() {
        return Err(ApiError::conflict(
            ApiCode::ImageInUse,
            format!("image {reference} is used by containers"),
        )
        .with_details(json!({"image": reference, "used_by": used_by, "containers": containers})));
    }
    let docker = crate::http::docker_client(&state).await?;
    match docker
        .remove_image(&reference, None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_) => Ok((
            StatusCode::OK,
            Json(ImageDeleted {
                image: reference,
                id: image.id,
                deleted: true,
            }),
        )
            .into_response()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(image_not_found(&reference)),
        // A container made since the check, or one that runs the image under another name
        // while this is its last tag.
        Err(DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        }) => Err(ApiError::conflict(ApiCode::ImageInUse, message)
            .with_details(json!({"image": reference, "used_by": [], "containers": []}))),
        Err(e) => Err(docker_failure(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_uses_an_image_by_tag_or_id() {
        let tags = vec![
            "python:3.12".to_owned(),
            "127.0.0.1:5000/app:latest".to_owned(),
        ];
        let id = format!("sha256:{}", "ab".repeat(32));
        assert!(uses("python:3.12", &id, &tags, &[]));
        assert!(uses("docker.io/library/python:3.12", &id, &tags, &[]));
        assert!(uses("127.0.0.1:5000/app", &id, &tags, &[]));
        assert!(uses(&id, &id, &tags, &[]));
        assert!(!uses("python:3.11", &id, &tags, &[]));
        assert!(is_image_ref_or_id("abc123"));
        assert!(is_image_ref_or_id("127.0.0.1:5000/app:1"));
        assert!(!is_image_ref_or_id("../x"));
    }
}

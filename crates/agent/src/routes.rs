//! The agent's routes: the checks in front of all of them, the handlers,
//! and how errors become answers (`{"error": message}`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};

use crate::request::{parse_start, Health, InstanceInfo, RequestError, MAX_CONTROL_BYTES};
use crate::server::Agent;

type Shared = Arc<Agent>;

/// An API error: status and a message, sent as `{"error": message}`, plus
/// `"code"` where a client must tell one cause of a status from another
/// (see [`crate::STOPPING`]).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: String) -> ApiError {
        ApiError {
            status,
            message,
            code: None,
        }
    }

    /// An error with a `"code"` a client tells causes by.
    pub(crate) fn coded(status: StatusCode, message: String, code: &'static str) -> ApiError {
        ApiError {
            status,
            message,
            code: Some(code),
        }
    }

    /// 503 with `"code": "stopping"`: the agent is shutting down, so the
    /// caller should start the instance on another node.
    pub(crate) fn stopping() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the agent is stopping".into(),
            code: Some(crate::STOPPING),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.code {
            Some(code) => serde_json::json!({"error": self.message, "code": code}),
            None => serde_json::json!({"error": self.message}),
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(code, e.to_string())
    }
}

/// The routes, with the token check on all of them.
pub(crate) fn router(agent: &Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/agent/health", get(health))
        .route("/v1/agent/instances", get(list).post(start))
        .route("/v1/agent/instances/{id}", get(one).delete(stop))
        .route("/v1/agent/instances/{id}/logs", get(logs))
        .route(
            "/v1/agent/instances/{id}/invoke",
            any(crate::proxy::invoke_root),
        )
        .route(
            "/v1/agent/instances/{id}/invoke/",
            any(crate::proxy::invoke_root),
        )
        .route(
            "/v1/agent/instances/{id}/invoke/{*path}",
            any(crate::proxy::invoke),
        )
        .route("/v1/agent/items/{id}", get(crate::items::get))
        .route(
            "/v1/agent/invocations/{inv}/items",
            delete(crate::items::end),
        )
        .route(stratus_dag::whole::RUN_PATH, post(crate::workflow_run::run))
        .route(stratus_dag::spread::EVENT_PATH, post(crate::spread::event))
        .layer(DefaultBodyLimit::max(MAX_CONTROL_BYTES))
        .layer(middleware::from_fn_with_state(agent.clone(), auth))
        .with_state(agent.clone())
}

/// Every route: `Host`/`Origin`, the token; a `POST` outside the invoke
/// proxy needs a JSON body type.
async fn auth(State(a): State<Shared>, req: Request, next: Next) -> Response {
    let invoke = req.uri().path().contains("/invoke");
    let checked = if invoke {
        a.guard
            .check_origin(req.headers())
            .and_then(|()| a.guard.check_token(req.headers()))
    } else {
        a.guard.check_admin(req.method(), req.headers())
    };
    match checked {
        Ok(()) => next.run(req).await,
        Err(denied) => ApiError::new(denied.status(), denied.to_string()).into_response(),
    }
}

async fn health(State(a): State<Shared>) -> Result<Json<Health>, ApiError> {
    tokio::task::spawn_blocking(move || a.health())
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("health: {e}")))
}

async fn list(State(a): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "instances": a.list() }))
}

async fn one(
    State(a): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    a.one(&id).map(Json)
}

async fn start(State(a): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let req = parse_start(&body)?;
    let info = a.start(req).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn stop(
    State(a): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<InstanceInfo>, ApiError> {
    a.stop(&id).await.map(Json)
}

#[derive(serde::Deserialize)]
struct Tail {
    #[serde(default = "default_tail")]
    tail: usize,
}

fn default_tail() -> usize {
    100
}

async fn logs(
    State(a): State<Shared>,
    Path(id): Path<String>,
    Query(t): Query<Tail>,
) -> Result<Response, ApiError> {
    a.one(&id)?;
    let text = a.logs.tail_of(&id, t.tail.min(10_000));
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(text),
    )
        .into_response())
}

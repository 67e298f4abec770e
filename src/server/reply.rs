//! JSON replies: `{"status":"success", ...}` and `{"status":"error","message":...}` with the
//! HTTP status the original API used.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;

/// Unwraps a `Result<T, Response>` in a handler, returning the ready error reply.
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return reply,
        }
    };
}
pub(crate) use or_reply;

/// The body of every error reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `"error"`.
    pub status: String,
    /// What went wrong and what to do.
    pub message: String,
    /// The error kind, as in `vine --json` (board errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The exit code `vine` gives this error (board errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// A read of a damaged board: the damaged files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<Vec<crate::error::Damage>>,
    /// A read of a damaged board: what could be read, as the reply of the op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<crate::op::Reply>,
}

impl ErrorBody {
    /// The body of a board error: its message, kind and exit code, and for a read of a
    /// damaged board what could be read and which files are damaged.
    pub fn of(e: &Error) -> Self {
        let (damaged, reply) = match e {
            Error::DamagedRead { reply, damage } => (Some(damage.clone()), Some((**reply).clone())),
            _ => (None, None),
        };
        ErrorBody {
            status: "error".into(),
            message: e.to_string(),
            kind: Some(e.kind().to_string()),
            code: Some(e.exit_code().code()),
            damaged,
            reply,
        }
    }
}

/// An error reply with `status` and `message`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        status: "error".into(),
        message: message.into(),
        kind: None,
        code: None,
        damaged: None,
        reply: None,
    };
    (status, Json(body)).into_response()
}

/// A success reply: `{"status":"success"}` merged with `fields`.
pub fn success(fields: Value) -> Response {
    let mut body = json!({"status": "success"});
    if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
        b.extend(f);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The reply for a board error: its kind and exit code, and an HTTP status that fits it.
pub fn board_error(e: &Error) -> Response {
    (board_status(e), Json(ErrorBody::of(e))).into_response()
}

/// The HTTP status of a board error.
pub fn board_status(e: &Error) -> StatusCode {
    match e {
        Error::Invalid(_) | Error::NoBoard(_) => StatusCode::BAD_REQUEST,
        Error::UnknownTask(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::NothingToDo(_) => StatusCode::OK,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A path outside the base directory: 403.
pub fn forbidden(e: &Error) -> Response {
    error(StatusCode::FORBIDDEN, e.to_string())
}

/// Unknown routes.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /openapi.json for the API",
    )
}

/// Known routes with the wrong method.
pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// Parses a JSON request body, or explains what is wrong with it (400).
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, Response> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        error(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "the request body is too large".to_string()
            } else {
                format!("cannot read the request body: {e}")
            },
        )
    })?;
    // Serde would also take a struct from a JSON array; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the request body is not the JSON this endpoint takes: it must be a JSON object",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the request body is not the JSON this endpoint takes: {e}"),
        )
    })
}

/// Parses query parameters, or explains what is wrong with them (400).
pub fn parse_query<T: serde::de::DeserializeOwned>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Response> {
    q.map(|axum::extract::Query(v)| v).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad query parameters: {e}"),
        )
    })
}

/// Refuses (400) a text parameter or field whose length in characters is outside `min..=max`,
/// the `minLength`/`maxLength` openapi.json gives it.
pub fn check_len(name: &str, value: &str, min: usize, max: usize) -> Result<(), Response> {
    let n = value.chars().count();
    if n < min {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{name} is empty; give one"),
        ));
    }
    if n > max {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("{name} is {n} characters long; the limit is {max}"),
        ));
    }
    Ok(())
}

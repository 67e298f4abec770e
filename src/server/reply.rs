//! Replies: `{"status":"success", ...}`, and [`ErrorReply`], the error every handler returns as
//! its `Err` (`{"status":"error","message":...}` with the HTTP status the original API used).

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::Error;
use crate::wire::{self, ErrorBody};

/// An error reply: an HTTP status and the error body.
#[derive(Debug)]
pub struct ErrorReply {
    status: StatusCode,
    body: Box<ErrorBody>,
}

impl ErrorReply {
    /// An error with `status` and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ErrorReply {
            status,
            body: Box::new(ErrorBody::plain(message)),
        }
    }

    /// 400: the request cannot be carried out as given.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500: the server failed.
    pub fn internal(message: impl ToString) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }

    /// 403: a path outside the base directory.
    pub fn forbidden(e: &Error) -> Self {
        Self::new(StatusCode::FORBIDDEN, e.to_string())
    }

    /// A board error: its kind and exit code, and an HTTP status that fits it.
    pub fn board(e: &Error) -> Self {
        ErrorReply {
            status: board_status(e),
            body: Box::new(ErrorBody::from(e)),
        }
    }
}

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        (self.status, Json(*self.body)).into_response()
    }
}

/// A success reply: `{"status":"success"}` merged with `fields`.
pub fn success(fields: Value) -> Response {
    let mut body = json!({"status": "success"});
    if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
        b.extend(f);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The HTTP status of a board error.
pub fn board_status(e: &Error) -> StatusCode {
    StatusCode::from_u16(wire::http_status(e)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Unknown routes.
pub async fn not_found() -> ErrorReply {
    ErrorReply::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /openapi.json for the API",
    )
}

/// Known routes with the wrong method.
pub async fn method_not_allowed() -> ErrorReply {
    ErrorReply::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// Parses a JSON request body, or explains what is wrong with it (400).
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<T, ErrorReply> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        ErrorReply::new(
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
        return Err(ErrorReply::bad_request(
            "the request body is not the JSON this endpoint takes: it must be a JSON object",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ErrorReply::bad_request(format!(
            "the request body is not the JSON this endpoint takes: {e}"
        ))
    })
}

/// Parses query parameters, or explains what is wrong with them (400).
pub fn parse_query<T: serde::de::DeserializeOwned>(
    q: Result<axum::extract::Query<T>, QueryRejection>,
) -> Result<T, ErrorReply> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| ErrorReply::bad_request(format!("bad query parameters: {e}")))
}

/// Refuses (400) a text parameter or field whose length in characters is outside `min..=max`,
/// the `minLength`/`maxLength` openapi.json gives it.
pub fn check_len(name: &str, value: &str, min: usize, max: usize) -> Result<(), ErrorReply> {
    let n = value.chars().count();
    if n < min {
        return Err(ErrorReply::bad_request(format!(
            "{name} is empty; give one"
        )));
    }
    if n > max {
        return Err(ErrorReply::bad_request(format!(
            "{name} is {n} characters long; the limit is {max}"
        )));
    }
    Ok(())
}

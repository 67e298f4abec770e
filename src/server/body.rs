//! Request bodies are read whole before a handler runs, within `--body-timeout` (else 408) and
//! `--max-body` (else 413): a client that trickles a body cannot hold a connection (and a
//! handler) longer than that, as one that trickles its headers cannot past the header timeout.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::App;
use super::reply::ErrorReply;

fn too_large() -> ErrorReply {
    ErrorReply::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the request body is too large",
    )
}

/// Middleware: reads the body of a POST within the time and size limits, then passes the
/// request on with the body in memory.
pub(crate) async fn read_in_time(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        return too_large().into_response();
    }
    let (parts, body) = req.into_parts();
    let max = app.max_body;
    let read = async move {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ErrorReply::bad_request(format!("cannot read the request body: {e}"))
            })?;
            if bytes.len() + chunk.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(app.body_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(refused)) => refused.into_response(),
        Err(_) => ErrorReply::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s (the server's --body-timeout); send it faster or in smaller parts",
                app.body_timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

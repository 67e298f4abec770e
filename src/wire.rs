//! What crosses the network between a remote board and `vine serve` (and `vine op`, which a
//! client runs through `/execute` on a server with only the original API): the op request
//! `{"op": ..., "key": ...}`, the reply body `{"status":"success","reply":...}`, the error body
//! `{"status":"error","message":...,"kind":...,"code":...}` with the HTTP status of each error,
//! and the mapping between an error body and [`Error`] in both directions, so that a remote
//! board gives the very `Error` (variant and message) a local one gives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Damage, Error, ExitCode, Result};
use crate::op::{Op, Reply};

/// The body of `POST /v1/op` (and the argument of `vine op`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpRequest {
    /// The op.
    pub op: Op,
    /// A request key: a retry with the same key is answered, not applied twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The body of `POST /v1/batch`: several op requests, each applied as if sent alone to
/// `/v1/op` (a server hands the changes it does not commit itself to the server that leads
/// this way, see `server/forward.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct BatchRequest {
    /// The op requests, in order.
    pub ops: Vec<OpRequest>,
}

/// A [`BatchRequest`] as sent, borrowing its ops.
#[derive(Serialize)]
pub(crate) struct BatchOut<'a> {
    pub(crate) ops: Vec<OpRef<'a>>,
}

/// One op request of a [`BatchOut`].
#[derive(Serialize)]
pub(crate) struct OpRef<'a> {
    pub(crate) op: &'a Op,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<&'a str>,
}

/// The body of a `/v1/batch` answer: `{"status":"success","changes":N,"replies":[...]}`, each
/// reply the body `/v1/op` would have answered that op with; `changes` is the server's change
/// count once the ops were committed.
pub(crate) fn batch_to_bytes(
    changes: u64,
    outcomes: &[Result<Reply>],
) -> serde_json::Result<Vec<u8>> {
    let mut out = format!(r#"{{"status":"success","changes":{changes},"replies":["#).into_bytes();
    for (i, outcome) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(to_bytes(outcome)?);
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// The outcomes and change count of a successful `/v1/batch` answer (HTTP 200); `None` for
/// any other answer.
pub(crate) fn read_batch(status: u16, text: &str) -> Option<(Vec<Result<Reply>>, u64)> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        changes: u64,
        #[serde(borrow)]
        replies: Vec<&'a serde_json::value::RawValue>,
    }
    if status != 200 {
        return None;
    }
    let answer: Answer = serde_json::from_str(text).ok()?;
    let mut outcomes = Vec::with_capacity(answer.replies.len());
    for raw in answer.replies {
        let outcome = match read_success(200, raw.get()) {
            Some(reply) => Ok(reply),
            None => parse_reply(serde_json::from_str(raw.get()).ok()?),
        };
        outcomes.push(outcome);
    }
    Some((outcomes, answer.changes))
}

/// The body of a successful op: `{"status":"success","reply":...}`.
#[derive(Serialize)]
struct ReplyBody<'a> {
    status: &'static str,
    reply: &'a Reply,
}

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
    /// An unknown task: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    /// The damaged files: those a read found (with `reply`), or the one file a change was
    /// refused over (its path on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<Vec<Damage>>,
    /// A read of a damaged board: what could be read, as the reply of the op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

impl ErrorBody {
    /// The body of an error that is not a board error (a bad request, a refused path...):
    /// a message only.
    pub fn plain(message: impl Into<String>) -> Self {
        ErrorBody {
            status: "error".into(),
            message: message.into(),
            kind: None,
            code: None,
            task: None,
            damaged: None,
            reply: None,
        }
    }

    /// Reads an error body as leniently as the client always has: each field on its own (one
    /// that does not parse is left out), `message` defaulted. Also reads the `error` object of
    /// `vine --json` output, which has no `status`.
    pub fn from_value(v: &Value) -> Self {
        fn field<T: serde::de::DeserializeOwned>(v: &Value, name: &str) -> Option<T> {
            v.get(name)
                .and_then(|f| serde_json::from_value(f.clone()).ok())
        }
        ErrorBody {
            status: "error".into(),
            message: field(v, "message").unwrap_or_else(|| "the server reported an error".into()),
            kind: field(v, "kind"),
            code: field(v, "code"),
            task: field(v, "task"),
            damaged: field(v, "damaged"),
            reply: field(v, "reply"),
        }
    }
}

impl From<&Error> for ErrorBody {
    /// The body of a board error: its message, kind and exit code, and for a read of a damaged
    /// board what could be read and which files are damaged.
    fn from(e: &Error) -> Self {
        let (damaged, reply) = match e {
            Error::DamagedRead { reply, damage } => (Some(damage.clone()), Some((**reply).clone())),
            Error::Damaged { path, detail } => (
                Some(vec![Damage {
                    file: path.display().to_string(),
                    detail: detail.clone(),
                }]),
                None,
            ),
            _ => (None, None),
        };
        ErrorBody {
            kind: Some(e.kind().to_string()),
            code: Some(e.exit_code().code()),
            task: match e {
                Error::UnknownTask(id) => Some(*id),
                _ => None,
            },
            damaged,
            reply,
            ..ErrorBody::plain(e.to_string())
        }
    }
}

impl From<ErrorBody> for Error {
    /// The error a body describes: the same variant and message as the error it was made from.
    /// A body this version cannot rebuild (a kind it does not know, a message of another
    /// version's making, no kind at all) becomes [`Error::Remote`] with its kind and exit code.
    fn from(body: ErrorBody) -> Self {
        let ErrorBody {
            message,
            kind,
            code,
            task,
            damaged,
            reply,
            ..
        } = body;
        let kind = kind.unwrap_or_else(|| "remote".into());
        if let Some(e) = rebuild(&kind, &message, task, damaged, reply)
            && e.to_string() == message
        {
            return e;
        }
        Error::Remote {
            kind,
            exit: code
                .and_then(|c| ExitCode::from_code(c.into()))
                .unwrap_or(ExitCode::Other),
            message,
        }
    }
}

/// The error of `kind` with `message`, from the body's fields (`task`, `damaged`, `reply`);
/// from the message where a server older than those fields sent none.
fn rebuild(
    kind: &str,
    message: &str,
    task: Option<u64>,
    damaged: Option<Vec<Damage>>,
    reply: Option<Reply>,
) -> Option<Error> {
    let text = || message.to_string();
    Some(match kind {
        "invalid" => Error::Invalid(text()),
        "unknown-task" if task.is_some() => Error::UnknownTask(task?),
        "unknown-task" => {
            let rest = message.strip_prefix("no task with id ")?;
            let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
            Error::UnknownTask(digits.parse().ok()?)
        }
        "conflict" => Error::Conflict(text()),
        "nothing-to-do" => Error::NothingToDo(text()),
        "damaged" => match (damaged, reply) {
            (Some(damage), Some(reply)) => Error::DamagedRead {
                reply: Box::new(reply),
                damage,
            },
            (Some(mut damage), None) if damage.len() == 1 => {
                let Damage { file, detail } = damage.pop()?;
                Error::Damaged {
                    path: PathBuf::from(file),
                    detail,
                }
            }
            _ => {
                let (path, detail) = message
                    .strip_prefix("board file ")?
                    .strip_suffix(DAMAGED_TAIL)?
                    .split_once(" is damaged (")?;
                Error::Damaged {
                    path: PathBuf::from(path),
                    detail: detail.to_string(),
                }
            }
        },
        "no-board" => Error::NoBoard(text()),
        // The server's I/O error: its action and path are part of the message.
        "io" => Error::Io {
            action: "",
            path: PathBuf::new(),
            source: std::io::Error::other(text()),
        },
        "protocol" => Error::Protocol(message.strip_prefix("unexpected reply: ")?.to_string()),
        "unreachable" => Error::Unreachable(text()),
        "unauthorized" => Error::Unauthorized(text()),
        "forbidden" => Error::Forbidden(text()),
        "incompatible" => Error::Incompatible(text()),
        _ => return None,
    })
}

/// How the message of [`Error::Damaged`] ends.
const DAMAGED_TAIL: &str =
    "); nothing was changed. Run `vine repair` to keep a copy and rebuild it";

/// The HTTP status of a board error.
pub fn http_status(e: &Error) -> u16 {
    match e {
        Error::Invalid(_) | Error::NoBoard(_) => 400,
        Error::UnknownTask(_) => 404,
        Error::Conflict(_) => 409,
        Error::NothingToDo(_) => 200,
        Error::Forbidden(_) => 403,
        Error::Unauthorized(_) => 401,
        // The server's store (its database) cannot be reached: the op was not applied, or
        // may have been; a retry with the same request key is applied once.
        Error::Unreachable(_) => 503,
        _ => 500,
    }
}

/// The body of an op's outcome, as the bytes that are sent: the reply, or the error (which
/// carries a reply too when a read found damaged files).
pub fn to_bytes(outcome: &Result<Reply>) -> serde_json::Result<Vec<u8>> {
    match outcome {
        Ok(reply) => serde_json::to_vec(&ReplyBody {
            status: "success",
            reply,
        }),
        Err(e) => serde_json::to_vec(&ErrorBody::from(e)),
    }
}

/// The body of an op's outcome as a JSON value (what `vine op` prints).
pub fn to_value(outcome: &Result<Reply>) -> serde_json::Result<Value> {
    match outcome {
        Ok(reply) => serde_json::to_value(ReplyBody {
            status: "success",
            reply,
        }),
        Err(e) => serde_json::to_value(ErrorBody::from(e)),
    }
}

/// The reply of a successful op answer (HTTP 200, `"status": "success"`), read straight from
/// the body into its type; `None` for any other answer, which [`parse_reply`] reads.
pub(crate) fn read_success(status: u16, text: &str) -> Option<Reply> {
    /// Only `"success"`: any other status fails the read.
    #[derive(Deserialize)]
    enum Success {
        #[serde(rename = "success")]
        Success,
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "status")]
        _status: Success,
        reply: Reply,
    }
    if status != 200 {
        return None;
    }
    serde_json::from_str::<Answer>(text).ok().map(|a| a.reply)
}

/// The op's outcome from the body of a `/v1/op` (or `vine op`) reply.
pub(crate) fn parse_reply(v: Value) -> Result<Reply> {
    match v.get("status").and_then(Value::as_str) {
        Some("success") => {
            let reply = v.get("reply").cloned().unwrap_or(Value::Null);
            serde_json::from_value(reply)
                .map_err(|e| Error::Protocol(format!("the server's reply does not parse: {e}")))
        }
        Some("error") => Err(ErrorBody::from_value(&v).into()),
        _ => Err(Error::Protocol(format!("the server answered {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_is_read_straight_into_its_reply_and_anything_else_is_left_to_parse_reply() {
        let body = r#"{"status":"success","reply":{"reply":"progress","progress":{"current_step":1,"total_steps":3}},"extra":1}"#;
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(read_success(200, body), Some(parse_reply(value).unwrap()));
        assert_eq!(read_success(200, body), Some(progress_reply()));
        let error = r#"{"status":"error","kind":"conflict","message":"task 7 is claimed by w2"}"#;
        assert_eq!(read_success(200, error), None);
        assert_eq!(read_success(409, body), None);
        assert_eq!(
            read_success(200, r#"{"status":"success","reply":{"reply":"nonsense"}}"#),
            None
        );
        assert_eq!(read_success(200, "not json"), None);
    }

    /// A reply, as a server sends it.
    fn progress_reply() -> Reply {
        serde_json::from_str(
            r#"{"reply":"progress","progress":{"current_step":1,"total_steps":3}}"#,
        )
        .unwrap()
    }

    /// One error of every kind (the match has no wildcard: a new variant does not compile until
    /// it is added here).
    fn every_error() -> Vec<Error> {
        let all = vec![
            Error::Invalid("worker id \"a b\" has a space; use [A-Za-z0-9._-]".into()),
            Error::UnknownTask(1_767_225_600_123),
            Error::Conflict("task 7 is claimed by w2, not w1".into()),
            Error::NothingToDo("no answer within 30s".into()),
            Error::Damaged {
                path: "/srv/board/task-queue.json".into(),
                detail: "expected `,` or `]` at line 3 column 1 (it is damaged (twice))".into(),
            },
            Error::DamagedRead {
                reply: Box::new(progress_reply()),
                damage: vec![
                    Damage {
                        file: "task-queue.json".into(),
                        detail: "line 2: EOF".into(),
                    },
                    Damage {
                        file: "agent-comms.jsonl".into(),
                        detail: "line 9 does not parse".into(),
                    },
                ],
            },
            Error::NoBoard("no board here; run `vine init`".into()),
            Error::io(
                "reading",
                "/srv/board/board.json",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ),
            Error::Protocol("the board writer has stopped".into()),
            Error::Unreachable("cannot reach http://127.0.0.1:9".into()),
            Error::Unauthorized("the server refused the API key".into()),
            Error::Forbidden("../etc is outside the base directory".into()),
            Error::Incompatible("the board's database schema is version 9".into()),
            Error::Remote {
                kind: "remote".into(),
                exit: ExitCode::Invalid,
                message: "list x: no such folder".into(),
            },
        ];
        for e in &all {
            match e {
                Error::Invalid(_)
                | Error::UnknownTask(_)
                | Error::Conflict(_)
                | Error::NothingToDo(_)
                | Error::Damaged { .. }
                | Error::DamagedRead { .. }
                | Error::NoBoard(_)
                | Error::Io { .. }
                | Error::Protocol(_)
                | Error::Unreachable(_)
                | Error::Unauthorized(_)
                | Error::Forbidden(_)
                | Error::Incompatible(_)
                | Error::Remote { .. } => {}
            }
        }
        all
    }

    /// The error back from the bytes its body is sent as.
    fn through_the_wire(e: Error) -> Error {
        let bytes = to_bytes(&Err(e)).unwrap();
        parse_reply(serde_json::from_slice(&bytes).unwrap()).unwrap_err()
    }

    #[test]
    fn every_error_kind_comes_back_as_the_same_error() {
        for e in every_error() {
            let (shown, debug) = (e.to_string(), format!("{e:?}"));
            let (kind, exit) = (e.kind().to_string(), e.exit_code());
            let same = std::mem::discriminant(&e);
            let back = through_the_wire(e);
            assert_eq!(
                std::mem::discriminant(&back),
                same,
                "{debug} came back as {back:?}"
            );
            assert_eq!(back.to_string(), shown, "{debug}");
            assert_eq!((back.kind(), back.exit_code()), (kind.as_str(), exit));
            match &back {
                Error::Io { .. } => {}
                // Everything else comes back field for field.
                _ => assert_eq!(format!("{back:?}"), debug),
            }
        }
    }

    #[test]
    fn the_error_of_vine_json_output_reads_too() {
        // `vine --json init` prints {"ok":false,"error":{"kind","code","message"}}.
        let e = Error::Conflict("held by w2".into());
        let v = serde_json::json!({"kind": e.kind(), "code": 4, "message": e.to_string()});
        let back: Error = ErrorBody::from_value(&v).into();
        assert!(
            matches!(&back, Error::Conflict(m) if m == "held by w2"),
            "{back:?}"
        );
    }

    #[test]
    fn bodies_of_servers_without_the_structured_fields_still_rebuild() {
        for e in [
            Error::UnknownTask(42),
            Error::Damaged {
                path: "/srv/board/task-queue.json".into(),
                detail: "EOF while parsing".into(),
            },
        ] {
            let debug = format!("{e:?}");
            let mut v = serde_json::to_value(ErrorBody::from(&e)).unwrap();
            let obj = v.as_object_mut().unwrap();
            obj.remove("task");
            obj.remove("damaged");
            let back = parse_reply(v).unwrap_err();
            assert_eq!(format!("{back:?}"), debug);
        }
    }

    #[test]
    fn bodies_this_version_cannot_rebuild_keep_their_kind_and_code() {
        for (body, kind, exit) in [
            (
                r#"{"status":"error","message":"new","kind":"frobbed","code":4}"#,
                "frobbed",
                ExitCode::Conflict,
            ),
            // A message that is not the one this version writes for the kind.
            (
                r#"{"status":"error","message":"task 9 is gone","kind":"unknown-task","code":2}"#,
                "unknown-task",
                ExitCode::Invalid,
            ),
            // Not a board error at all.
            (
                r#"{"status":"error","message":"the request body is not JSON"}"#,
                "remote",
                ExitCode::Other,
            ),
        ] {
            let e = parse_reply(serde_json::from_str(body).unwrap()).unwrap_err();
            assert!(matches!(&e, Error::Remote { .. }), "{e:?}");
            assert_eq!((e.kind(), e.exit_code()), (kind, exit), "{body}");
        }
    }

    #[test]
    fn bodies_are_the_bytes_they_always_were() {
        let ok = to_bytes(&Ok(progress_reply())).unwrap();
        assert!(ok.starts_with(br#"{"status":"success","reply":{"reply":"progress""#));
        let err = to_bytes(&Err(Error::UnknownTask(5))).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            r#"{"status":"error","message":"no task with id 5 on this board; list tasks with `vine tasks --all`","kind":"unknown-task","code":2,"task":5}"#
        );
        let plain = serde_json::to_string(&ErrorBody::plain("no")).unwrap();
        assert_eq!(plain, r#"{"status":"error","message":"no"}"#);
        for req in [
            r#"{"op":{"op":"status"}}"#,
            r#"{"op":{"op":"claim","worker":"w1"},"key":"w1-17"}"#,
        ] {
            let parsed: OpRequest = serde_json::from_str(req).unwrap();
            assert_eq!(serde_json::to_string(&parsed).unwrap(), req);
        }
    }
}

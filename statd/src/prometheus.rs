//! Every counter in the Prometheus text exposition format (version 0.0.4), served with
//! hyper on a loopback address (`[statd] prometheus`).
//!
//! mmstat keys hold client data (addresses, boxes) in arbitrary positions, so they are
//! not turned into metric names: every key is one sample of the gauge `mmstat`, its key
//! in the `key` label and its flag in `flag` (`P`/`V`). Select with PromQL label
//! matchers, e.g. `sum(mmstat{key=~"mmsmtpd\\|failed\\|flood\\|.*"})`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::state::State;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The exposition of `state`.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(128 + state.table.len() * 64);
    out.push_str(
        "# HELP mmstat An mmstatd counter; the key label is its mmstat key, flag P persistent or V volatile.\n",
    );
    out.push_str("# TYPE mmstat gauge\n");
    for (k, e) in state.table.iter() {
        out.push_str(&format!("mmstat{{key=\"{}\",flag=\"{}\"}} {}\n", escape_label(k), e.flag.letter(), e.value));
    }
    out.push_str("# HELP mmstatd_keys Keys held by mmstatd.\n# TYPE mmstatd_keys gauge\n");
    out.push_str(&format!("mmstatd_keys {}\n", state.table.len()));
    out.push_str(
        "# HELP mmstatd_journal_bytes Size of the current journal in bytes.\n# TYPE mmstatd_journal_bytes gauge\n",
    );
    out.push_str(&format!("mmstatd_journal_bytes {}\n", state.journal.size()));
    out
}

fn respond(req: &Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let reply = |status, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let body = render(&state.lock().unwrap_or_else(|p| p.into_inner()));
            reply(StatusCode::OK, CONTENT_TYPE, body)
        }
        (_, "/metrics") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n".into()),
    }
}

/// Serves `GET /metrics` on `listener` until `token` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>, token: CancellationToken) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, "prometheus endpoint listening");
    }
    loop {
        let (stream, _) = tokio::select! {
            () = token.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(cause = %e, "prometheus accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = respond(&req, &state);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(cause = %e, "prometheus connection"); },
                () = token.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}

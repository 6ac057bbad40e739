//! Answers on the wire, for every protocol version, in one place: how a worker writes
//! its answer to the proxy ([`WorkerReply`]), how the proxy writes it on to the client
//! ([`ClientReply`]), and how the client reads it back ([`answer_events`]).
//!
//! | version | towards the client | towards the proxy |
//! |---|---|---|
//! | 0 | `client.queryAnswer` / `…Part` / `…Error` / `…PartError`, tokens in each, `is_completed` | (workers speak ≥ 1) |
//! | ≥ 1 | `client.queryAnswerEx` / `…PartEx` / `…ErrorEx`, the last one flagged and carrying a final info | `proxy.queryAnswerEx` / `…PartEx` / `…ErrorEx`, likewise |
//! | ≥ 2 | final info with proxy and worker start and end times | final info with worker times |

use cocoon_net::ErrorCode;
use cocoon_tl::types::{client, http, proxy, TokensUsed};
use cocoon_tl::{enums, TlConstructor};

use super::version::flags;
use super::Version;
use crate::pricing::AdjustedTokens;
use crate::util::unix_now;

/// Which message of an answer: its head (the `http.response`) or a later part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The first message, carrying the serialized `http.response`.
    Head,
    /// A message with more body bytes.
    Part,
}

/// Where a message stands in its answer.
#[derive(Debug, Clone, Copy)]
pub enum Position<'a> {
    /// More messages follow.
    More,
    /// The last message; it carries the summary, built from the worker's final info
    /// when the worker sent one.
    Last(Option<&'a proxy::QueryFinalInfo>),
}

/// The proxy's own part of a summary, for a request that reached the request table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyTrace {
    /// The client asked for debug strings.
    pub debug: bool,
    /// When the proxy received the request (Unix seconds).
    pub proxy_start: f64,
}

/// One request's answer as the proxy writes it to a client speaking `proto`.
#[derive(Debug, Clone, Copy)]
pub struct ClientReply {
    /// The client's protocol version.
    pub proto: Version,
    /// The client's request id.
    pub request_id: [u8; 32],
    /// The proxy's timings and debug wish; `None` for a request refused before it had any.
    pub trace: Option<ProxyTrace>,
}

impl ClientReply {
    /// A head or part with answer bytes. `tokens` is what the request is billed (carried
    /// by every message in protocol 0, by the summary of the last message after).
    pub fn answer(
        &self,
        piece: Piece,
        answer: Vec<u8>,
        tokens: AdjustedTokens,
        position: Position<'_>,
    ) -> Vec<u8> {
        let request_id = self.request_id;
        if self.proto.ex_answers() {
            let (flags, final_info) = match position {
                Position::More => (0, None),
                Position::Last(worker) => {
                    (flags::ANSWER_LAST, Some(self.final_info(tokens, worker)))
                }
            };
            match piece {
                Piece::Head => cocoon_tl::to_bytes(&client::QueryAnswerEx {
                    request_id,
                    answer,
                    flags,
                    final_info,
                }),
                Piece::Part => cocoon_tl::to_bytes(&client::QueryAnswerPartEx {
                    request_id,
                    answer,
                    flags,
                    final_info,
                }),
            }
        } else {
            let is_completed = matches!(position, Position::Last(_));
            let request_tokens_used = tokens.to_tl();
            match piece {
                Piece::Head => cocoon_tl::to_bytes(&client::QueryAnswer {
                    answer,
                    is_completed,
                    request_id,
                    request_tokens_used,
                }),
                Piece::Part => cocoon_tl::to_bytes(&client::QueryAnswerPart {
                    answer,
                    is_completed,
                    request_id,
                    request_tokens_used,
                }),
            }
        }
    }

    /// An error ending the answer, sent in place of the head (`Piece::Head`) or after it
    /// (`Piece::Part`). Protocol 0 has a form for each; later versions one `…ErrorEx`.
    /// (COCOON's proxy sends protocol-0 errors to every client, which its own client
    /// ignores; we do not.)
    pub fn error(
        &self,
        instead_of: Piece,
        code: i32,
        message: &str,
        tokens: AdjustedTokens,
    ) -> Vec<u8> {
        let request_id = self.request_id;
        let error = message.to_owned();
        if self.proto.ex_answers() {
            cocoon_tl::to_bytes(&client::QueryAnswerErrorEx {
                request_id,
                error_code: code,
                error,
                flags: flags::ANSWER_LAST,
                final_info: Some(self.final_info(tokens, None)),
            })
        } else {
            let request_tokens_used = tokens.to_tl();
            match instead_of {
                Piece::Head => cocoon_tl::to_bytes(&client::QueryAnswerError {
                    error_code: code,
                    error,
                    request_id,
                    request_tokens_used,
                }),
                Piece::Part => cocoon_tl::to_bytes(&client::QueryAnswerPartError {
                    error_code: code,
                    error,
                    request_id,
                    request_tokens_used,
                }),
            }
        }
    }

    /// The summary of the last message.
    fn final_info(
        &self,
        tokens: AdjustedTokens,
        worker: Option<&proxy::QueryFinalInfo>,
    ) -> client::QueryFinalInfo {
        let debug = self.trace.is_some_and(|t| t.debug);
        let timing = self.proto.timings();
        let proxy_start = self.trace.map_or(0.0, |t| t.proxy_start);
        client::QueryFinalInfo {
            flags: info_flags(debug, timing),
            tokens_used: tokens.to_tl(),
            worker_debug: debug.then(|| {
                worker
                    .and_then(|w| w.worker_debug.clone())
                    .unwrap_or_default()
            }),
            proxy_debug: debug
                .then(|| serde_json::json!({ "proxy_start": proxy_start }).to_string()),
            proxy_start_time: timing.then_some(proxy_start),
            proxy_end_time: timing.then(unix_now),
            worker_start_time: timing
                .then(|| worker.and_then(|w| w.worker_start_time).unwrap_or(0.0)),
            worker_end_time: timing.then(|| worker.and_then(|w| w.worker_end_time).unwrap_or(0.0)),
        }
    }
}

/// The final-info flags for what it carries.
fn info_flags(debug: bool, timing: bool) -> u32 {
    let mut out = 0;
    if debug {
        out |= flags::FINAL_INFO_DEBUG;
    }
    if timing {
        out |= flags::FINAL_INFO_TIMINGS;
    }
    out
}

/// One request's answer as a worker writes it to a proxy speaking `proto` (≥ 1).
#[derive(Debug, Clone, Copy)]
pub struct WorkerReply {
    /// The link's protocol version.
    pub proto: Version,
    /// The proxy's request id.
    pub request_id: [u8; 32],
    /// When the worker received the request (Unix seconds).
    pub start: f64,
    /// The proxy asked for debug strings.
    pub debug: bool,
}

impl WorkerReply {
    /// The head, carrying the serialized `http.response`; never the last message.
    pub fn head(&self, answer: Vec<u8>) -> enums::proxy::QueryAnswerEx {
        proxy::QueryAnswerEx {
            request_id: self.request_id,
            answer,
            flags: 0,
            final_info: None,
        }
        .into()
    }

    /// A part of the body; more follow.
    pub fn part(&self, answer: Vec<u8>) -> enums::proxy::QueryAnswerEx {
        proxy::QueryAnswerPartEx {
            request_id: self.request_id,
            answer,
            flags: 0,
            final_info: None,
        }
        .into()
    }

    /// The last part, with the usage the request is billed.
    pub fn last(&self, answer: Vec<u8>, tokens: AdjustedTokens) -> enums::proxy::QueryAnswerEx {
        proxy::QueryAnswerPartEx {
            request_id: self.request_id,
            answer,
            flags: flags::ANSWER_LAST,
            final_info: Some(self.final_info(tokens)),
        }
        .into()
    }

    /// An error ending the answer, with the usage delivered before it.
    pub fn error(
        &self,
        code: i32,
        message: &str,
        tokens: AdjustedTokens,
    ) -> enums::proxy::QueryAnswerEx {
        proxy::QueryAnswerErrorEx {
            request_id: self.request_id,
            error_code: code,
            error: message.to_owned(),
            flags: flags::ANSWER_LAST,
            final_info: Some(self.final_info(tokens)),
        }
        .into()
    }

    fn final_info(&self, tokens: AdjustedTokens) -> proxy::QueryFinalInfo {
        let timing = self.proto.timings();
        proxy::QueryFinalInfo {
            flags: info_flags(self.debug, timing),
            tokens_used: tokens.to_tl(),
            worker_debug: self.debug.then(|| {
                serde_json::json!({ "worker_start": self.start, "worker_end": unix_now() })
                    .to_string()
            }),
            worker_start_time: timing.then_some(self.start),
            worker_end_time: timing.then(unix_now),
        }
    }
}

/// A worker's answer message as the proxy reads it.
#[derive(Debug)]
pub enum FromWorker {
    /// Head or part bytes; `last` carries the worker's summary when it ends the answer.
    Answer {
        /// Head or part.
        piece: Piece,
        /// The bytes.
        answer: Vec<u8>,
        /// The worker's summary when this message is the last one.
        last: Option<LastInfo>,
    },
    /// The worker's error; it ends the answer.
    Error {
        /// COCOON error code.
        code: i32,
        /// The worker's message.
        message: String,
        /// The usage the worker reports delivered before the error.
        info: Option<proxy::QueryFinalInfo>,
    },
}

/// The summary of a last message (absent from a worker that flagged the end but sent none).
#[derive(Debug)]
pub struct LastInfo(pub Option<proxy::QueryFinalInfo>);

impl FromWorker {
    /// Splits a decoded worker message into its request id and meaning.
    pub fn read(message: enums::proxy::QueryAnswerEx) -> ([u8; 32], FromWorker) {
        use enums::proxy::QueryAnswerEx as A;
        let last = |f: u32, info| (f & flags::ANSWER_LAST != 0).then_some(LastInfo(info));
        match message {
            A::QueryAnswerEx(a) => (
                a.request_id,
                FromWorker::Answer {
                    piece: Piece::Head,
                    last: last(a.flags, a.final_info),
                    answer: a.answer,
                },
            ),
            A::QueryAnswerPartEx(a) => (
                a.request_id,
                FromWorker::Answer {
                    piece: Piece::Part,
                    last: last(a.flags, a.final_info),
                    answer: a.answer,
                },
            ),
            A::QueryAnswerErrorEx(a) => (
                a.request_id,
                FromWorker::Error {
                    code: a.error_code,
                    message: a.error,
                    info: a.final_info,
                },
            ),
        }
    }
}

/// What happens to a request, in order: a head, chunks, then `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEvent {
    /// The HTTP response head (and the first body bytes, if any).
    Head(http::Response),
    /// More body bytes.
    Chunk(Vec<u8>),
    /// The answer is complete.
    Done(FinalInfo),
    /// The request failed (before or after the head).
    Error {
        /// COCOON error code.
        code: i32,
        /// Message.
        message: String,
        /// Summary, when the proxy sent one.
        info: FinalInfo,
    },
}

/// End-of-request summary as the client reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalInfo {
    /// Adjusted tokens of the request.
    pub tokens: AdjustedTokens,
    /// Proxy/worker timings (protocol ≥ 2): proxy start, proxy end, worker start, worker end.
    pub timings: Option<[f64; 4]>,
    /// Debug JSON from the worker and the proxy, when asked for.
    pub debug: Option<(String, String)>,
}

impl FinalInfo {
    fn from_tl(info: Option<&client::QueryFinalInfo>) -> Self {
        let Some(i) = info else {
            return FinalInfo::default();
        };
        FinalInfo {
            tokens: AdjustedTokens::from_tl(&i.tokens_used),
            timings: (i.flags & flags::FINAL_INFO_TIMINGS != 0).then(|| {
                [
                    i.proxy_start_time.unwrap_or(0.0),
                    i.proxy_end_time.unwrap_or(0.0),
                    i.worker_start_time.unwrap_or(0.0),
                    i.worker_end_time.unwrap_or(0.0),
                ]
            }),
            debug: (i.flags & flags::FINAL_INFO_DEBUG != 0).then(|| {
                (
                    i.worker_debug.clone().unwrap_or_default(),
                    i.proxy_debug.clone().unwrap_or_default(),
                )
            }),
        }
    }

    /// Protocol 0: tokens only.
    fn from_tokens(tokens: &TokensUsed) -> Self {
        FinalInfo {
            tokens: AdjustedTokens::from_tl(tokens),
            timings: None,
            debug: None,
        }
    }
}

/// One answer message as the client reads it: its request id and the events it stands
/// for; `None` for a message that is not an answer.
pub type Events = Option<([u8; 32], Vec<AnswerEvent>)>;

/// The events one answer message from the proxy stands for (every protocol version).
pub fn answer_events(data: &[u8]) -> Result<Events, cocoon_tl::TlError> {
    use enums::client::{QueryAnswer, QueryAnswerEx, QueryAnswerPart};
    let Some(id) = cocoon_tl::peek_id(data) else {
        return Ok(None);
    };
    let body = |piece: Piece, answer: Vec<u8>| match piece {
        Piece::Head => Some(head(&answer)),
        Piece::Part => (!answer.is_empty()).then_some(AnswerEvent::Chunk(answer)),
    };
    let out = match id {
        client::QueryAnswerEx::ID
        | client::QueryAnswerPartEx::ID
        | client::QueryAnswerErrorEx::ID => {
            let (request_id, piece, answer, flags, info) =
                match cocoon_tl::from_bytes::<QueryAnswerEx>(data)? {
                    QueryAnswerEx::QueryAnswerEx(a) => {
                        (a.request_id, Piece::Head, a.answer, a.flags, a.final_info)
                    }
                    QueryAnswerEx::QueryAnswerPartEx(a) => {
                        (a.request_id, Piece::Part, a.answer, a.flags, a.final_info)
                    }
                    QueryAnswerEx::QueryAnswerErrorEx(a) => {
                        let error = AnswerEvent::Error {
                            code: a.error_code,
                            message: a.error,
                            info: FinalInfo::from_tl(a.final_info.as_ref()),
                        };
                        return Ok(Some((a.request_id, vec![error])));
                    }
                };
            let mut events: Vec<AnswerEvent> = body(piece, answer).into_iter().collect();
            if flags & flags::ANSWER_LAST != 0 {
                events.push(AnswerEvent::Done(FinalInfo::from_tl(info.as_ref())));
            }
            (request_id, events)
        }
        client::QueryAnswer::ID
        | client::QueryAnswerError::ID
        | client::QueryAnswerPart::ID
        | client::QueryAnswerPartError::ID => {
            let (request_id, piece, answer, done, tokens) =
                if matches!(id, client::QueryAnswer::ID | client::QueryAnswerError::ID) {
                    match cocoon_tl::from_bytes::<QueryAnswer>(data)? {
                        QueryAnswer::QueryAnswer(a) => (
                            a.request_id,
                            Piece::Head,
                            a.answer,
                            a.is_completed,
                            a.request_tokens_used,
                        ),
                        QueryAnswer::QueryAnswerError(a) => {
                            return Ok(Some((
                                a.request_id,
                                vec![proto0_error(a.error_code, a.error, &a.request_tokens_used)],
                            )))
                        }
                    }
                } else {
                    match cocoon_tl::from_bytes::<QueryAnswerPart>(data)? {
                        QueryAnswerPart::QueryAnswerPart(a) => (
                            a.request_id,
                            Piece::Part,
                            a.answer,
                            a.is_completed,
                            a.request_tokens_used,
                        ),
                        QueryAnswerPart::QueryAnswerPartError(a) => {
                            return Ok(Some((
                                a.request_id,
                                vec![proto0_error(a.error_code, a.error, &a.request_tokens_used)],
                            )))
                        }
                    }
                };
            let mut events: Vec<AnswerEvent> = body(piece, answer).into_iter().collect();
            if done {
                events.push(AnswerEvent::Done(FinalInfo::from_tokens(&tokens)));
            }
            (request_id, events)
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

fn proto0_error(code: i32, message: String, tokens: &TokensUsed) -> AnswerEvent {
    AnswerEvent::Error {
        code,
        message,
        info: FinalInfo::from_tokens(tokens),
    }
}

/// The head event of an answer carrying an `http.response`.
fn head(answer: &[u8]) -> AnswerEvent {
    match cocoon_tl::from_bytes::<enums::http::Response>(answer) {
        Ok(enums::http::Response::Response(response)) => AnswerEvent::Head(response),
        Err(e) => AnswerEvent::Error {
            code: ErrorCode::ProtocolViolation.code(),
            message: format!("answer head is not an http.response: {e}"),
            info: FinalInfo::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u64) -> AdjustedTokens {
        AdjustedTokens {
            prompt: n,
            cached: 0,
            completion: 2 * n,
            reasoning: 0,
        }
    }

    fn response_bytes(body: &[u8]) -> Vec<u8> {
        cocoon_tl::to_bytes(&http::Response {
            http_version: "HTTP/1.1".into(),
            status_code: 200,
            reason: "OK".into(),
            headers: vec![],
            payload: body.to_vec(),
        })
    }

    fn reply(n: i32, debug: bool) -> ClientReply {
        ClientReply {
            proto: Version::new(n),
            request_id: [7; 32],
            trace: Some(ProxyTrace {
                debug,
                proxy_start: 100.5,
            }),
        }
    }

    fn read(bytes: &[u8]) -> Vec<AnswerEvent> {
        let (id, events) = answer_events(bytes).expect("decodes").expect("an answer");
        assert_eq!(id, [7; 32]);
        events
    }

    /// A worker's final info with times and debug, as the proxy relays it.
    fn worker_info() -> proxy::QueryFinalInfo {
        let w = WorkerReply {
            proto: Version::new(2),
            request_id: [1; 32],
            start: 50.25,
            debug: true,
        };
        let enums::proxy::QueryAnswerEx::QueryAnswerPartEx(last) = w.last(vec![], tokens(1)) else {
            panic!("a part")
        };
        last.final_info.expect("final info")
    }

    #[test]
    fn an_answer_in_three_messages_reads_back_in_every_version() {
        let info = worker_info();
        for n in 0..=3 {
            let r = reply(n, true);
            let head = r.answer(
                Piece::Head,
                response_bytes(b"he"),
                AdjustedTokens::default(),
                Position::More,
            );
            let part = r.answer(
                Piece::Part,
                b"llo".to_vec(),
                AdjustedTokens::default(),
                Position::More,
            );
            let last = r.answer(
                Piece::Part,
                b"!".to_vec(),
                tokens(5),
                Position::Last(Some(&info)),
            );
            let AnswerEvent::Head(h) = &read(&head)[0] else {
                panic!("version {n}: no head")
            };
            assert_eq!(h.payload, b"he");
            assert_eq!(read(&part), vec![AnswerEvent::Chunk(b"llo".to_vec())]);
            let events = read(&last);
            assert_eq!(events[0], AnswerEvent::Chunk(b"!".to_vec()));
            let AnswerEvent::Done(done) = &events[1] else {
                panic!("version {n}: not done")
            };
            assert_eq!(done.tokens, tokens(5), "version {n}");
            // Times from protocol 2, debug strings from 1 (0 has no summary at all).
            match done.timings {
                Some([proxy_start, proxy_end, worker_start, worker_end]) => {
                    assert!(n >= 2, "version {n} carries no times");
                    assert_eq!((proxy_start, worker_start), (100.5, 50.25));
                    assert!(proxy_end >= proxy_start && worker_end >= worker_start);
                }
                None => assert!(n < 2, "version {n} lost its times"),
            }
            assert_eq!(done.debug.is_some(), n >= 1, "version {n}");
            if let Some((worker, proxy)) = &done.debug {
                assert!(worker.contains("worker_start"), "{worker}");
                assert!(proxy.contains("100.5"), "{proxy}");
            }
        }
    }

    #[test]
    fn a_head_that_ends_the_answer_reads_as_head_and_done() {
        for n in 0..=3 {
            let r = reply(n, false);
            let events = read(&r.answer(
                Piece::Head,
                response_bytes(b"{}"),
                tokens(3),
                Position::Last(None),
            ));
            assert!(matches!(events[0], AnswerEvent::Head(_)), "version {n}");
            let AnswerEvent::Done(done) = &events[1] else {
                panic!("version {n}")
            };
            assert_eq!(done.tokens, tokens(3));
            assert_eq!(done.debug, None, "version {n}: debug was not asked for");
            // Protocol 2 carries zero worker times when the worker sent no summary.
            if let Some(t) = done.timings {
                assert_eq!((t[2], t[3]), (0.0, 0.0));
            }
        }
    }

    #[test]
    fn errors_read_back_before_and_after_the_head_in_every_version() {
        for n in 0..=3 {
            for piece in [Piece::Head, Piece::Part] {
                let bytes = reply(n, false).error(piece, 503, "busy", tokens(2));
                let events = read(&bytes);
                assert_eq!(events.len(), 1);
                let AnswerEvent::Error {
                    code,
                    message,
                    info,
                } = &events[0]
                else {
                    panic!("version {n}: not an error")
                };
                assert_eq!((*code, message.as_str()), (503, "busy"));
                assert_eq!(info.tokens, tokens(2), "version {n} {piece:?}");
                // Protocol 0 has a constructor per place; later versions one.
                let expected = match (n, piece) {
                    (0, Piece::Head) => client::QueryAnswerError::ID,
                    (0, Piece::Part) => client::QueryAnswerPartError::ID,
                    _ => client::QueryAnswerErrorEx::ID,
                };
                assert_eq!(cocoon_tl::peek_id(&bytes), Some(expected));
            }
        }
    }

    #[test]
    fn a_refusal_without_trace_has_no_debug_and_zero_proxy_times() {
        let r = ClientReply {
            proto: Version::new(2),
            request_id: [7; 32],
            trace: None,
        };
        let AnswerEvent::Error { info, .. } = &read(&r.error(Piece::Head, 1, "no", tokens(0)))[0]
        else {
            panic!("not an error")
        };
        assert_eq!(info.debug, None);
        assert_eq!(info.timings.map(|t| t[0]), Some(0.0));
    }

    #[test]
    fn worker_messages_read_back_at_the_proxy() {
        for n in 1..=3 {
            let w = WorkerReply {
                proto: Version::new(n),
                request_id: [9; 32],
                start: 10.0,
                debug: false,
            };
            let wire = |m: enums::proxy::QueryAnswerEx| {
                let bytes = cocoon_tl::to_bytes(&m);
                cocoon_tl::from_bytes::<enums::proxy::QueryAnswerEx>(&bytes).expect("decodes")
            };
            let (id, head) = FromWorker::read(wire(w.head(b"h".to_vec())));
            assert_eq!(id, [9; 32]);
            assert!(matches!(
                head,
                FromWorker::Answer {
                    piece: Piece::Head,
                    last: None,
                    ..
                }
            ));
            let (_, part) = FromWorker::read(wire(w.part(b"p".to_vec())));
            assert!(matches!(
                part,
                FromWorker::Answer {
                    piece: Piece::Part,
                    last: None,
                    ..
                }
            ));
            let (_, last) = FromWorker::read(wire(w.last(b"l".to_vec(), tokens(4))));
            let FromWorker::Answer {
                piece: Piece::Part,
                last: Some(LastInfo(Some(info))),
                answer,
            } = last
            else {
                panic!("version {n}: not a last part")
            };
            assert_eq!(answer, b"l");
            assert_eq!(AdjustedTokens::from_tl(&info.tokens_used), tokens(4));
            assert_eq!(info.worker_start_time.is_some(), n >= 2, "version {n}");
            assert_eq!(info.worker_debug, None);
            let (_, error) = FromWorker::read(wire(w.error(621, "gone", tokens(1))));
            let FromWorker::Error {
                code,
                message,
                info,
            } = error
            else {
                panic!("version {n}: not an error")
            };
            assert_eq!((code, message.as_str()), (621, "gone"));
            let info = info.expect("errors carry a summary");
            assert_eq!(AdjustedTokens::from_tl(&info.tokens_used), tokens(1));
        }
    }

    #[test]
    fn messages_that_are_not_answers_are_left_alone() {
        let notice = cocoon_tl::to_bytes(&client::PaymentStatus {
            signed_payment: proxy::SignedPaymentEmpty {}.into(),
            db_tokens: 1,
            max_tokens: 1,
        });
        assert_eq!(answer_events(&notice).expect("no error"), None);
        assert_eq!(answer_events(&[]).expect("no error"), None);
    }
}

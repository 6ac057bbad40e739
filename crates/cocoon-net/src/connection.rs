//! The RPC connection every role uses: opening handshake, queries with typed answers,
//! one-way packets, keep-alive, bounded queues and graceful close.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cocoon_tl::types::tcp;
use cocoon_tl::{Reader, TlBoxed, TlConstructor, TlError, TlFunction};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::error::{CloseReason, ErrorCode, RpcError};
use crate::frame::{FrameCodec, FrameError, OutFrame, MAX_FRAME_LEN};

/// How many ids of abandoned queries are remembered, so that their late answers are
/// ignored instead of being treated as answers to unknown queries.
const ABANDONED_IDS: usize = 4096;

/// Which end of the connection this is; it decides the opening and the keep-alive rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection: sends `tcp.connect` and the pings.
    Initiator,
    /// Accepted it: answers `tcp.connected` and the pings.
    Acceptor,
}

/// Tunables of a connection; the defaults are COCOON's.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The initiator pings after this much silence (once per quiet period). Default 10 s.
    pub ping_after: Duration,
    /// The initiator gives up after this much silence. Default 20 s.
    pub initiator_idle_timeout: Duration,
    /// The acceptor gives up after this much silence. Default 60 s.
    pub acceptor_idle_timeout: Duration,
    /// Time allowed for the `tcp.connect` / `tcp.connected` exchange. Default 10 s.
    pub handshake_timeout: Duration,
    /// Timeout of [`RpcHandle::query`]. Default 30 s.
    pub default_query_timeout: Duration,
    /// Incoming queries and packets waiting for the application; when full, the
    /// connection stops reading (backpressure). Default 1024.
    pub incoming_queue: usize,
    /// Outgoing frames waiting for the socket; when full, senders wait. Default 1024.
    pub outgoing_queue: usize,
    /// Largest accepted frame payload. Default and maximum 16 MiB.
    pub max_frame_len: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            ping_after: Duration::from_secs(10),
            initiator_idle_timeout: Duration::from_secs(20),
            acceptor_idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            default_query_timeout: Duration::from_secs(30),
            incoming_queue: 1024,
            outgoing_queue: 1024,
            max_frame_len: MAX_FRAME_LEN,
        }
    }
}

/// A message from the peer that the application must handle.
#[derive(Debug)]
pub enum Incoming {
    /// A query (`tcp.query`) to answer.
    Query(IncomingQuery),
    /// A one-way message (`tcp.packet`): a boxed TL object.
    Packet(Bytes),
}

/// A query from the peer. Answer it with [`IncomingQuery::answer`] or
/// [`IncomingQuery::error`]; dropping it unanswered sends error 653 (cancelled), so the
/// peer never waits in vain.
pub struct IncomingQuery {
    id: i64,
    data: Bytes,
    handle: Option<RpcHandle>,
}

impl fmt::Debug for IncomingQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingQuery")
            .field("id", &self.id)
            .field("len", &self.data.len())
            .field(
                "function",
                &cocoon_tl::peek_id(&self.data).and_then(cocoon_tl::constructor_name),
            )
            .finish()
    }
}

impl IncomingQuery {
    /// The query's id on this connection.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The boxed TL function the peer called.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The constructor id of the function, if the data has one.
    pub fn function_id(&self) -> Option<u32> {
        cocoon_tl::peek_id(&self.data)
    }

    /// Decodes the function (strictly: trailing bytes are an error).
    pub fn decode<T: TlBoxed>(&self) -> Result<T, TlError> {
        cocoon_tl::from_bytes(&self.data)
    }

    /// Answers with a boxed TL value.
    pub async fn answer<T: TlBoxed>(self, value: &T) -> Result<(), RpcError> {
        self.answer_raw(cocoon_tl::to_bytes(value)).await
    }

    /// Answers with an already encoded boxed TL value.
    pub async fn answer_raw(mut self, data: Vec<u8>) -> Result<(), RpcError> {
        let handle = self
            .handle
            .take()
            .ok_or(RpcError::Closed(CloseReason::Local))?;
        let frame = OutFrame::wrapped_with_query_id(tcp::QueryAnswer::ID, self.id, data);
        match handle.shared.send(frame).await {
            Err(too_large @ RpcError::TooLarge { .. }) => {
                // The peer still gets an answer: an error that says why.
                let message = format!("answer not sent: {too_large}");
                let frame = query_error_frame(self.id, ErrorCode::Error.code(), &message);
                handle.shared.send(frame).await?;
                Err(too_large)
            }
            other => other,
        }
    }

    /// Answers with `tcp.queryError`.
    pub async fn error(mut self, code: i32, message: &str) -> Result<(), RpcError> {
        let handle = self
            .handle
            .take()
            .ok_or(RpcError::Closed(CloseReason::Local))?;
        let frame = query_error_frame(self.id, code, message);
        handle.shared.send(frame).await
    }
}

impl Drop for IncomingQuery {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let frame = query_error_frame(
                self.id,
                ErrorCode::Cancelled.code(),
                "query dropped without an answer",
            );
            // Best effort: if the queue is full or the connection is gone, nobody waits.
            let _ = handle.shared.out_tx.try_send(frame);
        }
    }
}

fn query_error_frame(id: i64, code: i32, message: &str) -> OutFrame {
    OutFrame::Raw(cocoon_tl::to_bytes(&tcp::QueryError {
        id,
        code,
        message: message.to_owned(),
    }))
}

/// Queries waiting for an answer, and ids of abandoned ones.
#[derive(Default)]
struct PendingQueries {
    waiting: HashMap<i64, oneshot::Sender<Result<Bytes, RpcError>>>,
    abandoned: HashSet<i64>,
    abandoned_order: VecDeque<i64>,
}

impl PendingQueries {
    fn abandon(&mut self, id: i64) {
        if self.waiting.remove(&id).is_some() && self.abandoned.insert(id) {
            self.abandoned_order.push_back(id);
            if self.abandoned_order.len() > ABANDONED_IDS {
                if let Some(old) = self.abandoned_order.pop_front() {
                    self.abandoned.remove(&old);
                }
            }
        }
    }
}

/// State shared by the handles and the connection's tasks.
struct Shared {
    out_tx: mpsc::Sender<OutFrame>,
    pending: Mutex<PendingQueries>,
    close_reason: OnceLock<CloseReason>,
    cancel: CancellationToken,
    default_query_timeout: Duration,
    /// Largest outgoing frame payload: a larger message fails alone ([`RpcError::TooLarge`]).
    max_frame_len: usize,
    span: tracing::Span,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingQueries> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> RpcError {
        RpcError::Closed(
            self.close_reason
                .get()
                .cloned()
                .unwrap_or(CloseReason::Local),
        )
    }

    async fn send(&self, frame: OutFrame) -> Result<(), RpcError> {
        if self.cancel.is_cancelled() {
            return Err(self.closed_error());
        }
        let len = frame.payload_len();
        if len > self.max_frame_len {
            return Err(RpcError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        tokio::select! {
            res = self.out_tx.send(frame) => res.map_err(|_| self.closed_error()),
            _ = self.cancel.cancelled() => Err(self.closed_error()),
        }
    }

    /// Ends the connection once: records why, wakes every waiter, fails pending queries.
    fn shutdown(&self, reason: CloseReason) {
        if self.close_reason.set(reason.clone()).is_ok() {
            let _enter = self.span.enter();
            match &reason {
                CloseReason::ProtocolViolation(_) => warn!(%reason, "connection closed"),
                CloseReason::Io(_) | CloseReason::IdleTimeout(_) => {
                    info!(%reason, "connection closed")
                }
                CloseReason::Local | CloseReason::PeerClosed => {
                    debug!(%reason, "connection closed")
                }
            }
        }
        self.cancel.cancel();
        let reason = self.close_reason.get().cloned().unwrap_or(reason);
        let waiting = std::mem::take(&mut self.pending().waiting);
        for (_, tx) in waiting {
            let _ = tx.send(Err(RpcError::Closed(reason.clone())));
        }
    }
}

/// Closes the connection when the last application handle is dropped.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shutdown(CloseReason::Local);
    }
}

/// A cheap, cloneable handle to send queries and packets on a connection.
#[derive(Clone)]
pub struct RpcHandle {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl fmt::Debug for RpcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcHandle")
            .field("closed", &self.shared.close_reason.get())
            .finish()
    }
}

/// Removes a pending query when its caller stops waiting, remembering the id.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending().abandon(self.id);
    }
}

impl RpcHandle {
    /// Sends a typed query and waits (at most the default timeout) for its typed answer.
    pub async fn query<F: TlFunction>(&self, function: &F) -> Result<F::Answer, RpcError> {
        self.query_with_timeout(function, self.shared.default_query_timeout)
            .await
    }

    /// Sends a typed query and waits at most `timeout` for its typed answer.
    pub async fn query_with_timeout<F: TlFunction>(
        &self,
        function: &F,
        timeout: Duration,
    ) -> Result<F::Answer, RpcError> {
        let answer = self
            .query_raw(cocoon_tl::to_bytes(function), timeout)
            .await?;
        Ok(cocoon_tl::from_bytes(&answer)?)
    }

    /// Sends an encoded boxed function and waits at most `timeout` for the answer bytes.
    ///
    /// The timeout is local: the peer is not told, and a late answer is ignored.
    pub async fn query_raw(&self, data: Vec<u8>, timeout: Duration) -> Result<Bytes, RpcError> {
        let shared = &*self.shared;
        if shared.cancel.is_cancelled() {
            return Err(shared.closed_error());
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = shared.pending();
            let mut rng = rand::thread_rng();
            loop {
                let id: i64 = rng.gen();
                if !pending.waiting.contains_key(&id) && !pending.abandoned.contains(&id) {
                    pending.waiting.insert(id, tx);
                    break id;
                }
            }
        };
        let guard = PendingGuard { shared, id };
        let wait = async {
            shared
                .send(OutFrame::wrapped_with_query_id(tcp::Query::ID, id, data))
                .await?;
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(shared.closed_error()),
            }
        };
        let result = match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout(timeout)),
        };
        drop(guard);
        result
    }

    /// Sends a one-way message (`tcp.packet`) carrying a boxed TL value.
    pub async fn send_packet<T: TlBoxed>(&self, value: &T) -> Result<(), RpcError> {
        self.send_packet_raw(cocoon_tl::to_bytes(value)).await
    }

    /// Sends a one-way message carrying an encoded boxed TL value.
    pub async fn send_packet_raw(&self, data: Vec<u8>) -> Result<(), RpcError> {
        self.shared
            .send(OutFrame::wrapped(tcp::Packet::ID, data))
            .await
    }

    /// Closes the connection: frames already queued are still sent, then the stream is
    /// shut down; pending queries fail with [`CloseReason::Local`].
    pub fn close(&self) {
        self.shared.shutdown(CloseReason::Local);
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Waits until the connection ends and says why.
    pub fn closed(&self) -> impl Future<Output = CloseReason> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            shared.cancel.cancelled().await;
            shared
                .close_reason
                .get()
                .cloned()
                .unwrap_or(CloseReason::Local)
        }
    }
}

/// An open, handshaken COCOON connection: a [`RpcHandle`] to send and a queue of
/// [`Incoming`] messages to handle.
///
/// The application must keep taking incoming messages: when the queue is full the
/// connection stops reading, which also delays answers to its own queries.
pub struct RpcConnection {
    handle: RpcHandle,
    incoming: mpsc::Receiver<Incoming>,
}

impl fmt::Debug for RpcConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConnection")
            .field("handle", &self.handle)
            .finish()
    }
}

static CONNECTION_SEQ: AtomicU64 = AtomicU64::new(1);

impl RpcConnection {
    /// Opens a connection as the initiator (client or worker side): sends `tcp.connect`
    /// and waits for `tcp.connected`. `peer` names the other end in logs.
    pub async fn connect<S>(
        stream: S,
        config: &ConnectionConfig,
        peer: &str,
    ) -> Result<Self, RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::open(stream, config, peer, Side::Initiator).await
    }

    /// Opens a connection as the acceptor (proxy side): waits for `tcp.connect` and
    /// answers `tcp.connected`. `peer` names the other end in logs.
    pub async fn accept<S>(
        stream: S,
        config: &ConnectionConfig,
        peer: &str,
    ) -> Result<Self, RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::open(stream, config, peer, Side::Acceptor).await
    }

    async fn open<S>(
        stream: S,
        config: &ConnectionConfig,
        peer: &str,
        side: Side,
    ) -> Result<Self, RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let conn = CONNECTION_SEQ.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", id = conn, ?side, peer = %peer);
        let (rd, wr) = tokio::io::split(stream);
        let mut reader = FramedRead::new(rd, FrameCodec::new(config.max_frame_len));
        let mut writer = FramedWrite::new(wr, FrameCodec::new(config.max_frame_len));

        let opening = handshake(&mut reader, &mut writer, side);
        match tokio::time::timeout(config.handshake_timeout, opening)
            .instrument(span.clone())
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                span.in_scope(|| warn!(error = %e, "handshake failed"));
                return Err(e);
            }
            Err(_) => {
                span.in_scope(|| info!("handshake timed out"));
                return Err(RpcError::Handshake(format!(
                    "no opening within {:?}",
                    config.handshake_timeout
                )));
            }
        }
        span.in_scope(|| debug!("connection ready"));

        let (out_tx, out_rx) = mpsc::channel(config.outgoing_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.incoming_queue.max(1));
        let shared = Arc::new(Shared {
            out_tx,
            pending: Mutex::new(PendingQueries::default()),
            close_reason: OnceLock::new(),
            cancel: CancellationToken::new(),
            default_query_timeout: config.default_query_timeout,
            max_frame_len: config
                .max_frame_len
                .clamp(crate::frame::MIN_FRAME_LEN, MAX_FRAME_LEN),
            span: span.clone(),
        });
        let handle = RpcHandle {
            shared: shared.clone(),
            _owner: Arc::new(Owner(shared.clone())),
        };
        let liveness = Liveness::new(side, config);
        tokio::spawn(write_loop(writer, out_rx, shared.clone()).instrument(span.clone()));
        tokio::spawn(
            read_loop(reader, in_tx, shared, handle.downgrade(), liveness).instrument(span),
        );
        Ok(RpcConnection {
            handle,
            incoming: in_rx,
        })
    }

    /// A handle for sending; clone it freely.
    pub fn handle(&self) -> RpcHandle {
        self.handle.clone()
    }

    /// The next incoming query or packet; `None` once the connection has ended.
    pub async fn next_incoming(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Splits into the sending handle and the incoming queue.
    pub fn split(self) -> (RpcHandle, mpsc::Receiver<Incoming>) {
        (self.handle, self.incoming)
    }
}

impl RpcHandle {
    /// A handle for the connection's own tasks, which must not keep it open.
    fn downgrade(&self) -> WeakHandle {
        WeakHandle {
            shared: self.shared.clone(),
            owner: Arc::downgrade(&self._owner),
        }
    }
}

/// A handle held by the read loop: it upgrades to a full handle for incoming queries,
/// but does not keep the connection open by itself.
struct WeakHandle {
    shared: Arc<Shared>,
    owner: std::sync::Weak<Owner>,
}

impl WeakHandle {
    fn upgrade(&self) -> Option<RpcHandle> {
        self.owner.upgrade().map(|owner| RpcHandle {
            shared: self.shared.clone(),
            _owner: owner,
        })
    }
}

type Reader_<S> = FramedRead<ReadHalf<S>, FrameCodec>;
type Writer_<S> = FramedWrite<WriteHalf<S>, FrameCodec>;

async fn handshake<S>(
    reader: &mut Reader_<S>,
    writer: &mut Writer_<S>,
    side: Side,
) -> Result<(), RpcError>
where
    S: AsyncRead + AsyncWrite,
{
    let first_frame = |frame: Option<Result<Bytes, FrameError>>| -> Result<Bytes, RpcError> {
        match frame {
            Some(Ok(payload)) => Ok(payload),
            Some(Err(e)) => Err(RpcError::Handshake(e.to_string())),
            None => Err(RpcError::Handshake("peer closed before the opening".into())),
        }
    };
    let sent = |result: Result<(), FrameError>| {
        result.map_err(|e| RpcError::Handshake(format!("cannot send the opening: {e}")))
    };
    match side {
        Side::Initiator => {
            let id: i64 = rand::thread_rng().gen();
            sent(
                writer
                    .send(OutFrame::Raw(cocoon_tl::to_bytes(&tcp::Connect { id })))
                    .await,
            )?;
            let payload = first_frame(reader.next().await)?;
            let connected: tcp::Connected = cocoon_tl::from_bytes(&payload).map_err(|e| {
                RpcError::Handshake(format!("first frame is not tcp.connected: {e}"))
            })?;
            if connected.id != id {
                return Err(RpcError::Handshake(format!(
                    "tcp.connected echoes id {} instead of {id}",
                    connected.id
                )));
            }
        }
        Side::Acceptor => {
            let payload = first_frame(reader.next().await)?;
            let connect: tcp::Connect = cocoon_tl::from_bytes(&payload)
                .map_err(|e| RpcError::Handshake(format!("first frame is not tcp.connect: {e}")))?;
            let connected = tcp::Connected { id: connect.id };
            sent(
                writer
                    .send(OutFrame::Raw(cocoon_tl::to_bytes(&connected)))
                    .await,
            )?;
        }
    }
    Ok(())
}

async fn write_loop<S>(
    mut writer: Writer_<S>,
    mut out_rx: mpsc::Receiver<OutFrame>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite,
{
    let result: Result<(), FrameError> = async {
        loop {
            tokio::select! {
                biased;
                frame = out_rx.recv() => {
                    let Some(frame) = frame else { return Ok(()) };
                    writer.feed(frame).await?;
                    while let Ok(frame) = out_rx.try_recv() {
                        writer.feed(frame).await?;
                    }
                    writer.flush().await?;
                }
                _ = shared.cancel.cancelled() => {
                    // Send what was queued before the close, then stop.
                    while let Ok(frame) = out_rx.try_recv() {
                        writer.feed(frame).await?;
                    }
                    writer.flush().await?;
                    return Ok(());
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = writer.get_mut().shutdown().await;
        }
        Err(FrameError::BadLength { len, max, .. }) => {
            // A local message too large to frame: fail loudly but keep the peer in sync.
            shared.shutdown(CloseReason::Io(format!(
                "outgoing message of {len} bytes exceeds the {max}-byte frame limit"
            )));
        }
        Err(e) => shared.shutdown(CloseReason::Io(e.to_string())),
    }
}

/// Keep-alive state of the read loop.
struct Liveness {
    ping_after: Option<Duration>,
    idle_timeout: Duration,
    last_rx: Instant,
    pinged: bool,
}

impl Liveness {
    fn new(side: Side, config: &ConnectionConfig) -> Self {
        let (ping_after, idle_timeout) = match side {
            Side::Initiator => (Some(config.ping_after), config.initiator_idle_timeout),
            Side::Acceptor => (None, config.acceptor_idle_timeout),
        };
        Liveness {
            ping_after,
            idle_timeout,
            last_rx: Instant::now(),
            pinged: false,
        }
    }

    fn received(&mut self) {
        self.last_rx = Instant::now();
        self.pinged = false;
    }

    fn next_deadline(&self) -> Instant {
        let idle = self.last_rx + self.idle_timeout;
        match self.ping_after {
            Some(after) if !self.pinged => idle.min(self.last_rx + after),
            _ => idle,
        }
    }
}

/// What a received frame asks the read loop to do.
enum Received {
    Nothing,
    Deliver(Incoming),
}

async fn read_loop<S>(
    mut reader: Reader_<S>,
    in_tx: mpsc::Sender<Incoming>,
    shared: Arc<Shared>,
    handle: WeakHandle,
    mut liveness: Liveness,
) where
    S: AsyncRead + AsyncWrite,
{
    let reason = loop {
        let deadline = liveness.next_deadline();
        let frame = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            frame = reader.next() => frame,
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if now >= liveness.last_rx + liveness.idle_timeout {
                    break CloseReason::IdleTimeout(liveness.idle_timeout);
                }
                liveness.pinged = true;
                let id: i64 = rand::thread_rng().gen();
                debug!(id, "sending keep-alive ping");
                let _ = shared.out_tx.try_send(OutFrame::Raw(cocoon_tl::to_bytes(&tcp::Ping { id })));
                continue;
            }
        };
        let payload = match frame {
            None => break CloseReason::PeerClosed,
            Some(Err(FrameError::Io(e))) => break CloseReason::Io(e.to_string()),
            Some(Err(e)) => break CloseReason::ProtocolViolation(e.to_string()),
            Some(Ok(payload)) => payload,
        };
        liveness.received();
        let incoming = match dispatch(&payload, &shared, &handle) {
            Ok(Received::Nothing) => continue,
            Ok(Received::Deliver(incoming)) => incoming,
            Err(reason) => break reason,
        };
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            sent = in_tx.send(incoming) => {
                // Nobody takes incoming messages: a dropped query answers 653 by itself.
                drop(sent);
            }
        }
    };
    shared.shutdown(reason);
}

/// Handles one frame payload (a boxed `tcp.Packet`).
fn dispatch(
    payload: &Bytes,
    shared: &Shared,
    handle: &WeakHandle,
) -> Result<Received, CloseReason> {
    let violation = |what: String| CloseReason::ProtocolViolation(what);
    let bad = |e: TlError| violation(format!("malformed tcp packet: {e}"));
    let slice = |data: &[u8]| payload.slice_ref(data);
    let mut r = Reader::new(payload);
    let id = r.read_u32().map_err(bad)?;
    let received = match id {
        tcp::Ping::ID => {
            let ping_id = r.read_i64().map_err(bad)?;
            r.finish().map_err(bad)?;
            let pong = cocoon_tl::to_bytes(&tcp::Pong { id: ping_id });
            let _ = shared.out_tx.try_send(OutFrame::Raw(pong));
            Received::Nothing
        }
        tcp::Pong::ID => {
            r.read_i64().map_err(bad)?;
            r.finish().map_err(bad)?;
            Received::Nothing
        }
        tcp::Packet::ID => {
            let data = r.read_byte_slice().map_err(bad)?;
            r.finish().map_err(bad)?;
            Received::Deliver(Incoming::Packet(slice(data)))
        }
        tcp::Query::ID => {
            let query_id = r.read_i64().map_err(bad)?;
            let data = r.read_byte_slice().map_err(bad)?;
            r.finish().map_err(bad)?;
            match handle.upgrade() {
                Some(handle) => Received::Deliver(Incoming::Query(IncomingQuery {
                    id: query_id,
                    data: slice(data),
                    handle: Some(handle),
                })),
                None => Received::Nothing,
            }
        }
        tcp::QueryAnswer::ID => {
            let query_id = r.read_i64().map_err(bad)?;
            let data = r.read_byte_slice().map_err(bad)?;
            r.finish().map_err(bad)?;
            complete_query(shared, query_id, Ok(slice(data)))?;
            Received::Nothing
        }
        tcp::QueryError::ID => {
            let query_id = r.read_i64().map_err(bad)?;
            let code = r.read_i32().map_err(bad)?;
            let message = r.read_string().map_err(bad)?;
            r.finish().map_err(bad)?;
            complete_query(shared, query_id, Err(RpcError::Remote { code, message }))?;
            Received::Nothing
        }
        tcp::Connect::ID | tcp::Connected::ID => {
            return Err(violation(format!(
                "{} after the opening",
                cocoon_tl::constructor_name(id).unwrap_or("tcp.connect")
            )))
        }
        other => {
            return Err(violation(format!(
                "unknown tcp packet constructor {other:#010x}{}",
                cocoon_tl::constructor_name(other)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )))
        }
    };
    Ok(received)
}

fn complete_query(
    shared: &Shared,
    query_id: i64,
    result: Result<Bytes, RpcError>,
) -> Result<(), CloseReason> {
    let mut pending = shared.pending();
    if let Some(tx) = pending.waiting.remove(&query_id) {
        let _ = tx.send(result);
        Ok(())
    } else if pending.abandoned.remove(&query_id) {
        debug!(query_id, "late answer to an abandoned query ignored");
        Ok(())
    } else {
        Err(CloseReason::ProtocolViolation(format!(
            "answer for unknown query id {query_id}"
        )))
    }
}

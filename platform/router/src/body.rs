//! Body wrappers for the proxy: a request body that can be taken back for another endpoint
//! until the first one starts reading it, and a response body that reports what it sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Bodies of idempotent requests up to this size are kept so a retry after a failed send can
/// resend them; anything larger is streamed and not retried once sent.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A request body that is streamed, never buffered, yet can be given to another endpoint as
/// long as no attempt has read from it (as after a failed connect).
#[derive(Debug)]
pub struct RequestBody {
    slot: Arc<Mutex<Option<Body>>>,
    hint: SizeHint,
    end: bool,
    received: Arc<AtomicU64>,
}

impl RequestBody {
    pub fn new(body: Body) -> Self {
        Self {
            hint: body.size_hint(),
            end: body.is_end_stream(),
            slot: Arc::new(Mutex::new(Some(body))),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The body for one attempt, or `None` once an earlier attempt began reading it.
    pub fn attempt(&self) -> Option<Body> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()?;
        Some(Body::new(Reclaimable {
            slot: self.slot.clone(),
            taken: None,
            hint: self.hint,
            end: self.end,
            received: self.received.clone(),
        }))
    }

    /// Bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

struct Reclaimable {
    slot: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
    hint: SizeHint,
    end: bool,
    received: Arc<AtomicU64>,
}

impl HttpBody for Reclaimable {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.taken.is_none() {
            let body = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match body {
                Some(body) => self.taken = Some(body),
                None => {
                    return Poll::Ready(Some(Err(axum::Error::new(
                        "the request body was already sent to another endpoint",
                    ))));
                }
            }
        }
        let Some(body) = self.taken.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.hint,
        }
    }
}

/// Called once when a response body ends, fails or is dropped, with the bytes sent.
pub type OnDone = Box<dyn FnOnce(u64) + Send>;

/// A response body that counts what it passes on and reports when it is done.
pub struct Observed<B> {
    inner: B,
    sent: u64,
    done: Option<OnDone>,
}

impl<B> Observed<B> {
    pub fn new(inner: B, done: OnDone) -> Self {
        Self {
            inner,
            sent: 0,
            done: Some(done),
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.sent);
        }
    }
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

//! A streaming HTML rewriter as a response body: lol_html fed frame by frame, its output handed
//! on as soon as it is produced. Pages are never buffered whole.
//!
//! The rewriter runs non-strict, with a memory limit and graceful bail-out: markup it cannot
//! handle within the limit passes through unchanged rather than breaking the page.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use lol_html::html_content::ContentType;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{element, MemorySettings, OutputSink};

use super::local_url::RuntimeUrls;
use crate::body::Body;
use crate::body::BoxError;

/// Memory the parser may use for one page (long attributes, split tags).
const MAX_REWRITER_MEMORY: usize = 512 * 1024;

/// What to change in a page.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Prepend this markup to the first `<head>` (once per page).
    PrependToHead(String),
    /// Rewrite `localhost:{port}` URLs in `href`, `src` and `action` attributes.
    RewriteLocalUrls(RuntimeUrls),
}

/// Wraps `inner` so that its HTML is rewritten on the fly.
pub fn rewrite(inner: Body, edits: Vec<Edit>) -> Body {
    let output = Arc::new(Mutex::new(Vec::new()));
    let settings = edits.into_iter().fold(lenient_settings(), with_edit);
    let rewriter = HtmlRewriter::new(settings, Sink(Arc::clone(&output)));
    HtmlBody {
        inner,
        rewriter: Some(rewriter),
        output,
        finished: false,
    }
    .boxed_unsync()
}

/// Non-strict, memory-bounded settings that bail out gracefully: markup the rewriter cannot
/// handle passes through rather than breaking the page.
fn lenient_settings() -> Settings<'static, 'static> {
    Settings::new_send()
        .with_strict(false)
        .with_graceful_bail_out_on_content_handler_error(true)
        .with_memory_settings(
            MemorySettings::new()
                .with_max_allowed_memory_usage(MAX_REWRITER_MEMORY)
                .with_graceful_bail_out_on_memory_limit_exceeded(true),
        )
}

/// Adds the content handler that carries out `edit`.
fn with_edit(settings: Settings<'static, 'static>, edit: Edit) -> Settings<'static, 'static> {
    match edit {
        Edit::PrependToHead(markup) => prepend_to_head(settings, markup),
        Edit::RewriteLocalUrls(urls) => rewrite_local_urls(settings, urls),
    }
}

/// Prepends `markup` to the first `<head>` only: a page with several gets it once.
fn prepend_to_head(
    settings: Settings<'static, 'static>,
    markup: String,
) -> Settings<'static, 'static> {
    let mut done = false;
    settings.append_element_content_handler(element!("head", move |head| {
        if !done {
            head.prepend(&markup, ContentType::Html);
            done = true;
        }
        Ok(())
    }))
}

/// Points `localhost:{port}` links, sources and form actions at the runtime URLs.
fn rewrite_local_urls(
    settings: Settings<'static, 'static>,
    urls: RuntimeUrls,
) -> Settings<'static, 'static> {
    settings.append_element_content_handler(element!("[href], [src], [action]", move |element| {
        for name in ["href", "src", "action"] {
            let rewritten = element.get_attribute(name).and_then(|v| urls.rewrite(&v));
            if let Some(rewritten) = rewritten {
                element.set_attribute(name, &rewritten)?;
            }
        }
        Ok(())
    }))
}

/// The rewriter's output, shared with the body that hands it on.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(chunk);
    }
}

struct HtmlBody {
    inner: Body,
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    output: Arc<Mutex<Vec<u8>>>,
    finished: bool,
}

impl HtmlBody {
    /// The rewriter gave up (memory limit, handler error). With graceful bail-out it has
    /// already flushed what it had, untransformed; the rest of the page passes through as is.
    fn bail_out(&mut self, error: &lol_html::errors::RewritingError) {
        tracing::debug!(%error, "HTML rewriting stopped; passing the rest through");
        ::metrics::counter!(crate::metrics::REWRITE_SKIPPED, "reason" => "bail_out").increment(1);
        self.rewriter = None;
    }

    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.output.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes one poll result of the inner body. Returns what to hand on at once (data once the
    /// rewriter gave up, trailers, an error), or `None` when the rewriter's output, if any, is
    /// what comes next.
    fn feed(&mut self, polled: Polled) -> Option<Polled> {
        match polled {
            Some(Ok(frame)) => self.feed_frame(frame).map(|frame| Some(Ok(frame))),
            Some(Err(error)) => {
                self.finished = true;
                Some(Some(Err(error)))
            }
            None => {
                self.finish();
                None
            }
        }
    }

    fn feed_frame(&mut self, frame: Frame<Bytes>) -> Option<Frame<Bytes>> {
        let data = match frame.into_data() {
            Ok(data) => data,
            // Trailers pass through unchanged.
            Err(frame) => return Some(frame),
        };
        match self.rewriter.as_mut() {
            Some(rewriter) => {
                if let Err(error) = rewriter.write(&data) {
                    self.bail_out(&error);
                }
                None
            }
            None => Some(Frame::data(data)),
        }
    }

    /// Never poll a finished body again: flush the rewriter and stop.
    fn finish(&mut self) {
        self.finished = true;
        if let Some(rewriter) = self.rewriter.take() {
            if let Err(error) = rewriter.end() {
                self.bail_out(&error);
            }
        }
    }
}

/// One poll result of a body that is ready.
type Polled = Option<Result<Frame<Bytes>, BoxError>>;

impl HttpBody for HtmlBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        loop {
            let ready = self.take_output();
            if !ready.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(ready)))));
            }
            if self.finished {
                return Poll::Ready(None);
            }
            let polled = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(polled) => polled,
            };
            if let Some(passed) = self.feed(polled) {
                return Poll::Ready(passed);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.output.lock().map(|o| o.is_empty()).unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::ConversationId;

    /// Feeds `page` in chunks of `size` and returns the rewritten output.
    async fn run(page: &str, size: usize, edits: Vec<Edit>) -> String {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = page
            .as_bytes()
            .chunks(size)
            .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
            .collect();
        let body =
            http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
        let bytes = rewrite(body, edits).collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn urls() -> RuntimeUrls {
        RuntimeUrls {
            scheme: crate::routing::Scheme::Https,
            runtime_domain: "runtime.example.com".into(),
            public_port: None,
            conversation: ConversationId::parse("7c15e423fbd44f8f8bf483a481daa4d9").unwrap(),
        }
    }

    #[tokio::test]
    async fn output_is_the_same_however_the_input_is_chunked() {
        let page = "<!doctype html><html><HEAD><title>t</title></HEAD><body>\
            <a href=\"http://localhost:5000/x?y=1\">x</a><img src='http://127.0.0.1:8001/i.png'>\
            <form action=\"http://example.com:5000/\"></form><head></head></body></html>";
        let edits = || {
            vec![
                Edit::PrependToHead("<script src=\"/s.js\"></script>".into()),
                Edit::RewriteLocalUrls(urls()),
            ]
        };
        let whole = run(page, page.len(), edits()).await;
        assert_eq!(
            whole.matches("<script src=\"/s.js\"></script>").count(),
            1,
            "{whole}"
        );
        assert!(
            whole.contains("<HEAD><script src=\"/s.js\"></script><title>"),
            "{whole}"
        );
        assert!(whole.contains(
            "href=\"https://5000-7c15e423fbd44f8f8bf483a481daa4d9.runtime.example.com/x?y=1\""
        ));
        assert!(whole.contains(
            "src=\"https://8001-7c15e423fbd44f8f8bf483a481daa4d9.runtime.example.com/i.png\""
        ));
        assert!(whole.contains("action=\"http://example.com:5000/\""));
        for size in [1, 2, 3, 7, 16, 64] {
            assert_eq!(run(page, size, edits()).await, whole, "chunk size {size}");
        }
    }

    #[tokio::test]
    async fn pages_without_head_or_with_huge_attributes_pass_through() {
        let plain = "just text, <b>no head</b>";
        assert_eq!(
            run(plain, 5, vec![Edit::PrependToHead("<x>".into())]).await,
            plain
        );
        let huge = format!(
            "<html><head></head><body><a href=\"{}\">x</a></body></html>",
            "a".repeat(2 << 20)
        );
        let out = run(&huge, 4096, vec![Edit::RewriteLocalUrls(urls())]).await;
        assert_eq!(
            out.len(),
            huge.len(),
            "a page past the memory limit must still arrive whole"
        );
    }
}

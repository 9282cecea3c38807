//! The stream relay (the Rust twin of gateway/pipeline.py's StreamRelay): upstream SSE
//! bytes in, OpenAI SSE events out, as each upstream chunk arrives.
use crate::errors::UpstreamFailure;
use crate::stages::adapter::Adapter;

/// Upstream SSE bytes -> OpenAI SSE events, as each upstream chunk arrives; `collected`
/// holds every OpenAI chunk JSON sent (for the audit record).
pub struct StreamRelay {
    adapter: Option<Adapter>,
    model: String,
    buf: Vec<u8>,
    pub collected: Vec<Vec<u8>>,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The `data:` payload of one SSE event block (several data lines joined by \n).
fn sse_data(event: &[u8]) -> Option<Vec<u8>> {
    let strip = |l: &[u8]| {
        let l = &l[5..];
        let s = l.iter().position(|&b| b != b' ').unwrap_or(l.len());
        l[s..].to_vec()
    };
    if event.starts_with(b"data:") && !event.contains(&b'\n') {
        return Some(strip(event));
    }
    let lines: Vec<Vec<u8>> = event
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"data:"))
        .map(strip)
        .collect();
    (!lines.is_empty()).then(|| lines.join(&b'\n'))
}

impl StreamRelay {
    /// `adapter`: None with the adapter stage off (chunks pass through unchanged).
    pub(crate) fn new(adapter: Option<Adapter>, model: String) -> Self {
        Self {
            adapter,
            model,
            buf: Vec::new(),
            collected: Vec::new(),
        }
    }

    /// The bytes to send now for one upstream chunk; an event the adapter cannot read is an error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, UpstreamFailure> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        let Some(adapter) = &self.adapter else {
            return Ok(chunk.to_vec());
        };
        if chunk.contains(&b'\r') {
            let mut c = Vec::with_capacity(chunk.len());
            let mut i = 0;
            while i < chunk.len() {
                if chunk[i] == b'\r' && chunk.get(i + 1) == Some(&b'\n') {
                    c.push(b'\n');
                    i += 2;
                } else {
                    c.push(chunk[i]);
                    i += 1;
                }
            }
            self.buf.extend_from_slice(&c);
        } else {
            self.buf.extend_from_slice(chunk);
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = find(&self.buf[start..], b"\n\n") {
            let event = &self.buf[start..start + end];
            start += end + 2;
            if let Some(data) = sse_data(event) {
                let chunks = adapter
                    .stream_event(&data, &self.model)
                    .map_err(|e| UpstreamFailure::malformed("stream event", &e.0))?;
                for c in chunks {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&c);
                    out.extend_from_slice(b"\n\n");
                    self.collected.push(c);
                }
            }
        }
        self.buf.drain(..start);
        Ok(out)
    }

    pub fn done(&self) -> &'static [u8] {
        if self.adapter.is_some() {
            b"data: [DONE]\n\n"
        } else {
            b""
        }
    }
}

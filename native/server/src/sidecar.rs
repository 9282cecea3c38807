//! Python `pre_call` plugins in a sidecar process (docs/claims.md `plugins-sidecar`), protocol in `gateway/plugins.py`.
//!
//! The binary binds a Unix socket in a private temp directory, starts
//! `PYTHON -m gateway.plugins --socket PATH --hook ...` and accepts its one connection.
//! A writer task sends length-prefixed JSON calls, a reader task matches answers to callers
//! by id. Each call holds one of `max_in_flight` slots and is bounded by `timeout` in total
//! (waiting for a slot included). If the sidecar dies, every waiting and later call fails at
//! once with `Unavailable`; the server goes on.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// 403 plugin_rejected with the hook's message
    Reject(String),
    /// the hook raised: 500 plugin_failed
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Timeout(Duration),
    Busy(Duration),
    Unavailable(String),
}

impl CallError {
    /// (status, code, message) of the client's answer
    pub fn answer(&self) -> (u16, &'static str, String) {
        match self {
            CallError::Timeout(d) => (
                504,
                "plugin_timeout",
                format!("plugin sidecar gave no answer within {} ms", d.as_millis()),
            ),
            CallError::Busy(d) => (
                503,
                "plugin_busy",
                format!(
                    "plugin sidecar had no free slot within {} ms",
                    d.as_millis()
                ),
            ),
            CallError::Unavailable(m) => (
                502,
                "plugin_unavailable",
                format!("plugin sidecar unavailable: {m}"),
            ),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Verdict>>>>;

pub struct Sidecar {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    slots: Semaphore,
    timeout: Duration,
    alive: Arc<AtomicBool>,
    pid: u32,
    _child: tokio::process::Child,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Sidecar {
    /// Start the sidecar and wait (up to `startup`) for it to connect.
    pub async fn start(
        python: &str,
        hooks: &[String],
        timeout: Duration,
        max_in_flight: usize,
        startup: Duration,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "gatewaylab-sidecar-{}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("plugins: cannot create {}: {e}", dir.display()))?;
        let dir = TempDir(dir);
        let path = dir.0.join("plugins.sock");
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("plugins: cannot bind {}: {e}", path.display()))?;
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg("-m")
            .arg("gateway.plugins")
            .arg("--socket")
            .arg(&path);
        for h in hooks {
            cmd.arg("--hook").arg(h);
        }
        cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("plugins: cannot start the sidecar ({python}): {e}"))?;
        let pid = child.id().unwrap_or(0);
        let stream = tokio::select! {
            r = listener.accept() => r.map_err(|e| format!("plugins: sidecar did not connect: {e}"))?.0,
            st = child.wait() => return Err(format!("plugins: the sidecar exited before connecting ({})",
                st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
            _ = tokio::time::sleep(startup) => return Err(format!("plugins: the sidecar did not connect within {}s", startup.as_secs())),
        };
        let (mut rd, mut wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let alive_w = alive.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    alive_w.store(false, Ordering::Release);
                    break;
                }
            }
        });
        let (pending_r, alive_r) = (pending.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 4];
                if rd.read_exact(&mut head).await.is_err() {
                    break;
                }
                let n = u32::from_be_bytes(head) as usize;
                if n > MAX_FRAME {
                    break;
                }
                let mut buf = vec![0u8; n];
                if rd.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    break;
                };
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    break;
                };
                let verdict = if let Some(m) = v.get("reject").and_then(Value::as_str) {
                    Verdict::Reject(m.to_string())
                } else if let Some(m) = v.get("error").and_then(Value::as_str) {
                    Verdict::Failed(m.to_string())
                } else {
                    Verdict::Pass
                };
                if let Some(tx) = pending_r
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                {
                    let _ = tx.send(verdict);
                }
            }
            // gone: fail everything still waiting (dropping the senders), refuse later calls
            alive_r.store(false, Ordering::Release);
            pending_r.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Self {
            tx,
            pending,
            next_id: AtomicU64::new(1),
            slots: Semaphore::new(max_in_flight.max(1)),
            timeout,
            alive,
            pid,
            _child: child,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Run the hooks on one request. `request` is the client's JSON body (already parsed
    /// once by the pipeline, so it is valid JSON and goes into the frame as it is).
    pub async fn pre_call(
        &self,
        key_id: &str,
        model: &str,
        request: &[u8],
    ) -> Result<Verdict, CallError> {
        if !self.alive() {
            return Err(CallError::Unavailable(
                "the sidecar process has exited".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(p) => p.expect("never closed"),
            Err(_) => return Err(CallError::Busy(self.timeout)),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut json = Vec::with_capacity(request.len() + 96);
        json.extend_from_slice(format!("{{\"id\":{id},\"key_id\":").as_bytes());
        serde_json::to_writer(&mut json, key_id).expect("a string serialises");
        json.extend_from_slice(b",\"model\":");
        serde_json::to_writer(&mut json, model).expect("a string serialises");
        json.extend_from_slice(b",\"request\":");
        json.extend_from_slice(request);
        json.push(b'}');
        let mut frame = Vec::with_capacity(json.len() + 4);
        frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
        frame.extend_from_slice(&json);
        if self.tx.send(frame).is_err() || !self.alive() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(CallError::Unavailable(
                "the sidecar process has exited".into(),
            ));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(CallError::Unavailable(
                "the sidecar process has exited".into(),
            )),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                Err(CallError::Timeout(self.timeout))
            }
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The engine's plugin hooks, run in this sidecar.
impl gatewaylab_engine::PreCall for Sidecar {
    fn check<'a>(
        &'a self,
        key_id: &'a str,
        model: &'a str,
        body: &'a [u8],
    ) -> futures_util::future::BoxFuture<'a, gatewaylab_engine::Verdict> {
        use gatewaylab_engine::Verdict as V;
        let refuse = |status, code, message, call_failed| V::Refuse {
            status,
            code,
            message,
            call_failed,
        };
        Box::pin(async move {
            match self.pre_call(key_id, model, body).await {
                Ok(Verdict::Pass) => V::Pass,
                Ok(Verdict::Reject(m)) => refuse(403, "plugin_rejected", m, false),
                Ok(Verdict::Failed(m)) => refuse(500, "plugin_failed", m, false),
                Err(e) => {
                    let (status, code, message) = e.answer();
                    refuse(status, code, message, true)
                }
            }
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"sidecar_pid": self.pid(), "sidecar_alive": self.alive()})
    }
}

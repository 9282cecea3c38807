//! A worker of a unit (`--workers N`, gateway/workers.py; docs/workers.md): the control
//! socket on which this worker answers for its own ledger shard, and the client that asks
//! the other workers for theirs, so any worker can serve `/audit/root` with every shard's
//! root and the combined root, and hand a proof request to the shard's owner. The protocol
//! is the Python workers' (`gateway.workers.Peers`): one JSON object per line each way,
//! `{"op": "root" | "inclusion" | "consistency", "n": N}` -> `{"ok": ...}` or `{"error": ...}`.
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub index: usize,
    pub count: usize,
    /// the unit's runtime directory: control sockets and the layout file (workers.json)
    pub dir: PathBuf,
    pub sharded: bool,
}

impl Unit {
    pub fn socket(&self, k: usize) -> PathBuf {
        self.dir.join(format!("worker-{k}.sock"))
    }

    pub fn layout_file(&self) -> PathBuf {
        self.dir.join("workers.json")
    }

    /// Bind this worker's control socket (a stale file from a dead worker is replaced).
    pub fn bind(&self) -> Result<UnixListener, String> {
        let path = self.socket(self.index);
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))
    }

    /// Worker k's answer to `req` over its control socket.
    pub async fn ask(&self, k: usize, req: &Value) -> Value {
        let path = self.socket(k);
        let talk = async {
            let mut s = UnixStream::connect(&path).await?;
            let mut line = serde_json::to_vec(req).expect("a request serialises");
            line.push(b'\n');
            s.write_all(&line).await?;
            let mut out = String::new();
            BufReader::new(s).read_line(&mut out).await?;
            Ok::<String, std::io::Error>(out)
        };
        let unavailable = |why: String| json!({"error": format!("worker {k} is not answering ({why})"), "unavailable": true});
        match tokio::time::timeout(Duration::from_secs(10), talk).await {
            Ok(Ok(l)) if !l.is_empty() => {
                serde_json::from_str(&l).unwrap_or_else(|e| unavailable(format!("bad answer: {e}")))
            }
            Ok(Ok(_)) => unavailable("closed the control connection".into()),
            Ok(Err(e)) => unavailable(e.to_string()),
            Err(_) => unavailable("timeout".into()),
        }
    }
}

/// Serve the control socket: every line in is answered by `answer` on one line out.
pub fn serve<F>(listener: UnixListener, answer: F)
where
    F: Fn(&Value) -> Value + Send + Sync + Clone + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let out = match serde_json::from_str::<Value>(&line) {
                        Ok(req) => answer(&req),
                        Err(e) => json!({"error": format!("bad request: {e}")}),
                    };
                    let mut bytes = serde_json::to_vec(&out).expect("an answer serialises");
                    bytes.push(b'\n');
                    if w.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

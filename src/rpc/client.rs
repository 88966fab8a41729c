//! A small async MessagePack-RPC client over the daemon's local socket.
//!
//! One background task reads frames and routes responses to the waiting call by msgid, so calls
//! may be issued concurrently on one connection and answered in any order. Notifications (stream
//! chunks, events) go to the receiver returned by [`Client::take_notifications`].

use crate::rpc::codec::{FrameError, FrameReader};
use crate::rpc::message::Message;
use crate::rpc::RpcError;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use rmpv::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is listening at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to the daemon failed")]
    Io(#[from] std::io::Error),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("bad frame from the daemon")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("unexpected result shape: {0}")]
    Decode(String),
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Value, RpcError>>>>>;

/// A notification from the daemon: `(method, params)`.
pub type Notification = (String, Vec<Value>);

pub struct Client {
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    pending: Pending,
    next_id: AtomicU32,
    notifications: Mutex<Option<mpsc::UnboundedReceiver<Notification>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect { path: path.to_path_buf(), source };
        let name = path.to_fs_name::<GenericFilePath>().map_err(connect_err)?;
        let stream = Stream::connect(name).await.map_err(connect_err)?;
        let (rd, wr) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let (ntx, nrx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(FrameReader::new(rd), pending.clone(), ntx));
        Ok(Client {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU32::new(1),
            notifications: Mutex::new(Some(nrx)),
            reader,
        })
    }

    /// The stream of notifications the daemon sends on this connection (once; later calls get `None`).
    pub fn take_notifications(&self) -> Option<mpsc::UnboundedReceiver<Notification>> {
        self.notifications.lock().ok()?.take()
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        let (id, rx) = self.start(method, params).await?;
        Self::finish(id, rx).await
    }

    /// Sends a request and returns its msgid and a receiver for the response, so the caller can
    /// read notifications (e.g. stream chunks) or cancel while it runs.
    pub async fn start(
        &self,
        method: &str,
        params: Vec<Value>,
    ) -> Result<(u32, oneshot::Receiver<Result<Value, RpcError>>), ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let bytes = Message::Request { id, method: method.to_string(), params }.encode();
        if let Err(e) = self.send_raw(&bytes).await {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Waits for the response of a request begun with [`Client::start`].
    pub async fn finish(_id: u32, rx: oneshot::Receiver<Result<Value, RpcError>>) -> Result<Value, ClientError> {
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClientError::Rpc(e)),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Sends a notification (e.g. `$/cancel`).
    pub async fn notify(&self, method: &str, params: Vec<Value>) -> Result<(), ClientError> {
        let bytes = Message::Notification { method: method.to_string(), params }.encode();
        self.send_raw(&bytes).await
    }

    /// Cancels a running request (`$/cancel [msgid]`).
    pub async fn cancel(&self, id: u32) -> Result<(), ClientError> {
        self.notify("$/cancel", vec![Value::from(id)]).await
    }

    /// Writes raw bytes to the socket (tests use this to send malformed input).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        w.flush().await?;
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut frames: FrameReader<tokio::io::ReadHalf<Stream>>,
    pending: Pending,
    notifications: mpsc::UnboundedSender<Notification>,
) {
    while let Ok(Some(frame)) = frames.next_frame().await {
        match Message::decode(&frame) {
            Ok(Message::Response { id, result }) => {
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(tx) = waiter {
                    let _ = tx.send(result);
                }
            }
            Ok(Message::Notification { method, params }) => {
                let _ = notifications.send((method, params));
            }
            Ok(Message::Request { .. }) | Err(_) => {
                tracing::debug!("ignoring unexpected message from the daemon");
            }
        }
    }
    // Dropping the senders wakes every waiting call with `Closed`.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// Helper for callers that only need one value out of a result map.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_map()?.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v)
}

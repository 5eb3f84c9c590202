//! A shard's queue and its doorbell.
//!
//! The queue is a bounded, lock-free crossbeam channel; the doorbell a [`tokio::sync::Notify`]
//! rung after every message, so the shard's loop, an async task on its own current-thread
//! runtime, sleeps in the same wait as the connections that runtime serves. A connection task on
//! the shard's thread that queues a command wakes the shard without a system call; a message from
//! another thread wakes it through the runtime's driver, once per wait, not once per message
//! (`notify_one` keeps a single permit while the shard is busy).

use std::sync::Arc;

use crossbeam_channel::{Receiver, SendError, Sender, TryRecvError, TrySendError};
use tokio::sync::Notify;

use super::shard::Message;

/// How often a control message waiting for room in a full queue tries again.
const QUEUE_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// The sending side, one per shard, shared by every producer.
#[derive(Clone)]
pub(crate) struct Mailbox {
    sender: Sender<Message>,
    bell: Arc<Notify>,
}

/// The shard's side: the queue, and the doorbell its helper threads (syncer, snapshot writer)
/// ring too.
pub(crate) struct Inbox {
    receiver: Receiver<Message>,
    pub(crate) bell: Arc<Notify>,
}

/// A queue of `capacity` messages.
pub(crate) fn mailbox(capacity: usize) -> (Mailbox, Inbox) {
    let (sender, receiver) = crossbeam_channel::bounded(capacity);
    let bell = Arc::new(Notify::new());
    (Mailbox { sender, bell: bell.clone() }, Inbox { receiver, bell })
}

impl Mailbox {
    /// Queues `message` unless the queue is full.
    pub(crate) fn try_send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        self.sender.try_send(message)?;
        self.bell.notify_one();
        Ok(())
    }

    /// Queues `message`, waiting while the queue is full without blocking the thread: a
    /// control message may come from a task on a shard's own thread (a bound connection's feed
    /// read), whose shard must go on draining its queue meanwhile.
    pub(crate) async fn send(&self, mut message: Message) -> Result<(), SendError<Message>> {
        loop {
            match self.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => message = back,
                Err(TrySendError::Disconnected(back)) => return Err(SendError(back)),
            }
            tokio::time::sleep(QUEUE_FULL_RETRY).await;
        }
    }

    /// Queues `message`, blocking this thread while the queue is full. Never from a shard's
    /// own thread, nor from an async task: the stop at shutdown only.
    pub(crate) fn send_blocking(&self, message: Message) -> Result<(), SendError<Message>> {
        self.sender.send(message)?;
        self.bell.notify_one();
        Ok(())
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.sender.len()
    }
}

impl Inbox {
    /// The next message if one is queued; `Err(Disconnected)` once every sender is gone.
    pub(crate) fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.receiver.try_recv()
    }

    /// The next message, waiting for it; `None` once every sender is gone and the queue is
    /// empty.
    pub(crate) async fn recv(&self) -> Option<Message> {
        loop {
            // Registered before the check: a message queued in between still wakes the wait
            // (and `notify_one` keeps a permit when nobody waits).
            let rung = self.bell.notified();
            match self.receiver.try_recv() {
                Ok(message) => return Some(message),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => rung.await,
            }
        }
    }
}

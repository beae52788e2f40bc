//! Wake-ups for the work table: `LISTEN` on a connection of its own, so a runner claims an
//! attempt as soon as it is queued and the serving node collects an outcome as soon as it is
//! stored, instead of at the next poll. Only a hint: a listener whose connection drops connects
//! again (waking its waiter once, since notifications sent meanwhile are lost), and the waiters
//! still look every `fallback` whatever they hear.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::client::CONNECT_TIMEOUT;

/// What a listener hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkChannel {
    /// An attempt was queued.
    Queued,
    /// An outcome was stored.
    Finished,
}

impl WorkChannel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkChannel::Queued => "paydvm_work_queued",
            WorkChannel::Finished => "paydvm_work_finished",
        }
    }
}

/// A listener; dropping it closes its connection.
pub struct Wakeups {
    heard: Arc<Notify>,
    task: AbortHandle,
}

impl Wakeups {
    /// Starts listening on `channel` (call it inside a tokio runtime).
    pub(crate) fn listen(config: tokio_postgres::Config, channel: WorkChannel) -> Wakeups {
        let heard = Arc::new(Notify::new());
        let task = tokio::spawn(keep_listening(config, channel, Arc::clone(&heard))).abort_handle();
        Wakeups { heard, task }
    }

    /// Resolves when something was heard since the last call, or after `fallback`.
    pub async fn next(&self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.heard.notified()).await;
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_listening(config: tokio_postgres::Config, channel: WorkChannel, heard: Arc<Notify>) {
    loop {
        // Whatever happened while not listening is unknown: look once.
        let _ = listen_once(&config, channel, &heard).await;
        heard.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One connection: `LISTEN`, then every notification wakes the waiter, until the connection
/// ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: WorkChannel,
    heard: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await;
    let Ok(connected) = connect else {
        return Ok(());
    };
    let (client, mut connection) = connected?;
    let drive = async {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(_) = message? {
                heard.notify_one();
            }
        }
        Ok(())
    };
    let listen = async {
        client
            .batch_execute(&format!("LISTEN {}", channel.name()))
            .await?;
        heard.notify_one();
        std::future::pending::<Result<(), tokio_postgres::Error>>().await
    };
    tokio::select! {
        ended = drive => ended,
        failed = listen => failed,
    }
}

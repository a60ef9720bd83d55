//! Batched acks against the real daemon: an app that has handled messages
//! but dies before its batch of acks is sent gets exactly that unacked part
//! again, and nothing it did ack.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use syspush::testkit::Stack;
use syspush_client::{Client, Event, Listener};

const BOUND: Duration = Duration::from_secs(20);

async fn next_id(l: &mut Listener) -> Result<String> {
    match tokio::time::timeout(BOUND, l.next())
        .await
        .context("no delivery in time")??
    {
        Event::Notification(d) => Ok(d.notification.context("empty delivery")?.message_id),
        other => bail!("wanted a notification, got {other:?}"),
    }
}

async fn pending(socket: &std::path::Path, app: &str) -> Result<u64> {
    let status = Client::connect(socket).await?.status().await?;
    Ok(status
        .apps
        .iter()
        .find(|a| a.app_id == app)
        .map_or(0, |a| a.pending))
}

#[test]
fn an_app_killed_before_its_ack_batch_gets_exactly_the_unacked_part_again() -> Result<()> {
    let s = Stack::new("chat", &[])?;
    let token = s.daemon.register("chat")?;
    let sent: Vec<String> = (0..10)
        .map(|i| s.push(&token, &format!("m{i}")))
        .collect::<Result<_>>()?;
    let socket = s.daemon.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // First life: handles all ten, acks the first four (sent and
        // answered), handles three more and dies before that batch goes out.
        let mut l = Listener::connect(&socket, "chat").await?;
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(next_id(&mut l).await?);
        }
        assert_eq!(got, sent, "all ten, in order");
        for id in &got[..4] {
            l.handled(id.clone());
        }
        assert_eq!(l.flush_acks().await?, 4, "four removed by one batch");
        for id in &got[4..7] {
            l.handled(id.clone());
        }
        drop(l); // killed: the second batch was never sent

        assert_eq!(pending(&socket, "chat").await?, 6);
        // Second life: exactly the six that were not acked, in order.
        let mut l = Listener::connect(&socket, "chat").await?;
        let mut again = Vec::new();
        for _ in 0..6 {
            again.push(next_id(&mut l).await?);
        }
        assert_eq!(again, sent[4..], "the unacked part, nothing acked");
        for id in &again {
            l.handled(id.clone());
        }
        assert_eq!(l.flush_acks().await?, 6);
        assert_eq!(pending(&socket, "chat").await?, 0);
        // Nothing else comes: a push after the acks is the next delivery.
        let last = s.push(&token, "last")?;
        assert_eq!(next_id(&mut l).await?, last);
        Ok(())
    })
}

//! The chunks one streamed read-ahead fetch fills ([`crate::StreamRequest`]): a Range
//! request for a run of chunks, handed to the fetch one by one as the client's read-ahead
//! claims them. The fetch reads the answer only while it holds a chunk to fill, so it runs
//! no further ahead of its client than the read-ahead does (the origin waits meanwhile, as
//! TCP lets it), and a run of chunks comes in one origin round trip rather than one per
//! chunk. A fetch that waits past its pause for the next chunk ends (`paused_out`): its
//! client is slower than streaming pays for, and its later chunks are fetched one by one.
//!
//! An origin that ignores Range answers with the whole object, read from its start up to the
//! run's first chunk: the fetch then makes the feed *whole* ([`Feed::whole`]). Another
//! answer would cost the origin the object's start again, so a whole feed runs to the
//! object's end and takes chunks with gaps between them (the chunks held or on their way
//! elsewhere, whose bytes the fetch reads past); its fetch, holding one of the origin's
//! whole slots (`crate::Origin::whole_slot`), waits for each chunk pause after pause while
//! no other fetch waits for a slot of the origin, up to its idle timeout, rather than
//! pausing out after one.
//!
//! Two sides: the client's response holds the [`Feeder`] (dropped with the response, which
//! closes the feed), the fetch the [`Feed`].

use relay_cache::fill::FillWriter;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The fetch's side: the fills handed to it, in chunk order.
pub struct Feed {
    state: Mutex<State>,
    more: tokio::sync::Notify,
}

struct State {
    queue: VecDeque<FillWriter>,
    /// The chunk the next fill handed on must be.
    next: u64,
    /// The last chunk the fetch asked for.
    last: u64,
    /// The response hands on no more (it ended, or skipped a chunk).
    closed: bool,
    /// The fetch takes no more (it ended, or failed and gave its fills to other fetches).
    ended: bool,
    /// It ended because no fill came within its pause.
    paused_out: bool,
    /// The answer is the whole object ([`Feed::whole`]).
    whole: bool,
}

impl State {
    fn takes(&self, index: u64) -> bool {
        let next = match self.whole {
            true => self.next <= index,
            false => self.next == index,
        };
        !self.ended && !self.closed && next && index <= self.last
    }
}

impl Feed {
    /// A feed whose fetch fills chunk `first` (handed to it with its request), then the
    /// chunks after it up to `last` as they are pushed; the response's [`Feeder`] and the
    /// fetch's end.
    pub fn new(first: u64, last: u64) -> (Feeder, Arc<Feed>) {
        let feed = Arc::new(Feed {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next: first + 1,
                last,
                closed: false,
                ended: false,
                paused_out: false,
                whole: false,
            }),
            more: tokio::sync::Notify::new(),
        });
        (Feeder(feed.clone()), feed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer is the whole object from its start (the origin ignored Range): the feed
    /// runs to chunk `last`, the object's last, and takes chunks with gaps between them.
    pub fn whole(&self, last: u64) {
        let mut s = self.state();
        s.whole = true;
        s.last = s.last.max(last);
    }

    /// The answer holds the range asked for after all (the origin honours Range for this
    /// object now): the feed takes no more gaps, so the response ends it at a chunk held
    /// elsewhere rather than have the fetch read that chunk's bytes for nothing.
    pub fn ranged(&self) {
        self.state().whole = false;
    }

    /// The next fill, waiting up to `pause` for the response to hand one on, and another
    /// `pause` each time `wait_more` (asked at the end of one) says so; None when it will
    /// hand on no more or none came in time (the feed is ended then: a fill pushed after it
    /// goes back to its response, which fetches it another way).
    pub async fn take(&self, pause: Duration, wait_more: impl Fn() -> bool) -> Option<FillWriter> {
        let mut deadline = tokio::time::Instant::now() + pause;
        loop {
            {
                let mut s = self.state();
                if let Some(w) = s.queue.pop_front() {
                    return Some(w);
                }
                let mut late = tokio::time::Instant::now() >= deadline;
                if late && !s.closed && !s.ended && wait_more() {
                    deadline = tokio::time::Instant::now() + pause;
                    late = false;
                }
                if s.closed || s.ended || late {
                    s.paused_out |= late && !s.closed && !s.ended;
                    s.ended = true;
                    return None;
                }
            }
            // (A push between the look above and this wait leaves a permit: no wake-up is
            // lost.)
            let _ = tokio::time::timeout_at(deadline, self.more.notified()).await;
        }
    }

    /// Ends the feed from the fetch's side: the fills handed on and not yet taken, which
    /// the caller fetches another way (or fails).
    pub fn end(&self) -> Vec<FillWriter> {
        let mut s = self.state();
        s.ended = true;
        s.queue.drain(..).collect()
    }
}

/// The response's side of a [`Feed`]; dropping it closes the feed (the fetch fills what it
/// was handed, then ends).
pub struct Feeder(Arc<Feed>);

impl Feeder {
    /// Hands the fill of the next chunk to the fetch; gives it back when the fetch takes no
    /// more or the fill is not of the chunk it expects (the caller fetches it another way).
    pub fn push(&self, writer: FillWriter) -> Result<(), FillWriter> {
        let mut s = self.0.state();
        let index = writer.fill().key.index;
        if !s.takes(index) {
            return Err(writer);
        }
        s.next = index + 1;
        s.queue.push_back(writer);
        drop(s);
        self.0.more.notify_one();
        Ok(())
    }

    /// Whether the fetch ended waiting for a fill: the client reads slower than streaming
    /// pays for.
    pub fn paused_out(&self) -> bool {
        self.0.state().paused_out
    }

    /// The fetch's answer is the whole object ([`Feed::whole`]): the response keeps the feed
    /// across chunks held elsewhere rather than ending it, since a new fetch would cost the
    /// origin the object's start again.
    pub fn whole(&self) -> bool {
        self.0.state().whole
    }

    /// Whether the fetch would take chunk `index` next.
    #[cfg(test)]
    fn takes(&self, index: u64) -> bool {
        self.0.state().takes(index)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.more.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::Feed;
    use relay_cache::ChunkKey;
    use relay_cache::fill::{Fill, FillWriter};
    use std::time::Duration;

    fn writer(index: u64) -> FillWriter {
        let key = ChunkKey {
            object: std::sync::Arc::from("http://h/o"),
            version: 1,
            index,
        };
        Fill::new(key, 10).1
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fills_go_in_chunk_order_and_a_closed_feed_ends() {
        let (feeder, feed) = Feed::new(3, 6);
        assert!(feeder.takes(4));
        assert!(feeder.push(writer(5)).is_err(), "not the next chunk");
        assert!(feeder.push(writer(4)).is_ok());
        assert!(feeder.push(writer(5)).is_ok());
        let idle = Duration::from_secs(1);
        assert_eq!(feed.take(idle, || false).await.unwrap().fill().key.index, 4);
        assert_eq!(feed.take(idle, || false).await.unwrap().fill().key.index, 5);
        // Nothing yet: a push while the fetch waits wakes it.
        let wait = tokio::spawn({
            let feed = feed.clone();
            async move { feed.take(idle, || false).await.map(|w| w.fill().key.index) }
        });
        tokio::task::yield_now().await;
        assert!(feeder.push(writer(6)).is_ok());
        assert_eq!(wait.await.unwrap(), Some(6));
        assert!(!feeder.takes(7), "past the last chunk asked for");
        drop(feeder);
        assert!(feed.take(idle, || false).await.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_feed_the_fetch_ended_gives_fills_back() {
        let (feeder, feed) = Feed::new(0, 9);
        assert!(feeder.push(writer(1)).is_ok());
        // The fetch ends (it broke off): what it was handed goes back, and so does a
        // later fill.
        assert_eq!(feed.end().len(), 1);
        assert!(!feeder.takes(2));
        assert!(feeder.push(writer(2)).is_err());
        assert!(!feeder.paused_out());
        // No fill within the pause: the feed ends, paused out.
        let (feeder, feed) = Feed::new(0, 9);
        assert!(
            feed.take(Duration::from_millis(50), || false)
                .await
                .is_none()
        );
        assert!(feeder.paused_out());
        assert!(feeder.push(writer(1)).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_whole_feed_takes_gaps_and_runs_to_the_end_and_a_take_waits_while_told() {
        let (feeder, feed) = Feed::new(2, 4);
        assert!(!feeder.whole());
        assert!(
            feeder.push(writer(4)).is_err(),
            "a gap, before the answer is whole"
        );
        feed.whole(9);
        assert!(feeder.whole());
        assert!(feeder.push(writer(5)).is_ok(), "a gap");
        assert!(feeder.push(writer(5)).is_err(), "behind the last");
        assert!(
            feeder.push(writer(9)).is_ok(),
            "past the run, to the object's end"
        );
        assert!(!feeder.takes(10));
        let pause = Duration::from_millis(20);
        assert_eq!(
            feed.take(pause, || false).await.unwrap().fill().key.index,
            5
        );
        assert_eq!(feed.take(pause, || true).await.unwrap().fill().key.index, 9);
        // Far past its pause, still waiting while told to; its response's end ends it.
        let told = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        // A take that waits on while `told` says so; true when it ended without a fill.
        let wait_told = |feed: &std::sync::Arc<Feed>| {
            let (feed, told) = (feed.clone(), told.clone());
            tokio::spawn(async move {
                feed.take(pause, || told.load(std::sync::atomic::Ordering::Relaxed))
                    .await
                    .is_none()
            })
        };
        let wait = wait_told(&feed);
        tokio::time::sleep(pause * 5).await;
        assert!(!wait.is_finished());
        drop(feeder);
        assert!(wait.await.unwrap());
        // Told to wait no more: it pauses out.
        let (feeder, feed) = Feed::new(0, 9);
        feed.whole(9);
        let wait = wait_told(&feed);
        tokio::time::sleep(pause * 3).await;
        assert!(!wait.is_finished());
        told.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(wait.await.unwrap());
        assert!(feeder.paused_out());
    }
}

//! `futures_timer::Delay` on tokio's timer.
//!
//! libp2p arms a futures-timer `Delay` for every request (request-response's stream
//! timeout, the swarm's idle-connection timer, ...). futures-timer keeps its timers on a
//! thread of its own and wakes that thread for each new one: two context switches per
//! request on the node's hot path. In this workspace every such `Delay` runs inside a
//! tokio runtime with its timer enabled, so this crate, patched in for futures-timer 3.0
//! by the root `Cargo.toml`, gives libp2p the same `Delay` API on tokio's timer wheel,
//! which a worker thread drives as it polls.
//!
//! A `Delay` already due when first polled completes without touching the timer; one
//! polled outside a tokio runtime falls back to a thread that sleeps until the deadline
//! (correct, slower, and never taken by the node).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A future that completes at a point in time.
pub struct Delay {
    deadline: Instant,
    timer: Timer,
}

enum Timer {
    /// Not polled yet, or due at the first poll.
    Idle,
    /// On the runtime's timer.
    Tokio(Pin<Box<Sleep>>),
    /// Outside a runtime: a thread sleeps until the deadline and wakes the task.
    Thread(std::sync::Arc<std::sync::Mutex<Fallback>>),
}

#[derive(Default)]
struct Fallback {
    waker: Option<std::task::Waker>,
    fired: bool,
}

impl Delay {
    /// A delay that completes `dur` from now.
    pub fn new(dur: Duration) -> Delay {
        Delay {
            deadline: deadline_after(dur),
            timer: Timer::Idle,
        }
    }

    /// Sets the delay to complete `dur` from now, whether or not it has completed.
    pub fn reset(&mut self, dur: Duration) {
        self.deadline = deadline_after(dur);
        match &mut self.timer {
            Timer::Tokio(sleep) => sleep.as_mut().reset(self.deadline),
            Timer::Idle => {}
            Timer::Thread(_) => self.timer = Timer::Idle,
        }
    }
}

/// `now + dur`, saturating far in the future (a `Duration::MAX` timeout never fires).
fn deadline_after(dur: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(dur)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Future for Delay {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            match &mut this.timer {
                Timer::Tokio(sleep) => return sleep.as_mut().poll(cx),
                Timer::Thread(shared) => {
                    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if state.fired {
                        return Poll::Ready(());
                    }
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Timer::Idle => {
                    if Instant::now() >= this.deadline {
                        return Poll::Ready(());
                    }
                    this.timer = if tokio::runtime::Handle::try_current().is_ok() {
                        Timer::Tokio(Box::pin(tokio::time::sleep_until(this.deadline)))
                    } else {
                        Timer::Thread(sleep_on_thread(this.deadline))
                    };
                }
            }
        }
    }
}

/// A thread that wakes the task at `deadline`.
fn sleep_on_thread(deadline: Instant) -> std::sync::Arc<std::sync::Mutex<Fallback>> {
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Fallback::default()));
    let theirs = shared.clone();
    let deadline = deadline.into_std();
    let spawned = std::thread::Builder::new()
        .name("delay".into())
        .spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
            let mut state = theirs.lock().unwrap_or_else(|e| e.into_inner());
            state.fired = true;
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        });
    if spawned.is_err() {
        // No thread to wait on: complete at once rather than never.
        shared.lock().unwrap_or_else(|e| e.into_inner()).fired = true;
    }
    shared
}

impl fmt::Debug for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delay")
            .field("deadline", &self.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_delay_completes_at_its_deadline_and_not_before() {
        let start = Instant::now();
        Delay::new(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_moves_the_deadline_even_after_it_fired() {
        let start = Instant::now();
        let mut delay = Delay::new(Duration::from_secs(1));
        (&mut delay).await;
        delay.reset(Duration::from_secs(3));
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        // Reset while pending: the later deadline holds.
        let mut delay = Delay::new(Duration::from_secs(1));
        let pending = futures_poll_once(&mut delay);
        assert!(pending.is_pending());
        delay.reset(Duration::from_secs(10));
        (&mut delay).await;
        assert_eq!(start.elapsed(), Duration::from_secs(14));
    }

    #[test]
    fn outside_a_runtime_a_thread_wakes_the_task() {
        let start = std::time::Instant::now();
        let delay = Delay::new(Duration::from_millis(20));
        block_on(delay);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    fn futures_poll_once(delay: &mut Delay) -> Poll<()> {
        let waker = std::task::Waker::noop();
        Pin::new(delay).poll(&mut Context::from_waker(waker))
    }

    /// A minimal executor: parks the thread until woken.
    fn block_on(mut delay: Delay) {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Pin::new(&mut delay).poll(&mut cx).is_pending() {
            assert!(std::time::Instant::now() < deadline, "never woken");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

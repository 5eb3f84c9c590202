//! A std-only `block_on`: polls the future on the calling thread and parks the thread while it
//! waits; the waker unparks it.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives `future` to completion on this thread. Enough for futures woken from other threads
/// (channel receivers, tokio's `oneshot` and `Notify` included: they work with any waker); one
/// that needs a reactor or a timer (tokio's `net`, `time` or `spawn`) never completes here.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            // A wake before the park leaves its token, so the park returns at once; a spurious
            // return only costs one more poll.
            Poll::Pending => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Resolves to the value another thread hands over, after it wakes the waiting task.
    #[derive(Default)]
    struct Slot {
        value: Mutex<(Option<u64>, Option<Waker>)>,
    }

    struct Wait(Arc<Slot>);

    impl Future for Wait {
        type Output = u64;
        fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<u64> {
            let mut slot = self.0.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match slot.0.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    slot.1 = Some(context.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[test]
    fn a_ready_future_returns_its_output() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    #[test]
    fn a_future_woken_from_another_thread_completes() {
        let slot = Arc::new(Slot::default());
        let sender = slot.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let mut value = sender.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            value.0 = Some(42);
            if let Some(waker) = value.1.take() {
                waker.wake();
            }
        });
        assert_eq!(block_on(Wait(slot)), 42);
        assert!(thread.join().is_ok());
    }
}

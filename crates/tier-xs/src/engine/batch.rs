//! Lookups that arrive together are made as one call.
//!
//! A plan observes every resource at once, and some services answer many names in one read
//! (CloudWatch's DescribeAlarms takes up to 100 alarm names) while allowing only a few calls a
//! second. A [`Batch`] collects the names asked for while its first caller yields once (every
//! observation the plan started in the same pass asks before it runs again), makes one lookup
//! for all of them, and hands each caller the whole answer. Every caller still gets a read made
//! after it asked, so nothing is served from an older read: a batch is closed as soon as its
//! lookup starts, and a later caller starts the next one.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Answer<T> = Result<Arc<T>, String>;

struct Open<T> {
    /// The names asked for so far; `None` once the lookup has taken them.
    names: Arc<Mutex<Option<Vec<String>>>>,
    answer: Shared<BoxFuture<'static, Answer<T>>>,
}

/// Coalesces lookups by name into one call per pass. Shared through `Arc` by every caller of
/// one command (see `AwsClients::client`).
pub struct Batch<T> {
    open: Mutex<Option<Open<T>>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            open: Mutex::new(None),
        }
    }
}

impl<T: Send + Sync + 'static> Batch<T> {
    /// The answer of the lookup that includes `name`. `lookup` is called with every name of
    /// the batch when this caller starts one (and dropped when it joins an open one); its
    /// error is every caller's, as text.
    pub async fn get<F, Fut>(&self, name: &str, lookup: F) -> Answer<T>
    where
        F: FnOnce(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let (answer, go) = {
            let mut open = match self.open.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let joined = open.as_ref().and_then(|o| {
                let mut names = match o.names.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let names = names.as_mut()?;
                names.push(name.to_string());
                Some(o.answer.clone())
            });
            match joined {
                Some(answer) => (answer, None),
                None => {
                    let names = Arc::new(Mutex::new(Some(vec![name.to_string()])));
                    let taken = names.clone();
                    // Any caller may drive a shared future: the lookup waits for its starter's
                    // word (or its going away), not for whoever polls it next.
                    let (go, started) = tokio::sync::oneshot::channel::<()>();
                    let answer = async move {
                        let _ = started.await;
                        let names = match taken.lock() {
                            Ok(mut g) => g.take(),
                            Err(poisoned) => poisoned.into_inner().take(),
                        }
                        .unwrap_or_default();
                        lookup(names).await.map(Arc::new)
                    }
                    .boxed()
                    .shared();
                    *open = Some(Open {
                        names,
                        answer: answer.clone(),
                    });
                    (answer, Some(go))
                }
            }
        };
        if let Some(go) = go {
            // Every lookup started in this pass joins before the batch closes: tokio wakes a
            // yielding task only after the task has polled everything else it holds.
            tokio::task::yield_now().await;
            let _ = go.send(());
        }
        answer.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn lookup(
        calls: &Arc<AtomicUsize>,
        seen: &Arc<Mutex<Vec<Vec<String>>>>,
    ) -> impl FnOnce(Vec<String>) -> BoxFuture<'static, Result<Vec<String>, String>> + Send + 'static
    {
        let (calls, seen) = (calls.clone(), seen.clone());
        move |names: Vec<String>| {
            async move {
                calls.fetch_add(1, SeqCst);
                seen.lock().unwrap().push(names.clone());
                if names.iter().any(|n| n == "broken") {
                    return Err("AccessDenied: no".to_string());
                }
                Ok(names)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn lookups_started_together_are_one_call_and_each_caller_gets_the_whole_answer() {
        let batch = Batch::<Vec<String>>::default();
        let (calls, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let names = ["a", "b", "c"];
        let answers =
            futures::future::join_all(names.iter().map(|n| batch.get(n, lookup(&calls, &seen))))
                .await;
        assert_eq!(calls.load(SeqCst), 1);
        for a in answers {
            assert_eq!(*a.unwrap(), vec!["a", "b", "c"]);
        }
    }

    #[tokio::test]
    async fn a_lookup_asked_after_a_batch_started_is_a_new_read() {
        let batch = Batch::<Vec<String>>::default();
        let (calls, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        assert_eq!(*batch.get("a", lookup(&calls, &seen)).await.unwrap(), ["a"]);
        assert_eq!(*batch.get("b", lookup(&calls, &seen)).await.unwrap(), ["b"]);
        assert_eq!(calls.load(SeqCst), 2);
        assert_eq!(*seen.lock().unwrap(), [vec!["a"], vec!["b"]]);
    }

    #[tokio::test]
    async fn a_failed_lookup_is_every_callers_error() {
        let batch = Batch::<Vec<String>>::default();
        let (calls, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let (a, b) = tokio::join!(
            batch.get("broken", lookup(&calls, &seen)),
            batch.get("b", lookup(&calls, &seen))
        );
        assert_eq!(a.unwrap_err(), "AccessDenied: no");
        assert_eq!(b.unwrap_err(), "AccessDenied: no");
        assert_eq!(calls.load(SeqCst), 1);
    }
}

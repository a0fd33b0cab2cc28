//! The objects whose origin answered a Range request with the whole body (200): each later
//! answer for them costs the origin the object's start again, so a client's read-ahead
//! fetches them differently ([`crate::feed::Feed::whole`]): one streamed fetch that runs on
//! to the object's end at its client's pace, past the chunks held elsewhere, and takes the
//! chunks the client misses on the way; the chunks ahead of the client found in memory are
//! held for it (as the fills claimed ahead of it are), so the tier letting one go before the
//! client gets there costs no answer from the start. An answer of the range asked for (a
//! 206) forgets the object again.
//!
//! Per object, not per origin: an origin may serve files with Range and a dynamic path
//! without. Bounded: past [`MOST`] objects the set starts afresh (an object forgotten is
//! learnt again at its next whole answer). The same kind of set keeps an origin's objects
//! whose last answer had no strong validator (`Origin::unvalidated`), and those whose
//! ranges are capped too short to fill a chunk (`Origin::capped`), asked for whole.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How many objects an origin's set holds before it starts afresh.
pub const MOST: usize = 4096;

/// A bounded set of an origin's objects, cheap to look in while empty: those that answered
/// a Range request with the whole body, or (`Origin::unvalidated`) whose last answer had
/// no strong validator.
#[derive(Default)]
pub struct ObjectSet {
    /// Any object is in the set: the look on the hit path is one atomic load while none is.
    any: AtomicBool,
    objects: Mutex<HashSet<Arc<str>>>,
}

impl ObjectSet {
    /// `object` joins the set (the origin answered a Range request for it with the whole
    /// body, say).
    pub fn note(&self, object: &Arc<str>) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if objects.len() >= MOST && !objects.contains(object) {
            objects.clear();
        }
        objects.insert(object.clone());
        self.any.store(true, Ordering::Release);
    }

    /// `object` leaves the set (the origin answered a Range request for it with the range,
    /// say).
    pub fn forget(&self, object: &str) {
        if self.any.load(Ordering::Acquire) {
            let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            objects.remove(object);
        }
    }

    /// Whether `object` is in the set.
    pub fn contains(&self, object: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .objects
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(object)
    }
}

#[cfg(test)]
mod tests {
    use super::{MOST, ObjectSet};
    use std::sync::Arc;

    #[test]
    fn objects_are_remembered_within_a_bound() {
        let set = ObjectSet::default();
        assert!(!set.contains("http://h/a"));
        set.note(&Arc::from("http://h/a"));
        assert!(set.contains("http://h/a") && !set.contains("http://h/b"));
        set.forget("http://h/a");
        assert!(!set.contains("http://h/a"));
        set.note(&Arc::from("http://h/a"));
        for i in 0..MOST {
            set.note(&Arc::from(format!("http://h/{i}").as_str()));
        }
        // Started afresh once full: the oldest are forgotten, the latest kept.
        assert!(!set.contains("http://h/a"));
        assert!(set.contains(&format!("http://h/{}", MOST - 1)));
        assert!(set.objects.lock().unwrap().len() <= MOST);
    }
}

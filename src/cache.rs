//! A bounded map for answers computed once per key and fixed for the life of
//! the process (a certificate's agency, a grant decision): the request path
//! looks them up instead of recomputing them. When full it starts over, which
//! keeps memory bounded whatever callers send, at the price of recomputing.

use std::{borrow::Borrow, collections::HashMap, hash::Hash, sync::Mutex};

#[derive(Debug)]
pub struct BoundedCache<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().ok().and_then(|m| m.get(key).cloned())
    }

    pub fn insert(&self, key: K, value: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_starts_over() {
        let c = BoundedCache::new(2);
        c.insert("a".to_owned(), 1);
        c.insert("b".to_owned(), 2);
        assert_eq!(c.get("a"), Some(1));
        c.insert("c".to_owned(), 3);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("c"), Some(3));
    }
}

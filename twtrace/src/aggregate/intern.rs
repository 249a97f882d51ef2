//! Values stored once and named by number, each held by the live sockets that use it and
//! freed with the last: the model's names (addresses, owners) and origins. A host running a
//! short-lived client per request sees a new owner per request, millions a day; a table that
//! only grew would grow for ever.

use foldhash::HashMap;
use std::hash::Hash;

pub(super) struct Interner<T> {
    ids: HashMap<T, u32>,
    items: Vec<T>,
    /// Holders of each (a freed number has none).
    refs: Vec<u32>,
    /// Numbers of freed values, for reuse.
    free: Vec<u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { ids: HashMap::default(), items: Vec::new(), refs: Vec::new(), free: Vec::new() }
    }
}

impl<T: Hash + Eq + Clone + Default> Interner<T> {
    /// The value's number, stored if new (freed again unless [`Self::hold`] follows).
    pub fn id(&mut self, item: T) -> u32 {
        if let Some(&id) = self.ids.get(&item) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.items[id as usize] = item.clone();
                id
            }
            None => {
                self.items.push(item.clone());
                self.refs.push(0);
                (self.items.len() - 1) as u32
            }
        };
        self.ids.insert(item, id);
        id
    }

    /// The number of a value stored now, if it is.
    pub fn find(&self, item: &T) -> Option<u32> {
        self.ids.get(item).copied()
    }

    pub fn get(&self, id: u32) -> &T {
        &self.items[id as usize]
    }

    /// One more holder; whether it is the first.
    pub fn hold(&mut self, id: u32) -> bool {
        self.refs[id as usize] += 1;
        self.refs[id as usize] == 1
    }

    /// One holder fewer; the value, when that was the last (its number is free then).
    pub fn release(&mut self, id: u32) -> Option<T> {
        let refs = &mut self.refs[id as usize];
        *refs = refs.saturating_sub(1);
        if *refs > 0 {
            return None;
        }
        let item = std::mem::take(&mut self.items[id as usize]);
        self.ids.remove(&item);
        self.free.push(id);
        Some(item)
    }

    /// Values stored now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn a_value_lives_while_held_and_its_number_is_reused() {
        let mut t: Interner<String> = Interner::default();
        let a = t.id("a".into());
        assert_eq!(t.id("a".into()), a);
        assert!(t.hold(a));
        assert!(!t.hold(a));
        assert_eq!(t.release(a), None);
        assert_eq!(t.release(a).as_deref(), Some("a"));
        assert_eq!((t.len(), t.find(&"a".into())), (0, None));
        let b = t.id("b".into());
        assert_eq!(b, a, "the freed number is taken again");
        assert_eq!(t.get(b), "b");
    }
}

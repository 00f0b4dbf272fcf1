//! A slab whose handles carry a generation, so a handle to a freed entry
//! never reaches the entry that later takes its place.

/// Entries addressed by `(index, generation)`.
pub(super) struct Slab<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; returns its index and generation.
    pub(super) fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        match self.free.pop() {
            Some(idx) => {
                let e = &mut self.entries[idx as usize];
                e.0 = e.0.wrapping_add(1);
                e.1 = Some(value);
                (idx, e.0)
            }
            None => {
                self.entries.push((0, Some(value)));
                ((self.entries.len() - 1) as u32, 0)
            }
        }
    }

    /// The live entry at `idx` of generation `gen`.
    pub(super) fn get(&self, idx: u32, gen: u32) -> Option<&T> {
        match self.entries.get(idx as usize) {
            Some((g, Some(v))) if *g == gen => Some(v),
            _ => None,
        }
    }

    /// The live entry at `idx` of generation `gen`, to change.
    pub(super) fn get_mut(&mut self, idx: u32, gen: u32) -> Option<&mut T> {
        match self.entries.get_mut(idx as usize) {
            Some((g, Some(v))) if *g == gen => Some(v),
            _ => None,
        }
    }

    /// Frees the entry; its index is given out again later, with the next
    /// generation.
    pub(super) fn remove(&mut self, idx: u32, gen: u32) -> Option<T> {
        let e = self.entries.get_mut(idx as usize)?;
        if e.0 != gen {
            return None;
        }
        let v = e.1.take()?;
        self.free.push(idx);
        self.len -= 1;
        Some(v)
    }

    /// How many entries are live.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The handles of every live entry.
    pub(super) fn handles(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, (g, _))| (i as u32, *g))
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn a_freed_handle_does_not_reach_the_next_entry() {
        let mut s = Slab::default();
        let (i, g) = s.insert("a");
        assert_eq!(s.remove(i, g), Some("a"));
        let (j, h) = s.insert("b");
        assert_eq!(i, j, "index reused");
        assert_ne!(g, h);
        assert!(s.get(i, g).is_none());
        assert_eq!(s.get(j, h), Some(&"b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove(i, g), None, "a stale handle frees nothing");
    }
}

//! Checking stored bodies against their checksums, and evicting the ones
//! that fail (the runbook's cache verify).

use super::*;

/// Counts of one `verify` pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub checked: u64,
    /// Entries whose checksum failed; all evicted.
    pub corrupt: u64,
}

impl Cache {
    /// Checks every entry's checksum and evicts the ones that fail.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        let map = self.map.pin();
        for (_, slot) in map.iter() {
            if let Slot::Object(e) = slot {
                report.checked += 1;
                if !e.verify() {
                    report.corrupt += 1;
                    self.remove_entry(e);
                }
            }
        }
        report
    }

    /// Test hook: replaces the entry under `key` with a copy whose body has
    /// one bit flipped but whose checksum is the original's, as memory
    /// corruption would leave it. Returns false when there is no entry.
    #[cfg(feature = "test-hooks")]
    pub fn corrupt_for_test(&self, key: &[u8]) -> bool {
        let map = self.map.pin();
        let Some(Slot::Object(e)) = map.get(key) else {
            return false;
        };
        let mut body = e.body.to_vec();
        if body.is_empty() {
            return false;
        }
        body[0] ^= 0x01;
        let mut bad = Entry::new(
            e.key.clone(),
            e.head.clone(),
            Bytes::from(body),
            e.meta.clone(),
            e.stored_at,
        );
        bad.crc = e.crc;
        bad.seq = e.seq;
        map.insert(e.key.clone(), Slot::Object(Arc::new(bad)));
        true
    }
}

//! Test doubles shared by hv-core's integration tests: a sparse
//! guest-physical memory made of 4 KiB pages, which records the
//! accessed/dirty updates the code under test applies.

#![allow(dead_code)]

use std::collections::BTreeMap;

use hv_core::paging::{AccessedDirtyUpdate, EntryWidth, GuestMemory, MemoryError, PageTableWrite};

pub const PAGE: u64 = 4096;

/// Guest RAM: only the pages that were written (or mapped) exist; reading
/// any other address fails with `MemoryError::Unmapped`.
#[derive(Default, Clone)]
pub struct SparseMemory {
    pages: BTreeMap<u64, Vec<u8>>,
    /// Every accessed/dirty update applied, in order.
    pub applied: Vec<AccessedDirtyUpdate>,
}

impl SparseMemory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn map(&mut self, gpa: u64) {
        self.pages
            .entry(gpa & !(PAGE - 1))
            .or_insert_with(|| vec![0; PAGE as usize]);
    }

    pub fn write_bytes(&mut self, gpa: u64, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let address = gpa + i as u64;
            self.map(address);
            let page = self.pages.get_mut(&(address & !(PAGE - 1))).unwrap();
            page[(address & (PAGE - 1)) as usize] = *byte;
        }
    }

    pub fn write_u32(&mut self, gpa: u64, value: u32) {
        self.write_bytes(gpa, &value.to_le_bytes());
    }

    pub fn write_u64(&mut self, gpa: u64, value: u64) {
        self.write_bytes(gpa, &value.to_le_bytes());
    }

    pub fn load(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        for (i, byte) in out.iter_mut().enumerate() {
            let address = gpa.checked_add(i as u64).ok_or(MemoryError::Unmapped)?;
            let page = self
                .pages
                .get(&(address & !(PAGE - 1)))
                .ok_or(MemoryError::Unmapped)?;
            *byte = page[(address & (PAGE - 1)) as usize];
        }
        Ok(())
    }

    pub fn peek_u64(&self, gpa: u64) -> u64 {
        let mut bytes = [0; 8];
        self.load(gpa, &mut bytes).unwrap();
        u64::from_le_bytes(bytes)
    }
}

impl GuestMemory for SparseMemory {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        let mut bytes = [0; 4];
        self.load(gpa, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        let mut bytes = [0; 8];
        self.load(gpa, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl PageTableWrite for SparseMemory {
    fn set_entry_bits(&mut self, update: &AccessedDirtyUpdate) -> Result<bool, MemoryError> {
        let current = match update.width {
            EntryWidth::Bits32 => u64::from(self.read_u32(update.entry_gpa)?),
            EntryWidth::Bits64 => self.read_u64(update.entry_gpa)?,
        };
        if current != update.old_value {
            return Ok(false);
        }
        let new = current | update.set_bits;
        match update.width {
            EntryWidth::Bits32 => self.write_u32(update.entry_gpa, new as u32),
            EntryWidth::Bits64 => self.write_u64(update.entry_gpa, new),
        }
        self.applied.push(*update);
        Ok(true)
    }
}

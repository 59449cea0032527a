//! Fuzzes hv-core's guest page-table walker with arbitrary paging
//! registers and page-table memory.  In every mode: no panic, and the
//! result is self-consistent (the page offset survives translation, the
//! #PF error code describes the access).  For 4-level paging the result
//! must also equal a plain per-level reference written from SDM vol. 3
//! §4.5/§4.6 (without protection keys).
//!
//! Input: a 64-byte header (registers, features, address, access), then
//! the guest memory, which repeats every `len` bytes below 2^40 (so random
//! pointers land in it) and is unmapped above.
#![no_main]

use hv_core::paging::*;

struct WrappingMemory<'a> {
    bytes: &'a [u8],
}

const UNMAPPED_FROM: u64 = 1 << 40;

impl WrappingMemory<'_> {
    fn read(&self, gpa: u64, size: usize) -> Result<u64, MemoryError> {
        if gpa >= UNMAPPED_FROM || self.bytes.is_empty() {
            return Err(MemoryError::Unmapped);
        }
        let mut value = 0u64;
        for i in 0..size {
            let offset = (gpa as usize + i) % self.bytes.len();
            value |= u64::from(self.bytes[offset]) << (8 * i);
        }
        Ok(value)
    }
}

impl GuestMemory for WrappingMemory<'_> {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemoryError> {
        self.read(gpa, 4).map(|value| value as u32)
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        self.read(gpa, 8)
    }
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(value)
}

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

/// 4-level paging written out level by level, independently of the
/// walker's mode tables.  `Err(Some(code))` is a #PF, `Err(None)` any other
/// failure.
fn reference_four_level(
    memory: &WrappingMemory,
    regs: &PagingRegisters,
    features: &PagingFeatures,
    linear: u64,
    access: Access,
) -> Result<(u64, u64), Option<u32>> {
    if ((linear as i64) << 16 >> 16) as u64 != linear {
        return Err(None);
    }
    let phys_bits = u32::from(features.max_phys_addr_bits.clamp(32, 52));
    let frame = ((1u64 << phys_bits) - 1) & !0xfff;
    let above_phys = ((1u64 << 52) - 1) & !((1u64 << phys_bits) - 1);
    let nxe = regs.efer & EFER_NXE != 0;
    let write = access.kind == AccessKind::Write;
    let fetch = access.kind == AccessKind::Fetch;
    let user = access.privilege == Privilege::User;
    let mut code = 0;
    if write {
        code |= PF_WRITE;
    }
    if user {
        code |= PF_USER;
    }
    if fetch && (nxe || regs.cr4 & CR4_SMEP != 0) {
        code |= PF_FETCH;
    }
    let mut table = regs.cr3 & frame;
    let (mut all_user, mut all_writable, mut any_nx) = (true, true, false);
    for (level, shift) in [(4u32, 39u32), (3, 30), (2, 21), (1, 12)] {
        let entry = memory
            .read(table + ((linear >> shift) & 511) * 8, 8)
            .map_err(|_| None)?;
        if entry & P == 0 {
            return Err(Some(code));
        }
        let large = entry & PS != 0;
        let mut reserved = above_phys | if nxe { 0 } else { XD };
        let leaf = match level {
            4 => {
                reserved |= PS;
                false
            }
            3 if large && features.gb_pages => {
                reserved |= 0x3fff_e000; // bits 29:13
                true
            }
            3 => {
                reserved |= PS;
                false
            }
            2 if large => {
                reserved |= 0x1f_e000; // bits 20:13
                true
            }
            2 => false,
            _ => true,
        };
        if entry & reserved != 0 {
            return Err(Some(code | PF_PRESENT | PF_RESERVED));
        }
        all_user &= entry & US != 0;
        all_writable &= entry & RW != 0;
        any_nx |= entry & XD != 0;
        if !leaf {
            table = entry & frame;
            continue;
        }
        // SDM §4.6, case by case.
        let wp = regs.cr0 & CR0_WP != 0;
        let smap_applies = regs.cr4 & CR4_SMAP != 0
            && access.privilege
                != Privilege::Supervisor {
                    alignment_check: true,
                };
        let denied = match (access.kind, user) {
            (AccessKind::Read, true) => !all_user,
            (AccessKind::Write, true) => !all_user || !all_writable,
            (AccessKind::Fetch, true) => !all_user || (nxe && any_nx),
            (AccessKind::Read, false) => all_user && smap_applies,
            (AccessKind::Write, false) => (all_user && smap_applies) || (wp && !all_writable),
            (AccessKind::Fetch, false) => (nxe && any_nx) || (all_user && regs.cr4 & CR4_SMEP != 0),
        };
        if denied {
            return Err(Some(code | PF_PRESENT));
        }
        let size = 1u64 << shift;
        return Ok(((entry & frame & !(size - 1)) | (linear & (size - 1)), size));
    }
    unreachable!()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (header, memory_bytes) = data.split_at(64);
    let flags = header[0];
    let cr0 =
        CR0_PE | if flags & 1 != 0 { CR0_PG } else { 0 } | if flags & 2 != 0 { CR0_WP } else { 0 };
    let cr4_bits = header[1];
    let cr4 = [CR4_PSE, CR4_PAE, CR4_LA57, CR4_SMEP, CR4_SMAP, CR4_PKE]
        .iter()
        .enumerate()
        .filter(|(bit, _)| cr4_bits & (1 << bit) != 0)
        .fold(0, |cr4, (_, flag)| cr4 | flag);
    let efer =
        if flags & 4 != 0 { EFER_LMA } else { 0 } | if flags & 8 != 0 { EFER_NXE } else { 0 };
    let regs = PagingRegisters {
        cr0,
        cr3: u64_at(header, 8),
        cr4,
        efer,
        pdptes: [
            u64_at(header, 16),
            u64_at(header, 24),
            u64_at(header, 32),
            u64_at(header, 40),
        ],
        pkru: u64_at(header, 48) as u32,
    };
    let features = PagingFeatures {
        max_phys_addr_bits: header[2],
        pse36: flags & 16 != 0,
        gb_pages: flags & 32 != 0,
    };
    let linear = u64_at(header, 56);
    let kind = match header[3] % 3 {
        0 => AccessKind::Read,
        1 => AccessKind::Write,
        _ => AccessKind::Fetch,
    };
    let privilege = match header[4] % 4 {
        0 => Privilege::User,
        1 => Privilege::ImplicitSupervisor,
        alignment => Privilege::Supervisor {
            alignment_check: alignment == 3,
        },
    };
    let access = Access { kind, privilege };
    let mut memory = WrappingMemory {
        bytes: memory_bytes,
    };
    let result = translate(&mut memory, &regs, &features, linear, access);

    match &result {
        Ok(translation) => {
            let offset_mask = translation.page_size.bytes() - 1;
            let checked_linear = match PagingMode::from_registers(&regs) {
                Ok(PagingMode::FourLevel | PagingMode::FiveLevel) => linear,
                _ => linear & 0xffff_ffff,
            };
            assert_eq!(translation.gpa & offset_mask, checked_linear & offset_mask);
            assert!(translation.gpa < 1 << 52);
            assert!(translation.accessed_dirty.as_slice().len() <= 5);
        }
        Err(WalkError::PageFault(fault)) => {
            let code = fault.error_code;
            assert_eq!(code & !0x3f, 0);
            assert_eq!(code & PF_WRITE != 0, kind == AccessKind::Write);
            assert_eq!(code & PF_USER != 0, privilege == Privilege::User);
            if code & (PF_RESERVED | PF_PROTECTION_KEY) != 0 {
                assert!(code & PF_PRESENT != 0);
            }
        }
        Err(_) => {}
    }

    if PagingMode::from_registers(&regs) == Ok(PagingMode::FourLevel) && regs.cr4 & CR4_PKE == 0 {
        let expected = reference_four_level(&memory, &regs, &features, linear, access);
        let actual = match result {
            Ok(translation) => Ok((translation.gpa, translation.page_size.bytes())),
            Err(WalkError::PageFault(fault)) => Err(Some(fault.error_code)),
            Err(_) => Err(None),
        };
        assert_eq!(
            actual, expected,
            "regs {regs:x?} features {features:?} linear {linear:#x} {access:?}"
        );
    }
});

//! The MSR permission map (AMD APM vol. 2 15.11 "MSR Intercepts").
//!
//! 8 KiB, physically contiguous, 4 KiB aligned; `msrpm_base_pa` points at
//! it when `INTERCEPT_MSR_PROT` is set.  Two bits per MSR, the lower for
//! RDMSR and the higher for WRMSR; a set bit intercepts.  Three ranges of
//! 8192 MSRs each are covered, 2 KiB apiece:
//!
//! | bytes          | MSRs                    |
//! |----------------|-------------------------|
//! | 0x0000-0x07ff  | 0000_0000 - 0000_1fff   |
//! | 0x0800-0x0fff  | c000_0000 - c000_1fff   |
//! | 0x1000-0x17ff  | c001_0000 - c001_1fff   |
//! | 0x1800-0x1fff  | reserved                |
//!
//! An MSR outside the ranges is always intercepted, whatever the map
//! says.  The builders work on caller-provided bytes so the kernel can
//! fill the pages it allocated; [`MsrPermissionMap`] is a page-aligned
//! owner for the host side and for `svm::SvmVcpu`.

/// Size of the map in bytes.
pub const MSRPM_SIZE: usize = 8192;
/// The first MSR of each range, in map order.
pub const MSRPM_RANGE_STARTS: [u32; 3] = [0x0000_0000, 0xc000_0000, 0xc001_0000];
/// MSRs per range.
pub const MSRS_PER_RANGE: u32 = 0x2000;
/// Bytes per range: two bits per MSR.
const RANGE_BYTES: usize = (MSRS_PER_RANGE / 4) as usize;

/// Why a permission-map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrpmError {
    /// The slice is not [`MSRPM_SIZE`] bytes long.
    WrongSize(usize),
    /// The MSR is in none of the three ranges.
    NotMappable(u32),
}

/// Where `msr`'s read bit lives: (byte index, bit within the byte).  The
/// write bit is the next bit of the same byte.
pub fn msrpm_position(msr: u32) -> Option<(usize, u8)> {
    MSRPM_RANGE_STARTS
        .iter()
        .enumerate()
        .find_map(|(range, &start)| {
            let offset = msr.checked_sub(start)?;
            (offset < MSRS_PER_RANGE).then(|| {
                let byte = range * RANGE_BYTES + (offset / 4) as usize;
                (byte, ((offset % 4) * 2) as u8)
            })
        })
}

fn check_size(map: &[u8]) -> Result<(), MsrpmError> {
    if map.len() == MSRPM_SIZE {
        Ok(())
    } else {
        Err(MsrpmError::WrongSize(map.len()))
    }
}

/// Sets every bit: every MSR access exits (the safe starting point; KVM
/// starts the same way and opens holes).
pub fn intercept_all_msrs(map: &mut [u8]) -> Result<(), MsrpmError> {
    check_size(map)?;
    map.fill(0xff);
    Ok(())
}

/// Sets whether reads and writes of `msr` exit.
pub fn set_msr_intercept(
    map: &mut [u8],
    msr: u32,
    intercept_read: bool,
    intercept_write: bool,
) -> Result<(), MsrpmError> {
    check_size(map)?;
    let (byte, shift) = msrpm_position(msr).ok_or(MsrpmError::NotMappable(msr))?;
    let bits = u8::from(intercept_read) | u8::from(intercept_write) << 1;
    let slot = map.get_mut(byte).ok_or(MsrpmError::WrongSize(MSRPM_SIZE))?;
    *slot = (*slot & !(0b11 << shift)) | bits << shift;
    Ok(())
}

/// Whether a read (`write == false`) or write of `msr` exits under `map`.
/// MSRs outside the ranges always exit; a map of the wrong size is
/// treated as intercepting everything.
pub fn msr_is_intercepted(map: &[u8], msr: u32, write: bool) -> bool {
    if check_size(map).is_err() {
        return true;
    }
    match msrpm_position(msr) {
        None => true,
        Some((byte, shift)) => {
            let bit = shift + u8::from(write);
            map.get(byte).map_or(true, |value| value & (1 << bit) != 0)
        }
    }
}

/// A page-aligned MSR permission map.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrPermissionMap(pub [u8; MSRPM_SIZE]);

impl MsrPermissionMap {
    /// A map that intercepts every MSR.
    pub const INTERCEPT_ALL: Self = Self([0xff; MSRPM_SIZE]);

    /// See [`set_msr_intercept`].
    pub fn set(&mut self, msr: u32, read: bool, write: bool) -> Result<(), MsrpmError> {
        set_msr_intercept(&mut self.0, msr, read, write)
    }

    /// See [`msr_is_intercepted`].
    pub fn is_intercepted(&self, msr: u32, write: bool) -> bool {
        msr_is_intercepted(&self.0, msr, write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_range_edges() {
        assert_eq!(msrpm_position(0), Some((0, 0)));
        assert_eq!(msrpm_position(3), Some((0, 6)));
        assert_eq!(msrpm_position(0x1fff), Some((0x7ff, 6)));
        assert_eq!(msrpm_position(0x2000), None);
        assert_eq!(msrpm_position(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_position(0xc000_1fff), Some((0xfff, 6)));
        assert_eq!(msrpm_position(0xc001_0000), Some((0x1000, 0)));
        assert_eq!(msrpm_position(0xc001_1fff), Some((0x17ff, 6)));
        assert_eq!(msrpm_position(0xc001_2000), None);
        assert_eq!(msrpm_position(0xbfff_ffff), None);
        assert_eq!(msrpm_position(u32::MAX), None);
    }

    #[test]
    fn open_and_close_one_msr() {
        let mut map = [0u8; MSRPM_SIZE];
        intercept_all_msrs(&mut map).unwrap();
        // LSTAR (c000_0082): pass reads and writes through.
        set_msr_intercept(&mut map, 0xc000_0082, false, false).unwrap();
        assert_eq!(map[0x800 + 0x20], 0b1100_1111);
        assert!(!msr_is_intercepted(&map, 0xc000_0082, false));
        assert!(!msr_is_intercepted(&map, 0xc000_0082, true));
        assert!(msr_is_intercepted(&map, 0xc000_0081, true));
        assert!(msr_is_intercepted(&map, 0xc000_0083, false));
        // EFER: reads pass, writes exit.
        set_msr_intercept(&mut map, 0xc000_0080, false, true).unwrap();
        assert!(!msr_is_intercepted(&map, 0xc000_0080, false));
        assert!(msr_is_intercepted(&map, 0xc000_0080, true));
    }

    #[test]
    fn errors() {
        let mut short = [0u8; 4096];
        assert_eq!(
            intercept_all_msrs(&mut short),
            Err(MsrpmError::WrongSize(4096))
        );
        assert_eq!(
            set_msr_intercept(&mut short, 0, false, false),
            Err(MsrpmError::WrongSize(4096))
        );
        assert!(msr_is_intercepted(&short, 0, false));
        let mut map = MsrPermissionMap([0; MSRPM_SIZE]);
        assert_eq!(
            map.set(0x4b56_4d00, false, false),
            Err(MsrpmError::NotMappable(0x4b56_4d00))
        );
        // Unmappable MSRs exit even with an all-zero map.
        assert!(map.is_intercepted(0x4b56_4d00, false));
        assert!(!map.is_intercepted(0x10, false));
    }

    #[test]
    fn every_msr_in_range_has_its_own_bits() {
        let mut seen = std::vec![0u8; MSRPM_SIZE];
        for start in MSRPM_RANGE_STARTS {
            for msr in start..start + MSRS_PER_RANGE {
                let (byte, shift) = msrpm_position(msr).unwrap();
                assert_eq!(seen[byte] & (0b11 << shift), 0, "{msr:#x}");
                seen[byte] |= 0b11 << shift;
            }
        }
        assert!(seen[..0x1800].iter().all(|&b| b == 0xff));
        assert!(seen[0x1800..].iter().all(|&b| b == 0));
    }

    #[test]
    fn page_aligned_owner() {
        assert_eq!(core::mem::align_of::<MsrPermissionMap>(), 4096);
        assert_eq!(core::mem::size_of::<MsrPermissionMap>(), MSRPM_SIZE);
        assert!(MsrPermissionMap::INTERCEPT_ALL.is_intercepted(0x10, true));
    }
}

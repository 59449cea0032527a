//! The I/O permission map (AMD APM vol. 2 15.10.1 "I/O Permissions Map").
//!
//! 12 KiB, physically contiguous, 4 KiB aligned; `iopm_base_pa` points at
//! it when `INTERCEPT_IOIO_PROT` is set.  Bit `p` covers port `p`; a set
//! bit intercepts.  An access of N bytes at port `p` checks the bits of
//! ports `p` to `p + N - 1`, and for a 2- or 4-byte access near 0xffff
//! those go past bit 65535 into the map's tail, which is why the map is
//! 12 KiB and not 8: pvrs keeps the tail set so such accesses exit.

/// Size of the map in bytes.
pub const IOPM_SIZE: usize = 12 * 1024;

/// Why an I/O permission-map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IopmError {
    /// The slice is not [`IOPM_SIZE`] bytes long.
    WrongSize(usize),
}

fn check_size(map: &[u8]) -> Result<(), IopmError> {
    if map.len() == IOPM_SIZE {
        Ok(())
    } else {
        Err(IopmError::WrongSize(map.len()))
    }
}

/// Sets every bit: every port access exits (pvrs's default: all port I/O
/// goes to the in-kernel devices or to userspace).
pub fn intercept_all_ports(map: &mut [u8]) -> Result<(), IopmError> {
    check_size(map)?;
    map.fill(0xff);
    Ok(())
}

/// Sets whether accesses to `port` exit.
pub fn set_port_intercept(map: &mut [u8], port: u16, intercept: bool) -> Result<(), IopmError> {
    check_size(map)?;
    let byte = usize::from(port / 8);
    let bit = 1u8 << (port % 8);
    if let Some(slot) = map.get_mut(byte) {
        if intercept {
            *slot |= bit;
        } else {
            *slot &= !bit;
        }
    }
    Ok(())
}

/// Whether an access of `size` bytes at `port` exits: the processor
/// checks one bit per byte accessed.  A map of the wrong size is treated
/// as intercepting everything.
pub fn port_access_is_intercepted(map: &[u8], port: u16, size: u8) -> bool {
    if check_size(map).is_err() {
        return true;
    }
    (0..usize::from(size.max(1))).any(|offset| {
        let bit_index = usize::from(port) + offset;
        map.get(bit_index / 8)
            .map_or(true, |byte| byte & (1 << (bit_index % 8)) != 0)
    })
}

/// A page-aligned I/O permission map.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPermissionMap(pub [u8; IOPM_SIZE]);

impl IoPermissionMap {
    /// A map that intercepts every port.
    pub const INTERCEPT_ALL: Self = Self([0xff; IOPM_SIZE]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_open() {
        let mut map = std::vec![0u8; IOPM_SIZE];
        intercept_all_ports(&mut map).unwrap();
        set_port_intercept(&mut map, 0x80, false).unwrap();
        assert_eq!(map[0x10], 0xfe);
        assert!(!port_access_is_intercepted(&map, 0x80, 1));
        // A word access at 0x80 also touches 0x81, which still exits.
        assert!(port_access_is_intercepted(&map, 0x80, 2));
        assert!(port_access_is_intercepted(&map, 0x7f, 1));
        set_port_intercept(&mut map, 0x80, true).unwrap();
        assert!(port_access_is_intercepted(&map, 0x80, 1));
    }

    #[test]
    fn accesses_past_ffff_use_the_tail() {
        let mut map = std::vec![0u8; IOPM_SIZE];
        assert!(!port_access_is_intercepted(&map, 0xffff, 4));
        map[8192] = 1;
        assert!(port_access_is_intercepted(&map, 0xffff, 2));
        assert!(!port_access_is_intercepted(&map, 0xffff, 1));
    }

    #[test]
    fn wrong_size() {
        let mut map = [0u8; 8192];
        assert_eq!(
            intercept_all_ports(&mut map),
            Err(IopmError::WrongSize(8192))
        );
        assert_eq!(
            set_port_intercept(&mut map, 1, false),
            Err(IopmError::WrongSize(8192))
        );
        assert!(port_access_is_intercepted(&map, 1, 1));
    }

    #[test]
    fn owner_is_page_aligned() {
        assert_eq!(core::mem::align_of::<IoPermissionMap>(), 4096);
        assert_eq!(core::mem::size_of::<IoPermissionMap>(), IOPM_SIZE);
        assert!(port_access_is_intercepted(
            &IoPermissionMap::INTERCEPT_ALL.0,
            0x3f8,
            1
        ));
    }
}

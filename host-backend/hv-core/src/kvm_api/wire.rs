//! Little-endian, bounds-checked reading and writing of the KVM API
//! structs, without `unsafe` and without transmutes.
//!
//! The kernel module copies the bytes userspace passed (or will receive)
//! into a buffer of its own; this module turns such a buffer into a typed
//! struct and back.  Every access goes through `slice::get`, so a buffer
//! that is too short is an error (`None` here, `EFAULT` for callers, as a
//! `copy_from_user` of too few bytes would be), never a panic.

/// A forward-only cursor over a byte buffer.
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// The next `N` bytes, or `None` if the buffer ends before them.
    pub fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.position.checked_add(N)?;
        let chunk: [u8; N] = self.bytes.get(self.position..end)?.try_into().ok()?;
        self.position = end;
        Some(chunk)
    }

    /// How many bytes have been read so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// A forward-only cursor over a mutable byte buffer.
pub struct Writer<'a> {
    bytes: &'a mut [u8],
    position: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `bytes`.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Stores `chunk` at the cursor, or returns `None` (writing nothing) if
    /// it does not fit.
    pub fn put<const N: usize>(&mut self, chunk: [u8; N]) -> Option<()> {
        let end = self.position.checked_add(N)?;
        self.bytes
            .get_mut(self.position..end)?
            .copy_from_slice(&chunk);
        self.position = end;
        Some(())
    }

    /// How many bytes have been written so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// A plain-data type with a fixed little-endian wire layout of `SIZE`
/// bytes that equals its C layout on x86-64.
pub trait Wire: Copy {
    /// The size in bytes, equal to `size_of::<Self>()` (the header test and
    /// the `kvm_struct!` assertion check that).
    const SIZE: usize;
    /// The all-zero value, as KVM's `kzalloc` / `memset(0)` gives.
    const ZERO: Self;

    /// Reads `SIZE` bytes at the reader's cursor, or `None` if the buffer ends first.
    fn read(reader: &mut Reader<'_>) -> Option<Self>;
    /// Writes `SIZE` bytes at the writer's cursor, or `None` if they do not fit.
    fn write(&self, writer: &mut Writer<'_>) -> Option<()>;

    /// Decodes the first `SIZE` bytes of `bytes` (more may follow, e.g. the
    /// entries after a header).
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Self::read(&mut Reader::new(bytes))
    }

    /// Encodes into the first `SIZE` bytes of `out`; leaves `out` untouched
    /// and returns `None` if it is shorter than that.
    fn to_bytes(&self, out: &mut [u8]) -> Option<()> {
        let target = out.get_mut(..Self::SIZE)?;
        self.write(&mut Writer::new(target))
    }
}

macro_rules! wire_integer {
    ($($ty:ty),+) => {
        $(
            impl Wire for $ty {
                const SIZE: usize = core::mem::size_of::<$ty>();
                const ZERO: Self = 0;

                fn read(reader: &mut Reader<'_>) -> Option<Self> {
                    reader.take().map(<$ty>::from_le_bytes)
                }

                fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
                    writer.put(self.to_le_bytes())
                }
            }
        )+
    };
}

wire_integer!(u8, u16, u32, u64, i8, i16, i32, i64);

impl<T: Wire, const N: usize> Wire for [T; N] {
    const SIZE: usize = T::SIZE * N;
    const ZERO: Self = [T::ZERO; N];

    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        let mut array = [T::ZERO; N];
        for element in array.iter_mut() {
            *element = T::read(reader)?;
        }
        Some(array)
    }

    fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
        for element in self {
            element.write(writer)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_little_endian() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u32::from_bytes(&bytes), Some(0x0403_0201));
        assert_eq!(u64::from_bytes(&bytes), Some(0x0807_0605_0403_0201));
        assert_eq!(i16::from_bytes(&[0xfe, 0xff]), Some(-2));
        let mut out = [0u8; 4];
        0x1122_3344u32.to_bytes(&mut out).unwrap();
        assert_eq!(out, [0x44, 0x33, 0x22, 0x11]);
    }

    #[test]
    fn short_buffers_are_refused_without_writing() {
        assert_eq!(u64::from_bytes(&[0; 7]), None);
        assert_eq!(<[u32; 3]>::from_bytes(&[0; 11]), None);
        let mut out = [0xaau8; 7];
        assert_eq!(u64::MAX.to_bytes(&mut out), None);
        assert_eq!(out, [0xaa; 7]);
    }

    #[test]
    fn arrays_round_trip_and_extra_bytes_are_ignored() {
        let value: [[u16; 2]; 3] = [[1, 2], [3, 4], [5, 0xffff]];
        let mut out = [0u8; 14];
        value.to_bytes(&mut out).unwrap();
        assert_eq!(<[[u16; 2]; 3]>::from_bytes(&out), Some(value));
        assert_eq!(out[12..], [0, 0]);
    }

    #[test]
    fn cursors_track_their_position() {
        let bytes = [0u8; 10];
        let mut reader = Reader::new(&bytes);
        reader.take::<3>().unwrap();
        assert_eq!(reader.position(), 3);
        assert!(reader.take::<8>().is_none());
        assert_eq!(reader.position(), 3);
        let mut buffer = [0u8; 4];
        let mut writer = Writer::new(&mut buffer);
        writer.put([1, 2]).unwrap();
        assert!(writer.put([3, 4, 5]).is_none());
        assert_eq!(writer.position(), 2);
    }
}

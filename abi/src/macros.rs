//! Helper macros shared by the ABI modules.

/// Defines a list of `pub const` items and, from the same list, a table that
/// pairs each constant's C name with its value widened to `u64`.
///
/// Having one list means the table that the header cross-check reads can
/// never disagree with the constants that code uses.  The names must be the
/// exact Linux macro names, because the test looks them up in the headers.
macro_rules! linux_constants {
    (
        $(#[$table_attr:meta])*
        table $table:ident;
        $(
            $(#[$attr:meta])*
            $name:ident: $ty:ty = $value:expr;
        )+
    ) => {
        $(
            $(#[$attr])*
            pub const $name: $ty = $value;
        )+

        $(#[$table_attr])*
        // Some constants already are `u64`; the cast is there for the others.
        #[allow(clippy::unnecessary_cast)]
        pub const $table: &[(&str, u64)] = &[$((stringify!($name), $name as u64)),+];
    };
}

/// Declares a structure that the guest and the host share in memory:
/// `#[repr(C)]` so that its layout is the C one, plain-data derives, and the
/// `zerocopy` derives when that feature is on (the host reads these from
/// guest memory). Extra attributes (docs, `#[derive(Default)]`) pass through.
///
/// The `packed pub struct` form is for the rare C struct declared
/// `__attribute__((packed))` whose fields are *not* all at naturally aligned
/// offsets (so plain `#[repr(C)]` would insert padding): it gives
/// `#[repr(C, packed)]` (alignment 1, no padding) and, with `zerocopy`, also
/// `Unaligned`.  Its fields can be read and written by value like any
/// others (they are `Copy`); only taking a reference to one is refused by
/// the compiler, so no `unsafe` is ever needed.  Packed C structs whose
/// fields happen to be naturally aligned use the plain form instead.
macro_rules! abi_struct {
    ($(#[$attr:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(
            feature = "zerocopy",
            derive(
                zerocopy::FromBytes,
                zerocopy::IntoBytes,
                zerocopy::Immutable,
                zerocopy::KnownLayout
            )
        )]
        pub struct $name { $($body)* }
    };
    ($(#[$attr:meta])* packed pub struct $name:ident { $($body:tt)* }) => {
        $(#[$attr])*
        #[repr(C, packed)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(
            feature = "zerocopy",
            derive(
                zerocopy::FromBytes,
                zerocopy::IntoBytes,
                zerocopy::Immutable,
                zerocopy::KnownLayout,
                zerocopy::Unaligned
            )
        )]
        pub struct $name { $($body)* }
    };
}

/// Pins a shared structure to the C layout at compile time: its size and the
/// offset of each named field (`tests/kernel_headers.rs` checks the same
/// numbers against the Linux headers).
macro_rules! assert_layout {
    ($type:ty, size $size:expr, { $($field:ident: $offset:expr),* $(,)? }) => {
        const _: () = assert!(core::mem::size_of::<$type>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($type, $field) == $offset);)*
    };
}

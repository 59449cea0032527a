//! `pinned_constants!`: constants that mirror a Linux header, listed once.
//!
//! Each use defines the `pub const` items and, from the same list, a table
//! of `(C name, value as u64, width of the Rust type in bits)` that
//! `tests/svm_header.rs` hands to a C compiler for comparison with the
//! real header.  The width matters because C's `1 << 31` is a negative
//! `int`: the test compares the C value converted to the Rust type, and
//! checks separately that the conversion lost nothing.  One list means the table
//! the test reads cannot drift from the constants code uses; the names must
//! therefore be the exact C names.

/// `pinned_constants! { table NAME; CONST: type = value; ... }`
macro_rules! pinned_constants {
    (
        $(#[$table_doc:meta])*
        table $table:ident;
        $(
            $(#[$doc:meta])*
            $name:ident: $ty:ty = $value:expr;
        )+
    ) => {
        $(
            $(#[$doc])*
            pub const $name: $ty = $value;
        )+

        $(#[$table_doc])*
        // The widening `as` is the point: every value is compared as u64,
        // including those that already are u64.
        #[allow(clippy::unnecessary_cast)]
        pub const $table: &[(&str, u64, u32)] = &[$((
            stringify!($name),
            $name as u64,
            <$ty>::BITS,
        )),+];
    };
}

//! `kvm_struct!`: one declaration per C struct of the KVM API, with its
//! byte-level codec.  (Constants use the crate's `pinned_constants!`.)

/// Declares a `#[repr(C)]` struct of the KVM userspace API and implements
/// [`super::wire::Wire`] for it by reading and writing its fields in
/// declaration order.  The invoking module imports `Wire`, `Reader` and
/// `Writer`: the expansion names them unqualified because `$crate` paths
/// would not hold when the kernel module includes this tree as a module.
///
/// That order is the C memory order only if the struct has no implicit
/// padding, so every struct declared here spells its padding out (as the
/// uapi headers do), and a compile-time assertion checks that the field
/// sizes add up to the struct size.
macro_rules! kvm_struct {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                pub $field:ident: $ty:ty,
            )+
        }
    ) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[$field_attr])*
                pub $field: $ty,
            )+
        }

        impl Wire for $name {
            const SIZE: usize = core::mem::size_of::<$name>();
            const ZERO: Self = Self {
                $($field: <$ty as Wire>::ZERO,)+
            };

            fn read(reader: &mut Reader<'_>) -> Option<Self> {
                Some(Self {
                    $($field: <$ty as Wire>::read(reader)?,)+
                })
            }

            fn write(&self, writer: &mut Writer<'_>) -> Option<()> {
                $(Wire::write(&self.$field, writer)?;)+
                Some(())
            }
        }

        const _: () = assert!(
            0 $(+ <$ty as Wire>::SIZE)+ == core::mem::size_of::<$name>(),
            concat!("implicit padding in ", stringify!($name))
        );
    };
}

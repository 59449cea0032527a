//! The non-virtio devices: the bus that dispatches exits, the legacy PC
//! devices (serial console, i8042 reset) and the ACPI power-management
//! registers.

pub mod acpi_pm;
pub mod bus;
pub mod legacy;

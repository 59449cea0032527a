//! EVENTINJ and EXITINTINFO: the 64-bit event format of AMD APM vol. 2
//! 15.20 "Event Injection" (EVENTINJ, figure 15-6) and 15.7.2 "Intercepts
//! During IDT Interrupt Delivery" (EXITINTINFO, the same format).  In the
//! VMCB each is a 32-bit event word plus a 32-bit error code
//! (`event_inj`/`event_inj_err`, `exit_int_info`/`exit_int_info_err`).
//!
//! Event word: bits 7:0 vector, 10:8 type (0 INTR, 2 NMI, 3 exception,
//! 4 software interrupt; 1, 5-7 reserved), bit 11 EV (error code valid),
//! bits 30:12 reserved, bit 31 V (valid).
//!
//! [`encode`] validates before producing a word, so that the VMCB never
//! carries an injection VMRUN would refuse (VMEXIT_INVALID): an exception
//! with vector 2 or above 30, an NMI with another vector, an error code on
//! an event that has none.
//!
//! QEMU TCG records events it delivered on its own (a V_IRQ vector, an
//! unintercepted INTR or NMI) in EXITINTINFO with type *exception*
//! (host-backend notes §1.3).  [`repair_tcg_exit_int_info`] turns the two
//! impossible combinations that bug produces back into what was meant:
//! "exception" vector 2 is the NMI, "exception" vectors 32-255 are
//! external interrupts.  Real hardware never reports either, so the
//! repair is harmless there.

use crate::vendor::{Event, EventError, EventKind, MAX_EXCEPTION_VECTOR, NMI_VECTOR};

pinned_constants! {
    /// The event-format `#define`s of asm/svm.h.
    table EVENT_CONSTANTS;

    /// EVENTINJ bits 7:0: the vector.
    SVM_EVTINJ_VEC_MASK: u32 = 0xff;
    /// First bit of the 3-bit type field.
    SVM_EVTINJ_TYPE_SHIFT: u32 = 8;
    /// EVENTINJ bits 10:8: the event type.
    SVM_EVTINJ_TYPE_MASK: u32 = 7 << SVM_EVTINJ_TYPE_SHIFT;
    /// Type 0: an external (maskable) interrupt.
    SVM_EVTINJ_TYPE_INTR: u32 = 0 << SVM_EVTINJ_TYPE_SHIFT;
    /// Type 2: the NMI.
    SVM_EVTINJ_TYPE_NMI: u32 = 2 << SVM_EVTINJ_TYPE_SHIFT;
    /// Type 3: an exception (Linux's spelling).
    SVM_EVTINJ_TYPE_EXEPT: u32 = 3 << SVM_EVTINJ_TYPE_SHIFT;
    /// Type 4: a software interrupt (INTn).
    SVM_EVTINJ_TYPE_SOFT: u32 = 4 << SVM_EVTINJ_TYPE_SHIFT;
    /// Bit 31 (V): the word holds an event.
    SVM_EVTINJ_VALID: u32 = 1 << 31;
    /// Bit 11 (EV): the error code is valid and is pushed.
    SVM_EVTINJ_VALID_ERR: u32 = 1 << 11;
    /// EXITINTINFO's vector (same format as EVENTINJ).
    SVM_EXITINTINFO_VEC_MASK: u32 = SVM_EVTINJ_VEC_MASK;
    /// EXITINTINFO's type field.
    SVM_EXITINTINFO_TYPE_MASK: u32 = SVM_EVTINJ_TYPE_MASK;
    /// EXITINTINFO type: an external interrupt.
    SVM_EXITINTINFO_TYPE_INTR: u32 = SVM_EVTINJ_TYPE_INTR;
    /// EXITINTINFO type: the NMI.
    SVM_EXITINTINFO_TYPE_NMI: u32 = SVM_EVTINJ_TYPE_NMI;
    /// EXITINTINFO type: an exception.
    SVM_EXITINTINFO_TYPE_EXEPT: u32 = SVM_EVTINJ_TYPE_EXEPT;
    /// EXITINTINFO type: a software interrupt.
    SVM_EXITINTINFO_TYPE_SOFT: u32 = SVM_EVTINJ_TYPE_SOFT;
    /// EXITINTINFO: an event was being delivered.
    SVM_EXITINTINFO_VALID: u32 = SVM_EVTINJ_VALID;
    /// EXITINTINFO: the interrupted event has an error code.
    SVM_EXITINTINFO_VALID_ERR: u32 = SVM_EVTINJ_VALID_ERR;
}

/// Bits 30:12 of the event word, which must be zero.
const EVENT_RESERVED_MASK: u32 =
    !(SVM_EVTINJ_VALID | SVM_EVTINJ_VALID_ERR | SVM_EVTINJ_TYPE_MASK | SVM_EVTINJ_VEC_MASK);

/// An event as the VMCB holds it: the event word and the error code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Vector, type, EV and V bits (`SVM_EVTINJ_*`).
    pub word: u32,
    /// The error code, meaningful only with [`SVM_EVTINJ_VALID_ERR`] set.
    pub error_code: u32,
}

fn type_bits(kind: EventKind) -> u32 {
    match kind {
        EventKind::ExternalInterrupt => SVM_EVTINJ_TYPE_INTR,
        EventKind::Nmi => SVM_EVTINJ_TYPE_NMI,
        EventKind::Exception => SVM_EVTINJ_TYPE_EXEPT,
        EventKind::SoftwareInterrupt => SVM_EVTINJ_TYPE_SOFT,
    }
}

/// Encodes `event` for EVENTINJ, after [`Event::validate`].
pub fn encode(event: &Event) -> Result<RawEvent, EventError> {
    event.validate()?;
    let mut word = SVM_EVTINJ_VALID | type_bits(event.kind) | u32::from(event.vector);
    if event.error_code.is_some() {
        word |= SVM_EVTINJ_VALID_ERR;
    }
    Ok(RawEvent {
        word,
        error_code: event.error_code.unwrap_or(0),
    })
}

/// Decodes an EVENTINJ/EXITINTINFO pair: `Ok(None)` when V is clear,
/// otherwise the event, validated as [`encode`] would.
pub fn decode(raw: RawEvent) -> Result<Option<Event>, EventError> {
    if raw.word & SVM_EVTINJ_VALID == 0 {
        return Ok(None);
    }
    let reserved = raw.word & EVENT_RESERVED_MASK;
    if reserved != 0 {
        return Err(EventError::ReservedBits(reserved));
    }
    let kind = match raw.word & SVM_EVTINJ_TYPE_MASK {
        SVM_EVTINJ_TYPE_INTR => EventKind::ExternalInterrupt,
        SVM_EVTINJ_TYPE_NMI => EventKind::Nmi,
        SVM_EVTINJ_TYPE_EXEPT => EventKind::Exception,
        SVM_EVTINJ_TYPE_SOFT => EventKind::SoftwareInterrupt,
        other => {
            return Err(EventError::ReservedType(
                (other >> SVM_EVTINJ_TYPE_SHIFT) as u8,
            ))
        }
    };
    let event = Event {
        kind,
        vector: (raw.word & SVM_EVTINJ_VEC_MASK) as u8,
        error_code: (raw.word & SVM_EVTINJ_VALID_ERR != 0).then_some(raw.error_code),
    };
    event.validate()?;
    Ok(Some(event))
}

/// Undoes QEMU TCG's mislabelling of events in EXITINTINFO (module docs):
/// a valid "exception" with vector 2 becomes an NMI and one with a vector
/// above 31 an external interrupt, each without an error code.  Anything
/// else is returned unchanged.
pub fn repair_tcg_exit_int_info(raw: RawEvent) -> RawEvent {
    let is_valid_exception = raw.word & SVM_EVTINJ_VALID != 0
        && raw.word & SVM_EVTINJ_TYPE_MASK == SVM_EVTINJ_TYPE_EXEPT
        && raw.word & EVENT_RESERVED_MASK == 0;
    if !is_valid_exception {
        return raw;
    }
    let vector = raw.word & SVM_EVTINJ_VEC_MASK;
    let kind = if vector == u32::from(NMI_VECTOR) {
        SVM_EVTINJ_TYPE_NMI
    } else if vector > 31 {
        SVM_EVTINJ_TYPE_INTR
    } else {
        return raw;
    };
    RawEvent {
        word: SVM_EVTINJ_VALID | kind | vector,
        error_code: 0,
    }
}

// The exception-vector bound of the validation is the one this format
// can express: every exception vector fits the 8-bit field.
const _: () = assert!((MAX_EXCEPTION_VECTOR as u32) < SVM_EVTINJ_VEC_MASK);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_examples() {
        assert_eq!(
            encode(&Event::exception(14, Some(0x6))),
            Ok(RawEvent {
                word: 0x8000_0b0e,
                error_code: 6
            })
        );
        assert_eq!(
            encode(&Event::interrupt(0xec)),
            Ok(RawEvent {
                word: 0x8000_00ec,
                error_code: 0
            })
        );
        assert_eq!(
            encode(&Event::nmi()),
            Ok(RawEvent {
                word: 0x8000_0202,
                error_code: 0
            })
        );
    }

    #[test]
    fn encode_refuses_invalid() {
        assert_eq!(
            encode(&Event::exception(2, None)),
            Err(EventError::InvalidExceptionVector(2))
        );
        assert_eq!(
            encode(&Event::exception(0x40, None)),
            Err(EventError::InvalidExceptionVector(0x40))
        );
    }

    #[test]
    fn decode_invalid_word_is_none() {
        assert_eq!(decode(RawEvent::default()), Ok(None));
        // V clear: the other bits do not matter.
        assert_eq!(
            decode(RawEvent {
                word: 0x7fff_ffff,
                error_code: 1
            }),
            Ok(None)
        );
    }

    #[test]
    fn decode_rejects_reserved() {
        assert_eq!(
            decode(RawEvent {
                word: 0x8000_0100,
                error_code: 0
            }),
            Err(EventError::ReservedType(1))
        );
        assert_eq!(
            decode(RawEvent {
                word: 0x8000_0700,
                error_code: 0
            }),
            Err(EventError::ReservedType(7))
        );
        assert_eq!(
            decode(RawEvent {
                word: 0x8000_1000 | 0x30,
                error_code: 0
            }),
            Err(EventError::ReservedBits(0x1000))
        );
    }

    #[test]
    fn round_trip_every_valid_event() {
        for vector in 0..=255u8 {
            for kind in [
                EventKind::ExternalInterrupt,
                EventKind::Nmi,
                EventKind::Exception,
                EventKind::SoftwareInterrupt,
            ] {
                for error_code in [None, Some(0x1234)] {
                    let event = Event {
                        kind,
                        vector,
                        error_code,
                    };
                    match encode(&event) {
                        Ok(raw) => assert_eq!(decode(raw), Ok(Some(event))),
                        Err(error) => assert_eq!(event.validate(), Err(error)),
                    }
                }
            }
        }
    }

    #[test]
    fn tcg_repair() {
        // V_IRQ-delivered 0x30 recorded as an exception.
        let tcg_irq = RawEvent {
            word: SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT | 0x30,
            error_code: 0,
        };
        assert_eq!(
            decode(tcg_irq),
            Err(EventError::InvalidExceptionVector(0x30))
        );
        assert_eq!(
            decode(repair_tcg_exit_int_info(tcg_irq)),
            Ok(Some(Event::interrupt(0x30)))
        );
        let tcg_nmi = RawEvent {
            word: SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT | 2,
            error_code: 0,
        };
        assert_eq!(
            decode(repair_tcg_exit_int_info(tcg_nmi)),
            Ok(Some(Event::nmi()))
        );
        // A real #GP is left alone.
        let gp = encode(&Event::exception(13, Some(0))).unwrap();
        assert_eq!(repair_tcg_exit_int_info(gp), gp);
        // Vector 31 is not repaired: it stays invalid.
        let v31 = RawEvent {
            word: SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT | 31,
            error_code: 0,
        };
        assert_eq!(repair_tcg_exit_int_info(v31), v31);
    }
}

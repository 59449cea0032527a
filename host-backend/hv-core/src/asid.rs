//! Per-CPU ASID allocation with generations (AMD APM vol. 2 15.16 "TLB
//! Control"; the scheme of KVM's `new_asid`/`pre_svm_run` in
//! `arch/x86/kvm/svm/svm.c`).
//!
//! An ASID tags the guest's TLB entries so that VMRUN and #VMEXIT need
//! not flush.  Each physical CPU hands out ASIDs 1..N-1 (N from CPUID
//! 8000_000A EBX; ASID 0 is the host's, and QEMU TCG offers N = 16) in
//! increasing order.  A vCPU keeps its ASID while the CPU's generation is
//! the one it got it in.  When the CPU runs out, it starts a new
//! generation, starts again at 1, and the entry that wrapped flushes the
//! whole TLB (`TLB_CONTROL_FLUSH_ALL_ASID`): without FlushByAsid (absent
//! on TCG) that is the only way to make reused ASIDs clean.  Since an
//! ASID is handed out at most once per generation, a fresh ASID needs no
//! flush of its own.
//!
//! Migration rule: a vCPU that runs on a different CPU than last time
//! forgets its ASID and takes a fresh one there.  Its entries on the old
//! CPU may be stale (flushes requested while it ran elsewhere did not
//! reach that CPU's TLB), so even coming back it must not reuse them.
//!
//! Flush requests for one vCPU (after changing its nested page tables)
//! are [`VcpuAsid::invalidate`]: the next entry takes a fresh ASID,
//! which is cheaper than flushing everyone's entries.

/// Why an allocator cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsidError {
    /// CPUID reports fewer than two ASIDs: nothing is left for guests.
    TooFewAsids(u32),
}

/// One physical CPU's allocator.  Not shared: the kernel keeps one per
/// CPU and uses it with preemption disabled, just before VMRUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuAsids {
    generation: u64,
    next: u32,
    max: u32,
}

/// A vCPU's ASID state: which ASID, of which generation, on which CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuAsid {
    asid: u32,
    /// 0: no valid ASID (CPU generations start at 1).
    generation: u64,
    cpu: Option<u32>,
}

/// What the next VMRUN must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidAssignment {
    /// The VMCB's `asid`.
    pub asid: u32,
    /// Set `tlb_ctl` to `TLB_CONTROL_FLUSH_ALL_ASID` for this entry.
    pub flush_all: bool,
}

impl CpuAsids {
    /// An allocator for a CPU with `asid_count` ASIDs (CPUID 8000_000A
    /// EBX).  The first assignment starts a generation and flushes, which
    /// also discards whatever an earlier user of SVM left in the TLB.
    pub fn new(asid_count: u32) -> Result<Self, AsidError> {
        if asid_count < 2 {
            return Err(AsidError::TooFewAsids(asid_count));
        }
        let max = asid_count - 1;
        Ok(Self {
            generation: 1,
            // Past the end, so the first assignment wraps.
            next: max.saturating_add(1),
            max,
        })
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Picks the ASID for `vcpu`'s next entry on this CPU, whose id is
    /// `cpu_id`, updating both.
    pub fn assign(&mut self, cpu_id: u32, vcpu: &mut VcpuAsid) -> AsidAssignment {
        if vcpu.cpu != Some(cpu_id) {
            vcpu.cpu = Some(cpu_id);
            vcpu.generation = 0;
        }
        if vcpu.generation == self.generation {
            return AsidAssignment {
                asid: vcpu.asid,
                flush_all: false,
            };
        }
        let mut flush_all = false;
        if self.next > self.max {
            self.generation = self.generation.wrapping_add(1);
            if self.generation == 0 {
                // 0 means "no ASID" in VcpuAsid; never hand it out.
                self.generation = 1;
            }
            self.next = 1;
            flush_all = true;
        }
        vcpu.asid = self.next;
        vcpu.generation = self.generation;
        self.next += 1;
        AsidAssignment {
            asid: vcpu.asid,
            flush_all,
        }
    }
}

impl VcpuAsid {
    /// A vCPU that has not run yet.
    pub const NEW: Self = Self {
        asid: 0,
        generation: 0,
        cpu: None,
    };

    /// Drops the current ASID so the next entry takes a fresh one: this
    /// vCPU's old TLB entries are then never used again.
    pub fn invalidate(&mut self) {
        self.generation = 0;
    }

    /// The ASID of the last assignment (0 before the first).
    pub fn asid(&self) -> u32 {
        self.asid
    }
}

impl Default for VcpuAsid {
    fn default() -> Self {
        Self::NEW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_at_least_one_guest_asid() {
        assert_eq!(CpuAsids::new(0), Err(AsidError::TooFewAsids(0)));
        assert_eq!(CpuAsids::new(1), Err(AsidError::TooFewAsids(1)));
        assert!(CpuAsids::new(2).is_ok());
    }

    #[test]
    fn first_entry_flushes_then_asid_is_kept() {
        let mut cpu = CpuAsids::new(16).unwrap();
        let mut vcpu = VcpuAsid::NEW;
        assert_eq!(
            cpu.assign(0, &mut vcpu),
            AsidAssignment {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            cpu.assign(0, &mut vcpu),
            AsidAssignment {
                asid: 1,
                flush_all: false
            }
        );
    }

    #[test]
    fn wrap_bumps_generation_and_flushes_once() {
        // TCG: 16 ASIDs, so 15 for guests.
        let mut cpu = CpuAsids::new(16).unwrap();
        let mut vcpus = [VcpuAsid::NEW; 16];
        let mut asids = std::vec::Vec::new();
        for vcpu in vcpus.iter_mut().take(15) {
            asids.push(cpu.assign(0, vcpu));
        }
        assert_eq!(
            asids.iter().map(|a| a.asid).collect::<std::vec::Vec<_>>(),
            (1..=15).collect::<std::vec::Vec<_>>()
        );
        assert_eq!(asids.iter().filter(|a| a.flush_all).count(), 1);
        let generation = cpu.generation();
        // The sixteenth vCPU wraps.
        assert_eq!(
            cpu.assign(0, &mut vcpus[15]),
            AsidAssignment {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(cpu.generation(), generation + 1);
        // The first vCPU's ASID 1 is of the old generation: it gets 2.
        assert_eq!(
            cpu.assign(0, &mut vcpus[0]),
            AsidAssignment {
                asid: 2,
                flush_all: false
            }
        );
    }

    #[test]
    fn migration_takes_a_fresh_asid_even_coming_back() {
        let mut cpu0 = CpuAsids::new(16).unwrap();
        let mut cpu1 = CpuAsids::new(16).unwrap();
        let mut vcpu = VcpuAsid::NEW;
        assert_eq!(cpu0.assign(0, &mut vcpu).asid, 1);
        assert_eq!(cpu1.assign(1, &mut vcpu).asid, 1);
        let back = cpu0.assign(0, &mut vcpu);
        assert_eq!(back.asid, 2, "ASID 1 on CPU 0 may hold stale entries");
        assert!(!back.flush_all);
    }

    #[test]
    fn invalidate_takes_a_fresh_asid_without_flush() {
        let mut cpu = CpuAsids::new(16).unwrap();
        let mut vcpu = VcpuAsid::NEW;
        cpu.assign(3, &mut vcpu);
        vcpu.invalidate();
        assert_eq!(
            cpu.assign(3, &mut vcpu),
            AsidAssignment {
                asid: 2,
                flush_all: false
            }
        );
        assert_eq!(vcpu.asid(), 2);
    }

    #[test]
    fn two_asids_alternate_with_flushes() {
        // One guest ASID: every new assignment wraps.
        let mut cpu = CpuAsids::new(2).unwrap();
        let mut a = VcpuAsid::NEW;
        let mut b = VcpuAsid::NEW;
        for _ in 0..4 {
            assert_eq!(
                cpu.assign(0, &mut a),
                AsidAssignment {
                    asid: 1,
                    flush_all: true
                }
            );
            assert_eq!(
                cpu.assign(0, &mut b),
                AsidAssignment {
                    asid: 1,
                    flush_all: true
                }
            );
        }
    }

    #[test]
    fn huge_asid_count_does_not_overflow() {
        let mut cpu = CpuAsids::new(u32::MAX).unwrap();
        let mut vcpu = VcpuAsid::NEW;
        assert_eq!(cpu.assign(0, &mut vcpu).asid, 1);
    }
}

// SPDX-License-Identifier: GPL-2.0

#include <linux/io.h>
#include <asm/cpufeature.h>
#include <asm/msr.h>
#include <asm/pvclock.h>
#include <asm/tsc.h>

int rust_helper_rdmsrl_safe(u32 msr, u64 *value)
{
	unsigned long long v = 0;
	int ret = rdmsrl_safe(msr, &v);

	*value = v;
	return ret;
}

int rust_helper_wrmsrl_safe(u32 msr, u64 value)
{
	return wrmsrl_safe(msr, value);
}

phys_addr_t rust_helper_virt_to_phys(volatile void *address)
{
	return virt_to_phys(address);
}

bool rust_helper_x86_tsc_invariant_and_stable(void)
{
	return boot_cpu_has(X86_FEATURE_CONSTANT_TSC) &&
	       boot_cpu_has(X86_FEATURE_NONSTOP_TSC) &&
	       !check_tsc_unstable();
}

bool rust_helper_x86_kvmclock_in_use(void)
{
#ifdef CONFIG_PARAVIRT_CLOCK
	return pvclock_get_pvti_cpu0_va() != NULL;
#else
	return false;
#endif
}

bool rust_helper_boot_cpu_has(unsigned int feature)
{
	return boot_cpu_has(feature);
}

#include <linux/uaccess.h>

/*
 * Compare-and-exchange on user memory, as KVM's emulator does for guest
 * page-table accessed/dirty bits (emulator_cmpxchg_emulated): 0 if the
 * value was exchanged, 1 if it differed from *old (which is then updated
 * to the current value), -EFAULT if the address is not writable user
 * memory. __try_cmpxchg_user() brackets the access and defines its label.
 */
int rust_helper_cmpxchg_user_u32(u32 __user *uaddr, u32 *old, u32 new)
{
	if (!access_ok(uaddr, sizeof(*uaddr)))
		return -EFAULT;
	return __try_cmpxchg_user(uaddr, old, new, efault);
}

int rust_helper_cmpxchg_user_u64(u64 __user *uaddr, u64 *old, u64 new)
{
	if (!access_ok(uaddr, sizeof(*uaddr)))
		return -EFAULT;
	return __try_cmpxchg_user(uaddr, old, new, efault);
}

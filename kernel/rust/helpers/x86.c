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

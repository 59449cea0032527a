// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>

phys_addr_t rust_helper_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

void rust_helper_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vm_flags_set(vma, flags);
}

unsigned long rust_helper_task_size_max(void)
{
	return TASK_SIZE_MAX;
}

void rust_helper_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void rust_helper_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

bool rust_helper_mmu_notifier_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

// SPDX-License-Identifier: GPL-2.0

#include <linux/balloon_compaction.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/vmstat.h>

void rust_helper_balloon_devinfo_init(struct balloon_dev_info *balloon)
{
	balloon_devinfo_init(balloon);
}

unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

void rust_helper_put_page(struct page *page)
{
	put_page(page);
}

unsigned long rust_helper_file_pages(void)
{
	return global_node_page_state(NR_FILE_PAGES);
}

void rust_helper_vm_event_counts(u64 *swap_in, u64 *swap_out, u64 *major,
				 u64 *faults)
{
#ifdef CONFIG_VM_EVENT_COUNTERS
	unsigned long events[NR_VM_EVENT_ITEMS];

	all_vm_events(events);
	*swap_in = events[PSWPIN];
	*swap_out = events[PSWPOUT];
	*major = events[PGMAJFAULT];
	*faults = events[PGFAULT];
#else
	*swap_in = *swap_out = *major = *faults = 0;
#endif
}

// SPDX-License-Identifier: GPL-2.0

#include <linux/eventfd.h>
#include <linux/poll.h>
#include <linux/wait.h>

void rust_helper_init_waitqueue_func_entry(struct wait_queue_entry *wq_entry,
					   wait_queue_func_t func)
{
	init_waitqueue_func_entry(wq_entry, func);
}

void rust_helper_init_poll_funcptr(poll_table *pt, poll_queue_proc qproc)
{
	init_poll_funcptr(pt, qproc);
}

__poll_t rust_helper_vfs_poll(struct file *file, struct poll_table_struct *pt)
{
	return vfs_poll(file, pt);
}

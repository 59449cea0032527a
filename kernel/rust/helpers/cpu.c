// SPDX-License-Identifier: GPL-2.0

#include <linux/cpuhotplug.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <linux/smp.h>

void rust_helper_preempt_disable_notrace(void)
{
	preempt_disable_notrace();
}

void rust_helper_preempt_enable_notrace(void)
{
	preempt_enable_notrace();
}

unsigned int rust_helper_raw_smp_processor_id(void)
{
	return raw_smp_processor_id();
}

unsigned int rust_helper_num_online_cpus(void)
{
	return num_online_cpus();
}

int rust_helper_cpuhp_setup_state_multi(enum cpuhp_state state,
					const char *name,
					int (*startup)(unsigned int cpu,
						       struct hlist_node *node),
					int (*teardown)(unsigned int cpu,
							struct hlist_node *node))
{
	return cpuhp_setup_state_multi(state, name, startup, teardown);
}

int rust_helper_cpuhp_state_add_instance(enum cpuhp_state state,
					 struct hlist_node *node)
{
	return cpuhp_state_add_instance(state, node);
}

int rust_helper_cpuhp_state_remove_instance(enum cpuhp_state state,
					    struct hlist_node *node)
{
	return cpuhp_state_remove_instance(state, node);
}

void rust_helper_cpuhp_remove_multi_state(enum cpuhp_state state)
{
	cpuhp_remove_multi_state(state);
}

void rust_helper_cond_resched(void)
{
	cond_resched();
}

/* smp_send_reschedule() without its IPI tracepoint, which helpers cannot
 * reach; the IPI itself is the same. */
void rust_helper_smp_send_reschedule(int cpu)
{
	arch_smp_send_reschedule(cpu);
}

/* The current task's time runnable but not running (steal time for a
 * vCPU thread). */
u64 rust_helper_current_run_delay(void)
{
#ifdef CONFIG_SCHED_INFO
	return current->sched_info.run_delay;
#else
	return 0;
#endif
}

bool rust_helper_need_resched(void)
{
	return need_resched();
}

/* single_task_running() is declared in a header the bindings do not
 * include (linux/sched/stat.h). */
bool rust_helper_single_task_running(void)
{
	return single_task_running();
}

// SPDX-License-Identifier: GPL-2.0

#include <linux/clocksource.h>

int rust_helper_clocksource_register_hz(struct clocksource *cs, u32 hz)
{
	return clocksource_register_hz(cs, hz);
}

# The Rust kvmclock clocksource (pvrs_pvclock), in a guest booted with
# no-kvmclock; prints results for tests/integration/test_pvclock.py.
cs=/sys/devices/system/clocksource/clocksource0
st=/sys/kernel/debug/pvrs_pvclock/stats
hc=/sys/kernel/debug/pvrs/hypercall
echo "PC: current=$(cat $cs/current_clocksource)"
echo "PC: $(cat $st)"
# At least 10^7 reads from 2 vCPUs at once; the wall clock and the host's
# clock before and after, at least 10 s apart.
echo clock_pairing > $hc && echo "PC: $(cat $hc)"
echo "PC: $(cat /sys/kernel/debug/pvrs_pvclock/wallclock)"
start=$(cut -d' ' -f1 /proc/uptime)
echo "PC: $(pvrs-clockcheck --reads 10000000 --threads 2)"
while [ "$(awk -v s="$start" '{print ($1 - s >= 10)}' /proc/uptime)" != 1 ]; do sleep 1; done
echo clock_pairing > $hc && echo "PC: $(cat $hc)"
echo "PC: $(cat /sys/kernel/debug/pvrs_pvclock/wallclock)"
# CPU hotplug: the area goes with the CPU and comes back with it.
echo 0 > /sys/devices/system/cpu/cpu1/online && echo "PC: offline $(cat $st)"
echo "PC: $(pvrs-clockcheck --reads 100000 --threads 1)"
echo 1 > /sys/devices/system/cpu/cpu1/online && echo "PC: online $(cat $st)"
echo "PC: msr-loaded $(pvrs-msr 0 0x4b564d01) $(pvrs-msr 1 0x4b564d01)"
# Unloading: timekeeping holds the module while it is the current
# clocksource, so switch away first; then every CPU's MSR must be 0.
echo hpet > $cs/current_clocksource
echo "PC: switched current=$(cat $cs/current_clocksource)"
rmmod pvrs_pvclock && echo "PC: rmmod=ok" || echo "PC: rmmod=failed"
echo "PC: msr-unloaded $(pvrs-msr 0 0x4b564d01) $(pvrs-msr 1 0x4b564d01)"

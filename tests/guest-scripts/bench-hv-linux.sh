# The guest side of the Linux phase of the `hv` benchmark (tests/bench hv):
# the same workloads in the L2 guest on each hypervisor, one line each:
#   BENCH: guest cpus=N clocksource=NAME
#   BENCH: hackbench groups=G loops=L seconds=S   (rt-tests; its "Time:")
#   BENCH: ctx ... / BENCH: ipi ... / BENCH: timer ...   (pvrs-ctxbench)
# The sizes come from the kernel command line (tests/bench sets them; these
# defaults are for running the script by hand):
#   pvrs_hackbench=GxL,GxL pvrs_ctx_rounds=N pvrs_ipi_rounds=N pvrs_timer_rounds=N
# Exits 1 if any workload failed.
param() {
    v=$(sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline)
    echo "${v:-$2}"
}
rc=0
echo "BENCH: guest cpus=$(nproc) clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
for spec in $(param pvrs_hackbench 1x200,5x100 | tr , ' '); do
    g=${spec%x*}
    l=${spec#*x}
    out=$(hackbench -g "$g" -l "$l" 2>&1)
    t=$(echo "$out" | sed -n 's/^Time: *//p')
    if [ -n "$t" ]; then
        echo "BENCH: hackbench groups=$g loops=$l seconds=$t"
    else
        echo "hackbench -g $g -l $l failed:"
        echo "$out" | tail -n 5
        rc=1
    fi
done
for mode in ctx ipi timer; do
    pvrs-ctxbench $mode --rounds "$(param pvrs_${mode}_rounds 1000)" || rc=1
done
exit $rc

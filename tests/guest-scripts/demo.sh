# The demo workload: PV detection, then hackbench (rt-tests) with times.
echo "== paravirtual interface, as pvrs_hypercall sees it"
dmesg | grep 'pvrs: ' | sed 's/^\[[ 0-9.]*\] //'
echo "== the same leaves read from user space"
pvrs-cpuid
echo "== clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
for spec in "1 200" "5 100"; do
    set -- $spec
    for run in 1 2 3; do
        t=$(hackbench -g "$1" -l "$2" 2>&1 | sed -n 's/^Time: //p')
        [ -n "$t" ] || { echo "hackbench -g $1 -l $2 failed"; exit 1; }
        echo "PVRS-BENCH hackbench groups=$1 loops=$2 run=$run seconds=$t"
    done
done

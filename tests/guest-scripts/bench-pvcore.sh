# Benchmark of the PV core: clock reads through the current clocksource and
# hypercall round trips (cycles), 3 rounds; user-space clock_gettime too.
echo "BENCH: clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
for round in 1 2 3 4 5; do
    echo "bench loops=5000" > /sys/kernel/debug/pvrs/hypercall || exit 1
    sed "s/^/BENCH: round=$round /" /sys/kernel/debug/pvrs/hypercall
done
echo "BENCH: $(pvrs-clockcheck --reads 400000 --threads 1)"

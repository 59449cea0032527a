# Exercises every hypercall through /sys/kernel/debug/pvrs/hypercall and
# prints the raw results (tests/integration/test_hypercall.py judges them).
f=/sys/kernel/debug/pvrs/hypercall
hc() {
    if echo "$1" > $f; then
        sed 's/^/HC: /' $f
    else
        echo "HC: op=$1 result=write-failed"
    fi
}
apic_of() { awk -v cpu="$1" '/^processor/ {p=$3} /^apicid/ && p==cpu {print $3}' /proc/cpuinfo; }
res_of() { awk -v col="$(($1 + 2))" '/RES:/ {print $col}' /proc/interrupts; }

hc vapic_poll_irq
hc "raw nr=99999"
hc "raw nr=9 a0=0x1000"
hc "kick_cpu apic=$(apic_of 1)"
hc "sched_yield apic=$(apic_of 1)"
for cpu in 0 1; do
    other=$((1 - cpu))
    before=$(res_of $cpu); before_other=$(res_of $other)
    hc "send_ipi vector=0xfd apic=$(apic_of $cpu) count=2000"
    echo "IPI: target=$cpu target_res_delta=$(($(res_of $cpu) - before)) other_res_delta=$(($(res_of $other) - before_other))"
done
for i in 1 2 3 4 5 6; do
    hc clock_pairing
    sleep 2
done

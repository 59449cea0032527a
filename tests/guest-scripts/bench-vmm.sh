# The guest side of the `vmm` benchmark (tests/bench vmm), the same for
# every VMM. The kernel command line says what to do:
#   pvrs_bench=boot  a short port-I/O exit measurement (pvrs-pio); the
#                    boot-to-init time itself is taken in the L1
#   pvrs_bench=io    a longer one, then 4 KiB random reads on /dev/vda (an
#                    image made by `pvrs-blkbench fill`)
# Exit costs are taken in every guest so that each VMM gets many samples
# interleaved with the others' (the load on the machine drifts).
mode=$(sed -n 's/.*pvrs_bench=\([a-z]*\).*/\1/p' /proc/cmdline)
rc=0
if [ "$mode" != io ]; then
    out=$(pvrs-pio --via tty --count 4000 --rounds 3) || rc=1
    echo "BENCH: $out"
    exit $rc
fi
out=$(pvrs-pio --via tty --count 10000 --rounds 5) || rc=1
echo "BENCH: $out"
if [ -b /dev/vda ]; then
    for qd in 1 16; do
        out=$(pvrs-blkbench read /dev/vda --qd $qd --seconds 5) || rc=1
        echo "BENCH: $out"
    done
else
    echo "BENCH: no /dev/vda"
    rc=1
fi
exit $rc

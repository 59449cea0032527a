# Deflate-on-OOM, guest side: once the host's balloon leaves less than
# 150 MiB available, allocate 100 MiB more than is available.
kb() { awk -v k="$1:" '$1==k {print $2}' /proc/meminfo; }
driver=$(basename "$(readlink /sys/bus/virtio/devices/virtio0/driver)")
echo "BAL: ready total=$(kb MemTotal) avail=$(kb MemAvailable) driver=$driver"
while [ "$(kb MemAvailable)" -gt 153600 ]; do sleep 0.3; done
sleep 2
want=$(( $(kb MemAvailable) / 1024 + 100 ))
echo "BAL: oom-start avail=$(kb MemAvailable) alloc_mib=$want"
out=$(pvrs-alloc "$want" 1)
rc=$?
echo "BAL: alloc-output $(echo "$out" | tail -n 1)"
echo "BAL: oom-done rc=$rc avail=$(kb MemAvailable) killed=$(dmesg | grep -c 'Killed process')"

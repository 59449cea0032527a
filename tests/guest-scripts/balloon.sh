# Balloon tests, guest side (tests/integration/test_balloon.py drives the
# device from the host over QMP and reads these lines).
kb() { awk -v k="$1:" '$1==k {print $2}' /proc/meminfo; }
driver=$(basename "$(readlink /sys/bus/virtio/devices/virtio0/driver)")
# The baseline before "ready": the host starts inflating when it sees it.
start=$(kb MemTotal)
echo "BAL: ready total=$start avail=$(kb MemAvailable) driver=$driver"
(while true; do echo "BAL: mem total=$(kb MemTotal) avail=$(kb MemAvailable)"; sleep 0.5; done) &
# The host's signal for the unload phase: a 200 MiB balloon (no other phase
# goes beyond 128 MiB).
while [ $((start - $(kb MemTotal))) -lt 204800 ]; do sleep 0.3; done
sleep 1
echo "BAL: inflated total=$(kb MemTotal)"
rmmod "$driver"
rc=$?
sleep 1
echo "BAL: unloaded rc=$rc total=$(kb MemTotal)"

# Runs in a guest with no KVM underneath (QEMU TCG): pvrs_hypercall must
# load, say "no KVM", and agree with userspace that there are no KVM leaves.
grep -q '^pvrs_hypercall ' /proc/modules || { echo "FAIL: pvrs_hypercall not loaded"; exit 1; }
line=$(dmesg | grep -m1 'pvrs: no KVM')
user=$(pvrs-cpuid)
echo "module:    ${line#*pvrs: }"
echo "userspace: $user"
[ -n "$line" ] || { echo "FAIL: no 'pvrs: no KVM' line"; dmesg | grep pvrs; exit 1; }
case "$user" in
    signature=KVMKVMKVM*) echo "FAIL: userspace sees KVM leaves"; exit 1 ;;
esac
rmmod pvrs_hypercall || { echo "FAIL: rmmod"; exit 1; }
echo "PASS: no KVM, module loads and unloads"

# Runs in a guest on a KVM host: pvrs_hypercall must report the KVM
# interface with exactly the values that a userspace CPUID read returns.
line=$(dmesg | grep -m1 'pvrs: KVM detected: ')
if [ -z "$line" ]; then
    echo "FAIL: no 'pvrs: KVM detected' line in dmesg:"
    dmesg | grep pvrs
    exit 1
fi
module=${line#*KVM detected: }
user=$(pvrs-cpuid)
echo "module:    $module"
echo "userspace: $user"
field() { echo "$2" | tr ' ' '\n' | grep "^$1=" ; }
rc=0
for key in signature base max_leaf features hints names; do
    m=$(field "$key" "$module"); u=$(field "$key" "$user")
    if [ -z "$m" ] || [ "$m" != "$u" ]; then
        echo "FAIL: $key differs: module '$m', userspace '$u'"; rc=1
    fi
done
[ "$(field signature "$user")" = "signature=KVMKVMKVM" ] || { echo "FAIL: not KVM"; rc=1; }
# kvmclock is part of every KVM the tests run on; a features word without it
# would mean the leaf was misread.
case "$(field names "$user")" in
    *clocksource2*) ;;
    *) echo "FAIL: KVM without clocksource2"; rc=1 ;;
esac
[ $rc = 0 ] && echo "PASS: module and userspace agree"
exit $rc

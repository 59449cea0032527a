# virtio-net tests and benchmark, guest side: tests/integration/test_virtio_net.py
# and `tests/bench net` boot one guest or two on one link and read the
# "NET:" lines. The kernel command line says what to do:
#   pvrs_net=traffic|link|hostfwd|bench  the test
#   pvrs_net_role=a|b                    on the guest-to-guest link a is
#                                        10.0.0.1, b 10.0.0.2
#   pvrs_net_hostport=N                  hostfwd: the host port to upload to
# The two guests pace each other over the link itself (`barrier`); the host
# paces guest a in the link test with QMP set_link, which a watches.
#
# iputils ping is /usr/local/bin/ping (busybox's own ping, which its sh
# prefers, has no -M do); iperf3 and ethtool come from the host too.
PING=/usr/local/bin/ping
TCP_MIB=64
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
sha() { sha256sum <"$1" | cut -d' ' -f1; }
mode=$(arg pvrs_net)
role=$(arg pvrs_net_role)
sys=/sys/class/net/eth0

i=0
while [ ! -e $sys ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e $sys ]; then echo "NET: no eth0"; ip link; exit 90; fi
ip link set lo up
if [ "$mode" = hostfwd ]; then
    me=10.0.2.15; peer=10.0.2.2
elif [ "$role" = a ]; then
    me=10.0.0.1; peer=10.0.0.2
else
    me=10.0.0.2; peer=10.0.0.1
fi
ip addr add $me/24 dev eth0 && ip link set eth0 up || exit 91
echo "NET: ready role=$role driver=$(basename "$(readlink $sys/device/driver)")" \
     "ethtool=$(ethtool -i eth0 | sed -n 's/^driver: //p') mac=$(cat $sys/address)" \
     "mtu=$(cat $sys/mtu) carrier=$(cat $sys/carrier)"

# pingcheck NAME ARGS...: pings the peer with ARGS and says how many echo
# replies came back (and the local error, such as "message too long").
pingcheck() {
    name=$1; shift
    out=$($PING "$@" $peer 2>&1)
    rc=$?
    tx=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    rx=$(echo "$out" | sed -n 's/.*transmitted, \([0-9]*\) received.*/\1/p')
    rtt=$(echo "$out" | sed -n 's/^rtt .* = \([^ ]*\) ms/\1/p')
    err=$(echo "$out" | grep -m1 -o 'local error: .*' | tr ' ,' '_.')
    echo "NET: ping name=$name rc=$rc tx=${tx:-0} rx=${rx:-0} rtt=${rtt:--} err=${err:--}"
}

# wait_peer: until the peer answers a ping (it may still be booting).
wait_peer() {
    t0=$(now)
    for _ in $(seq 60); do
        if $PING -c 1 -W 1 $peer >/dev/null 2>&1; then
            echo "NET: peer up after $(since "$t0") s"
            return 0
        fi
        sleep 0.5
    done
    echo "NET: peer $peer does not answer"
    exit 92
}

# connect PORT: runs `nc $peer PORT` with stdin and stdout as given,
# retrying while the peer does not listen yet (for at most 60 s).
connect() {
    for _ in $(seq 200); do
        nc $peer "$1" 2>/dev/null && return 0
        sleep 0.3
    done
    return 1
}

# barrier N: both guests wait here until the other one arrives (a listens
# on port 5100+N, b connects).
barrier() {
    if [ "$role" = a ]; then
        nc -l -p $((5100 + $1)) </dev/null >/dev/null
    else
        echo | connect $((5100 + $1)) >/dev/null
    fi || { echo "NET: barrier $1 failed"; exit 93; }
}

# TCP: send_file PORT FILE to the peer's recv_file PORT; both say what
# went through (size and sha256), the sender how long it took.
send_file() {
    t0=$(now)
    connect "$1" <"$2"
    rc=$?
    echo "NET: tcp-sent port=$1 rc=$rc bytes=$(stat -c %s "$2") sha=$(sha "$2") secs=$(since "$t0")"
}
recv_file() {
    nc -l -p "$1" >/tmp/in
    rc=$?
    echo "NET: tcp-recv port=$1 rc=$rc bytes=$(stat -c %s /tmp/in) sha=$(sha /tmp/in)"
    rm -f /tmp/in
}

# iperf NAME ARGS...: iperf3 client run against the peer's server (b only),
# its JSON report on one line. (iperf3 -J exits 0 also when it could not
# connect: its report then has an "error".)
iperf() {
    name=$1; shift
    for _ in $(seq 30); do
        iperf3 -c $peer -J -i 0 "$@" >/tmp/iperf.json
        rc=$?
        grep -q '"error"' /tmp/iperf.json && rc=1
        [ $rc = 0 ] && break
        sleep 0.5
    done
    echo "NET: iperf name=$name rc=$rc json=$(tr -s ' \t\n' ' ' </tmp/iperf.json)"
}

# The interface and protocol counters (errors, checksum failures, drops).
stats() {
    echo "NET: stats" $(for f in rx_packets tx_packets rx_errors tx_errors rx_dropped tx_dropped \
                                  rx_length_errors rx_crc_errors rx_frame_errors; do
                            echo "$f=$(cat $sys/statistics/$f)"
                        done) \
         $(awk 'NR % 2 == 1 { n = split($0, h) }
                NR % 2 == 0 { p = tolower(substr(h[1], 1, length(h[1]) - 1))
                              for (i = 2; i <= NF; i++) printf "%s_%s=%s ", p, h[i], $i }' /proc/net/snmp)
}

wait_carrier() {
    for _ in $(seq 300); do
        [ "$(cat $sys/carrier)" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
link_state() {
    echo "carrier=$(cat $sys/carrier) operstate=$(cat $sys/operstate)" \
         "flags=$(ip link show eth0 | sed -n 's/.*<\([^>]*\)>.*/\1/p')"
}

case $mode in
traffic)
    # Pings of every size, TCP both ways with checksummed data, UDP (one
    # frame a datagram, and fragmented) both ways.
    wait_peer
    pingcheck small -c 10 -i 0.1 -w 20
    pingcheck df1472 -c 5 -i 0.1 -s 1472 -M do -w 20
    pingcheck df1473 -c 2 -s 1473 -M do -W 1
    pingcheck frag8000 -c 5 -i 0.1 -s 8000 -w 20
    pingcheck frag65000 -c 3 -i 0.2 -s 65000 -w 20
    t0=$(now)
    dd if=/dev/urandom of=/tmp/out bs=1M count=$TCP_MIB 2>/dev/null
    echo "NET: tcp-data bytes=$(stat -c %s /tmp/out) sha=$(sha /tmp/out) secs=$(since "$t0")"
    barrier 1
    if [ "$role" = a ]; then
        send_file 5001 /tmp/out
        recv_file 5002
    else
        recv_file 5001
        send_file 5002 /tmp/out
    fi
    rm -f /tmp/out
    [ "$role" = a ] && iperf3 -s >/dev/null 2>&1 &
    barrier 2
    if [ "$role" = b ]; then
        iperf udp1400 -u -b 10M -t 3 -l 1400
        iperf udp1400-reverse -u -b 10M -t 3 -l 1400 -R
        iperf udp8000 -u -b 10M -t 3 -l 8000
        iperf udp8000-reverse -u -b 10M -t 3 -l 8000 -R
    fi
    barrier 3
    stats
    ;;
link)
    # The MTU (both guests alike), then the carrier as the host sets the
    # link of guest a down and up with QMP (b waits).
    wait_peer
    for mtu in 1400 9000 1500; do
        ip link set eth0 mtu $mtu
        rc=$?
        echo "NET: mtu set=$mtu rc=$rc now=$(cat $sys/mtu)"
        barrier $((mtu / 100))
        pingcheck mtu$mtu-fit -c 3 -i 0.2 -s $((mtu - 28)) -M do -w 20
        pingcheck mtu$mtu-over -c 2 -s $((mtu - 27)) -M do -W 1
        pingcheck mtu$mtu-frag -c 3 -i 0.2 -s 20000 -w 20
        if [ "$role" = a ]; then
            dd if=/dev/urandom of=/tmp/out bs=1M count=16 2>/dev/null
            send_file $((6000 + mtu / 100)) /tmp/out
            rm -f /tmp/out
        else
            recv_file $((6000 + mtu / 100))
        fi
        barrier $((mtu / 100 + 100))
    done
    if [ "$role" = a ]; then
        for cycle in 1 2 3; do
            echo "NET: link-wait cycle=$cycle want=0"
            wait_carrier 0
            echo "NET: link-down cycle=$cycle $(link_state)"
            pingcheck link-down-$cycle -c 2 -i 0.5 -W 1 -w 3
            echo "NET: link-wait cycle=$cycle want=1"
            wait_carrier 1
            echo "NET: link-up cycle=$cycle $(link_state)"
            t0=$(now)
            for _ in $(seq 40); do $PING -c 1 -W 1 $peer >/dev/null 2>&1 && break; done
            echo "NET: link-recovered cycle=$cycle secs=$(since "$t0")"
            pingcheck link-up-$cycle -c 5 -i 0.1 -w 10
        done
    fi
    barrier 1
    stats
    ;;
hostfwd)
    # QEMU user networking: the host reaches the guest through hostfwd
    # (httpd on 8081, an echo server on 8080), the guest reaches the host
    # at 10.0.2.2 (an upload to pvrs_net_hostport).
    ip route add default via 10.0.2.2
    mkdir -p /tmp/www
    dd if=/dev/urandom of=/tmp/www/blob bs=1M count=4 2>/dev/null
    httpd -p 8081 -h /tmp/www
    nc -l -p 8080 -e /bin/cat &
    echo_pid=$!
    sleep 0.5
    echo "NET: hostfwd-ready blob_sha=$(sha /tmp/www/blob) blob_bytes=$(stat -c %s /tmp/www/blob)"
    wait $echo_pid
    rc=$?
    echo "NET: hostfwd-echo rc=$rc"
    dd if=/dev/urandom of=/tmp/up bs=1M count=4 2>/dev/null
    nc $peer "$(arg pvrs_net_hostport)" </tmp/up
    rc=$?
    echo "NET: hostfwd-upload rc=$rc bytes=$(stat -c %s /tmp/up) sha=$(sha /tmp/up)"
    stats
    ;;
bench)
    # a serves iperf3, b measures: ping round trips, then TCP throughput.
    wait_peer
    [ "$role" = a ] && iperf3 -s >/dev/null 2>&1 &
    barrier 1
    if [ "$role" = b ]; then
        $PING -c 50 -i 0.05 -w 30 $peer >/tmp/ping.txt
        rc=$?
        echo "NET: bench-ping rc=$rc rtts_ms=$(sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' /tmp/ping.txt | tr '\n' ',')"
        iperf tcp -t 5
    fi
    barrier 2
    ;;
*)
    echo "NET: unknown pvrs_net=$mode"
    exit 94
    ;;
esac

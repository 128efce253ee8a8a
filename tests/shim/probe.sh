# What a container sees, printed the same way under Docker and under Dockyard.
echo "pid1=$(cat /proc/1/comm) me=$$"
echo "hostname_len=$(hostname | wc -c)"
grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
echo "uid=$(id -u) gid=$(id -g)"
echo "devices: $(ls /dev | tr '\n' ' ')"
awk '{print "mount", $5, $9, ($6 ~ /^ro/ ? "ro" : "rw")}' /proc/self/mountinfo | sort
echo "fds: $(ls /proc/self/fd | tr '\n' ' ')"
echo "net: $(ls /sys/class/net | tr '\n' ' ')"
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /sys/firmware; do
  [ -e $p ] && echo "masked $p: $(cat $p 2>/dev/null | wc -c) $(ls $p 2>/dev/null | wc -l)"
done
(echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo "/proc/sys writable" \
  || echo "/proc/sys read-only"

"""Dockyard's default seccomp profile, as data, in Docker's JSON profile format.

Docker's semantics, our own list: everything named here is allowed, anything else fails
with EPERM (the default action), and a syscall newer than every one named here (a number
above the highest this profile knows, per architecture) fails with ENOSYS, so that libc
falls back to an older call (`runtime.seccomp` adds that part). Groups are by purpose;
the conditional ones at the end open a door only to a container that holds the capability
which already guards it in the kernel, as Docker's profile does:

- CAP_SYS_ADMIN: namespaces (unshare, setns, clone with CLONE_NEW* flags, clone3),
  mount and the new mount API, bpf, perf_event_open, fanotify, quotactl, sethostname…
  (without it `clone` is allowed only when its flags ask for no new namespace, and
  `clone3`, whose flags live in memory a filter cannot read, fails with ENOSYS so that
  glibc falls back to `clone`);
- CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_SYS_RAWIO,
  CAP_SYS_NICE, CAP_SYS_PACCT, CAP_SYS_CHROOT, CAP_SYS_TTY_CONFIG, CAP_SYSLOG, CAP_BPF,
  CAP_PERFMON, CAP_DAC_READ_SEARCH (open_by_handle_at: the "shocker" escape).

Never allowed, whatever the capabilities: the kernel keyring (keyctl, add_key,
request_key: not namespaced), kexec_load and kexec_file_load, swapon/swapoff, userfaultfd,
the old uselib/nfsservctl/sysfs/_sysctl, and socket(AF_VSOCK, AF_ALG).

Pure data; `python -m dockyard_shim.runtime.seccomp` prints it as JSON, a starting point
for a custom profile (`--security-opt seccomp=FILE`).
"""

from __future__ import annotations

from typing import Any


def _names(text: str) -> list[str]:
    return sorted(set(text.split()))


_FILES = """
    access faccessat faccessat2 open openat openat2 creat close close_range read readv
    pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek
    sendfile sendfile64 splice tee vmsplice copy_file_range readahead fadvise64
    fadvise64_64 fallocate truncate truncate64 ftruncate ftruncate64 fsync fdatasync sync
    syncfs sync_file_range dup dup2 dup3 fcntl fcntl64 flock ioctl pipe pipe2
    stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64
    fstatfs fstatfs64 getdents getdents64 getcwd chdir fchdir umask
    mkdir mkdirat mknod mknodat rmdir link linkat unlink unlinkat symlink symlinkat rename
    renameat renameat2 readlink readlinkat chmod fchmod fchmodat fchmodat2 chown chown32
    fchown fchown32 fchownat lchown lchown32 utime utimes utimensat utimensat_time64
    futimesat name_to_handle_at memfd_create cachestat statmount listmount
"""
_XATTRS = """
    getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr
    flistxattr removexattr lremovexattr fremovexattr getxattrat setxattrat listxattrat
    removexattrat
"""
_EVENTS = """
    select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create
    epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait
    epoll_pwait2 eventfd eventfd2 signalfd signalfd4 timerfd_create timerfd_settime
    timerfd_settime64 timerfd_gettime timerfd_gettime64 inotify_init inotify_init1
    inotify_add_watch inotify_rm_watch fanotify_mark io_setup io_destroy io_submit
    io_cancel io_getevents io_pgetevents io_pgetevents_time64
"""
_MEMORY = """
    brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 munlock
    mlockall munlockall remap_file_pages membarrier pkey_alloc pkey_free pkey_mprotect
    memfd_secret map_shadow_stack mseal
"""
_PROCESSES = """
    fork vfork execve execveat exit exit_group wait4 waitid waitpid kill tkill tgkill
    getpid getppid gettid getpgid setpgid getpgrp getsid setsid set_tid_address
    set_robust_list get_robust_list rseq restart_syscall prctl
    pidfd_open pidfd_send_signal process_mrelease getpriority setpriority getrlimit
    setrlimit ugetrlimit prlimit64 getrusage times sysinfo uname getcpu
    sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
    sched_getparam sched_setparam sched_getscheduler sched_setscheduler
    sched_get_priority_max sched_get_priority_min sched_rr_get_interval
    sched_rr_get_interval_time64 ioprio_get ioprio_set capget capset seccomp
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
    get_thread_area set_thread_area uretprobe riscv_hwprobe
"""
_IDENTITY = """
    getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid
    getresuid32 getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32
    setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32
    setfsuid setfsuid32 setfsgid setfsgid32 setgroups setgroups32
"""
_SIGNALS_AND_TIME = """
    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack sigprocmask
    sigreturn pause alarm nanosleep clock_nanosleep clock_nanosleep_time64 clock_gettime
    clock_gettime64 clock_getres clock_getres_time64 gettimeofday time adjtimex
    clock_adjtime clock_adjtime64 getitimer setitimer timer_create timer_delete
    timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue getrandom
"""
_IPC = """
    shmget shmat shmdt shmctl semget semop semtimedop semtimedop_time64 semctl msgget msgsnd
    msgrcv msgctl ipc mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive
    mq_timedreceive_time64 mq_notify mq_getsetattr
"""
_NETWORK = """
    socketpair socketcall bind connect listen accept accept4 getsockname getpeername
    getsockopt setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg
    recvmmsg recvmmsg_time64
"""
_NAMESPACES_AND_MOUNTS = """
    unshare setns clone clone3 mount umount umount2 mount_setattr move_mount open_tree
    fsopen fsconfig fsmount fspick pivot_root sethostname setdomainname
    bpf perf_event_open fanotify_init quotactl quotactl_fd lookup_dcookie syslog
    lsm_get_self_attr lsm_set_self_attr lsm_list_modules
"""

_CLONE_NEW_ANY = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                  | 0x20000000 | 0x40000000)
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""

_AF_ALG, _AF_VSOCK = 38, 40
ENOSYS = 38


def _allow(names: str, **extra: Any) -> dict[str, Any]:
    return {"names": _names(names), "action": "SCMP_ACT_ALLOW", **extra}


def _with_cap(cap: str, names: str) -> dict[str, Any]:
    return _allow(names, includes={"caps": [cap]})


def _socket(index: int, value: int, op: str) -> dict[str, Any]:
    return {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": index, "value": value, "op": op}]}


def _personality(value: int) -> dict[str, Any]:
    return {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}


PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,  # EPERM
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64",
         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        _allow(" ".join((_FILES, _XATTRS, _EVENTS, _MEMORY, _PROCESSES, _IDENTITY,
                         _SIGNALS_AND_TIME, _IPC, _NETWORK))),
        # socket(2) for every address family but AF_ALG (kernel crypto, a history of
        # bugs) and AF_VSOCK (talks to the hypervisor): three ranges around them.
        _socket(0, _AF_ALG, "SCMP_CMP_LT"),
        _socket(0, _AF_ALG + 1, "SCMP_CMP_EQ"),
        _socket(0, _AF_VSOCK, "SCMP_CMP_GT"),
        # personality(2): the Linux personality and the ones `setarch`/`linux32` use, and
        # the query (0xffffffff); not the ones that change the address space layout.
        *(_personality(value) for value in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
        _allow("arch_prctl", includes={"arches": ["amd64", "x32"]}),
        _allow("modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
        _allow("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint "
               "cacheflush set_tls", includes={"arches": ["arm", "arm64"]}),
        # Since Linux 4.8 ptrace cannot be used to get around seccomp: allowed, as Docker
        # does; the kernel's own checks (same user, YAMA) still apply.
        _allow("ptrace process_vm_readv process_vm_writev",
               includes={"minKernel": "4.8"}),
        # ---- the rest only with the capability that guards them in the kernel
        _with_cap("CAP_SYS_ADMIN", _NAMESPACES_AND_MOUNTS),
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": _CLONE_NEW_ANY, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        _with_cap("CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise"),
        _with_cap("CAP_SYS_MODULE", "init_module finit_module delete_module"),
        _with_cap("CAP_SYS_BOOT", "reboot"),
        _with_cap("CAP_SYS_CHROOT", "chroot"),
        _with_cap("CAP_SYS_PACCT", "acct"),
        _with_cap("CAP_SYS_RAWIO", "iopl ioperm"),
        _with_cap("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
        _with_cap("CAP_SYS_TTY_CONFIG", "vhangup"),
        _with_cap("CAP_SYS_NICE", "mbind get_mempolicy set_mempolicy "
                                  "set_mempolicy_home_node"),
        _with_cap("CAP_SYSLOG", "syslog"),
        _with_cap("CAP_BPF", "bpf"),
        _with_cap("CAP_PERFMON", "perf_event_open"),
        _with_cap("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ],
}

/* The escape probe: run inside a container, it tries what an attacker would and prints one
 * line per attempt, "blocked <name>: <what was tried>: <error>" or "ESCAPED <name>: ...".
 * The exit status is the number of attempts that succeeded. Compiled statically by the root
 * test suite (tests/root/escape.rs) into a temporary directory; nothing binary is kept.
 *
 * Usage: escape-probe all HOST-ONLY-PATH | forkbomb | setuid-child | fill-disk PATH MAX-MIB
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int escaped;

static void result(const char *name, const char *tried, int ok, int err) {
    if (ok) {
        escaped++;
        printf("ESCAPED %s: %s: succeeded\n", name, tried);
    } else {
        printf("blocked %s: %s: %s (errno %d)\n", name, tried, strerror(err), err);
    }
    fflush(stdout);
}

/* a syscall that must fail: ok when it returned >= 0 */
#define TRY(name, tried, expr)                                                                 \
    do {                                                                                       \
        errno = 0;                                                                             \
        long rc_ = (long)(expr);                                                               \
        result(name, tried, rc_ >= 0, errno);                                                  \
    } while (0)

static void try_mounts(void) {
    mkdir("/tmp/m", 0755);
    TRY("mount-proc", "mount(proc, /tmp/m)", mount("proc", "/tmp/m", "proc", 0, NULL));
    TRY("mount-sysfs", "mount(sysfs, /tmp/m)", mount("sysfs", "/tmp/m", "sysfs", 0, NULL));
    TRY("mount-tmpfs", "mount(tmpfs, /tmp/m)", mount("tmpfs", "/tmp/m", "tmpfs", 0, NULL));
    TRY("remount-proc-sys-rw", "mount(MS_REMOUNT, /proc/sys rw)",
        mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    TRY("fsopen", "fsopen(tmpfs)", syscall(SYS_fsopen, "tmpfs", 0));
    TRY("open_tree", "open_tree(/, OPEN_TREE_CLONE)", syscall(SYS_open_tree, AT_FDCWD, "/", 1));
}

static void try_mknod(void) {
    /* the host's first virtio disk and first SCSI/SATA disk */
    int ok = 0, err = 0;
    const struct { const char *path; int maj, min; } disks[] = {
        {"/probe-vda", 253, 0}, {"/probe-sda", 8, 0}, {"/probe-mem", 1, 1}};
    for (unsigned i = 0; i < sizeof disks / sizeof disks[0]; i++) {
        errno = 0;
        if (mknod(disks[i].path, S_IFBLK | 0600, makedev(disks[i].maj, disks[i].min)) == 0 ||
            (i == 2 && mknod(disks[i].path, S_IFCHR | 0600, makedev(1, 1)) == 0)) {
            int fd = open(disks[i].path, O_RDONLY);
            char buf[512];
            if (fd >= 0 && read(fd, buf, sizeof buf) > 0) ok = 1;
            else err = errno;
            if (fd >= 0) close(fd);
            unlink(disks[i].path);
        } else {
            err = errno;
        }
    }
    result("mknod-host-disk", "mknod b 253:0 / 8:0, c 1:1 (/dev/mem) on / and read", ok, err);
}

static void try_kernel(void) {
    TRY("init_module", "init_module(empty)", syscall(SYS_init_module, "", 0, ""));
    int fd = open("/dev/null", O_RDONLY);
    TRY("finit_module", "finit_module(/dev/null)", syscall(SYS_finit_module, fd, "", 0));
    close(fd);
    TRY("kexec_load", "kexec_load(0 segments)", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    /* LINUX_REBOOT_CMD_CAD_OFF is harmless if it ever succeeded */
    TRY("reboot", "reboot(CAD_OFF)",
        syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, 0));
    TRY("bpf", "bpf(BPF_MAP_CREATE)", syscall(SYS_bpf, 0, NULL, 0));
    TRY("keyctl", "keyctl(GET_KEYRING_ID)", syscall(SYS_keyctl, 0, -3, 0));
    TRY("perf_event_open", "perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    TRY("userfaultfd", "userfaultfd", syscall(SYS_userfaultfd, 0));
    TRY("syslog", "syslog(READ_ALL) (dmesg)", syscall(SYS_syslog, 3, (char[64]){0}, 64));
}

static void try_write(const char *name, const char *path, const char *data) {
    char tried[256];
    snprintf(tried, sizeof tried, "write %s", path);
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        result(name, tried, 0, errno);
        return;
    }
    errno = 0;
    ssize_t n = write(fd, data, strlen(data));
    result(name, tried, n > 0, errno);
    close(fd);
}

static void try_read(const char *name, const char *path) {
    char tried[256], buf[256];
    snprintf(tried, sizeof tried, "read %s", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        result(name, tried, 0, errno);
        return;
    }
    errno = 0;
    ssize_t n = read(fd, buf, sizeof buf);
    result(name, tried, n > 0, n == 0 ? ENODATA : errno);
    close(fd);
}

static void try_proc_sys(void) {
    /* 'h' only prints help to the kernel log; 3 drops clean caches */
    try_write("sysrq-trigger", "/proc/sysrq-trigger", "h");
    try_write("drop-caches", "/proc/sys/vm/drop_caches", "3");
    try_read("kcore", "/proc/kcore");
    try_read("kmsg", "/dev/kmsg");
    try_read("timer-list", "/proc/timer_list");
    try_read("proc-keys", "/proc/keys");
    try_write("sys-write", "/sys/kernel/uevent_helper", "/x");
    try_write("sys-write-thp", "/sys/kernel/mm/transparent_hugepage/enabled", "never");
    try_write("sys-write-profiling", "/sys/kernel/profiling", "1");
    char path[] = "/sys/probe-file";
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    result("sys-create", "create /sys/probe-file", fd >= 0, errno);
    if (fd >= 0) close(fd);
}

static void try_ptrace(void) {
    /* pid 1 is the runtime's init; the host's pids are not visible at all */
    TRY("ptrace-init", "ptrace(ATTACH, 1)", ptrace(PTRACE_ATTACH, 1, 0, 0));
    if (escaped) ptrace(PTRACE_DETACH, 1, 0, 0);
    /* a host pid (the probe's parent outside is not in our pid namespace) */
    int found = 0;
    for (pid_t p = 2; p < 64 && !found; p++) {
        if (p == getpid() || p == getppid()) continue;
        errno = 0;
        if (ptrace(PTRACE_ATTACH, p, 0, 0) == 0) {
            found = 1;
            ptrace(PTRACE_DETACH, p, 0, 0);
        }
    }
    result("ptrace-outside", "ptrace(ATTACH) pids 2..64 not ours", found, errno);
}

static void try_namespaces(void) {
    TRY("unshare-user", "unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER));
    TRY("unshare-mount", "unshare(CLONE_NEWNS)", unshare(CLONE_NEWNS));
    /* clone with CLONE_NEWUSER: a child that regains capabilities in a new namespace */
    errno = 0;
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    result("clone-newuser", "clone(CLONE_NEWUSER)", pid > 0, errno);
    int fd = open("/proc/1/ns/mnt", O_RDONLY);
    int open_err = errno;
    if (fd < 0) result("setns-init", "open /proc/1/ns/mnt to setns", 0, open_err);
    else TRY("setns-init", "setns(/proc/1/ns/mnt)", setns(fd, 0));
    if (fd >= 0) close(fd);
}

static const char *host_marker = "/nonexistent";

static void try_chroot(void) {
    /* the classic double chroot: chroot into a subdir while keeping a dir fd above it, climb
     * with .. past the root, chroot there; then look for the host's marker */
    int ok = 0, err = 0;
    pid_t pid = fork();
    if (pid == 0) {
        mkdir("/tmp/jail", 0755);
        int dirfd = open("/", O_RDONLY | O_DIRECTORY);
        if (chroot("/tmp/jail") != 0) _exit(2);
        if (fchdir(dirfd) != 0) _exit(2);
        for (int i = 0; i < 64; i++) chdir("..");
        if (chroot(".") != 0) _exit(2);
        struct stat st;
        /* a path that exists on the host and not in the container */
        _exit(stat(host_marker, &st) == 0 ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok = WIFEXITED(status) && WEXITSTATUS(status) == 1;
    err = WIFEXITED(status) && WEXITSTATUS(status) == 2 ? EPERM : ENOENT;
    result("double-chroot", "chroot(subdir), fchdir(old root), cd .. x64, chroot(.)", ok, err);
}

static void try_rlimits(void) {
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    struct rlimit up = {r.rlim_max + 1, r.rlim_max + 1};
    TRY("raise-nofile", "setrlimit(NOFILE, hard + 1)", setrlimit(RLIMIT_NOFILE, &up));
    getrlimit(RLIMIT_NPROC, &r);
    if (r.rlim_max != RLIM_INFINITY) {
        struct rlimit up2 = {r.rlim_max + 1, r.rlim_max + 1};
        TRY("raise-nproc", "setrlimit(NPROC, hard + 1)", setrlimit(RLIMIT_NPROC, &up2));
    }
    printf("info rlimits: nofile %llu, nproc %llu\n", (unsigned long long)r.rlim_cur,
           (unsigned long long)r.rlim_max);
}

static void try_capabilities(void) {
    /* the bounding set must hold neither CAP_SYS_ADMIN (21) nor CAP_SYS_MODULE (16) */
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long bnd = ~0ULL, eff = ~0ULL, prm = ~0ULL, inh = ~0ULL, amb = ~0ULL;
    int nnp = -1, seccomp = -1;
    while (f && fgets(line, sizeof line, f)) {
        sscanf(line, "CapBnd: %llx", &bnd);
        sscanf(line, "CapEff: %llx", &eff);
        sscanf(line, "CapPrm: %llx", &prm);
        sscanf(line, "CapInh: %llx", &inh);
        sscanf(line, "CapAmb: %llx", &amb);
        sscanf(line, "NoNewPrivs: %d", &nnp);
        sscanf(line, "Seccomp: %d", &seccomp);
    }
    if (f) fclose(f);
    printf("info caps: bnd %llx eff %llx prm %llx inh %llx amb %llx nnp %d seccomp %d\n", bnd, eff,
           prm, inh, amb, nnp, seccomp);
    unsigned long long bad = (1ULL << 21) | (1ULL << 16) | (1ULL << 19) | (1ULL << 17);
    unsigned long long all = bnd | eff | prm | inh | amb;
    result("cap-sets", "CAP_SYS_ADMIN/MODULE/PTRACE/RAWIO in any of the five sets",
           (all & bad) != 0, EPERM);
    result("no-new-privs", "NoNewPrivs unset", nnp != 1, EPERM);
    result("seccomp-mode", "Seccomp not in filter mode", seccomp != 2, EPERM);
}

static void try_setuid(const char *self) {
    /* a setuid-root copy of this probe, run as nobody: with no_new_privs it stays nobody */
    int ok = 0, err = EPERM;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s /suid-probe && chown 0:0 /suid-probe && chmod 4755 /suid-probe", self);
    if (system(cmd) != 0) {
        result("setuid", "make a setuid-root copy", 0, EIO);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) || setuid(65534)) _exit(3);
        execl("/suid-probe", "suid", "setuid-child", NULL);
        _exit(3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3) err = EACCES;
    result("setuid", "exec a setuid-root file as nobody, expect euid 0", ok, err);
    unlink("/suid-probe");
}

static void try_fds(void) {
    /* anything open but the standard descriptors and the directory being listed */
    DIR *d = opendir("/proc/self/fd");
    int leaked = 0;
    struct dirent *e;
    char link[512], what[1024] = "";
    while (d && (e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d)) continue;
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(p, link, sizeof link - 1);
        link[n > 0 ? n : 0] = 0;
        leaked++;
        snprintf(what + strlen(what), sizeof what - strlen(what), " %d->%s", fd, link);
    }
    if (d) closedir(d);
    if (leaked) printf("info inherited fds:%s\n", what);
    result("inherited-fd", "find an open descriptor beyond 0-2", leaked > 0, EBADF);
    /* runc's CVE-2024-21626: a cwd or fd into the host */
    char cwd[512];
    if (getcwd(cwd, sizeof cwd) == NULL) {
        result("cwd-outside", "getcwd", 1, 0);
    }
}

static void try_exe(void) {
    /* every process whose exe is not ours: open its /proc/PID/exe for writing, directly and
     * through an O_PATH descriptor re-opened via /proc/self/fd */
    DIR *d = opendir("/proc");
    struct dirent *e;
    int ok = 0, err = ENOENT, tried = 0;
    while (d && (e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid == getpid()) continue;
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/exe", pid);
        tried++;
        int fd = open(p, O_WRONLY);
        if (fd >= 0) {
            ok = 1;
            close(fd);
            printf("info opened %s for writing\n", p);
            continue;
        }
        err = errno;
        int pfd = open(p, O_PATH);
        if (pfd >= 0) {
            char q[64];
            snprintf(q, sizeof q, "/proc/self/fd/%d", pfd);
            int w = open(q, O_WRONLY);
            if (w >= 0) {
                ok = 1;
                close(w);
            } else {
                err = errno;
            }
            close(pfd);
        }
    }
    if (d) closedir(d);
    char tried_s[128];
    snprintf(tried_s, sizeof tried_s, "open /proc/PID/exe O_WRONLY (and O_PATH re-open) of %d processes", tried);
    result("overwrite-runtime", tried_s, ok, err);
}

static int forkbomb(void) {
    /* fork until refused; report how many lived; then everything exits */
    int n = 0;
    for (int i = 0; i < 100000; i++) {
        pid_t p = fork();
        if (p == 0) {
            pause();
            _exit(0);
        }
        if (p < 0) break;
        n++;
    }
    printf("forked %d\n", n);
    fflush(stdout);
    kill(0, SIGKILL);
    return 0;
}

/* writes 1 MiB blocks to PATH up to MAX-MIB (well past the container's disk limit) and
 * fsyncs; the write or the fsync must fail with ENOSPC before the end */
static int fill_disk(const char *path, int max_mib) {
    static char block[1 << 20];
    memset(block, 'x', sizeof block);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        result("fill-disk", "open", 0, errno);
        return 1;
    }
    int mib = 0, err = 0;
    for (; mib < max_mib; mib++) {
        size_t done = 0;
        while (done < sizeof block) {
            ssize_t n = write(fd, block + done, sizeof block - done);
            if (n < 0) {
                err = errno;
                break;
            }
            done += (size_t)n;
        }
        if (err) break;
    }
    if (!err && fsync(fd) < 0) err = errno;
    close(fd);
    char tried[160];
    snprintf(tried, sizeof tried, "write %d MiB to %s (wrote %d MiB)", max_mib, path, mib);
    result("fill-disk", tried, err == 0, err);
    return escaped;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "setuid-child") == 0) return geteuid() == 0 ? 0 : 1;
    if (argc > 1 && strcmp(argv[1], "forkbomb") == 0) return forkbomb();
    if (argc > 3 && strcmp(argv[1], "fill-disk") == 0) return fill_disk(argv[2], atoi(argv[3]));
    if (argc > 2) host_marker = argv[2];
    printf("info uid %d euid %d\n", getuid(), geteuid());
    try_capabilities();
    try_fds();
    try_mounts();
    try_mknod();
    try_kernel();
    try_proc_sys();
    try_ptrace();
    try_namespaces();
    try_chroot();
    try_rlimits();
    try_setuid(argv[0]);
    try_exe();
    printf("escaped %d\n", escaped);
    return escaped;
}

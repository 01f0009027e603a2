/*
 * A hog for one of the kernel's per-user counters (ATTACKS.md A35): take as much of it as the
 * kernel gives, say how much, then hold it for HOLD seconds. Usage: per_user RESOURCE HOLD
 *   inotify_instances  inotify_init1 until it fails (fs.inotify.max_user_instances)
 *   inotify_watches    watches on many files across instances (fs.inotify.max_user_watches)
 *   epoll_watches      every fd into every epoll instance (fs.epoll.max_user_watches)
 *   mqueue_bytes       POSIX message queues (RLIMIT_MSGQUEUE, counted per user)
 *   sigpending         queued real-time signals (RLIMIT_SIGPENDING, counted per user)
 *   shm_lock           SysV shared memory locked with SHM_LOCK (RLIMIT_MEMLOCK, per user)
 *   pipe_pages         pipe buffers grown to 1 MiB (fs.pipe-user-pages-soft, per user)
 * Prints "held <what> <count> <errno of the refusal>" once it has all it can get.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

static long held;
static int refusal;

static void take_inotify_instances(void)
{
    while (inotify_init1(IN_CLOEXEC) >= 0)
        held++;
    refusal = errno;
}

static void take_inotify_watches(void)
{
    enum { FILES = 20000, INSTANCES = 100 };
    mkdir("/workspace/w", 0700);
    char path[64];
    for (int i = 0; i < FILES; i++) {
        snprintf(path, sizeof(path), "/workspace/w/%d", i);
        close(open(path, O_CREAT | O_WRONLY, 0600));
    }
    for (int n = 0; n < INSTANCES; n++) {
        int fd = inotify_init1(IN_CLOEXEC);
        if (fd < 0) {
            refusal = errno;
            return;
        }
        for (int i = 0; i < FILES; i++) {
            snprintf(path, sizeof(path), "/workspace/w/%d", i);
            if (inotify_add_watch(fd, path, IN_MODIFY) < 0) {
                refusal = errno;
                return;
            }
            held++;
        }
    }
}

static void take_epoll_watches(void)
{
    enum { TARGETS = 2000, EPOLLS = 4000 };
    int targets[TARGETS];
    for (int i = 0; i < TARGETS; i++)
        targets[i] = eventfd(0, EFD_CLOEXEC);
    for (int n = 0; n < EPOLLS; n++) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) {
            refusal = errno;
            return;
        }
        for (int i = 0; i < TARGETS; i++) {
            struct epoll_event ev = {.events = EPOLLIN};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, targets[i], &ev) < 0) {
                refusal = errno;
                return;
            }
            held++;
        }
    }
}

static void take_mqueue_bytes(void)
{
    struct mq_attr attr = {.mq_maxmsg = 10, .mq_msgsize = 8192};
    char name[32];
    for (int i = 0; i < 256; i++) {
        snprintf(name, sizeof(name), "/hog%d", i);
        if (mq_open(name, O_CREAT | O_RDWR, 0600, &attr) < 0) {
            refusal = errno;
            return;
        }
        held++;
    }
}

static void take_sigpending(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    union sigval value = {.sival_int = 0};
    while (sigqueue(getpid(), SIGRTMIN, value) == 0)
        held++;
    refusal = errno;
}

static void take_shm_lock(void)
{
    for (;;) {
        int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
        if (id < 0 || shmctl(id, SHM_LOCK, NULL) < 0) {
            refusal = errno;
            return;
        }
        held++;
    }
}

static void take_pipe_pages(void)
{
    int fds[2];
    while (pipe2(fds, O_CLOEXEC) == 0) {
        if (fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) < 0) {
            refusal = errno;
            return;
        }
        held++;
    }
    refusal = errno;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *what = argv[1];
    struct {
        const char *name;
        void (*take)(void);
    } hogs[] = {
        {"inotify_instances", take_inotify_instances}, {"inotify_watches", take_inotify_watches},
        {"epoll_watches", take_epoll_watches},         {"mqueue_bytes", take_mqueue_bytes},
        {"sigpending", take_sigpending},               {"shm_lock", take_shm_lock},
        {"pipe_pages", take_pipe_pages},
    };
    for (size_t i = 0; i < sizeof(hogs) / sizeof(hogs[0]); i++) {
        if (strcmp(what, hogs[i].name) == 0) {
            hogs[i].take();
            printf("held %s %ld %d\n", what, held, refusal);
            fflush(stdout);
            sleep((unsigned)atoi(argv[2]));
            return 0;
        }
    }
    return 2;
}

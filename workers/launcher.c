/*
 * airlock-init: PID 1 of every Airlock job container (workers/launcher.py documents the frame).
 *
 * Usage: airlock-init MAX_WAIT_SECONDS [STDIN STDOUT STDERR STATUS]. With the four paths (FIFOs
 * the worker made and bound into the container), it first opens STDOUT and STDERR for writing,
 * STATUS for writing (close-on-exec: the job never holds it) and STDIN for reading, in that
 * order, as its own fds 1, 2, 3 and 0: the job's I/O then never passes through the engine, and
 * the worker knows the launcher is up once its STDIN open succeeds. The worker then takes every
 * permission on STATUS away, so no process of the job can open it: the line the launcher writes
 * there at the end ("airlock-status exit N", "... signal S", "... deadline", or "... launcher N"
 * for its own failures, first: a job that cannot be started says so from the child) is the
 * job's real wait status, which the job cannot forge.
 * Those opens wait at most 30 s (or MAX_WAIT_SECONDS if shorter), then it exits 124.
 *
 * Waits at most MAX_WAIT_SECONDS for one framed payload on stdin, reading exactly the frame and
 * not a byte more (the job's own stdin follows it in the same stream). Then: non-dumpable,
 * umask 022, the job's files written under its cwd without following any symlink, the job
 * forked and exec'd with exactly its argv and env (argv[0] looked up on the job env's PATH),
 * every process reaped, and everything killed when the job's main process ends or when the
 * payload's deadline passes. Exits with the job's status (128+signal for a signal; 137 at the
 * deadline), or 124 (a stdio path could not be opened), 125 (no payload / cut short), 126
 * (malformed payload, files not writable), 127 (the job could not be started).
 *
 * Outside a PID namespace (getpid() != 1: the host's tests run it as a normal child) it never
 * kills -1: it becomes a child subreaper and kills the job's process group instead.
 *
 * Build: scripts/build-launcher.sh (gcc -std=c11 -Wall -Wextra -Werror -O2 -static).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_NO_STDIO 124
#define EXIT_NO_PAYLOAD 125
#define EXIT_BAD_PAYLOAD 126
#define EXIT_EXEC_FAILED 127
#define EXIT_DEADLINE (128 + SIGKILL)

#define MAGIC "AIRLOCK1 "
#define MAGIC_LEN (sizeof(MAGIC) - 1)
#define MAX_HEADER 32u                 /* "AIRLOCK1 " and at most 23 more bytes */
#define MAX_BODY (64u * 1024u * 1024u) /* also workers/launcher.py's MAX_BODY */
#define MAX_COUNT 65536u               /* argv entries, env entries, files: each */
#define MAX_WAIT_S (1u << 30)
/* The stdio FIFOs open at start or never: the worker holds the output ends before the start
 * and opens stdin's right after (its own wait is shorter). If it died in between, the launcher
 * must not wait for a payload that cannot come (also workers/launcher.py's STDIO_WAIT_S). */
#define STDIO_WAIT_S 30u
#define DEFAULT_PATH "/bin:/usr/bin"   /* Python's os.defpath, for an env without PATH */
/* After its word on the status pipe, the launcher waits this long at most for the worker to
 * read it (the worker closes its end): meanwhile the container, and its cgroup counters (the
 * OOM count above all), still exist for the worker to sample. */
#define ACK_WAIT_MS 1000

/* --- messages and exits (async-signal-safe: one write, then _exit) ------------------------ */

static int status_fd = -1; /* the STATUS FIFO, once open */

/* "airlock-status <kind> <value>\n" on the status channel, in one write (atomic: < PIPE_BUF). */
static void report(const char *kind, unsigned value)
{
    if (status_fd < 0)
        return;
    char line[64] = "airlock-status ";
    size_t n = 15;
    for (const char *p = kind; *p != '\0' && n < 40; p++)
        line[n++] = *p;
    line[n++] = ' ';
    char digits[12];
    size_t d = 0;
    do {
        digits[d++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0 && d < sizeof(digits));
    while (d > 0)
        line[n++] = digits[--d];
    line[n++] = '\n';
    ssize_t ignored = write(status_fd, line, n);
    (void)ignored;
}

static _Noreturn void die(int code, const char *a, const char *b, const char *c, const char *d,
                          const char *e)
{
    char line[1024];
    size_t n = 0;
    const char *parts[] = {"airlock: ", a, b, c, d, e};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (const char *p = parts[i]; p != NULL && *p != '\0' && n < sizeof(line) - 1; p++)
            line[n++] = *p;
    }
    line[n++] = '\n';
    ssize_t ignored = write(2, line, n);
    (void)ignored;
    report("launcher", (unsigned)code);
    _exit(code);
}

static _Noreturn void fail(int code, const char *msg)
{
    die(code, msg, NULL, NULL, NULL, NULL);
}

/* "airlock: cannot run 'x': No such file or directory" */
static _Noreturn void fail_errno(int code, const char *what, const char *name, int err)
{
    die(code, what, " '", name, "': ", strerror(err));
}

/* What the pending alarm means: set before each alarm(), read by the handler. */
static volatile sig_atomic_t alarm_code = EXIT_NO_PAYLOAD;
static const char *volatile alarm_msg = "no job arrived in time";

static void on_alarm(int sig)
{
    (void)sig;
    fail((int)alarm_code, alarm_msg);
}

/* --- reading the frame: the header byte by byte, the body with exact-length reads ---------- */

static size_t read_header(void)
{
    char line[MAX_HEADER];
    size_t len = 0;
    for (;;) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail(EXIT_NO_PAYLOAD, "no payload");
        if (c == '\n')
            break;
        if (len >= sizeof(line) || (len < MAGIC_LEN && c != MAGIC[len]))
            fail(EXIT_BAD_PAYLOAD, "malformed payload");
        line[len++] = c;
    }
    if (len <= MAGIC_LEN)
        fail(EXIT_BAD_PAYLOAD, "malformed payload");
    size_t size = 0;
    for (size_t i = MAGIC_LEN; i < len; i++) {
        if (line[i] < '0' || line[i] > '9')
            fail(EXIT_BAD_PAYLOAD, "malformed payload");
        size = size * 10 + (size_t)(line[i] - '0'); /* size <= MAX_BODY before: no overflow */
        if (size > MAX_BODY)
            fail(EXIT_BAD_PAYLOAD, "malformed payload");
    }
    return size;
}

static void read_exact(unsigned char *buf, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(0, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail(EXIT_NO_PAYLOAD, "payload cut short");
        got += (size_t)r;
    }
}

/* --- parsing the body in place: every check against the bytes left ----------------------- */

struct cursor {
    unsigned char *p;
    size_t left;
};

static _Noreturn void malformed(void)
{
    fail(EXIT_BAD_PAYLOAD, "malformed payload");
}

static uint32_t take_u32(struct cursor *c)
{
    if (c->left < 4)
        malformed();
    uint32_t v = (uint32_t)c->p[0] << 24 | (uint32_t)c->p[1] << 16 | (uint32_t)c->p[2] << 8 |
                 (uint32_t)c->p[3];
    c->p += 4;
    c->left -= 4;
    return v;
}

/* A string: u32 length, the bytes (no NUL among them), then a NUL the length does not count. */
static char *take_str(struct cursor *c)
{
    uint32_t n = take_u32(c);
    if ((size_t)n >= c->left) /* needs n + 1 bytes */
        malformed();
    char *s = (char *)c->p;
    if (s[n] != '\0' || memchr(s, '\0', n) != NULL)
        malformed();
    c->p += (size_t)n + 1;
    c->left -= (size_t)n + 1;
    return s;
}

static const unsigned char *take_bytes(struct cursor *c, size_t *size)
{
    uint32_t n = take_u32(c);
    if ((size_t)n > c->left)
        malformed();
    const unsigned char *b = c->p;
    c->p += n;
    c->left -= n;
    *size = n;
    return b;
}

/* Counts are bounded by MAX_COUNT and by what the bytes left could hold (min_each apiece). */
static size_t take_count(struct cursor *c, size_t min_each)
{
    uint32_t n = take_u32(c);
    if (n > MAX_COUNT || (size_t)n > c->left / min_each)
        malformed();
    return n;
}

static char **take_strs(struct cursor *c, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    if (out == NULL)
        fail(EXIT_BAD_PAYLOAD, "payload too large for memory");
    for (size_t i = 0; i < n; i++)
        out[i] = take_str(c);
    return out;
}

/* A file name: relative, components neither empty nor "." nor "..", each at most NAME_MAX. */
static int good_name(const char *name)
{
    if (*name == '\0' || *name == '/')
        return 0;
    const char *p = name;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
            (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (end == NULL)
            return 1;
        p = end + 1;
    }
}

struct job {
    uint32_t deadline_ms;
    const char *cwd;
    char **argv;
    char **env;
    struct cursor files; /* validated; walked again to write them */
    size_t nfiles;
};

/* A file's mode: 0644, or 0755 for an executable one (an archive member with an execute bit). */
#define FILE_MODE 0644u
#define EXEC_MODE 0755u

static void parse(unsigned char *body, size_t size, struct job *job)
{
    struct cursor c = {body, size};
    job->deadline_ms = take_u32(&c);
    job->cwd = take_str(&c);
    if (job->cwd[0] != '/')
        malformed();
    size_t argc = take_count(&c, 5);
    if (argc == 0)
        malformed();
    job->argv = take_strs(&c, argc);
    size_t envc = take_count(&c, 5);
    job->env = take_strs(&c, envc);
    for (size_t i = 0; i < envc; i++) {
        const char *eq = strchr(job->env[i], '=');
        if (eq == NULL || eq == job->env[i])
            malformed();
    }
    job->nfiles = take_count(&c, 13);
    job->files = c;
    for (size_t i = 0; i < job->nfiles; i++) {
        size_t n;
        if (!good_name(take_str(&c)))
            malformed();
        uint32_t mode = take_u32(&c);
        if (mode != FILE_MODE && mode != EXEC_MODE)
            malformed();
        (void)take_bytes(&c, &n);
    }
    if (c.left != 0)
        malformed();
}

/* --- the job's files: mkdirat/openat from cwd, O_NOFOLLOW at every step -------------------- */

static int write_all(int fd, const unsigned char *data, size_t size)
{
    while (size > 0) {
        ssize_t w = write(fd, data, size);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        data += w;
        size -= (size_t)w;
    }
    return 0;
}

static void write_file(int base, const char *name, mode_t mode, const unsigned char *data,
                       size_t size)
{
    char part[NAME_MAX + 1];
    int dir = base;
    const char *p = name;
    const char *slash;
    while ((slash = strchr(p, '/')) != NULL) {
        size_t n = (size_t)(slash - p); /* <= NAME_MAX: good_name */
        memcpy(part, p, n);
        part[n] = '\0';
        if (mkdirat(dir, part, 0777) < 0 && errno != EEXIST)
            fail_errno(EXIT_BAD_PAYLOAD, "cannot write", name, errno);
        int next = openat(dir, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        if (dir != base)
            close(dir);
        if (next < 0)
            fail_errno(EXIT_BAD_PAYLOAD, "cannot write", name, err);
        dir = next;
        p = slash + 1;
    }
    int fd = openat(dir, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    int err = errno;
    if (dir != base)
        close(dir);
    if (fd < 0)
        fail_errno(EXIT_BAD_PAYLOAD, "cannot write", name, err);
    if (write_all(fd, data, size) < 0 || close(fd) < 0)
        fail_errno(EXIT_BAD_PAYLOAD, "cannot write", name, errno);
}

static void write_files(const struct job *job)
{
    if (job->nfiles == 0)
        return;
    int base = open(job->cwd, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (base < 0)
        fail_errno(EXIT_BAD_PAYLOAD, "cannot write into", job->cwd, errno);
    struct cursor c = job->files;
    for (size_t i = 0; i < job->nfiles; i++) {
        size_t size;
        const char *name = take_str(&c);
        mode_t mode = (mode_t)take_u32(&c);
        const unsigned char *data = take_bytes(&c, &size);
        write_file(base, name, mode, data, size);
    }
    close(base);
}

/* --- exec: like Python's os.execvpe, PATH taken from the job's env ------------------------- */

static const char *env_path(char **env)
{
    for (size_t i = 0; env[i] != NULL; i++) {
        if (strncmp(env[i], "PATH=", 5) == 0)
            return env[i] + 5;
    }
    return DEFAULT_PATH;
}

/* Returns the errno to report: the first error other than ENOENT/ENOTDIR, else the last. */
static int exec_search(char **argv, char **env)
{
    const char *file = argv[0];
    if (strchr(file, '/') != NULL) {
        execve(file, argv, env);
        return errno;
    }
    size_t flen = strlen(file);
    int saved = 0, last = ENOENT;
    const char *dir = env_path(env);
    for (;;) {
        const char *end = strchr(dir, ':');
        size_t dlen = end != NULL ? (size_t)(end - dir) : strlen(dir);
        char *full = malloc(dlen + 1 + flen + 1);
        if (full == NULL)
            return ENOMEM;
        size_t n = 0;
        if (dlen > 0) {
            memcpy(full, dir, dlen);
            n = dlen;
            if (full[n - 1] != '/')
                full[n++] = '/';
        }
        memcpy(full + n, file, flen + 1);
        execve(full, argv, env);
        last = errno;
        free(full);
        if (last != ENOENT && last != ENOTDIR && saved == 0)
            saved = last;
        if (end == NULL)
            break;
        dir = end + 1;
    }
    return saved != 0 ? saved : last;
}

/* --- the init ------------------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

#define USAGE "usage: airlock-init MAX_WAIT_SECONDS [STDIN STDOUT STDERR STATUS]"

static unsigned parse_wait(const char *arg)
{
    unsigned long v = 0;
    if (arg == NULL || *arg == '\0')
        fail(EXIT_BAD_PAYLOAD, USAGE);
    for (const char *p = arg; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            fail(EXIT_BAD_PAYLOAD, USAGE);
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > MAX_WAIT_S)
            v = MAX_WAIT_S; /* stays bounded: no overflow however long the digits run */
    }
    return v == 0 ? 1 : (unsigned)v;
}

/* Open path as fd target. Blocking, as FIFOs open (a writer waits for a reader, a reader for a
 * writer): the alarm set before bounds the wait. Never through a symlink. */
static void open_as(const char *path, int flags, int target)
{
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        fail_errno(EXIT_NO_STDIO, "cannot open", path, errno);
    if (fd != target) {
        if (dup2(fd, target) < 0) /* the copy at target is not close-on-exec */
            fail_errno(EXIT_NO_STDIO, "cannot open", path, errno);
        close(fd);
    } else if (fcntl(fd, F_SETFD, 0) < 0) {
        fail_errno(EXIT_NO_STDIO, "cannot open", path, errno);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 6)
        fail(EXIT_BAD_PAYLOAD, USAGE);
    unsigned wait_s = parse_wait(argv[1]);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    if (argc == 6) {
        alarm_code = EXIT_NO_STDIO;
        alarm_msg = "the worker did not open the stdio FIFOs in time";
        alarm(wait_s < STDIO_WAIT_S ? wait_s : STDIO_WAIT_S);
        open_as(argv[3], O_WRONLY, 1);
        open_as(argv[4], O_WRONLY, 2);
        status_fd = open(argv[5], O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (status_fd < 0)
            fail_errno(EXIT_NO_STDIO, "cannot open", argv[5], errno);
        open_as(argv[2], O_RDONLY, 0);
        alarm(0);
        alarm_code = EXIT_NO_PAYLOAD;
        alarm_msg = "no job arrived in time";
    }
    alarm(wait_s);

    size_t size = read_header();
    unsigned char *body = malloc(size + 1);
    if (body == NULL)
        fail(EXIT_BAD_PAYLOAD, "payload too large for memory");
    read_exact(body, size);
    struct job job;
    parse(body, size, &job);
    alarm(0);
    /* No handler left: as PID 1 of its namespace, no signal from the job reaches it. */
    signal(SIGALRM, SIG_DFL);

    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    umask(022);
    write_files(&job);

    int init = getpid() == 1;
    if (!init)
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_errno(EXIT_EXEC_FAILED, "cannot run", job.argv[0], errno);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Every disposition to its default: an ignored one (SIGINT and SIGQUIT under a shell's
         * background job) would survive the exec into the job. */
        for (int s = 1; s < NSIG; s++)
            signal(s, SIG_DFL);
        if (!init)
            setpgid(0, 0);
        if (chdir(job.cwd) < 0)
            fail_errno(EXIT_EXEC_FAILED, "cannot run", job.argv[0], errno);
        fail_errno(EXIT_EXEC_FAILED, "cannot run", job.argv[0], exec_search(job.argv, job.env));
    }
    if (!init)
        setpgid(pid, pid); /* also here: no race with the kill below */
    close(0);

    int64_t deadline = now_ns() + (int64_t)job.deadline_ms * 1000000;
    int status = -1;
    while (status < 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            status = EXIT_DEADLINE;
            report("deadline", job.deadline_ms);
            break;
        }
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        sigtimedwait(&chld, NULL, &ts); /* a SIGCHLD, the timeout or EINTR: reap and look */
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p <= 0)
                break;
            if (p == pid) {
                status = exit_code(st);
                if (WIFSIGNALED(st))
                    report("signal", (unsigned)WTERMSIG(st));
                else
                    report("exit", (unsigned)WEXITSTATUS(st));
            }
        }
    }
    if (status_fd >= 0) { /* the worker closes its end once it has read the word */
        struct pollfd ack = {status_fd, 0, 0};
        while (poll(&ack, 1, ACK_WAIT_MS) < 0 && errno == EINTR)
            ;
    }
    kill(init ? -1 : -pid, SIGKILL);
    _exit(status);
}

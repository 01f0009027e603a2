/*
 * Foreign-ABI probe: compile and run INSIDE a job container (x86_64 only).
 *
 *   gcc -O2 -o foreign_abi foreign_abi.c && ./foreign_abi
 *
 * A 64-bit process can still enter the kernel through the i386 ABI (int $0x80)
 * and, where the kernel has CONFIG_X86_X32_ABI, the x32 ABI (syscall number
 * with bit 30 set). A seccomp profile that lists only SCMP_ARCH_X86_64 must
 * refuse both. Each attempt runs in a forked child; the probe prints one JSON
 * object: for each attempt, how the child ended ("returned" with the raw
 * return value, or "killed" with the signal).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define X32_BIT 0x40000000L
#define I386_GETPID 20
#define I386_UNSHARE 310
#define X86_64_GETPID 39
#define CLONE_NEWUSER 0x10000000L

static long native_getpid(void) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"((long)X86_64_GETPID) : "rcx", "r11", "memory");
    return ret;
}

static long int80(long nr, long arg1) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg1) : "memory");
    return ret;
}

static long int80_getpid(void) { return int80(I386_GETPID, 0); }
static long int80_unshare_newuser(void) { return int80(I386_UNSHARE, CLONE_NEWUSER); }

static long x32_getpid(void) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(X32_BIT | X86_64_GETPID) : "rcx", "r11", "memory");
    return ret;
}

/* Run fn in a child; the child sends the raw return value through a pipe. */
static void attempt(const char *name, long (*fn)(void), int last) {
    int fds[2];
    long value = 0;
    int status = 0;
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(2);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        close(fds[0]);
        long ret = fn();
        if (write(fds[1], &ret, sizeof ret) != (ssize_t)sizeof ret)
            _exit(3);
        _exit(0);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], &value, sizeof value);
    close(fds[0]);
    waitpid(pid, &status, 0);
    printf("  \"%s\": ", name);
    if (WIFSIGNALED(status))
        printf("{\"result\": \"killed\", \"signal\": %d, \"signal_name\": \"%s\"}",
               WTERMSIG(status), sigabbrev_np(WTERMSIG(status)));
    else if (got == (ssize_t)sizeof value)
        printf("{\"result\": \"returned\", \"value\": %ld}", value);
    else
        printf("{\"result\": \"exited\", \"code\": %d}", WEXITSTATUS(status));
    printf("%s\n", last ? "" : ",");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("{\n");
    attempt("native_getpid", native_getpid, 0);
    attempt("int80_getpid", int80_getpid, 0);
    attempt("int80_unshare_newuser", int80_unshare_newuser, 0);
    attempt("x32_getpid", x32_getpid, 1);
    printf("}\n");
    return 0;
}

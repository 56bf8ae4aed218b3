/*
 * cm-probe PORT PATH: the HTTP health probe of container-manager (docs/API.md, `health.http`).
 *
 * Sends `GET PATH HTTP/1.0` to 127.0.0.1:PORT (then [::1]:PORT if nothing listens there) from
 * inside the container, and exits 0 on a 2xx or 3xx answer, 1 otherwise, printing one line
 * (Docker keeps it as the probe's output). Built static (`cc -static`, by build.rs) so that
 * it runs in any image, with no shell, no curl, no DNS, and no files of the image: the
 * server bind-mounts it read-only at /.cm-probe and Docker runs it as the HEALTHCHECK.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Waits until fd is ready for `events` (or a second passes). */
static void wait_for(int fd, short events) {
    struct pollfd p = {fd, events, 0};
    poll(&p, 1, 1000);
}

static int connect_to(int family, long port) {
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc;
    if (family == AF_INET) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons((unsigned short)port);
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fputs("usage: cm-probe PORT PATH\n", stdout);
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    const char *path = argv[2];
    if (*argv[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        printf("cm-probe: bad port %s\n", argv[1]);
        return 2;
    }
    size_t plen = strlen(path);
    if (path[0] != '/' || plen > 1024) {
        fputs("cm-probe: the path must start with / (at most 1024 bytes)\n", stdout);
        return 2;
    }
    for (size_t i = 0; i < plen; i++) {
        if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f) {
            fputs("cm-probe: the path must be printable ASCII without spaces\n", stdout);
            return 2;
        }
    }
    int fd = connect_to(AF_INET, port);
    if (fd < 0) {
        int e4 = errno;
        fd = connect_to(AF_INET6, port);
        if (fd < 0) {
            printf("GET http://127.0.0.1:%ld%s: cannot connect: %s\n", port, path, strerror(e4));
            return 1;
        }
    }
    char req[1200];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%ld\r\nUser-Agent: cm-probe\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n",
                     path, port);
    for (int off = 0; off < n;) {
        ssize_t w = write(fd, req + off, (size_t)(n - off));
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                wait_for(fd, POLLOUT);
                continue;
            }
            printf("GET http://127.0.0.1:%ld%s: cannot send: %s\n", port, path, strerror(errno));
            return 1;
        }
        off += (int)w;
    }
    /* The status line: "HTTP/1.x NNN reason". */
    char buf[512];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        /* gVisor's host network may answer EAGAIN on a blocking socket: wait, then again
           (Docker's `timeout` ends a probe that waits too long). */
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_for(fd, POLLIN);
            continue;
        }
        if (r <= 0) break;
        got += (size_t)r;
        buf[got] = '\0';
        if (strchr(buf, '\n')) break;
    }
    close(fd);
    buf[got] = '\0';
    char *eol = strpbrk(buf, "\r\n");
    if (eol) *eol = '\0';
    int status = 0;
    if (strncmp(buf, "HTTP/", 5) != 0 || sscanf(buf, "HTTP/%*s %d", &status) != 1) {
        printf("GET http://127.0.0.1:%ld%s: not an HTTP answer: %.80s\n", port, path, buf);
        return 1;
    }
    printf("GET http://127.0.0.1:%ld%s: %s\n", port, path, buf);
    return (status >= 200 && status < 400) ? 0 : 1;
}

/* Starting a child process the way every part of ap does: ap stress's
 * daemon, the test harness's daemons and commands, the benchmark's servers
 * and clients. */
#ifndef AP_SPAWN_H
#define AP_SPAWN_H

#include <sys/types.h>

/* fork + execv(argv[0], argv). The child dies with the calling process
 * (PR_SET_PDEATHSIG, and it gives up if the parent is already gone), reads
 * stdin from in_fd (/dev/null when negative), writes stdout to out_fd and
 * stderr to err_fd, starts with every signal unblocked (the caller may
 * block some for its sigwaitinfo), and runs on CPU `cpu` alone when cpu >=
 * 0. Exec failure exits 127. Safe after grpc_init: the child only makes
 * async-signal-safe calls (and sched_setaffinity, a bare system call)
 * before exec. Returns the pid, or -1 when fork fails. The caller keeps
 * and closes its descriptors. */
pid_t ap_spawn(char *const argv[], int in_fd, int out_fd, int err_fd, int cpu);

#endif

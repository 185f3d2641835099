/* ap_spawn: see include/ap/spawn.h. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "ap/spawn.h"

pid_t ap_spawn(char *const argv[], int in_fd, int out_fd, int err_fd, int cpu)
{
	cpu_set_t cpus; /* built before fork: CPU_* may not be async-signal-safe */
	CPU_ZERO(&cpus);
	if (cpu >= 0)
		CPU_SET(cpu, &cpus);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
	if (in >= 0)
		dup2(in, 0);
	dup2(out_fd, 1);
	dup2(err_fd, 2);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (cpu >= 0)
		sched_setaffinity(0, sizeof cpus, &cpus);
	execv(argv[0], argv);
	_exit(127);
}

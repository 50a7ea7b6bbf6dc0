/*
 * A pod sandbox's placeholder process: holds the pod's namespaces, reaps orphaned
 * children when it is PID 1, and exits cleanly on SIGINT or SIGTERM.
 * Built statically by hermetic/node_image.py; written for this project.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (incident-harness)");
		return 0;
	}
	if (getpid() != 1) {
		fprintf(stderr, "pause: warning: not running as PID 1\n");
	}
	struct sigaction stop = {0};
	stop.sa_handler = on_stop;
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);
	struct sigaction child = {0};
	child.sa_handler = on_child;
	child.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &child, NULL);
	for (;;) {
		pause();
	}
}

// Command pause is the sandbox ("pause") image of the dev cluster's real nodes: no public registry is
// reachable, so containerd's sandbox_image is built locally from this program (devcluster.py build_scratch_image).
// It holds the pod's namespaces open, reaps the zombies of processes re-parented to it (it is PID 1 of
// the pod when the PID namespace is shared) and exits at once on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		reapChildren()
	}
}

func reapChildren() {
	for {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

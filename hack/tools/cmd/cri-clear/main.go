// Command cri-clear stops and removes every pod sandbox of one containerd through the CRI API, as
// `crictl stopp` + `crictl rmp` would (crictl is no Debian package here). Stopping a sandbox through
// CRI makes containerd run CNI DEL, release the pod's IP, unmount its network namespace and end its
// containers and shims, which killing processes would not. hack/devcluster.py runs it when a real
// node goes down, after its kubelet has stopped (so nothing restarts the pods).
//
// Usage: cri-clear unix:///path/to/containerd.sock
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	remote "k8s.io/cri-client/pkg"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cri-clear unix:///path/to/containerd.sock")
		os.Exit(2)
	}
	if err := clear(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "cri-clear:", err)
		os.Exit(1)
	}
}

func clear(endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runtime, err := remote.NewRemoteRuntimeService(ctx, endpoint, 30*time.Second, nil, false)
	if err != nil {
		return err
	}
	sandboxes, err := runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	for _, sandbox := range sandboxes {
		if err := runtime.StopPodSandbox(ctx, sandbox.Id); err != nil {
			return fmt.Errorf("stop pod %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err)
		}
		if err := runtime.RemovePodSandbox(ctx, sandbox.Id); err != nil {
			return fmt.Errorf("remove pod %s/%s: %w", sandbox.Metadata.Namespace, sandbox.Metadata.Name, err)
		}
	}
	fmt.Printf("cri-clear: removed %d pod sandbox(es)\n", len(sandboxes))
	return nil
}

//go:build tools

// Package tools pins the Go programs that hack/build-tools.sh compiles for the
// local control plane and its real worker nodes (kubelet, kube-proxy). Nothing
// here is ever linked into project code: the blank imports only keep the
// modules (and their exact versions) in go.mod. The dev cluster's own small
// node programs live in cmd/ of this module and build from the same pins.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)

// Command coredns is CoreDNS (pinned in go.mod) with only the plugins the dev cluster's cluster DNS
// needs, selected at compile time as CoreDNS documents for custom builds (instead of core/plugin, which
// links every plugin and its cloud SDKs). It serves cluster.local from the Kubernetes API and nothing
// else: without the forward plugin no query ever leaves the machine. Its own module because CoreDNS
// pins client-go and grpc versions that differ from Kubernetes' own (hack/tools).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives: the linked plugins in CoreDNS' plugin.cfg order (the order a query passes them).
var directives = []string{"ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }

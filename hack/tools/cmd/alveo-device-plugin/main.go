// Command alveo-device-plugin advertises the simulated Alveo cards of one real dev-cluster node to its
// kubelet through the kubelet device-plugin gRPC API (v1beta1), as AMD's device plugin does for real
// cards: one extended resource per card type, named from the partitioner's card catalog
// (amd.com/<shell>-<timestamp>), with one device per card. On Allocate it hands the container what XRT
// would see for the card(s) it got: ELASTICDF_CARD_INDEX (node-local card index, in the order of the
// cluster YAML), ELASTICDF_CARD_BDF (a simulated PCI address of the card's user function),
// ELASTICDF_CARD_TYPE and ELASTICDF_CARD_RESOURCE, plus the same as container annotations. No device
// nodes exist, so the response has no DeviceSpec.
//
// It registers through the kubelet's plugin watcher (a socket in <kubelet root dir>/plugins_registry)
// rather than the fixed /var/lib/kubelet/device-plugins/kubelet.sock, so several kubelets on one host
// (each with its own root dir) each get their own plugin.
//
// Go rather than Python+grpcio: the pinned k8s.io/kubelet module ships the generated v1beta1 stubs, and
// hack/build-tools.sh already builds from that module, so there is no protobuf generation step and no
// new Python dependency in the dev tools.
//
// Usage: alveo-device-plugin --registry-dir KUBELET_ROOT/plugins_registry --card u280=amd.com/... [--card ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// cardFlags collects --card TYPE=RESOURCE in the node's card order.
type cardFlags []card

type card struct {
	index    int
	cardType string
	resource string
}

func (c *cardFlags) String() string { return fmt.Sprint(*c) }

func (c *cardFlags) Set(value string) error {
	cardType, resource, ok := strings.Cut(value, "=")
	if !ok || cardType == "" || !strings.Contains(resource, "/") {
		return fmt.Errorf("want TYPE=RESOURCE (e.g. u280=amd.com/xilinx_u280_...), got %q", value)
	}
	*c = append(*c, card{index: len(*c), cardType: cardType, resource: resource})
	return nil
}

// simulatedBDF is the PCI address XRT would list for the user function of card `index`.
func simulatedBDF(index int) string { return fmt.Sprintf("0000:%02x:00.1", 0x81+index) }

func deviceID(index int) string { return "card" + strconv.Itoa(index) }

// plugin serves one resource (one card type) of the node.
type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	resource string
	cardType string
	cards    []card
	socket   string
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the (never changing) healthy device list once and keeps the stream open.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	devices := make([]*pluginapi.Device, 0, len(p.cards))
	for _, c := range p.cards {
		devices = append(devices, &pluginapi.Device{ID: deviceID(c.index), Health: pluginapi.Healthy})
	}
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devices}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	byID := map[string]card{}
	for _, c := range p.cards {
		byID[deviceID(c.index)] = c
	}
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.ContainerRequests {
		var indices, bdfs []string
		for _, id := range creq.DevicesIds {
			c, ok := byID[id]
			if !ok {
				return nil, fmt.Errorf("unknown device %q for %s", id, p.resource)
			}
			indices = append(indices, strconv.Itoa(c.index))
			bdfs = append(bdfs, simulatedBDF(c.index))
		}
		seen := map[string]string{
			"ELASTICDF_CARD_INDEX":    strings.Join(indices, ","),
			"ELASTICDF_CARD_BDF":      strings.Join(bdfs, ","),
			"ELASTICDF_CARD_TYPE":     p.cardType,
			"ELASTICDF_CARD_RESOURCE": p.resource,
		}
		annotations := map[string]string{
			"elasticdf.io/card-index": seen["ELASTICDF_CARD_INDEX"],
			"elasticdf.io/card-bdf":   seen["ELASTICDF_CARD_BDF"],
		}
		resp.ContainerResponses = append(resp.ContainerResponses,
			&pluginapi.ContainerAllocateResponse{Envs: seen, Annotations: annotations})
	}
	return resp, nil
}

// registration answers the kubelet's plugin watcher, which finds our socket in the kubelet's
// plugins_registry folder and then talks to the device-plugin service on the same socket.
type registration struct {
	registerapi.UnimplementedRegistrationServer
	p *plugin
}

func (r registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: r.p.resource, Endpoint: r.p.socket,
		SupportedVersions: []string{pluginapi.Version}}, nil
}

func (r registration) NotifyRegistrationStatus(_ context.Context, status *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if status.PluginRegistered {
		log.Printf("%s: registered %d card(s) with the kubelet", r.p.resource, len(r.p.cards))
	} else {
		log.Printf("%s: the kubelet refused the plugin: %s", r.p.resource, status.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// serve listens on the plugin's socket (replacing a stale one) with both services.
func (p *plugin) serve() (*grpc.Server, error) {
	if err := os.Remove(p.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	lis, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	registerapi.RegisterRegistrationServer(server, registration{p: p})
	go func() { _ = server.Serve(lis) }()
	return server, nil
}

// keepServing serves until stop, and serves anew when the socket was removed (the kubelet's plugin
// watcher then registers the plugin again; it also rescans the folder when the kubelet restarts).
func (p *plugin) keepServing(stop <-chan struct{}) {
	var server *grpc.Server
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		if _, err := os.Stat(p.socket); err != nil {
			if server != nil {
				server.Stop()
			}
			if server, err = p.serve(); err != nil {
				log.Printf("%s: serve %s: %v", p.resource, p.socket, err)
			}
		}
		select {
		case <-stop:
			if server != nil {
				server.Stop()
			}
			_ = os.Remove(p.socket)
			return
		case <-ticker.C:
		}
	}
}

func pluginsByResource(cards cardFlags, dir string) []*plugin {
	var plugins []*plugin
	byResource := map[string]*plugin{}
	for _, c := range cards {
		p, ok := byResource[c.resource]
		if !ok {
			p = &plugin{resource: c.resource, cardType: c.cardType,
				socket: filepath.Join(dir, "elasticdf-"+c.cardType+".sock")}
			byResource[c.resource] = p
			plugins = append(plugins, p)
		}
		p.cards = append(p.cards, c)
	}
	return plugins
}

func main() {
	var cards cardFlags
	dir := flag.String("registry-dir", "/var/lib/kubelet/plugins_registry", "the kubelet's plugin registration folder")
	flag.Var(&cards, "card", "TYPE=RESOURCE of one card, repeated in the node's card order")
	flag.Parse()
	if len(cards) == 0 {
		log.Fatal("no --card given: nothing to advertise")
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	plugins := pluginsByResource(cards, *dir)
	for _, p := range plugins {
		go func() { p.keepServing(stop); done <- struct{}{} }()
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	close(stop)
	for range plugins {
		<-done
	}
}

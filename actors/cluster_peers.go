package actors

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/labstack/echo/v4"
)

// PeerHealthPortOffset: a member of a static cluster (StaticPeers) answers
// the other members' health checks over HTTP on its remoting port plus this
// offset (advertise 127.0.0.1:8101 → health on port 9101, on every
// interface). Deriving it keeps one address per member in the
// configuration.
const PeerHealthPortOffset = 1000

// peerRefresh: how often a static member asks the others whether they are
// alive; a member that does not answer leaves the topology at the next
// round, and its grains re-activate on the others at their next call.
const peerRefresh = time.Second

// SplitHostPort parses a member address (HOST:PORT, port 1..65535).
func SplitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(strings.TrimSpace(addr))
	if err != nil {
		return "", 0, fmt.Errorf("member address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535-PeerHealthPortOffset {
		return "", 0, fmt.Errorf("member address %q: want a port of 1..%d", addr, 65535-PeerHealthPortOffset)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "", 0, fmt.Errorf("member address %q: want the address the other members reach this one at, not a wildcard", addr)
	}
	return host, port, nil
}

// StaticPeers is the membership provider of a cluster whose members are
// known in advance: advertise is this member's remoting address, peers the
// others' (this member's own may be among them). It uses protoactor-go's
// automanaged provider, which checks each member's health over HTTP on its
// port plus PeerHealthPortOffset.
func StaticPeers(advertise string, peers []string) (cluster.ClusterProvider, error) {
	host, port, err := SplitHostPort(advertise)
	if err != nil {
		return nil, err
	}
	self := net.JoinHostPort(host, strconv.Itoa(port+PeerHealthPortOffset))
	health := []string{self}
	for _, p := range peers {
		h, n, err := SplitHostPort(p)
		if err != nil {
			return nil, err
		}
		if a := net.JoinHostPort(h, strconv.Itoa(n+PeerHealthPortOffset)); a != self && !contains(health, a) {
			health = append(health, a)
		}
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true // nothing on standard output
	return &staticPeers{
		AutoManagedProvider: automanaged.NewWithTesting(peerRefresh, port+PeerHealthPortOffset, e, health...),
		echo:                e, healthPort: port + PeerHealthPortOffset,
	}, nil
}

// staticPeers is the automanaged provider with a quiet HTTP server: the
// provider's own prints a banner on standard output.
type staticPeers struct {
	*automanaged.AutoManagedProvider
	echo       *echo.Echo
	healthPort int
}

func (p *staticPeers) StartMember(c *cluster.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return err
	}
	node := automanaged.NewNode(c.Config.Name, c.ActorSystem.ID, host, port, p.healthPort, c.GetClusterKinds())
	p.echo.GET("/_health", func(ctx echo.Context) error { return ctx.JSON(http.StatusOK, node) })
	return p.AutoManagedProvider.StartMember(c)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

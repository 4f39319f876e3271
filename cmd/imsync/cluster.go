package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/imsync/imsync/actors"
)

// clusterSettings are serve's cluster flags (docs/cluster.md).
type clusterSettings struct {
	name      string // --cluster
	advertise string // --advertise HOST:PORT, this member's remoting address
	peers     string // --peers HOST:PORT,... the other members' --advertise
}

var clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// apply checks the cluster flags and sets acfg's membership. Without
// --cluster the member is alone in this process (the default); with it,
// the store must be one the members share.
func (c clusterSettings) apply(acfg *actors.Config, storeURL string) error {
	if c.name == "" {
		if c.advertise != "" || c.peers != "" {
			return fmt.Errorf("%w: serve: --advertise and --peers need --cluster NAME", errUsage)
		}
		return nil
	}
	if !clusterNameRe.MatchString(c.name) {
		return fmt.Errorf("%w: serve: --cluster %q: want a name of letters, digits, '.', '_' or '-' (at most 63)", errUsage, c.name)
	}
	if storeURL == "" {
		return fmt.Errorf("%w: serve: --cluster needs a store the members share (--store esdb://HOST:2113?...); "+
			"the embedded store belongs to one process", errUsage)
	}
	if c.advertise == "" {
		return fmt.Errorf("%w: serve: --cluster needs --advertise HOST:PORT, the TCP address the other members reach this one at", errUsage)
	}
	host, port, err := actors.SplitHostPort(c.advertise)
	if err != nil {
		return fmt.Errorf("%w: serve: --advertise: %v", errUsage, err)
	}
	var peers []string
	for _, p := range strings.Split(c.peers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			peers = append(peers, p)
		}
	}
	provider, err := actors.StaticPeers(c.advertise, peers)
	if err != nil {
		return fmt.Errorf("%w: serve: --peers: %v", errUsage, err)
	}
	acfg.ClusterName, acfg.Provider, acfg.Host, acfg.Port = c.name, provider, host, port
	return nil
}
